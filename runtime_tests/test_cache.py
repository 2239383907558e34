"""The two-layer disk cache: hits equal fresh results, keys cover every input of the answer, damaged
entries are recomputed, the size bound holds, and concurrent writers lose and corrupt nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from keyatten_lite import KeyAttenExtractor
from keyatten_lite.state.cache import LAYERS, DiskCache, DocumentEntry, cache_key
from keyatten_lite.text.candidates import Candidate
from keyatten_lite.cli import main as cli_main
from keyatten_lite.errors import InvalidArgumentError

REPO = Path(__file__).resolve().parents[1]

EN_DOCS = [
    "Graph neural networks learn representations of nodes from the structure of graph data.",
    "Message passing between neighbouring nodes lets the network aggregate local structure.",
    "Keyword extraction selects the phrases that summarise a document best.",
    "Attention weights of a small transformer rank candidate phrases without training.",
    "Sparse matrix factorisation speeds up recommendation systems on large catalogues.",
]
ZH_DOCS = [
    "自然语言处理是人工智能的重要方向，深度学习模型在自然语言处理任务中表现出色。",
    "图神经网络通过消息传递聚合邻居节点的信息，学习节点表示。",
]


def _extractor(bundle, cache_dir, **kwargs):
    kwargs.setdefault("language", "en")
    return KeyAttenExtractor(profile="compat", model=bundle, cache_enabled=True, cache_dir=cache_dir, intra_op_threads=1, **kwargs)


def _forbid_forward_pass(monkeypatch, ex):
    def refuse(*args, **kwargs):
        raise AssertionError("the model ran although the cache should have answered")

    monkeypatch.setattr(ex.bundle, "run_attention", refuse)


def _entry_files(cache_dir, layer):
    return sorted((Path(cache_dir) / "keyatten-lite-v1" / layer).glob("*/*.json"))


@pytest.fixture(scope="module")
def plain_en(en_bundle):
    return KeyAttenExtractor(profile="compat", model=en_bundle, language="en", intra_op_threads=1)


@pytest.fixture(scope="module")
def plain_zh(zh_bundle):
    return KeyAttenExtractor(profile="compat", model=zh_bundle, language="zh", intra_op_threads=1)


class _ModelCalled(Exception):
    pass


def _model_must_run(monkeypatch, ex):
    """Make a forward pass raise _ModelCalled: proves a miss without paying for an ONNX session."""

    def called(*args, **kwargs):
        raise _ModelCalled

    monkeypatch.setattr(ex.bundle, "run_attention", called)


# ------------------------------------------------------------------------------------ hit and miss
def test_cached_results_equal_uncached_and_second_call_hits(en_bundle, plain_en, tmp_path, monkeypatch):
    expected = plain_en.extract_keywords_batch(EN_DOCS, with_scores=True)
    ex = _extractor(en_bundle, tmp_path)
    first = ex.extract_keywords_batch(EN_DOCS, with_scores=True)
    assert first == expected
    assert ex.cache.stats["keywords_hits"] == 0 and ex.cache.stats["documents_writes"] == len(EN_DOCS)
    _forbid_forward_pass(monkeypatch, ex)
    second = ex.extract_keywords_batch(EN_DOCS, with_scores=True)
    assert second == expected
    assert ex.cache.stats["keywords_hits"] == len(EN_DOCS)
    assert ex.extract_keywords_batch(EN_DOCS) == [[p for p, _ in r] for r in expected]


def test_keyword_hit_never_starts_the_onnx_session(en_bundle, tmp_path):
    _extractor(en_bundle, tmp_path).extract_keywords(EN_DOCS[0])
    fresh = _extractor(en_bundle, tmp_path)
    fresh.extract_keywords(EN_DOCS[0])
    assert fresh.cache.stats["keywords_hits"] == 1
    assert fresh.bundle._session is None, "a keyword-layer hit must not load the model graph"


def test_other_methods_and_new_idf_reuse_the_document_layer(en_bundle, plain_en, tmp_path, monkeypatch):
    ex = _extractor(en_bundle, tmp_path)
    ex.extract_keywords_batch(EN_DOCS)  # fills the document layer with all six methods
    _forbid_forward_pass(monkeypatch, ex)
    for method in ("cls_attn", "samrank", "fusion_attn", "voted_attn", "excess_attn"):
        assert ex.extract_keywords_batch(EN_DOCS, method=method, with_scores=True) == (
            plain_en.extract_keywords_batch(EN_DOCS, method=method, with_scores=True)
        )
    plain_en.fit_idf(EN_DOCS[:3])
    ex.fit_idf(EN_DOCS[:3])
    for method in ("samrank_idf", "excess_attn_idf"):
        assert ex.extract_keywords_batch(EN_DOCS, method=method, with_scores=True) == (
            plain_en.extract_keywords_batch(EN_DOCS, method=method, with_scores=True)
        )
    assert ex.cache.stats["documents_hits"] == 7 * len(EN_DOCS)


def test_single_and_batch_calls_share_entries(en_bundle, tmp_path, monkeypatch):
    batch = _extractor(en_bundle, tmp_path).extract_keywords_batch(EN_DOCS, top_k=5, with_scores=True)
    ex = _extractor(en_bundle, tmp_path)
    _forbid_forward_pass(monkeypatch, ex)
    assert [ex.extract_keywords(d, top_k=5, with_scores=True) for d in EN_DOCS] == batch
    # ... and the other way round, mixing hits and misses in one batch.
    ex2 = _extractor(en_bundle, tmp_path)
    single = ex2.extract_keywords("A brand new document about cache keys.", top_k=5, with_scores=True)
    mixed = ex2.extract_keywords_batch(EN_DOCS[:2] + ["A brand new document about cache keys."], top_k=5, with_scores=True)
    assert mixed == batch[:2] + [single]


def test_blank_documents_need_no_model(en_bundle, tmp_path):
    ex = _extractor(en_bundle, tmp_path)
    assert ex.extract_keywords_batch(["", "  \n"]) == [[], []]
    assert not ex.resources.bundle_loaded


def test_chinese_hits_survive_title_registration(zh_bundle, plain_zh, tmp_path, monkeypatch):
    """《》 titles change jieba's dictionary (and the fast text key) for later documents; the
    segmentation-keyed entries still answer without a forward pass."""
    docs = ZH_DOCS + ["《红楼梦》是中国古典小说的巅峰之作，研究红楼梦的学者众多。"]
    plain = plain_zh
    expected = plain.extract_keywords_batch(docs, with_scores=True)
    ex = _extractor(zh_bundle, tmp_path, language="zh")
    assert ex.extract_keywords_batch(docs, with_scores=True) == expected
    before = ex.resources.segmenter.dictionary_fingerprint()
    _forbid_forward_pass(monkeypatch, ex)
    assert ex.extract_keywords_batch(docs, with_scores=True) == plain.extract_keywords_batch(docs, with_scores=True)
    assert ex.resources.segmenter.dictionary_fingerprint() != before, "a hit must still register the title"
    # A fresh extractor is answered from the text keys (no segmentation), and the title document
    # still registers its title, so its dictionary ends where an uncached run's does.
    fresh = _extractor(zh_bundle, tmp_path, language="zh")
    assert fresh.extract_keywords_batch(docs, with_scores=True) == expected
    assert fresh.cache.stats["keywords_hits"] == len(docs) and fresh.cache.stats["keywords_misses"] == 0
    assert fresh.resources.segmenter.dictionary_fingerprint() == before


# ------------------------------------------------------------------------------- key components
@pytest.mark.parametrize(
    "change, layer",
    [
        ({"method": "samrank"}, "keywords"),
        ({"top_k": 3}, "keywords"),
        ({"dedup_nested": True}, "keywords"),
        ({"dedup_nested_for_topk5": True}, "keywords"),
        ({"tie_break": "later"}, "keywords"),
        ({"layer_index": 2}, "documents"),
        ({"layer_indices": [3, 5], "layer_weights": [1.0, 1.0]}, "documents"),
        ({"layer_indices": [3, 5], "layer_weights": [1.0, 2.0]}, "documents"),
        ({"instruction_prefix": "Keywords:"}, "documents"),
        ({"is_causal_override": True}, "documents"),
        ({"variant": "int8"}, "documents"),
        ({"language": "zh"}, "documents"),
        ({"candidate_scoring": "token_span"}, "documents"),
        ({"text": EN_DOCS[0] + " Extra words."}, "documents"),
    ],
)
def test_every_key_component_changes_the_key(en_bundle, tmp_path, change, layer):
    call_args = {"method", "top_k", "text"}
    base_call = {"method": "received_attn", "top_k": 10, "text": EN_DOCS[0]}

    def run(options):
        kwargs = {k: v for k, v in options.items() if k not in call_args}
        call = {**base_call, **{k: v for k, v in options.items() if k in call_args}}
        ex = _extractor(en_bundle, tmp_path, **kwargs)
        ex.extract_keywords(call.pop("text"), **call)
        return ex.cache.stats

    run({})
    control = run({})
    assert control["keywords_hits"] == 1, "the same configuration must hit"
    stats = run(change)
    assert stats["keywords_hits"] == 0
    if layer == "keywords":
        assert stats["documents_hits"] == 1, "a ranking-only change must reuse the document layer"
    else:
        assert stats["documents_hits"] == 0
        # token_span has no document layer (its IDF product is taken per token, before the spans).
        assert stats["documents_writes"] == (0 if change.get("candidate_scoring") == "token_span" else 1)


def test_token_input_key_includes_pos_tags(en_bundle, tmp_path):
    tokens = ["graph", "neural", "networks", "learn", "representations"]
    ex = _extractor(en_bundle, tmp_path)
    ex.extract_keywords(tokens)
    ex.extract_keywords(tokens, pos_tags=["eng"] * 5)  # the default tags: same key
    assert ex.cache.stats["keywords_hits"] == 1
    ex.extract_keywords(tokens, pos_tags=["eng", "x", "eng", "eng", "eng"])
    assert ex.cache.stats["documents_writes"] == 2


@pytest.mark.parametrize("target", ["bundle", "package", "libraries"])
def test_bundle_package_and_library_versions_are_in_the_key(en_bundle, tmp_path, monkeypatch, target):
    _extractor(en_bundle, tmp_path).extract_keywords(EN_DOCS[0])
    ex = _extractor(en_bundle, tmp_path)
    if target == "bundle":
        monkeypatch.setattr(type(ex.bundle), "content_hash", property(lambda self: "0" * 64))
    elif target == "package":
        import keyatten_lite

        monkeypatch.setattr(keyatten_lite, "__version__", "999.0")
    else:
        import keyatten_lite.pipeline.cached as cached_module

        monkeypatch.setattr(cached_module, "library_versions", lambda language: {"nltk": "0.0", "jieba": "0.0"})
    ex.extract_keywords(EN_DOCS[0])
    assert ex.cache.stats["keywords_hits"] == 0 and ex.cache.stats["documents_hits"] == 0


def test_idf_fingerprint_only_keys_idf_methods(en_bundle, tmp_path):
    ex = _extractor(en_bundle, tmp_path)
    ex.fit_idf(EN_DOCS[:2])
    ex.extract_keywords(EN_DOCS[0], method="received_attn")
    ex.extract_keywords(EN_DOCS[0], method="received_attn_idf")
    ex.fit_idf(EN_DOCS)  # a new IDF
    hits = ex.cache.stats["keywords_hits"]
    ex.extract_keywords(EN_DOCS[0], method="received_attn")
    assert ex.cache.stats["keywords_hits"] == hits + 1, "a new IDF must not invalidate a non-IDF method"
    ex.extract_keywords(EN_DOCS[0], method="received_attn_idf")
    assert ex.cache.stats["keywords_hits"] == hits + 1, "a new IDF must change the key of an _idf method"
    assert ex.cache.stats["documents_hits"] >= 1


def test_idf_fingerprint_is_computed_once_per_state(en_bundle, tmp_path, monkeypatch):
    import keyatten_lite.state.idf as idf_module

    ex = _extractor(en_bundle, tmp_path)
    ex.fit_idf(EN_DOCS)
    calls = []
    original = idf_module.lookup_fingerprint
    monkeypatch.setattr(idf_module, "lookup_fingerprint", lambda lookup: calls.append(1) or original(lookup))
    for doc in EN_DOCS:
        ex.extract_keywords(doc, method="samrank_idf")
    assert len(calls) == 1


def test_user_dictionary_content_is_in_the_key(zh_bundle, tmp_path, monkeypatch):
    dict_file = tmp_path / "user.dict"
    dict_file.write_text("消息传递 10 n\n", encoding="utf-8")
    cache_dir = tmp_path / "cache"
    _extractor(zh_bundle, cache_dir, language="zh", user_dict=str(dict_file)).extract_keywords(ZH_DOCS[1])
    same = _extractor(zh_bundle, cache_dir, language="zh", user_dict=str(dict_file))
    same.extract_keywords(ZH_DOCS[1])
    assert same.cache.stats["keywords_hits"] == 1
    dict_file.write_text("邻居节点 10 n\n", encoding="utf-8")  # same path, new content
    changed = _extractor(zh_bundle, cache_dir, language="zh", user_dict=str(dict_file))
    _model_must_run(monkeypatch, changed)
    with pytest.raises(_ModelCalled):
        changed.extract_keywords(ZH_DOCS[1])
    assert changed.cache.stats["keywords_hits"] == 0 and changed.cache.stats["documents_hits"] == 0


def test_cache_key_is_canonical():
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"text": "x"}) != cache_key({"text": "y"})
    assert len(cache_key({"text": "\ud800"})) == 64  # lone surrogates hash without error


# ------------------------------------------------------------------------------- damaged entries
def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(os.urandom(200))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "checksum":
        entry = json.loads(data)
        if "keywords" in entry["payload"]:
            entry["payload"]["keywords"] = entry["payload"]["keywords"][:1]
        else:
            entry["payload"]["words"] = entry["payload"]["words"][:1]
        path.write_text(json.dumps(entry), encoding="utf-8")
    elif how == "schema":
        entry = json.loads(data)
        entry["schema_version"] = 999
        path.write_text(json.dumps(entry), encoding="utf-8")
    elif how == "shape":  # valid checksum, wrong content shape
        entry = json.loads(data)
        payload = entry["payload"]
        if "keywords" in payload:
            payload["keywords"] = [["phrase"]]
        else:
            payload["scores"] = {m: "AAAA" for m in payload["scores"]}
        from keyatten_lite.state.cache import _checksum

        entry["checksum"] = _checksum(payload)
        path.write_text(json.dumps(entry), encoding="utf-8")
    elif how == "delete":
        path.unlink()
    elif how == "directory":
        path.unlink()
        path.mkdir()
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncate", "garbage", "empty", "checksum", "schema", "shape", "delete"])
@pytest.mark.parametrize("layer", LAYERS)
def test_damaged_entries_are_recomputed_and_rewritten(en_bundle, plain_en, tmp_path, how, layer):
    expected = plain_en.extract_keywords_batch(EN_DOCS[:2], with_scores=True)
    ex = _extractor(en_bundle, tmp_path)
    ex.extract_keywords_batch(EN_DOCS[:2], with_scores=True)
    if layer == "documents":  # force the document layer to be consulted
        for path in _entry_files(tmp_path, "keywords"):
            path.unlink()
    for path in _entry_files(tmp_path, layer):
        _damage(path, how)
    fresh = _extractor(en_bundle, tmp_path)
    assert fresh.extract_keywords_batch(EN_DOCS[:2], with_scores=True) == expected
    assert fresh.cache.stats[f"{layer}_hits"] == 0
    assert fresh.cache.stats[f"{layer}_writes"] >= 2
    # Every entry is valid again: a third extractor is answered from the keyword layer.
    third = _extractor(en_bundle, tmp_path)
    assert third.extract_keywords_batch(EN_DOCS[:2], with_scores=True) == expected
    assert third.cache.stats["keywords_hits"] == 2 and third.cache.stats["keywords_invalid"] == 0


def test_unreadable_entry_path_is_a_miss(en_bundle, plain_en, tmp_path):
    ex = _extractor(en_bundle, tmp_path)
    ex.extract_keywords(EN_DOCS[0])
    for path in _entry_files(tmp_path, "keywords"):
        _damage(path, "directory")  # a folder where the file should be: reads and writes fail
    with pytest.warns(UserWarning, match="cannot write"):
        result = _extractor(en_bundle, tmp_path).extract_keywords(EN_DOCS[0], with_scores=True)
    assert result == plain_en.extract_keywords(EN_DOCS[0], with_scores=True)


def test_document_entry_round_trip_is_exact():
    rng = np.random.default_rng(0)
    scores = {"received_attn": rng.random(3, dtype=np.float32), "excess_attn": -rng.random(3, dtype=np.float32)}
    entry = DocumentEntry(["a", "b", "c"], ["eng"] * 3, [Candidate("a b", 0, 2)], ["a b"], {"a": 1.0}, scores)
    back = DocumentEntry.from_payload(json.loads(json.dumps(entry.to_payload())))
    assert back.words == entry.words and back.candidates == entry.candidates
    for name in scores:
        assert back.scores[name].dtype == np.float32 and np.array_equal(back.scores[name], scores[name])
    bad = entry.to_payload()
    bad["candidates"] = [["a b", 0, 9]]  # outside the words
    assert DocumentEntry.from_payload(bad) is None


# ------------------------------------------------------------------------------------ size bound
def _fill(cache: DiskCache, n: int, size: int = 2000) -> list[str]:
    keys = []
    for i in range(n):
        key = cache_key({"i": i})
        cache.put_keywords(key, [("x" * size, float(i))])
        keys.append(key)
    return keys


def test_prune_keeps_the_cache_under_its_bound_oldest_first(tmp_path):
    cache = DiskCache(tmp_path, max_bytes=10**9)
    keys = _fill(cache, 20)
    now = time.time()
    for age, key in enumerate(reversed(keys)):  # keys[0] oldest
        os.utime(cache.path_for("keywords", key), (now - 1000 - age, now - 1000 - age))
    assert cache.get_keywords(keys[0]) is not None  # a hit refreshes the oldest entry
    size = cache.path_for("keywords", keys[0]).stat().st_size
    report = cache.prune(max_bytes=size * 5)
    assert report["bytes"] <= size * 5 and cache.info()["entries"] == report["entries"] <= 5
    assert cache.get_keywords(keys[0]) is not None, "the entry read last must survive"
    assert cache.get_keywords(keys[1]) is None, "the least recently used entry goes first"


def test_writes_prune_automatically(tmp_path):
    cache = DiskCache(tmp_path, max_bytes=30_000)
    _fill(cache, 60)
    info = cache.info()
    assert info["bytes"] <= 30_000 and 0 < info["entries"] < 60


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "big"])
def test_max_bytes_is_validated(tmp_path, bad):
    with pytest.raises(InvalidArgumentError, match="max_bytes"):
        DiskCache(tmp_path, max_bytes=bad)


# ------------------------------------------------------------------------------------------- CLI
def test_cli_info_prune_clear(tmp_path, capsys):
    cache = DiskCache(tmp_path, max_bytes=10**9)
    _fill(cache, 12)
    (tmp_path / "unrelated.txt").write_text("keep me")
    assert cli_main(["cache", "info", "--cache-dir", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entries"] == 12 and info["layers"]["keywords"]["entries"] == 12 and info["bytes"] > 0
    entry_bytes = info["bytes"] // 12
    assert cli_main(["cache", "prune", "--cache-dir", str(tmp_path), "--max-bytes", str(entry_bytes * 4)]) == 0
    pruned = json.loads(capsys.readouterr().out)
    assert pruned["removed"] >= 8 and cache.info()["entries"] <= 4
    remaining = cache.info()["entries"]
    assert cli_main(["cache", "clear", "--cache-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == remaining
    assert cache.info()["entries"] == 0
    assert (tmp_path / "unrelated.txt").read_text() == "keep me", "clear must only delete cache entries"


# ----------------------------------------------------------------------------- many processes
_WRITER = textwrap.dedent(
    """
    import json, sys
    from keyatten_lite.state.cache import DiskCache, DocumentEntry, cache_key
    from keyatten_lite.text.candidates import Candidate
    import numpy as np
    cache_dir, worker, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cache = DiskCache(cache_dir, max_bytes=10**9)
    for r in range(rounds):
        for i in range(20):
            n = 2000 + 37 * i  # large enough that a torn write would show
            scores = {"received_attn": np.full(n, worker + r, dtype=np.float32)}
            words = [f"w{i}"] * n
            cache.put_document(cache_key({"doc": i}), DocumentEntry(words, ["eng"] * n, [Candidate(f"w{i}", 0, 1)], [f"w{i}"], {f"w{i}": float(n)}, scores))
            cache.put_keywords(cache_key({"kw": i}), [(f"w{i}", float(worker))] * (50 + i))
    """
)


def test_concurrent_processes_writing_the_same_keys_lose_and_corrupt_nothing(tmp_path):
    """4 processes x 20 keys x 2 layers x 5 rounds, all writing the same keys at once."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(w), "5"], env=env) for w in range(4)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    cache = DiskCache(tmp_path, max_bytes=10**9)
    for i in range(20):
        doc = cache.get_document(cache_key({"doc": i}))
        assert doc is not None and len(doc.words) == 2000 + 37 * i
        assert len(set(doc.scores["received_attn"].tolist())) == 1, "one writer's entry, never a mix"
        kws = cache.get_keywords(cache_key({"kw": i}))
        assert kws is not None and len(kws) == 50 + i
    assert cache.stats["documents_invalid"] == cache.stats["keywords_invalid"] == 0
    assert cache.info()["entries"] == 40
    assert not list((tmp_path / "keyatten-lite-v1").glob("*/*/*.tmp")), "no temp files left behind"


