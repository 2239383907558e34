"""KeyAttenExtractor on the default bundles: API behaviour, batching, IDF, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import read_jsonl
from keyatten_lite import InvalidArgumentError, KeyAttenExtractor, WordWeight
from keyatten_lite.scoring.attention import ALL_METHODS, BASE_METHODS

EN_TEXT = (
    "Graph neural networks learn representations of nodes from the structure of graph data. "
    "Message passing between neighbouring nodes lets the network aggregate local structure."
)
ZH_TEXT = "自然语言处理是人工智能的重要方向，深度学习模型在自然语言处理任务中表现出色。"


@pytest.fixture(scope="module")
def en(en_bundle):
    return KeyAttenExtractor(profile="compat", model=en_bundle, language="en", intra_op_threads=1)


@pytest.fixture(scope="module")
def zh(zh_bundle):
    return KeyAttenExtractor(profile="compat", model=zh_bundle, language="zh", intra_op_threads=1)


def test_keywords_are_candidates_ranked_by_descending_score(en):
    pairs = en.extract_keywords(EN_TEXT, method="received_attn", top_k=8, with_scores=True)
    assert 0 < len(pairs) <= 8
    scores = [s for _, s in pairs]
    assert scores == sorted(scores, reverse=True)
    assert all(math.isfinite(s) for s in scores)
    candidates = set(en.candidate_phrases(EN_TEXT))
    assert {p for p, _ in pairs} <= candidates
    assert en.extract_keywords(EN_TEXT, method="received_attn", top_k=8) == [p for p, _ in pairs]


def test_chinese_example_from_the_issue(zh):
    keywords = zh.extract_keywords("自然语言处理是人工智能的重要方向", top_k=10)
    # §4.12: the only candidates are 处理, 人工智能 and 方向 (自然语言 is tagged l).
    assert sorted(keywords) == sorted(["处理", "人工智能", "方向"])


@pytest.mark.parametrize("method", BASE_METHODS)
def test_every_base_method_ranks_all_candidates(en, method):
    ranked = en.extract_keywords(EN_TEXT, method=method, top_k=1000, with_scores=True)
    assert len(ranked) == len(en.candidate_phrases(EN_TEXT))


def test_idf_methods_need_idf_before_any_forward_pass(en_bundle, monkeypatch):
    ex = KeyAttenExtractor(profile="compat", model=en_bundle, language="en")
    with pytest.raises(InvalidArgumentError, match="IDF"):
        ex.extract_keywords(EN_TEXT, method="samrank_idf")
    assert not ex.resources.bundle_loaded, "the model must not be loaded just to fail"


def test_idf_methods_use_the_fitted_state_and_an_explicit_lookup(en):
    docs = [d["text"] for d in read_jsonl("en/inspec.jsonl", limit=30)]
    lookup = en.fit_idf(docs)
    assert lookup == en.idf_lookup
    fitted = en.extract_keywords(EN_TEXT, method="samrank_idf", with_scores=True)
    explicit = en.extract_keywords(EN_TEXT, method="samrank_idf", idf_lookup=dict(lookup), with_scores=True)
    assert fitted == explicit
    plain = en.extract_keywords(EN_TEXT, method="samrank", with_scores=True)
    assert [p for p, _ in fitted] != [p for p, _ in plain] or [s for _, s in fitted] != [s for _, s in plain]


def test_batch_equals_single_documents(en):
    docs = [d["text"] for d in read_jsonl("en/inspec.jsonl", limit=12)]
    en.fit_idf(docs)
    for method in ("received_attn", "fusion_attn_idf", "excess_attn"):
        batch = en.extract_keywords_batch(docs, method=method, top_k=10, batch_size=5, with_scores=True)
        single = [en.extract_keywords(d, method=method, top_k=10, with_scores=True) for d in docs]
        for b, s in zip(batch, single):
            assert [p for p, _ in b] == [p for p, _ in s] or _same_sets_within(b, s)
            np.testing.assert_allclose([x for _, x in b], [x for _, x in s], atol=1e-5)


def _same_sets_within(a, b):
    return sorted(p for p, _ in a) == sorted(p for p, _ in b)


def test_chinese_batch_equals_single_documents(zh):
    docs = [d["text"] for d in read_jsonl("zh/csl_dev.jsonl", limit=6)]
    batch = zh.extract_keywords_batch(docs, method="samrank", batch_size=4, with_scores=True)
    single = [zh.extract_keywords(d, method="samrank", with_scores=True) for d in docs]
    for b, s in zip(batch, single):
        np.testing.assert_allclose([x for _, x in b], [x for _, x in s], atol=1e-5)


def test_word_weights_cover_every_word_in_order(en):
    weights = en.extract_word_weights(EN_TEXT, method="cls_attn")
    words, tags = en.segment(EN_TEXT)
    assert [w.word for w in weights] == words
    assert [w.index for w in weights] == list(range(len(words)))
    assert all(isinstance(w, WordWeight) and w.pos_tag == "eng" for w in weights)
    with pytest.raises(InvalidArgumentError, match="word-weight"):
        en.extract_word_weights(EN_TEXT, method="cls_attn_idf")


def test_token_list_input_and_pos_tags(zh):
    tokens = ["深度", "学习", "模型", "表现", "出色"]
    result = zh.extract_keywords(tokens, method="received_attn", top_k=3, pos_tags=["n", "v", "n", "v", "a"])
    assert result and set(result) <= {"深度", "深度学习", "深度学习模型", "学习", "学习模型", "模型", "表现", "模型表现",
                                      "学习模型表现", "深度学习模型表现"}
    with pytest.raises(InvalidArgumentError, match="pos_tags"):
        zh.extract_keywords(tokens, pos_tags=["n"])
    with pytest.raises(InvalidArgumentError, match="blank"):
        zh.extract_keywords(["深度", "  "])


def test_nested_dedup_removes_sub_and_super_phrases(en_bundle):
    ex = KeyAttenExtractor(profile="compat", model=en_bundle, language="en", dedup_nested=True)
    from keyatten_lite.text.normalize import normalize_phrase

    keys = [normalize_phrase(p) for p in ex.extract_keywords(EN_TEXT, top_k=10)]
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert a not in b and b not in a


def test_empty_and_blank_text_give_no_keywords(en):
    assert en.extract_keywords("") == []
    assert en.extract_keywords("   \n\t ") == []
    assert en.extract_keywords_batch(["", EN_TEXT, "123 456"])[0] == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"language": "fr"}, "language"),
        ({"layer_indices": []}, "layer_indices"),
        ({"layer_weights": [1.0]}, "layer_indices"),
        ({"layer_indices": [0, 1], "layer_weights": [1.0]}, "entries"),
        ({"layer_indices": [0, 1], "layer_weights": [0.0, 0.0]}, "sum"),
        ({"layer_indices": [0, 1], "layer_weights": [1.0, -1.0]}, "non-negative"),
        ({"backend": "torch"}, "onnxruntime"),
        ({"backend": "tensorflow"}, "backend"),
        ({"candidate_scoring": "magic"}, "candidate_scoring"),
        ({"dtype": "bfloat16"}, "dtype"),
        ({"device": "tpu"}, "device"),
        ({"layer_index": 1.5}, "layer_index"),
    ],
)
def test_constructor_rejects_bad_arguments(en_bundle, kwargs, match):
    kwargs = {"model": en_bundle, "language": "en", **kwargs}
    with pytest.raises(InvalidArgumentError, match=match):
        KeyAttenExtractor(**kwargs)


@pytest.mark.parametrize("top_k", [0, -3, True, 2.0, "5"])
def test_top_k_is_validated(en, top_k):
    with pytest.raises(InvalidArgumentError, match="top_k"):
        en.extract_keywords(EN_TEXT, top_k=top_k)


@pytest.mark.parametrize("method", ["", "received", "RECEIVED_ATTN", None, 3])
def test_unknown_methods_are_rejected(en, method):
    with pytest.raises(InvalidArgumentError):
        en.extract_keywords(EN_TEXT, method=method)


@pytest.mark.parametrize("bad", [None, 42, b"bytes", 3.5])
def test_wrong_text_types_are_rejected(en, bad):
    with pytest.raises(InvalidArgumentError):
        en.extract_keywords(bad)


def test_layer_out_of_range_names_the_available_layers(en_bundle):
    ex = KeyAttenExtractor(profile="compat", model=en_bundle, language="en", layer_index=40)
    with pytest.raises(InvalidArgumentError, match="40"):
        ex.extract_keywords(EN_TEXT)


def test_multi_layer_fusion_is_the_weighted_mean_of_single_layers(en_bundle):
    single = [KeyAttenExtractor(profile="compat", model=en_bundle, language="en", layer_index=i) for i in (2, 5)]
    fused = KeyAttenExtractor(profile="compat", model=en_bundle, language="en", layer_indices=[2, 5], layer_weights=[1.0, 3.0])
    w = [ex.extract_word_weights(EN_TEXT, method="received_attn") for ex in single]
    f = fused.extract_word_weights(EN_TEXT, method="received_attn")
    expected = (np.array([x.weight for x in w[0]]) * 1 + np.array([x.weight for x in w[1]]) * 3) / 4
    np.testing.assert_allclose([x.weight for x in f], expected, rtol=1e-5, atol=1e-6)


def test_all_twelve_method_names_are_accepted(en):
    en.fit_idf([EN_TEXT])
    for method in ALL_METHODS:
        assert en.extract_keywords(EN_TEXT, method=method, top_k=3)


# ---------------------------------------------------------------------- default profile routing
def test_default_profile_is_what_users_get(en_bundle):
    from keyatten_lite.pipeline import compat, default
    from keyatten_lite.pipeline.inputs import raw_reading_text
    from keyatten_lite.pipeline.stages import run_stages

    ex = KeyAttenExtractor(model=en_bundle, language="en")
    assert ex.profile == "default"
    assert ex.pipeline.stages_for([EN_TEXT]) is default.RAW_TEXT
    assert ex.pipeline.stages_for([["graph", "data"]]) is compat.WORDS  # token lists keep 0.3.1's stages
    ours = ex.extract_keywords(EN_TEXT, method="samrank", top_k=8, with_scores=True)
    reading = raw_reading_text(EN_TEXT, ex.max_chars)
    direct = run_stages(default.RAW_TEXT, ex.resources, [reading], ["samrank"], 8, None, 16)["samrank"][0]
    assert ours == direct
    compat = KeyAttenExtractor(model=en_bundle, language="en", profile="compat")
    assert ours != compat.extract_keywords(EN_TEXT, method="samrank", top_k=8, with_scores=True)


def test_default_profile_candidates_never_cross_punctuation(en_bundle):
    ex = KeyAttenExtractor(model=en_bundle, language="en")
    text = "We study wavelength services. Wavelength services, however, differ; optical networks matter."
    for phrase in ex.extract_keywords(text, method="received_attn", top_k=20):
        assert phrase in text, phrase  # contiguous in the source, so no punctuation inside


def test_default_profile_idf_is_counted_with_its_own_words(en_bundle):
    docs = [d["text"] for d in read_jsonl("en/inspec.jsonl", limit=20)]
    ex = KeyAttenExtractor(model=en_bundle, language="en")
    ex.fit_idf(docs)
    ranked = ex.extract_keywords(docs[0], method="samrank_idf", top_k=10, with_scores=True)
    assert len(ranked) == 10 and [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)


def test_token_lists_and_token_span_use_the_compat_pipeline(en_bundle):
    tokens = ["graph", "neural", "networks", "learn", "structure"]
    default = KeyAttenExtractor(model=en_bundle, language="en")
    compat = KeyAttenExtractor(model=en_bundle, language="en", profile="compat")
    assert default.extract_keywords(tokens, top_k=5, with_scores=True) == compat.extract_keywords(
        tokens, top_k=5, with_scores=True
    )


def test_blank_text_does_not_open_the_bundle(tmp_path):
    ex = KeyAttenExtractor(model=tmp_path / "missing-bundle", language="en")
    assert ex.extract_keywords_batch(["", "  \n"]) == [[], []]
    assert not ex.resources.bundle_loaded


def test_unknown_profile_is_rejected(en_bundle):
    with pytest.raises(InvalidArgumentError, match="profile"):
        KeyAttenExtractor(model=en_bundle, language="en", profile="best")
