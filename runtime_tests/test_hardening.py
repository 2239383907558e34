"""Hardening: arbitrary and hostile input gives defined results or documented errors, threads agree
with serial calls, and a tampered bundle is refused by name."""

from __future__ import annotations

import math
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import read_jsonl
from keyatten_lite import (
    BundleError,
    BundleNotFoundError,
    ChecksumError,
    InvalidArgumentError,
    KeyAttenExtractor,
    open_bundle,
)
from keyatten_lite.text.guard import MAX_HMM_RUN, sanitize_text

EN_TEXT = (
    "Graph neural networks learn representations of nodes from the structure of graph data. "
    "Message passing between neighbouring nodes lets the network aggregate local structure."
)
ZH_TEXT = "自然语言处理是人工智能的重要方向，深度学习模型在自然语言处理任务中表现出色。"
DOCUMENTED_ERRORS = (InvalidArgumentError,)

# Every code point, lone surrogates and control characters included.
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=())
# Text that favours the scripts the extractors care about, mixed with anything else.
MIXED_TEXT = st.lists(
    st.one_of(
        st.text(ANY_CHAR, max_size=8),
        st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5), min_size=1, max_size=8),
        st.text("abcdefghijklmnopqrstuvwxyz- ", min_size=1, max_size=12),
        st.sampled_from(["《", "》", "，", "。", " ", "\n", "\x00", "\ud800", "🙂", "😀", "\u200b", "\ufeff"]),
    ),
    max_size=30,
).map("".join)
PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def en(en_bundle):
    return KeyAttenExtractor(model=en_bundle, language="en", intra_op_threads=1)


@pytest.fixture(scope="module")
def zh(zh_bundle):
    return KeyAttenExtractor(model=zh_bundle, language="zh", intra_op_threads=1)


def _assert_keyword_pairs(result, top_k=10):
    assert isinstance(result, list) and len(result) <= top_k
    for item in result:
        assert isinstance(item, tuple) and len(item) == 2
        phrase, score = item
        assert isinstance(phrase, str) and phrase.strip()
        assert isinstance(score, float) and math.isfinite(score)
        phrase.encode("utf-8")  # never a lone surrogate


# ------------------------------------------------------------------------------ property tests
@PROPERTY_SETTINGS
@given(text=MIXED_TEXT)
def test_any_text_gives_keyword_pairs_in_english(en, text):
    _assert_keyword_pairs(en.extract_keywords(text, with_scores=True))


@PROPERTY_SETTINGS
@given(text=MIXED_TEXT)
def test_any_text_gives_keyword_pairs_in_chinese(zh, text):
    # (No comparison with candidate_phrases here: 《》 titles in the text change the next segmentation.)
    _assert_keyword_pairs(zh.extract_keywords(text, with_scores=True))


@PROPERTY_SETTINGS
@given(
    tokens=st.lists(st.text(ANY_CHAR, max_size=6), max_size=12),
    tags=st.none() | st.lists(st.sampled_from(["n", "v", "eng", "x", "nz", "a", ""]), max_size=12),
)
def test_any_token_list_gives_pairs_or_a_documented_error(zh, tokens, tags):
    bad = any(not t.strip() for t in tokens) or (tags is not None and len(tags) != len(tokens))
    try:
        result = zh.extract_keywords(tokens, pos_tags=tags, with_scores=True)
    except DOCUMENTED_ERRORS as exc:
        assert bad, f"unexpected error for valid tokens: {exc}"
        return
    assert not bad, "blank tokens or mismatched tags must be refused"
    _assert_keyword_pairs(result)


# ------------------------------------------------------------------------------ hostile inputs
def test_empty_and_whitespace_only_text_give_no_keywords(en, zh):
    for ex in (en, zh):
        assert ex.extract_keywords("") == []
        assert ex.extract_keywords(" \n\t\u3000\r ") == []
        assert ex.extract_keywords_batch(["", "   "], with_scores=True) == [[], []]
        assert ex.extract_keywords([]) == []


