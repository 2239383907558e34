"""Tests of keyatten_lite.scoring.attention: the spec's worked fixture (§3.7), black-box parity with keyatten 0.3.1's
own scoring functions on random attention maps, hand-made cases for the span helpers, and properties."""

from __future__ import annotations

import math
import re
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyatten_lite.scoring import attention as S
from keyatten_lite.errors import InvalidArgumentError

PARITY_TOL = 1e-5


# ============================================================================ §3.7 worked fixture
FIXTURE_A = np.array(
    [
        [0.40, 0.30, 0.20, 0.10, 0.00],
        [0.10, 0.50, 0.20, 0.10, 0.10],
        [0.25, 0.25, 0.25, 0.15, 0.10],
        [0.05, 0.15, 0.30, 0.40, 0.10],
        [0.20, 0.20, 0.20, 0.20, 0.20],
    ],
    dtype=np.float32,
)
FIXTURE_WORD_IDS = np.array([-1, 0, 0, 1, -1])  # [CLS], word 0, word 0, word 1, [SEP]

FIXTURE_ENCODER_WORDS = {
    "cls_attn": [0.25, 0.10],
    "received_attn": [1.275, 0.95],
    "samrank": [2.245088, 1.989065],
    "fusion_attn": [0.555556, 0.125],
    "voted_attn": [0.366667, 0.475],
    "excess_attn": [0.016052, -0.032103],
}
FIXTURE_ENCODER_TOKENS = {  # tokens 1, 2, 3
    "cls_attn": [0.3, 0.2, 0.1],
    "received_attn": [1.4, 1.15, 0.95],
    "samrank": [2.336319, 2.153857, 1.989065],
    "fusion_attn": [0.75, 0.361111, 0.125],
    "voted_attn": [0.35, 0.383333, 0.475],
    "excess_attn": [0.04231, -0.010206, -0.032103],
}
FIXTURE_CAUSAL_WORDS = {
    "cls_attn": [0.333333, 0.333333],
    "received_attn": [1.2, 0.644444],
    "samrank": [1.915148, 1.859056],
    "fusion_attn": [0.642857, 0.285714],
    "voted_attn": [0.448938, 0.401961],
    "excess_attn": [-0.004143, 0.008285],
}


def _fixture_causal_matrix() -> np.ndarray:
    lower = np.tril(FIXTURE_A).astype(np.float64)
    return (lower / lower.sum(axis=1, keepdims=True)).astype(np.float32)


def test_fixture_encoder_word_and_token_level():
    mask = S.encoder_word_content_mask(FIXTURE_WORD_IDS)
    np.testing.assert_array_equal(mask, [False, True, True, True, False])
    tokens = S.token_method_scores(FIXTURE_A, causal=False, content_mask=mask)
    assert set(tokens) == set(S.BASE_METHODS)
    for method, expected in FIXTURE_ENCODER_TOKENS.items():
        np.testing.assert_allclose(tokens[method][1:4], expected, atol=1e-5, rtol=0, err_msg=method)
    for method, expected in FIXTURE_ENCODER_WORDS.items():
        words = S.word_scores_from_tokens(tokens[method], FIXTURE_WORD_IDS, 2)
        np.testing.assert_allclose(words, expected, atol=1e-5, rtol=0, err_msg=method)


def test_fixture_causal_word_level():
    mask = S.causal_word_content_mask(FIXTURE_WORD_IDS, np.array([True, True]))
    tokens = S.token_method_scores(_fixture_causal_matrix(), causal=True, content_mask=mask)
    for method, expected in FIXTURE_CAUSAL_WORDS.items():
        words = S.word_scores_from_tokens(tokens[method], FIXTURE_WORD_IDS, 2)
        np.testing.assert_allclose(words, expected, atol=1e-5, rtol=0, err_msg=method)


@pytest.mark.parametrize("causal", [False, True])
def test_method_subsets_match_full_computation(causal):
    A = _fixture_causal_matrix() if causal else FIXTURE_A
    mask = np.array([False, True, True, True, False])
    full = S.token_method_scores(A, causal=causal, content_mask=mask)
    for method in S.BASE_METHODS:
        only = S.token_method_scores(A, causal=causal, content_mask=mask, methods=[method])
        assert list(only) == [method]
        np.testing.assert_array_equal(only[method], full[method])
        assert only[method].dtype == np.float32


