"""Candidates, validity, normalisation, scoring and ranking (spec §4.3-§4.6, §4.11, §4.12)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyatten_lite.text.candidates import (
    Candidate,
    build_candidates,
    build_candidates_with_keys,
    candidate_mean_scores,
    is_valid_word,
    normalized_keys,
    rank_candidates,
    token_counts,
    valid_word_mask,
)
from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.text.normalize import normalize_phrase
from keyatten_lite.text.segment import ChineseSegmenter, segment_english
from keyatten_lite.text.stopwords import ENGLISH_STOP_WORDS


@pytest.fixture(scope="module")
def segmenter() -> ChineseSegmenter:
    pytest.importorskip("jieba")
    return ChineseSegmenter()


def _zh_candidates(segmenter, text):
    words, tags = segmenter.segment(text)
    return [c.text for c in build_candidates(words, tags, "zh")]


# ------------------------------------------------------------------ §4.12 candidate fixtures
def test_fixture_candidates_natural_language(segmenter):
    assert _zh_candidates(segmenter, "自然语言处理是人工智能的重要方向") == ["处理", "人工智能", "方向"]


def test_fixture_candidates_space_information(segmenter):
    assert _zh_candidates(segmenter, "空天信息系统优化方法") == [
        "空天", "空天信息系统", "空天信息系统优化", "空天信息系统优化方法", "信息系统", "信息系统优化",
        "信息系统优化方法", "优化", "优化方法", "方法",
    ]


def test_fixture_candidates_english_inside_chinese(segmenter):
    assert _zh_candidates(segmenter, "OpenAI发布了GPT-4o多模态模型，Limbic System研究") == [
        "OpenAI", "OpenAI发布", "发布", "GPT", "o", "模态", "模态模型", "模型", "Limbic System",
        "Limbic System研究", "研究",
    ]


def test_fixture_candidates_title(segmenter):
    assert _zh_candidates(segmenter, "《三体》是刘慈欣的科幻小说") == ["三体", "刘慈欣"]


def test_fixture_candidates_english():
    words, tags = segment_english("Natural language processing extracts key-phrases from documents.")
    texts = [c.text for c in build_candidates(words, tags, "en")]
    assert texts[:4] == ["Natural", "Natural language", "Natural language processing",
                         "Natural language processing extracts"]
    assert not any("from" in t.split() for t in texts)  # a stop word breaks every n-gram


def test_candidate_ranges_and_keys_line_up(segmenter):
    words, tags = segmenter.segment("空天信息系统优化方法")
    candidates, keys = build_candidates_with_keys(words, tags, "zh")
    assert keys == normalized_keys(candidates)
    assert len(set(keys)) == len(keys)
    for c in candidates:
        assert c.text == "".join(words[c.word_start:c.word_end])
        assert 1 <= c.word_end - c.word_start <= 4
    assert len(build_candidates(words, tags, "zh", max_ngram=1)) == 4


def test_candidate_is_frozen_and_slotted():
    c = Candidate("x", 0, 1)
    with pytest.raises(AttributeError):
        c.text = "y"  # type: ignore[misc]
    assert not hasattr(c, "__dict__")


# ------------------------------------------------------------------ §4.4 normalize examples
@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Natural Language Processing", "naturlanguagprocess"),
        ("key_phrases", "keyphrase"),
        ("GPT-4o", "gpt4o"),
        ("running dogs", "rundog"),
        ("自然 语言", "自然语言"),
        ("---", "---"),
    ],
)
def test_normalize_spec_examples(text, key):
    assert normalize_phrase(text) == key


# ------------------------------------------------------------------ §4.3 validity
def test_stop_words_match_scikit_learn():
    text = pytest.importorskip("sklearn.feature_extraction.text")
    assert len(ENGLISH_STOP_WORDS) == 318
    assert ENGLISH_STOP_WORDS == frozenset(text.ENGLISH_STOP_WORDS)


@pytest.mark.parametrize(
    ("word", "tag", "valid"),
    [
        ("模型", "n", True), ("模型", "nrfg", True), ("优化", "vn", True), ("研究", "vd", True),
        ("OpenAI", "eng", True), ("o", "eng", True),  # a single Latin letter tagged eng passes
        ("模", "n", False), ("做", "v", False),  # single-character nouns and verbs fail
        ("o", "engx", False), ("重要", "a", False), ("自然语言", "l", False), ("，，", "n", False),
        ("__", "n", False), ("  ", "n", False), ("人工智能", "x", False),
    ],
)
def test_chinese_validity(word, tag, valid):
    assert is_valid_word(word, tag, "zh") is valid


@pytest.mark.parametrize(
    ("word", "valid"),
    [("graph", True), ("Graph", True), ("from", False), ("The", False), ("x", False), ("42", False),
     ("3d", True), (" a ", False)],
)
def test_english_validity(word, valid):
    assert is_valid_word(word, "anything", "en") is valid


def test_validity_argument_checks():
    with pytest.raises(InvalidArgumentError):
        is_valid_word("x", "n", "de")
    with pytest.raises(InvalidArgumentError):
        valid_word_mask(["a", "b"], ["n"], "zh")
    assert valid_word_mask([], [], "zh").dtype == bool


def test_token_counts_are_raw_counts_of_valid_keys():
    words = ["Graphs", "graph", "the", "Networks", "graph"]
    counts = token_counts(words, ["eng"] * 5, "en")
    assert counts == {normalize_phrase("graph"): 3, normalize_phrase("networks"): 1}


# ------------------------------------------------------------------ §4.6 mean scores
def test_candidate_mean_scores_match_direct_mean():
    rng = np.random.default_rng(0)
    scores = rng.random(30).astype(np.float32)
    candidates = [Candidate("c", s, min(30, s + n)) for s in range(30) for n in (1, 2, 3, 4)]
    got = candidate_mean_scores(scores, candidates)
    expected = np.array([scores[c.word_start:c.word_end].mean() for c in candidates])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_candidate_mean_scores_checks_ranges():
    assert candidate_mean_scores(np.zeros(3), []).shape == (0,)
    with pytest.raises(InvalidArgumentError):
        candidate_mean_scores(np.zeros(3), [Candidate("x", 2, 4)])


# ------------------------------------------------------------------ §4.11 ranking
def test_rank_orders_drops_non_finite_and_limits():
    texts = ["a", "b", "c", "d"]
    ranked = rank_candidates(texts, texts, np.array([0.1, np.nan, 0.9, np.inf]), 10, dedup_nested=False)
    assert ranked == [("c", pytest.approx(0.9)), ("a", pytest.approx(0.1))]
    assert [t for t, _ in rank_candidates(texts, texts, np.array([4.0, 3, 2, 1]), 2, dedup_nested=False)] == ["a", "b"]


def test_rank_tie_breaks():
    texts = ["a", "b", "c", "d"]
    scores = np.array([0.5, 0.7, 0.5, 0.5], dtype=np.float32)
    assert [t for t, _ in rank_candidates(texts, texts, scores, 4, dedup_nested=False)] == ["b", "a", "c", "d"]
    later = rank_candidates(texts, texts, scores, 4, dedup_nested=False, tie_break="later")
    assert [t for t, _ in later] == ["b", "d", "c", "a"]
    with pytest.raises(InvalidArgumentError):
        rank_candidates(texts, texts, scores, 4, dedup_nested=False, tie_break="random")
    with pytest.raises(InvalidArgumentError):
        rank_candidates(texts, texts, scores, 0, dedup_nested=False)


def test_rank_nested_dedup_skips_sub_and_superstrings():
    texts = ["Graph", "Graph neural network", "neural", "network data", "data"]
    keys = [normalize_phrase(t) for t in texts]
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    ranked = rank_candidates(texts, keys, scores, 3, dedup_nested=True)
    # "Graph neural network" is skipped (its key contains "graph"); the others contain no taken key.
    assert [t for t, _ in ranked] == ["Graph", "neural", "network data"]


# ------------------------------------------------------------------ properties
_WORDS = st.lists(
    st.tuples(
        st.text(st.characters(), min_size=0, max_size=6),
        st.sampled_from(["n", "nz", "v", "vn", "eng", "x", "l", "a", "m", "uj", "nr"]),
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_WORDS, st.sampled_from(["zh", "en"]), st.integers(1, 5))
def test_candidates_are_runs_of_valid_words(pairs, language, max_ngram):
    words = [w for w, _ in pairs]
    tags = [t for _, t in pairs]
    candidates, keys = build_candidates_with_keys(words, tags, language, max_ngram)
    assert len(set(keys)) == len(keys) and all(keys)
    for c in candidates:
        assert 1 <= c.word_end - c.word_start <= max_ngram
        assert all(is_valid_word(words[i], tags[i], language) for i in range(c.word_start, c.word_end))
    starts = [(c.word_start, c.word_end) for c in candidates]
    assert starts == sorted(starts)
    counts = token_counts(words, tags, language)
    assert sum(counts.values()) == int(valid_word_mask(words, tags, language).sum())


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(), max_size=30))
def test_normalize_never_raises_and_drops_whitespace(text):
    key = normalize_phrase(text)
    assert isinstance(key, str)
    assert not any(ch.isspace() for ch in key)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=20),
       st.integers(1, 25), st.booleans(), st.sampled_from(["earlier", "later"]))
def test_rank_candidates_properties(values, top_k, dedup, tie_break):
    texts = [f"w{i}" for i in range(len(values))]
    keys = [f"<{i}>" for i in range(len(values))]
    scores = np.array(values, dtype=np.float32)
    ranked = rank_candidates(texts, keys, scores, top_k, dedup_nested=dedup, tie_break=tie_break)
    finite = int(np.isfinite(scores).sum())
    assert len(ranked) == min(top_k, finite)
    got = [s for _, s in ranked]
    assert got == sorted(got, reverse=True)