def test_lone_surrogates_are_replaced_by_the_replacement_character(en, zh):
    assert sanitize_text("a\ud800b\ud83d\ude00c\udfff") == "a\ufffdb\U0001f600c\ufffd"
    assert en.extract_keywords("graph \ud800neural networks\udfff learn", with_scores=True) == (
        en.extract_keywords("graph \ufffdneural networks\ufffd learn", with_scores=True)
    )
    text = "自然语言\ud800处理是人工智能\udc00的重要方向"
    assert zh.extract_keywords(text, with_scores=True) == zh.extract_keywords(sanitize_text(text), with_scores=True)
    assert zh.extract_keywords(["深度", "学\ud800习", "模型"], with_scores=True) == (
        zh.extract_keywords(["深度", "学\ufffd习", "模型"], with_scores=True)
    )


def test_control_characters_never_reach_keywords(en, zh):
    noisy = "graph\x00 neural\x07 networks\x1b learn \x7f representations"
    # English words are [A-Za-z][A-Za-z0-9-]*: the control characters vanish with the separators.
    assert en.extract_keywords(noisy, with_scores=True) == (
        en.extract_keywords("graph neural networks learn representations", with_scores=True)
    )
    result = zh.extract_keywords("自然语言\x00处理\x07是人工智能\x1b的重要方向", with_scores=True)
    _assert_keyword_pairs(result)
    assert result and not any(ch in p for p, _ in result for ch in "\x00\x07\x1b")


def test_emoji_and_mixed_scripts(en, zh):
    result = zh.extract_keywords("🙂深度学习😀模型👍在自然语言处理🚀任务中表现出色", with_scores=True)
    _assert_keyword_pairs(result)
    assert result and not any(ord(ch) > 0xFFFF for p, _ in result for ch in p)
    mixed = en.extract_keywords("Graph нейронные сети 图神经网络 learn مرحبا representations", with_scores=True)
    _assert_keyword_pairs(mixed)
    assert {p for p, _ in mixed} <= set(en.candidate_phrases("Graph нейронные сети 图神经网络 learn مرحبا representations"))


def test_a_ten_thousand_character_word(en, zh):
    word = "x" * 10_000
    result = en.extract_keywords(f"graph neural {word} networks learn", top_k=20, with_scores=True)
    _assert_keyword_pairs(result, 20)
    assert any(word in p for p, _ in result)  # alone (compat) or inside a phrase (default)
    tokens = zh.extract_keywords(["深度", "学" * 10_000, "模型"], with_scores=True)
    _assert_keyword_pairs(tokens)


@pytest.mark.parametrize("char", ["中", "龘"])
def test_a_long_cjk_run_is_segmented_without_the_hmm(zh, char):
    """jieba's POS HMM needs minutes for 10,000 unknown characters; the run is cut by the dictionary."""
    words, tags = zh.segment(char * 10_000)
    assert "".join(words) == char * 10_000, "no character is lost"
    assert max(len(w) for w in words) <= 4 and len(tags) == len(words)
    _assert_keyword_pairs(zh.extract_keywords(char * 10_000 + "。深度学习模型表现出色", with_scores=True))


def test_natural_text_never_triggers_the_long_run_rule():
    import json
    import re

    from conftest import data_dir

    path = data_dir() / "zh" / "csl_dev.jsonl"
    if not path.exists():
        pytest.skip(f"evaluation data not found at {path}")
    longest = max(
        (len(m) for line in open(path, encoding="utf-8") for m in re.findall("[\u4e00-\u9fd5]+", json.loads(line)["text"])),
        default=0,
    )
    assert longest < MAX_HMM_RUN