# ============================================================================ names and argument checks
def test_method_names():
    assert len(S.ALL_METHODS) == 12 and len(set(S.ALL_METHODS)) == 12
    assert S.base_method("samrank") == ("samrank", False)
    assert S.base_method("fusion_attn_idf") == ("fusion_attn", True)
    for bad in ["samrank_IDF", "", "idf", None, 3, ["cls_attn"]]:
        with pytest.raises(InvalidArgumentError, match="cls_attn"):
            S.base_method(bad)


def test_token_method_scores_rejects_bad_arguments():
    mask = np.ones(5, dtype=bool)
    with pytest.raises(InvalidArgumentError):
        S.token_method_scores(FIXTURE_A, causal=False, content_mask=mask, methods=["samrank_idf"])
    with pytest.raises(InvalidArgumentError):
        S.token_method_scores(FIXTURE_A[:, :4], causal=False, content_mask=mask)
    with pytest.raises(InvalidArgumentError):
        S.token_method_scores(FIXTURE_A, causal=False, content_mask=mask[:4])
    # A single name is one method, not a sequence of characters.
    assert list(S.token_method_scores(FIXTURE_A, causal=False, content_mask=mask, methods="samrank")) == ["samrank"]


def test_empty_attention_gives_empty_scores():
    out = S.token_method_scores(np.zeros((0, 0), np.float32), causal=True, content_mask=np.zeros(0, bool))
    assert all(v.shape == (0,) and v.dtype == np.float32 for v in out.values())


def test_causal_epsilon_guards():
    """§3.2 guards: content sums <= 1e-10 are not renormalised (cls: no division; voted: divisor 1)."""
    tiny = 1e-12
    A = np.array(
        [
            [1.0, 0.0, 0.0, 0.0],  # no content mass at all
            [0.5, 0.5, 0.0, 0.0],
            [0.2, 0.3, 0.5, 0.0],
            [0.5, tiny, tiny, 0.5 - 2 * tiny],  # last row: content mass 2e-12
        ],
        dtype=np.float32,
    )
    mask = np.array([False, True, True, False])
    out = S.token_method_scores(A, causal=True, content_mask=mask)
    np.testing.assert_allclose(out["cls_attn"], [0.0, tiny, tiny, 0.0], atol=1e-15, rtol=1e-5)
    # Content-renormalised rows: row 1 -> [0, 1, 0, 0], row 2 -> [0, .375, .625, 0], row 3 keeps ~1e-12.
    np.testing.assert_allclose(out["voted_attn"], [0.0, 1.375 / 3, 0.625 / 2, 0.0], atol=1e-7, rtol=0)
    # Excess: rows 0 and 1 see at most one content token (m <= 1), row 3's mass is below the guard, so
    # only row 2 contributes: p = [.375, .625], m = 2.
    p = np.array([0.375, 0.625])
    certainty = 1 - (-(p * np.log(p)).sum()) / math.log(2)
    expected = 0.8 * certainty * (p - 0.5)
    np.testing.assert_allclose(out["excess_attn"], [0.0, expected[0], expected[1], 0.0], atol=1e-7, rtol=0)


def test_causal_word_content_mask():
    ids = np.array([-1, 0, 0, 1, 2, -1])
    valid = np.array([True, False, True])
    np.testing.assert_array_equal(S.causal_word_content_mask(ids, valid), [False, True, True, False, True, False])
    with pytest.raises(InvalidArgumentError):
        S.causal_word_content_mask(np.array([0, 3]), valid)


# ============================================================================ minmax
def test_minmax_edge_cases():
    empty = S.minmax(np.array([], dtype=np.float32))
    assert empty.shape == (0,) and empty.dtype == np.float32
    np.testing.assert_array_equal(S.minmax(np.full(4, 2.5, np.float32)), np.zeros(4))
    # Within math.isclose (rel_tol 1e-9) but not equal: zeros, as in 0.3.1.
    near = np.array([1.0, 1.0 + 1e-12, 1.0 + 5e-10])
    assert math.isclose(near.min(), near.max()) and near.min() != near.max()
    np.testing.assert_array_equal(S.minmax(near), np.zeros(3))
    # Just outside isclose: normal scaling.
    np.testing.assert_allclose(S.minmax(np.array([1.0, 1.0 + 1e-8])), [0.0, 1.0])
    np.testing.assert_allclose(S.minmax(np.array([3, 1, 2])), [1.0, 0.0, 0.5])
    out = S.minmax(np.array([-2.0, 0.0, 6.0], np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.25, 1.0])