_EXTRACTOR_WORKER = textwrap.dedent(
    """
    import json, sys
    from keyatten_lite import KeyAttenExtractor
    bundle, cache_dir, docs_file = sys.argv[1:4]
    docs = json.load(open(docs_file, encoding="utf-8"))
    ex = KeyAttenExtractor(profile="compat", model=bundle, language="en", cache_enabled=True, cache_dir=cache_dir, intra_op_threads=1)
    batch = ex.extract_keywords_batch(docs, top_k=5, with_scores=True)
    single = [ex.extract_keywords(d, top_k=5, with_scores=True) for d in docs]
    print(json.dumps({"batch": batch, "single": single}))
    """
)


@pytest.mark.slow  # 4 fresh interpreters each open the bundle: 10-40 s depending on machine load
def test_concurrent_extractors_share_one_cache(en_bundle, plain_en, tmp_path):
    """4 processes x 20 documents through real extractors on one cache folder."""
    from conftest import read_jsonl

    docs = [d["text"][:400] for d in read_jsonl("en/inspec.jsonl", limit=20)]
    docs_file = tmp_path / "docs.json"
    docs_file.write_text(json.dumps(docs), encoding="utf-8")
    cache_dir = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _EXTRACTOR_WORKER, str(en_bundle), str(cache_dir), str(docs_file)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    expected = json.loads(json.dumps(plain_en.extract_keywords_batch(docs, top_k=5, with_scores=True)))
    for out in outputs:
        result = json.loads(out)
        assert result["batch"] == expected and result["single"] == expected
    check = _extractor(en_bundle, cache_dir)
    assert check.extract_keywords_batch(docs, top_k=5, with_scores=True) == plain_en.extract_keywords_batch(
        docs, top_k=5, with_scores=True
    )
    assert check.cache.stats["keywords_hits"] == len(docs) and check.cache.stats["keywords_invalid"] == 0
    assert check.cache.info()["layers"]["documents"]["entries"] == len(docs)