def test_only_the_first_max_chars_are_read(en_bundle):
    head = "graph neural networks learn representations of nodes "
    ex = KeyAttenExtractor(model=en_bundle, language="en", max_chars=len(head), intra_op_threads=1)
    text = head + "zebra quagga okapi " * 20
    phrases = ex.candidate_phrases(text)
    assert phrases and not any(w in p for p in phrases for w in ("zebra", "quagga", "okapi"))
    assert ex.extract_keywords(text, top_k=50, with_scores=True) == ex.extract_keywords(head, top_k=50, with_scores=True)
    # Token input: whole tokens up to max_chars in total; the token crossing the limit is cut.
    tokens = ["okapis"] * 20
    kept = len(head) // 6
    cut = ["okapis"[: len(head) - 6 * kept]] if len(head) % 6 else []
    assert ex.extract_keywords(tokens, top_k=50, with_scores=True) == (
        ex.extract_keywords(tokens[:kept] + cut, top_k=50, with_scores=True)
    )
    with pytest.raises(InvalidArgumentError, match="max_chars"):
        KeyAttenExtractor(model=en_bundle, language="en", max_chars=0)


def test_words_past_the_model_window_score_zero(en):
    text = " ".join(f"alpha{i} beta{i} gamma" for i in range(400))  # far more than 512 tokens
    weights = en.extract_word_weights(text)
    assert len(weights) == len(en.segment(text)[0])
    assert all(w.weight == 0.0 for w in weights[-200:])
    assert any(w.weight != 0.0 for w in weights[:100])


def test_a_one_megabyte_document(en):
    docs = [d["text"] for d in read_jsonl("en/inspec.jsonl", limit=400)]
    text = (" ".join(docs) * 4)[:1_000_000]
    assert len(text) == 1_000_000
    result = en.extract_keywords(text, top_k=10, with_scores=True)
    _assert_keyword_pairs(result)
    assert {p for p, _ in result} <= set(en.candidate_phrases(text[: en.max_chars]))


def test_a_one_megabyte_chinese_document(zh_bundle):
    docs = [d["text"] for d in read_jsonl("zh/csl_dev.jsonl", limit=200)]
    text = ("".join(docs) * 20)[:1_000_000]
    ex = KeyAttenExtractor(model=zh_bundle, language="zh", max_chars=20_000, intra_op_threads=1)
    _assert_keyword_pairs(ex.extract_keywords(text, with_scores=True))


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda ex: ex.extract_keywords(None), "str"),
        (lambda ex: ex.extract_keywords(b"bytes"), "str"),
        (lambda ex: ex.extract_keywords(["graph", 3]), "str tokens"),
        (lambda ex: ex.extract_keywords(["graph", "  "]), "blank"),
        (lambda ex: ex.extract_keywords(["graph", "nets"], pos_tags=["eng"]), "pos_tags"),
        (lambda ex: ex.extract_keywords(["graph", "nets"], pos_tags="ee"), "pos_tags"),
        (lambda ex: ex.extract_keywords(["graph", "nets"], pos_tags=["eng", 1]), "pos_tags"),
        (lambda ex: ex.extract_keywords_batch("one string"), "list"),
        (lambda ex: ex.extract_keywords_batch(["a", "b"], pos_tags_batch=[None]), "pos_tags_batch"),
        (lambda ex: ex.extract_keywords(EN_TEXT, method="magic"), "unknown method"),
        (lambda ex: ex.extract_keywords(EN_TEXT, top_k=0), "top_k"),
        (lambda ex: ex.extract_keywords(EN_TEXT, idf_lookup=[1, 2], method="samrank_idf"), "idf_lookup"),
        (lambda ex: ex.extract_keywords_batch([EN_TEXT], batch_size=0), "batch_size"),
        (lambda ex: ex.segment(5), "str"),
    ],
)
def test_bad_calls_raise_clear_errors(en, call, match):
    with pytest.raises(InvalidArgumentError, match=match):
        call(en)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"language": "de"}, "language"),
        ({"layer_indices": [1, 2], "layer_weights": [0.0, 0.0]}, "sum"),
        ({"layer_indices": [1, 2], "layer_weights": [1.0, -0.5]}, "non-negative"),
        ({"layer_indices": [1, 2], "layer_weights": [1.0, float("nan")]}, "finite"),
        ({"cache_enabled": "yes"}, "cache_enabled"),
        ({"cache_enabled": True, "cache_dir": None}, "cache_dir"),
        ({"cache_enabled": True, "cache_max_bytes": 0}, "max_bytes"),
        ({"max_chars": -5}, "max_chars"),
        ({"max_chars": 10.5}, "max_chars"),
    ],
)
def test_bad_constructor_arguments(en_bundle, tmp_path, kwargs, match):
    kwargs = {"model": en_bundle, "language": "en", **kwargs}
    with pytest.raises(InvalidArgumentError, match=match):
        KeyAttenExtractor(**kwargs)