def test_idf_hybrid():
    a = np.array([1.0, 3.0, 2.0], np.float32)
    b = np.array([0.0, 1.0, 4.0], np.float32)
    np.testing.assert_allclose(S.idf_hybrid(a, b), [0.0, 0.25, 0.5])
    np.testing.assert_array_equal(S.idf_hybrid(a, np.zeros(3)), np.zeros(3))  # constant tfidf wipes all scores
    with pytest.raises(InvalidArgumentError):
        S.idf_hybrid(a, b[:2])


# ============================================================================ fuse_layers
def test_fuse_layers_weights():
    layers = [{"samrank": np.array([1.0, 2.0], np.float32)}, {"samrank": np.array([3.0, 6.0], np.float32)}]
    np.testing.assert_allclose(S.fuse_layers(layers, None)["samrank"], [2.0, 4.0])
    np.testing.assert_allclose(S.fuse_layers(layers, [1, 3])["samrank"], [2.5, 5.0])
    np.testing.assert_allclose(S.fuse_layers(layers, [0, 2])["samrank"], [3.0, 6.0])
    assert S.fuse_layers(layers, [1, 3])["samrank"].dtype == np.float32


@pytest.mark.parametrize(
    "weights, message",
    [
        ([0, 0], "sum to zero"),
        ([1, -1], ">= 0"),
        ([1, float("nan")], "finite"),
        ([1, float("inf")], "finite"),
        ([1], "2 layers"),
        (["x", 1], "numbers"),
    ],
)
def test_fuse_layers_rejects_bad_weights(weights, message):
    layers = [{"cls_attn": np.ones(3, np.float32)}, {"cls_attn": np.zeros(3, np.float32)}]
    with pytest.raises(InvalidArgumentError, match=message) as info:
        S.fuse_layers(layers, weights)
    assert isinstance(info.value, ValueError)  # 0.3.1 callers catching ValueError keep working


def test_fuse_layers_rejects_mismatched_layers():
    with pytest.raises(InvalidArgumentError):
        S.fuse_layers([], None)
    with pytest.raises(InvalidArgumentError):
        S.fuse_layers([{"cls_attn": np.ones(3)}, {"samrank": np.ones(3)}], None)
    with pytest.raises(InvalidArgumentError):
        S.fuse_layers([{"cls_attn": np.ones(3)}, {"cls_attn": np.ones(4)}], None)


# ============================================================================ words, projection, spans
def test_word_scores_from_tokens():
    values = np.array([9.0, 1.0, 2.0, 4.0, 9.0], np.float32)
    ids = np.array([-1, 0, 0, 2, -1])
    np.testing.assert_allclose(S.word_scores_from_tokens(values, ids, 4), [1.5, 0.0, 4.0, 0.0])
    with pytest.raises(InvalidArgumentError):
        S.word_scores_from_tokens(values, np.array([-1, 0, 0, 4, -1]), 4)
    with pytest.raises(InvalidArgumentError):
        S.word_scores_from_tokens(values, ids[:4], 4)


def test_project_word_values_to_tokens_rules():
    # Words: "graph"[0,5) "neural"[6,12) "nets"[13,17). Values 1, 2, 3.
    words = np.array([[0, 5], [6, 12], [13, 17]])
    values = np.array([1.0, 2.0, 3.0], np.float32)
    tokens = np.array(
        [
            [0, 3],  # inside word 0
            [3, 8],  # 2 chars of word 0, 2 of word 1: tie, the earlier word wins
            [4, 9],  # 1 char of word 0, 3 of word 1: largest overlap wins
            [12, 13],  # only the gap between words: no overlap, value 0
            [11, 15],  # 1 char of word 1, 2 of word 2
            [17, 20],  # after the last word: 0
            [5, 5],  # empty token: 0
        ]
    )
    np.testing.assert_array_equal(S.project_word_values_to_tokens(words, tokens, values), [1, 1, 2, 0, 3, 0, 0])
    assert S.project_word_values_to_tokens(np.zeros((0, 2)), tokens, np.zeros(0)).tolist() == [0.0] * 7
    with pytest.raises(InvalidArgumentError):
        S.project_word_values_to_tokens(words, tokens, values[:2])


