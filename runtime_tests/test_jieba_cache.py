"""keyatten_lite.text.jieba_cache: the text cache of jieba's default dictionary is exact, and a bad
cache is never used."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

jieba = pytest.importorskip("jieba")
pytest.importorskip("jieba.posseg")  # used as jieba.posseg below

from keyatten_lite.text import jieba_cache
from keyatten_lite.text.jieba_cache import load_default_dictionary, load_pos_table

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("KEYATTEN_LITE_DATA") or REPO.parent / "shared" / "data")

BUILTIN_SENTENCES = [
    "我来到北京清华大学",
    "他来到了网易杭研大厦",
    "小明硕士毕业于中国科学院计算所，后在日本京都大学深造",
    "采用修正的Rodrigues参数建立了飞行器姿态控制系统的数学模型",
    "提出了一种基于深度学习的中文关键词抽取方法",
    "结婚的和尚未结婚的",
    "工信处女干事每月经过下属科室都要亲口交代24口交换机等技术性器件的安装工作",
    "《红楼梦》是中国古典小说的巅峰之作",
    "自然语言处理是人工智能的重要方向",
    "李小福是创新办主任也是云计算方面的专家",
    "永和服装饰品有限公司",
    "我爱北京天安门，天安门上太阳升。",
    "The quick brown fox 和 jieba 分词 test 123 ABC",
    "在镇定控制器设计中,用消去法建立了控制器与Lyapunov函数之间的关系",
]


def _sentences(limit: int = 300) -> list[str]:
    path = DATA_DIR / "zh" / "csl_dev.jsonl"
    if not path.is_file():
        return BUILTIN_SENTENCES
    sentences: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                for sentence in re.split("[。；！？]", json.loads(line)["text"]):
                    if sentence.strip():
                        sentences.append(sentence)
            if len(sentences) >= limit:
                break
    return sentences[:limit] + BUILTIN_SENTENCES


@pytest.fixture(scope="module")
def fresh() -> tuple[dict, int, dict]:
    """FREQ, total and the POS table as jieba builds them from dict.txt."""
    loader = jieba.Tokenizer()
    freq, total = loader.gen_pfdict(loader.get_dict_file())
    return freq, total, jieba.posseg.POSTokenizer(loader).word_tag_tab


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory) -> Path:
    cache_dir = tmp_path_factory.mktemp("jieba-cache")
    load_default_dictionary(cache_dir)
    load_pos_table(cache_dir)
    return cache_dir


def _only_file(cache_dir: Path, kind: str) -> Path:
    files = sorted(cache_dir.glob(f"jieba-{kind}-*.txt"))
    assert len(files) == 1, files
    return files[0]


def _copy_cache(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.glob("jieba-*.txt"):
        (dst / path.name).write_bytes(path.read_bytes())


@pytest.fixture()
def count_builds(monkeypatch) -> dict:
    """Counts the dict.txt parses (and lets them happen)."""
    counts = {"freq": 0, "pos": 0}
    build_freq, build_pos = jieba_cache._build_freq, jieba_cache._build_pos

    def spy_freq(*args):
        counts["freq"] += 1
        return build_freq(*args)

    def spy_pos(*args):
        counts["pos"] += 1
        return build_pos(*args)

    monkeypatch.setattr(jieba_cache, "_build_freq", spy_freq)
    monkeypatch.setattr(jieba_cache, "_build_pos", spy_pos)
    return counts


def _is_valid(path: Path, kind: str) -> bool:
    digest = hashlib.sha256(jieba_cache._read_default_dict(jieba)).hexdigest()
    fmt = jieba_cache._FREQ_FORMAT if kind == "freq" else jieba_cache._POS_FORMAT
    return jieba_cache._decode(path.read_bytes(), fmt, jieba.__version__, digest, kind == "freq") is not None


def _resign(body: bytes) -> bytes:
    """A cache file with a valid trailing sha256 over ``body`` (to test the checks behind the digest)."""
    return body + b"sha256 " + hashlib.sha256(body).hexdigest().encode() + b"\n"


def _body(data: bytes) -> bytes:
    return data[: data.rfind(b"\n", 0, len(data) - 1) + 1]


# ------------------------------------------------------------------------------------ exactness
def test_cache_equals_fresh_build(warm_cache, fresh, count_builds) -> None:
    freq, total = load_default_dictionary(warm_cache)
    table = load_pos_table(warm_cache)
    assert count_builds == {"freq": 0, "pos": 0}  # both came from the cache
    assert freq == fresh[0] and type(total) is int and total == fresh[1]
    assert all(type(v) is int for v in freq.values())
    assert table == fresh[2]
    assert load_default_dictionary(warm_cache)[0] is not freq  # a new dict every call: callers may mutate


def test_first_load_builds_and_writes(tmp_path, fresh, count_builds) -> None:
    freq, total = load_default_dictionary(tmp_path)
    assert (freq, total) == fresh[:2]
    assert count_builds["freq"] == 1
    assert _is_valid(_only_file(tmp_path, "freq"), "freq")
    assert not list(tmp_path.glob("jieba-pos-*"))  # the POS table only when asked
    assert load_pos_table(tmp_path) == fresh[2]
    assert _is_valid(_only_file(tmp_path, "pos"), "pos")
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith("jieba-")]  # no temp files left


def test_segmentation_identical(warm_cache, tmp_path) -> None:
    freq, total = load_default_dictionary(warm_cache)
    cached = jieba.Tokenizer()
    cached.FREQ, cached.total, cached.initialized = freq, total, True
    cached_pos = jieba.posseg.POSTokenizer.__new__(jieba.posseg.POSTokenizer)
    cached_pos.tokenizer, cached_pos.word_tag_tab = cached, load_pos_table(warm_cache)

    normal = jieba.Tokenizer()
    normal.tmp_dir = str(tmp_path)  # its marshal cache goes here, not to the shared temp folder
    normal.initialize()
    normal_pos = jieba.posseg.POSTokenizer(normal)

    sentences = _sentences()
    assert len(sentences) >= (300 if (DATA_DIR / "zh" / "csl_dev.jsonl").is_file() else len(BUILTIN_SENTENCES))
    for sentence in sentences:
        assert cached.lcut(sentence) == normal.lcut(sentence)
        assert cached.lcut(sentence, HMM=False) == normal.lcut(sentence, HMM=False)
        assert cached.lcut_for_search(sentence) == normal.lcut_for_search(sentence)
        assert [tuple(p) for p in cached_pos.lcut(sentence)] == [tuple(p) for p in normal_pos.lcut(sentence)]


# ------------------------------------------------------------------------------- bad caches
def _damage_truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _damage_garbage(data: bytes) -> bytes:
    return os.urandom(4096)


def _damage_empty(data: bytes) -> bytes:
    return b""


def _damage_flipped_frequency(data: bytes) -> bytes:
    at = data.index(b"\n") + 1  # the first group line "<freq> <count>"
    return data[:at] + (b"9" if data[at:at + 1] != b"9" else b"8") + data[at + 1:]


def _damage_wrong_version(data: bytes) -> bytes:
    end = data.index(b"\n")
    header = json.loads(data[:end])
    header["jieba"] = "0.0.1"
    return _resign(json.dumps(header).encode() + _body(data)[end:])


def _damage_other_dictionary(data: bytes) -> bytes:
    end = data.index(b"\n")
    header = json.loads(data[:end])
    header["dict_sha256"] = "0" * 64
    return _resign(json.dumps(header).encode() + _body(data)[end:])


def _damage_wrong_layout(data: bytes) -> bytes:
    end = data.index(b"\n")
    header = json.loads(data[:end])
    header["layout"] = 999
    return _resign(json.dumps(header).encode() + _body(data)[end:])


def _damage_miscounted(data: bytes) -> bytes:
    """Signed, current, but a group claims one word more than it has."""
    body = _body(data)
    start = body.index(b"\n") + 1
    end = body.index(b"\n", start)
    value, count = body[start:end].split(b" ")
    return _resign(body[:start] + value + b" " + str(int(count) + 1).encode() + body[end:])


def _damage_lost_words(data: bytes) -> bytes:
    """Signed, current, but the last group lost its last word (count and entries no longer agree)."""
    body = _body(data)
    return _resign(body[: body.rfind(b"\n", 0, len(body) - 1) + 1])


DAMAGES = [
    _damage_truncated,
    _damage_garbage,
    _damage_empty,
    _damage_flipped_frequency,
    _damage_wrong_version,
    _damage_other_dictionary,
    _damage_wrong_layout,
    _damage_miscounted,
    _damage_lost_words,
]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__[len("_damage_"):])
@pytest.mark.parametrize("kind", ["freq", "pos"])
def test_bad_cache_is_ignored_and_rebuilt(damage, kind, warm_cache, fresh, tmp_path, count_builds) -> None:
    _copy_cache(warm_cache, tmp_path)
    path = _only_file(tmp_path, kind)
    path.write_bytes(damage(path.read_bytes()))
    assert not _is_valid(path, kind)
    if kind == "freq":
        assert load_default_dictionary(tmp_path) == fresh[:2]
    else:
        assert load_pos_table(tmp_path) == fresh[2]
    assert count_builds[kind] == 1
    assert _is_valid(path, kind)  # rewritten
    if kind == "freq":
        assert load_default_dictionary(tmp_path) == fresh[:2]
    else:
        assert load_pos_table(tmp_path) == fresh[2]
    assert count_builds[kind] == 1  # and used from then on


def test_new_jieba_version_gets_its_own_file(warm_cache, fresh, tmp_path, monkeypatch, count_builds) -> None:
    _copy_cache(warm_cache, tmp_path)
    monkeypatch.setattr(jieba, "__version__", "9.9.9")
    assert load_default_dictionary(tmp_path) == fresh[:2]
    assert count_builds["freq"] == 1
    assert len(list(tmp_path.glob("jieba-freq-9.9.9-*.txt"))) == 1


def test_unwritable_cache_dir_still_loads(tmp_path, fresh) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert load_default_dictionary(not_a_dir) == fresh[:2]
    assert load_pos_table(not_a_dir / "deeper") == fresh[2]


def test_concurrent_writers_leave_a_valid_file(tmp_path, fresh, count_builds) -> None:
    code = (
        "import sys\n"
        "from keyatten_lite.text.jieba_cache import load_default_dictionary, load_pos_table\n"
        "freq, total = load_default_dictionary(sys.argv[1])\n"
        "table = load_pos_table(sys.argv[1])\n"
        "print(len(freq), total, len(table))\n"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [w.communicate(timeout=300)[0].strip() for w in writers]
    assert [w.returncode for w in writers] == [0, 0, 0, 0]
    assert set(outputs) == {f"{len(fresh[0])} {fresh[1]} {len(fresh[2])}"}
    names = sorted(p.name for p in tmp_path.iterdir())  # the two cache files, no temp file left
    assert len(names) == 2 and all(re.fullmatch(r"jieba-(freq|pos)-.+\.txt", name) for name in names), names
    assert _is_valid(_only_file(tmp_path, "freq"), "freq") and _is_valid(_only_file(tmp_path, "pos"), "pos")
    assert load_default_dictionary(tmp_path) == fresh[:2] and load_pos_table(tmp_path) == fresh[2]
    assert count_builds == {"freq": 0, "pos": 0}


def test_freq_load_does_not_import_posseg(warm_cache) -> None:
    code = (
        "import sys\n"
        "from keyatten_lite.text.jieba_cache import load_default_dictionary\n"
        "load_default_dictionary(sys.argv[1])\n"
        "print('jieba.posseg' in sys.modules, 'nltk' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(warm_cache)], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False False"


def test_posseg_imported_from_the_cache_is_jiebas_own(tmp_path) -> None:
    """The segmenter imports jieba.posseg without its dict.txt parse; the global tagger that import
    leaves must be the one a plain import builds (its tag table, and what jieba.posseg.lcut gives)."""
    code = (
        "import json, sys, time\n"
        "from keyatten_lite.text import segment\n"
        "import jieba\n"
        "segment._fresh_jieba_pair()\n"
        "import jieba.posseg as P\n"
        "ref = P.POSTokenizer.__new__(P.POSTokenizer)\n"
        "ref.load_word_tag(jieba.dt.get_dict_file())\n"
        "jieba.setLogLevel(60)\n"
        "print(json.dumps([P.dt.word_tag_tab == ref.word_tag_tab, len(ref.word_tag_tab),\n"
        "                  [list(p) for p in P.lcut(sys.argv[1])]], ensure_ascii=False))\n"
    )
    plain = (
        "import json, sys\n"
        "import jieba, jieba.posseg as P\n"
        "jieba.setLogLevel(60)\n"
        "print(json.dumps([list(p) for p in P.lcut(sys.argv[1])], ensure_ascii=False))\n"
    )
    text = "自然语言处理是人工智能的重要方向，关键词提取无需训练数据。"
    env = {**os.environ, "KEYATTEN_LITE_HOME": str(tmp_path)}
    for _ in range(2):  # the first run builds the cache (a plain import), the second reads it
        ours = subprocess.run([sys.executable, "-c", code, text], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    same_table, entries, tagged = json.loads(ours.stdout)
    reference = subprocess.run([sys.executable, "-c", plain, text], cwd=REPO, capture_output=True, text=True, check=True)
    assert same_table and entries > 300_000
    assert tagged == json.loads(reference.stdout)