def test_idf_method_without_idf_fails_before_the_model_loads(en_bundle, tmp_path):
    for cache in (False, True):
        ex = KeyAttenExtractor(model=en_bundle, language="en", cache_enabled=cache, cache_dir=tmp_path)
        with pytest.raises(InvalidArgumentError, match="IDF"):
            ex.extract_keywords_batch([EN_TEXT, "more text"], method="fusion_attn_idf")
        assert not ex.resources.bundle_loaded


def test_missing_bundle_is_reported(tmp_path):
    ex = KeyAttenExtractor(model=tmp_path / "no-such-bundle", language="en")
    with pytest.raises(BundleNotFoundError):
        ex.extract_keywords(EN_TEXT)


# ------------------------------------------------------------------------------ bundle damage
def _bundle_copy(source, target, writable):
    """A copy of ``source``: ``writable`` files copied, the others hard-linked (or copied)."""
    target.mkdir()
    for path in source.iterdir():
        if path.name in writable:
            shutil.copyfile(path, target / path.name)
        else:
            try:
                os.link(path, target / path.name)
            except OSError:
                shutil.copyfile(path, target / path.name)
    return target


def test_one_changed_byte_in_the_graph_raises_checksum_error(en_bundle, tmp_path):
    copy = _bundle_copy(en_bundle, tmp_path / "bundle", {"model.onnx", "bundle.json"})
    with open(copy / "model.onnx", "r+b") as fh:
        fh.seek(os.path.getsize(copy / "model.onnx") // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(ChecksumError, match="model.onnx"):
        open_bundle(copy)
    with pytest.raises(ChecksumError, match="model.onnx"):
        KeyAttenExtractor(model=copy, language="en").extract_keywords(EN_TEXT)


def test_missing_or_foreign_bundle_files_are_named(en_bundle, tmp_path):
    copy = _bundle_copy(en_bundle, tmp_path / "bundle", {"bundle.json", "tokenizer.json"})
    (copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json"):
        open_bundle(copy)
    shutil.copyfile(en_bundle / "tokenizer.json", copy / "tokenizer.json")
    with open(copy / "tokenizer.json", "a", encoding="utf-8") as fh:
        fh.write(" ")
    with pytest.raises(ChecksumError, match="tokenizer.json"):
        open_bundle(copy)


# ------------------------------------------------------------------------------ threads
def _run_threads(fn, jobs, n_threads=8):
    barrier = threading.Barrier(n_threads)

    def worker(chunk):
        barrier.wait()  # start together, to maximise overlap
        return [fn(job) for job in chunk]

    chunks = [jobs[i::n_threads] for i in range(n_threads)]
    with ThreadPoolExecutor(n_threads) as pool:
        outputs = list(pool.map(worker, chunks))
    results = [None] * len(jobs)
    for t, out in enumerate(outputs):
        for k, value in enumerate(out):
            results[t + k * n_threads] = value
    return results


@pytest.mark.slow  # 20-50 s on 2 busy cores: two models, each run serially, threaded, cached cold and warm
def test_eight_threads_agree_with_serial_calls(en_bundle, zh_bundle, tmp_path):
    """One extractor shared by 8 threads (single and batch calls mixed) gives the serial results;
    so does a cached one, cold (concurrent writes of the same keys) and warm."""
    en_docs = [d["text"][:300] for d in read_jsonl("en/inspec.jsonl", limit=10)]
    zh_docs = [d["text"][:200] for d in read_jsonl("zh/csl_dev.jsonl", limit=10)]
    zh_docs = [d.replace("《", "").replace("》", "") for d in zh_docs]  # titles make order matter
    for language, bundle, docs in (("en", en_bundle, en_docs), ("zh", zh_bundle, zh_docs)):
        plain = KeyAttenExtractor(model=bundle, language=language, intra_op_threads=1)
        serial = [plain.extract_keywords(d, top_k=8, with_scores=True) for d in docs]
        cached = KeyAttenExtractor(
            model=bundle, language=language, intra_op_threads=1, cache_enabled=True, cache_dir=tmp_path / language
        )
        jobs = [("single", i) for i in range(len(docs))] + [("batch", i) for i in range(0, len(docs), 3)]
        for ex in (plain, cached, cached):

            def run(job, ex=ex):
                kind, i = job
                if kind == "single":
                    return [ex.extract_keywords(docs[i], top_k=8, with_scores=True)]
                return ex.extract_keywords_batch(docs[i : i + 3], top_k=8, batch_size=2, with_scores=True)

            for (kind, i), results in zip(jobs, _run_threads(run, jobs)):
                for k, result in enumerate(results):
                    if kind == "single" and ex is plain:
                        assert result == serial[i], "a single call must not depend on other threads"
                    else:  # padded batches (whose entries single calls may also read) differ in float noise
                        _assert_close(result, serial[i + k])


def _assert_close(a, b):
    # Batches pad documents together: scores agree to float32 noise, not bit for bit.
    assert sorted(p for p, _ in a) == sorted(p for p, _ in b) or [p for p, _ in a][:3] == [p for p, _ in b][:3]
    np.testing.assert_allclose(sorted(s for _, s in a), sorted(s for _, s in b), rtol=1e-4, atol=1e-5)


def test_rows_alone_puts_each_row_back_at_its_valid_positions():
    """model/rows.py: each row runs unpadded; outputs go back to the batch layout, zeros at padding."""
    from keyatten_lite.model.rows import run_rows_alone

    calls = []

    def run(feeds):
        ids = feeds["input_ids"]
        calls.append(ids.tolist())
        n = ids.shape[1]
        attention = np.arange(2 * n * n, dtype=np.float32).reshape(2, 1, n, n) + ids[0, 0]
        return {"attentions": attention, "emissions": np.stack([ids.astype(np.float32)] * 3, axis=-1)}

    ids = np.array([[5, 6, 7, 0], [0, 0, 8, 9]])  # right padding, then left padding
    mask = (ids != 0).astype(np.int64)
    out = run_rows_alone(run, {"input_ids": ids, "attention_mask": mask}, {"attentions": (1, (2, 3)), "emissions": (0, (1,))})
    assert calls == [[[5, 6, 7]], [[8, 9]]]
    assert out["attentions"].shape == (2, 2, 4, 4) and out["emissions"].shape == (2, 4, 3)
    alone = np.arange(18, dtype=np.float32).reshape(2, 3, 3) + 5
    np.testing.assert_array_equal(out["attentions"][:, 0, :3, :3], alone)
    np.testing.assert_array_equal(out["attentions"][:, 1, 2:, 2:], np.arange(8, dtype=np.float32).reshape(2, 2, 2) + 8)
    assert not out["attentions"][:, 0, 3, :].any() and not out["attentions"][:, 1, :2, :].any()
    np.testing.assert_array_equal(out["emissions"][1, :, 0], [0, 0, 8, 9])


@pytest.mark.slow
def test_int8_keywords_do_not_depend_on_the_batch(zh_bundle):
    """Dynamic int8 scales activations over the whole batch; rows run alone, so a document's
    keywords are the same alone and in any batch (fp32: float noise only)."""
    docs = [d["text"][:300] for d in read_jsonl("zh/csl_dev.jsonl", limit=6)]
    ex = KeyAttenExtractor(model=zh_bundle, language="zh", variant="int8", intra_op_threads=2)
    alone = [ex.extract_keywords(d, top_k=8, with_scores=True) for d in docs]
    assert ex.extract_keywords_batch(docs, top_k=8, batch_size=6, with_scores=True) == alone
    assert ex.extract_keywords_batch(docs[::-1], top_k=8, batch_size=3, with_scores=True) == alone[::-1]