def test_span_mean_scores_rules():
    tokens = np.array([[0, 3], [3, 5], [6, 10], [10, 12]])
    scores = np.array([1.0, 2.0, 4.0, -8.0], np.float32)
    spans = np.array(
        [
            [0, 5],  # tokens 0 and 1
            [3, 6],  # token 1 only: token 0 ends at 3 (tok_end > span_start fails), token 2 starts at 6
            [4, 7],  # partial overlaps count fully: tokens 1 and 2
            [5, 6],  # the gap: no token, 0.0
            [0, 12],  # all four
            [20, 30],  # past the end
        ]
    )
    np.testing.assert_allclose(S.span_mean_scores(tokens, scores, spans), [1.5, 2.0, 3.0, 0.0, -0.25, 0.0])
    assert S.span_mean_scores(tokens, scores, np.zeros((0, 2))).shape == (0,)
    with pytest.raises(InvalidArgumentError):
        S.span_mean_scores(tokens, scores[:3], spans)


def test_blocked_paths_match_unblocked(monkeypatch):
    rng = np.random.default_rng(7)
    n = 37
    A = _random_attention(rng, n, causal=True)
    mask = rng.random(n) < 0.6
    offsets = np.sort(rng.integers(0, 200, size=(n, 2)), axis=1)
    spans = np.sort(rng.integers(0, 200, size=(23, 2)), axis=1)
    values = rng.random(23).astype(np.float32)
    token_scores = rng.random(n).astype(np.float32)
    expected = [
        S.token_method_scores(A, causal=True, content_mask=mask)["excess_attn"],
        S.token_method_scores(A, causal=False, content_mask=mask)["excess_attn"],
        S.project_word_values_to_tokens(spans, offsets, values),
        S.span_mean_scores(offsets, token_scores, spans),
    ]
    monkeypatch.setattr(S, "_BLOCK_ELEMENTS", 50)  # a few rows per block
    got = [
        S.token_method_scores(A, causal=True, content_mask=mask)["excess_attn"],
        S.token_method_scores(A, causal=False, content_mask=mask)["excess_attn"],
        S.project_word_values_to_tokens(spans, offsets, values),
        S.span_mean_scores(offsets, token_scores, spans),
    ]
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-6, rtol=0)


# ============================================================================ spec oracle + properties
def _random_attention(rng: np.random.Generator, n: int, *, causal: bool) -> np.ndarray:
    """Row-stochastic float32 map with peaky rows and some exact zeros (diagonal kept positive)."""
    A = rng.random((n, n)) ** 3
    A[rng.random((n, n)) < 0.15] = 0.0
    A[np.arange(n), np.arange(n)] += 0.05
    if causal:
        A = np.tril(A)
    return (A / A.sum(axis=1, keepdims=True)).astype(np.float32)


def _spec_oracle(A: np.ndarray, causal: bool, mask: np.ndarray) -> dict[str, np.ndarray]:
    """§3.1/§3.2 written as the spec's loops, in float64: an independent check of the vectorised code."""
    A = A.astype(np.float64)
    n = A.shape[0]
    received = A.sum(axis=0)
    samrank = received + np.array(
        [sum(A[i, j] * received[j] / (A[:, j].sum() * received[j] + 1e-10) for j in range(n)) for i in range(n)]
    )
    if causal:
        cls = A[n - 1].copy()
        cls[~mask] = 0
        if cls.sum() > 1e-10:
            cls /= cls.sum()
        B = A.copy()
        B[:, ~mask] = 0
        for i in range(n):
            s = B[i].sum()
            B[i] /= s if s > 1e-10 else 1.0
        voted = B.sum(axis=0) / (n - np.arange(n))
    else:
        cls = A[0].copy()
        voted = received / (n - np.arange(n))

    def mm(x):
        return np.zeros_like(x) if math.isclose(x.min(), x.max()) else (x - x.min()) / (x.max() - x.min())

    excess = np.zeros(n)
    for i in range(n):
        M = [j for j in range(i + 1 if causal else n) if mask[j]]
        m = len(M)
        if m <= 1:
            continue
        mass = A[i, M].sum()
        if mass <= 1e-10:
            continue
        p = A[i, M] / mass
        H = -(p * np.log(np.maximum(p, 1e-10))).sum()
        certainty = 0.0 if math.log(m) <= 1e-10 else max(0.0, 1 - H / math.log(m))
        excess[M] += mass * certainty * (p - 1 / m)
    return {
        "cls_attn": cls,
        "received_attn": received,
        "samrank": samrank,
        "fusion_attn": mm(cls) * mm(received),
        "voted_attn": voted,
        "excess_attn": excess,
    }


attention_cases = st.tuples(
    st.integers(min_value=1, max_value=24),  # n
    st.booleans(),  # causal
    st.integers(min_value=0, max_value=2**32 - 1),  # seed
    st.floats(min_value=0.0, max_value=1.0),  # share of content tokens
)


@settings(max_examples=60, deadline=None)
@given(attention_cases)
def test_properties_and_spec_oracle(case):
    n, causal, seed, content_share = case
    rng = np.random.default_rng(seed)
    A = _random_attention(rng, n, causal=causal)
    mask = rng.random(n) < content_share
    out = S.token_method_scores(A, causal=causal, content_mask=mask)
    for method, values in out.items():
        assert values.shape == (n,) and values.dtype == np.float32 and np.all(np.isfinite(values)), method
    # Row-stochastic A: received attention sums to n.
    assert out["received_attn"].sum() == pytest.approx(n, rel=1e-5)
    assert np.all((out["fusion_attn"] >= 0) & (out["fusion_attn"] <= 1))
    # Excess moves mass among content tokens only: zero elsewhere, zero in total.
    assert np.all(out["excess_attn"][~mask] == 0)
    assert abs(float(out["excess_attn"].sum(dtype=np.float64))) < 1e-5
    if causal:
        assert np.all(out["cls_attn"][~mask] == 0)
        if mask.any() and A[n - 1, mask].sum() > 1e-10:
            assert out["cls_attn"].sum() == pytest.approx(1.0, abs=1e-5)
    oracle = _spec_oracle(A, causal, mask)
    for method in S.BASE_METHODS:
        np.testing.assert_allclose(out[method], oracle[method], atol=1e-5, rtol=0, err_msg=method)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 40), st.integers(0, 12), st.integers(0, 2**32 - 1))
def test_word_scores_property(n_tokens, n_words, seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=n_tokens).astype(np.float32)
    ids = rng.integers(-1, n_words, size=n_tokens) if n_words else np.full(n_tokens, -1)
    got = S.word_scores_from_tokens(values, ids, n_words)
    assert got.shape == (n_words,) and got.dtype == np.float32
    for w in range(n_words):
        members = values[ids == w]
        assert got[w] == pytest.approx(float(members.mean()) if members.size else 0.0, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 15), st.integers(0, 15), st.integers(0, 2**32 - 1))
def test_projection_and_span_properties(n_words, n_tokens, seed):
    rng = np.random.default_rng(seed)
    words = np.sort(rng.integers(0, 40, size=(n_words, 2)), axis=1)
    tokens = np.sort(rng.integers(0, 40, size=(n_tokens, 2)), axis=1)
    values = rng.normal(size=n_words).astype(np.float32)
    projected = S.project_word_values_to_tokens(words, tokens, values)
    assert projected.shape == (n_tokens,)
    for t, (ts, te) in enumerate(tokens):
        best, best_overlap = 0.0, 0
        for w, (ws, we) in enumerate(words):
            overlap = min(te, we) - max(ts, ws)
            if overlap > best_overlap:  # strict: the earlier word keeps a tie
                best, best_overlap = values[w], overlap
        assert projected[t] == best
    scores = rng.normal(size=n_tokens).astype(np.float32)
    means = S.span_mean_scores(tokens, scores, words)
    assert means.shape == (n_words,)
    for w, (ws, we) in enumerate(words):
        hit = [scores[t] for t, (ts, te) in enumerate(tokens) if te > ws and ts < we]
        assert means[w] == pytest.approx(float(np.mean(hit)) if hit else 0.0, abs=1e-6)


# ============================================================================ parity with keyatten 0.3.1
# keyatten is run as a black box: its public scoring functions get a hand-built model bundle whose
# "session" (ONNX backend) or "model" (torch backend) returns our random attention maps, and a small
# WordPiece tokenizer ("a"/"b" letters, "##" continuations, "," and ".") built in memory.

_VOCAB = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4, "##a": 5, "b": 6, "##b": 7, ",": 8, ".": 9}


@pytest.fixture(scope="module")
def ka():
    pytest.importorskip("torch", reason="torch is needed to run keyatten 0.3.1 for parity")
    return pytest.importorskip("keyatten.scoring", reason="keyatten 0.3.1 is not installed")


def _tokenizer(with_specials: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordPiece(_VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if with_specials:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
    return tok


class _FakeSession:
    """Stands in for an onnxruntime session: returns the prepared [1, n, n] head-mean attention."""

    def __init__(self, attention: np.ndarray):
        self.attention = attention

    def get_outputs(self):
        return [types.SimpleNamespace(name="attentions")]

    def get_inputs(self):
        return [types.SimpleNamespace(name="input_ids"), types.SimpleNamespace(name="attention_mask")]

    def run(self, output_names, feeds):
        assert feeds["input_ids"].shape == (1, self.attention.shape[0])
        return [self.attention[None]]


class _FakeModel:
    """Stands in for a transformers model: returns per-layer [1, heads, n, n] attentions."""

    def __init__(self, layers_heads: list[np.ndarray]):
        self.layers_heads = layers_heads

    def __call__(self, *args, **kwargs):
        import torch

        assert kwargs["input_ids"].shape[1] == self.layers_heads[0].shape[-1]
        return types.SimpleNamespace(attentions=tuple(torch.from_numpy(h[None].copy()) for h in self.layers_heads))


def _bundle(causal: bool, **backend) -> dict:
    bundle = dict(
        backend="onnx",
        device="cpu",
        onnx_path="fake.onnx",
        model_dir=".",
        max_length=4096,
        layer_index=-1,
        detected_is_causal=causal,
        is_causal_override=None,
        is_causal=causal,
        attention_layer_count=1,
        recommended_layer_index=None,
    )
    bundle.update(backend)
    return bundle


def _random_words(rng: np.random.Generator, n_word_tokens: int) -> tuple[list[str], list[str]]:
    """Words of "a"/"b" letters (one token per letter) and "," words, with POS tags "n" or "x"."""
    words, tags = [], []
    left = n_word_tokens
    while left > 0:
        if rng.random() < 0.15:
            words.append(",")
            tags.append("x")
            left -= 1
            continue
        length = int(min(left, rng.integers(1, 5)))
        words.append("".join(rng.choice(["a", "b"], size=length)))
        tags.append("n" if rng.random() < 0.7 else "x")
        left -= length
    return words, tags


def _valid_words(words: list[str], tags: list[str]) -> np.ndarray:
    # §4.3 (Chinese rule, used with language="zh"): tag n*/v*/eng*, length > 1 unless tag == "eng", not all [\W_].
    return np.array(
        [
            bool(w.strip())
            and not re.fullmatch(r"[\W_]+", w)
            and t.startswith(("n", "eng", "v"))
            and (len(w) > 1 or t == "eng")
            for w, t in zip(words, tags)
        ],
        dtype=bool,
    )


def _word_ids(encoding) -> np.ndarray:
    return np.array([-1 if w is None else w for w in encoding.word_ids], dtype=np.int64)


def _assert_parity(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], label: str) -> None:
    for method in S.BASE_METHODS:
        a = np.asarray(ours[method], dtype=np.float64)
        b = np.asarray(theirs[method], dtype=np.float64)
        assert a.shape == b.shape, f"{label} {method}: shape {a.shape} vs {b.shape}"
        diff = float(np.abs(a - b).max()) if a.size else 0.0
        assert diff <= PARITY_TOL, f"{label} {method}: max abs diff {diff:.3g}"


PARITY_SIZES = [1, 2, 3, 50, 300]


@pytest.mark.parametrize("n", PARITY_SIZES)
@pytest.mark.parametrize("causal", [False, True])
def test_word_path_parity_with_keyatten(ka, n, causal):
    for seed in range(2):
        rng = np.random.default_rng(1000 * n + 10 * seed + causal)
        with_specials = n >= 3
        tok = _tokenizer(with_specials)
        words, tags = _random_words(rng, n - 2 if with_specials else n)
        encoding = tok.encode_batch([words], is_pretokenized=True)[0]
        assert len(encoding.ids) == n
        A = _random_attention(rng, n, causal=causal)
        theirs = ka.attention_word_scores(
            words,
            _bundle(causal, tokenizer=tok, session=_FakeSession(A)),
            layer_index=-1,
            pos_tags=tags,
            language="zh",
            instruction_prefix="",
        )
        ids = _word_ids(encoding)
        if causal:
            mask = S.causal_word_content_mask(ids, _valid_words(words, tags))
        else:
            mask = S.encoder_word_content_mask(ids)
        tokens = S.token_method_scores(A, causal=causal, content_mask=mask)
        ours = {m: S.word_scores_from_tokens(v, ids, len(words)) for m, v in tokens.items()}
        _assert_parity(ours, theirs, f"word path n={n} causal={causal} seed={seed}")


def _random_text(rng: np.random.Generator, n_tokens: int) -> str:
    pieces, left = [], n_tokens
    while left > 0:
        if rng.random() < 0.25:
            pieces.append(str(rng.choice([",", "."])))
            left -= 1
        else:
            length = int(min(left, rng.integers(1, 5)))
            pieces.append("".join(rng.choice(["a", "b"], size=length)))
            left -= length
    return " ".join(pieces)


@pytest.mark.parametrize("n", PARITY_SIZES)
@pytest.mark.parametrize("causal", [False, True])
def test_token_path_parity_with_keyatten(ka, n, causal):
    """Token path: the content mask is the kept text tokens (punctuation and specials are not content)."""
    for seed in range(2):
        rng = np.random.default_rng(7000 * n + 10 * seed + causal)
        with_specials = n >= 3
        tok = _tokenizer(with_specials)
        text = _random_text(rng, n - 2 if with_specials else n)
        encoding = tok.encode(text)
        assert len(encoding.ids) == n
        A = _random_attention(rng, n, causal=causal)
        theirs, their_offsets = ka.attention_token_scores(
            text, _bundle(causal, tokenizer=tok, session=_FakeSession(A)), layer_index=-1, language="en"
        )
        kept = np.array(
            [e > s and re.search(r"[^\W_]", text[s:e]) is not None for s, e in encoding.offsets], dtype=bool
        )
        assert [tuple(o) for o in np.array(encoding.offsets)[kept].tolist()] == [tuple(o) for o in their_offsets]
        tokens = S.token_method_scores(A, causal=causal, content_mask=kept)
        _assert_parity({m: v[kept] for m, v in tokens.items()}, theirs, f"token path n={n} causal={causal} seed={seed}")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layer_indices, weights", [([0, 2], [1.0, 3.0]), ([-1, 0, 1], None), ([1], None)])
def test_multi_layer_fusion_parity_with_keyatten(ka, causal, layer_indices, weights):
    from transformers import PreTrainedTokenizerFast

    rng = np.random.default_rng(42 + causal)
    tok = _tokenizer(True)
    words, tags = _random_words(rng, 40)
    encoding = tok.encode_batch([words], is_pretokenized=True)[0]
    n = len(encoding.ids)
    heads = [np.stack([_random_attention(rng, n, causal=causal) for _ in range(3)]) for _ in range(3)]
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    bundle = _bundle(causal, backend="torch", tokenizer=hf, model=_FakeModel(heads), attention_layer_count=3)
    theirs = ka.attention_word_scores(
        words,
        bundle,
        layer_indices=layer_indices,
        layer_weights=weights,
        pos_tags=tags,
        language="zh",
        instruction_prefix="",
    )
    ids = _word_ids(encoding)
    mask = S.causal_word_content_mask(ids, _valid_words(words, tags)) if causal else S.encoder_word_content_mask(ids)
    per_layer = []
    for layer in layer_indices:
        A = heads[layer].mean(axis=0, dtype=np.float32)  # what the exported graph's head mean provides
        tokens = S.token_method_scores(A, causal=causal, content_mask=mask)
        per_layer.append({m: S.word_scores_from_tokens(v, ids, len(words)) for m, v in tokens.items()})
    _assert_parity(S.fuse_layers(per_layer, weights), theirs, f"fusion layers={layer_indices} causal={causal}")


def test_minmax_parity_with_keyatten(ka):
    rng = np.random.default_rng(3)
    cases = [
        np.array([], np.float32),
        np.full(5, 0.3, np.float32),
        np.array([1.0, 1.0 + 1e-12]),
        np.array([1.0, 1.0 + 1e-8]),
        np.array([4, 1, 2]),
    ] + [rng.normal(size=int(rng.integers(1, 50))).astype(np.float32) for _ in range(20)]
    for x in cases:
        theirs = ka.normalize_array(x.copy())
        ours = S.minmax(x)
        assert ours.dtype == np.float32 and ours.shape == x.shape
        np.testing.assert_allclose(ours, theirs, atol=1e-7, rtol=0)
