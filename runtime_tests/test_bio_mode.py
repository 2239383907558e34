"""``KeyAttenExtractor(candidate_scoring="bio")`` (keyatten 0.3.1 §4.8, bugs fixed in the default profile).

On a tiny random BERT exported twice (a BIO bundle and a plain attention bundle from the same files), the
ranked spans and scores are checked against a reference computed from transformers' own attention with
plain loops; then the fixes (no word-candidate gate, maximum from -inf, windows), one forward pass when
the backbone is shared, batch = single, and the errors. The trained bundles, when built, on real text.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from keyatten_lite.scoring.bio import BIOAnalysis, WindowTokens, bio_span_scores, find_occurrences, occurrence_scores
from keyatten_lite.errors import BundleError, BundleNotFoundError, InvalidArgumentError

# ----------------------------------------------------------------------------------------- pure parts


def test_find_occurrences_overlapping_and_case():
    assert find_occurrences("aaaa", "aa").tolist() == [[0, 2], [1, 3], [2, 4]]  # find(idx + 1), as 0.3.1
    assert find_occurrences("Graph graph", "graph").tolist() == [[6, 11]]
    assert find_occurrences("Graph graph", "graph", ignore_case=True).tolist() == [[0, 5], [6, 11]]
    assert find_occurrences("abc", "").shape == (0, 2)


def test_occurrence_scores_compat_first_window_and_default_window_mean():
    first = WindowTokens(np.array([[0, 2], [3, 5], [6, 8]]))
    second = WindowTokens(np.array([[6, 8], [9, 11]]))
    values = [np.array([1.0, 2.0, 3.0]), np.array([5.0, 7.0])]
    spans = np.array([[0, 5], [6, 8], [9, 11], [20, 22]])
    # compat: first window only, 0 without tokens.
    np.testing.assert_allclose(occurrence_scores([first, second], values, spans, compat=True), [1.5, 3.0, 0.0, 0.0])
    got = occurrence_scores([first, second], values, spans, compat=False)
    np.testing.assert_allclose(got[:3], [1.5, (3.0 + 5.0) / 2, 7.0])  # [6,8) is read by both windows
    assert np.isnan(got[3])


def test_span_scores_floor_at_zero_only_in_compat():
    analysis = BIOAnalysis("ab ab cd", [("ab", 0.9), ("cd", 0.8), ("zz", 0.1)], [WindowTokens(np.array([[0, 2], [3, 5], [6, 8]]))], [0])
    values = [np.array([-1.0, -3.0, 2.0])]
    np.testing.assert_allclose(bio_span_scores(analysis, values, compat=True), [0.0, 2.0, 0.0])
    default = bio_span_scores(analysis, values, compat=False)
    assert default[0] == -1.0 and default[1] == 2.0 and default[2] == -np.inf


# ------------------------------------------------------------------------------- tiny bundles


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("onnx")
    from test_bio import make_tiny_bert, tiny_head

    from keyatten_lite_export.bio import export_bio_bundle
    from keyatten_lite_export.encoder import export_bundle

    root = tmp_path_factory.mktemp("bio-mode")
    model_dir = make_tiny_bert(root / "tiny-bert")
    head = tiny_head()
    bio_dir = root / "bio-tiny"
    export_bio_bundle(model_dir, bio_dir, head, name="bio-tiny", extra_manifest={"language": "en"})
    attention_dir = root / "tiny-attention"
    export_bundle(model_dir, attention_dir, name="tiny-attention")
    # Same graph files, but a manifest that claims another source: the extractor must use two sessions.
    foreign = root / "foreign-attention"
    shutil.copytree(attention_dir, foreign)
    manifest = json.loads((foreign / "bundle.json").read_text())
    manifest["source"]["model_id"] = "someone-else"
    (foreign / "bundle.json").write_text(json.dumps(manifest))
    # CRF scores that tag every token B: every token is a span (bundle.json is not checksummed).
    all_b = root / "bio-all-b"
    shutil.copytree(bio_dir, all_b)
    manifest = json.loads((all_b / "bundle.json").read_text())
    manifest["bio"]["start"] = [100.0, 0.0, 0.0]
    manifest["bio"]["end"] = [100.0, 0.0, 0.0]
    manifest["bio"]["transitions"] = [[100.0, 0.0, 0.0]] * 3
    (all_b / "bundle.json").write_text(json.dumps(manifest))
    return {"model_dir": model_dir, "head": head, "bio": bio_dir, "attention": attention_dir, "foreign": foreign, "all_b": all_b}


def extractor(tiny, bio="bio", model="attention", **options):
    from keyatten_lite import KeyAttenExtractor

    return KeyAttenExtractor(model=tiny[model], language="en", candidate_scoring="bio", bio_model_path=tiny[bio], **options)


_NON_WORD = re.compile(r"[\W_]+")


def reference_ranking(tiny, bio: str, text: str, method: str, *, compat: bool) -> dict[str, float]:
    """§4.8 by hand for a one-window text: torch attention (last layer), kept tokens, every occurrence."""
    import torch
    from tokenizers import Tokenizer
    from transformers import BertModel

    from keyatten_lite.scoring import attention as scoring
    from keyatten_lite.extractors.bio_tagger import BIOExtractor

    spans = BIOExtractor(tiny[bio]).extract_spans(text)
    tokenizer = Tokenizer.from_file(str(tiny["model_dir"] / "tokenizer.json"))
    encoding = tokenizer.encode(text)
    assert len(encoding.ids) < 100  # one window
    model = BertModel.from_pretrained(str(tiny["model_dir"]), attn_implementation="eager").eval()
    ids = torch.tensor([encoding.ids])
    with torch.no_grad():
        attention = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True).attentions[-1]
    A = attention.mean(dim=1)[0].numpy()
    kept = np.array([b > a and bool(text[a:b].strip()) and not _NON_WORD.fullmatch(text[a:b].strip()) for a, b in encoding.offsets])
    token_scores = scoring.token_method_scores(A, causal=False, content_mask=kept, methods=[method])[method]
    out = {}
    for span in spans:
        best = 0.0 if compat else float("-inf")
        start = text.find(span)
        while start >= 0:
            end = start + len(span)
            values = [token_scores[t] for t, (a, b) in enumerate(encoding.offsets) if kept[t] and b > start and a < end]
            if values or compat:
                best = max(best, float(np.mean(values)) if values else 0.0)
            start = text.find(span, start + 1)
        out[span] = best
    return out


TEXTS = [
    "graph neural networks learn representations of nodes",
    "keyword extraction ranks words by attention",
    "the transformer encoder attends over every token pair",
]


@pytest.mark.parametrize("profile", ["compat", "default"])
@pytest.mark.parametrize("method", ["samrank", "received_attn", "excess_attn"])
def test_scores_match_a_hand_reference(tiny, profile, method):
    ex = extractor(tiny, bio="all_b", profile=profile)
    for text in TEXTS:
        expected = reference_ranking(tiny, "all_b", text, method, compat=profile == "compat")
        got = dict(ex.extract_keywords(text, method=method, top_k=1000, with_scores=True))
        assert set(got) == {s for s, v in expected.items() if np.isfinite(v)}
        for span, score in got.items():
            assert score == pytest.approx(expected[span], abs=1e-4)
        ranked = ex.extract_keywords(text, method=method, top_k=1000, with_scores=True)
        assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)


def test_compat_floors_negative_scores_and_default_keeps_them(tiny):
    text = TEXTS[0]
    compat = dict(extractor(tiny, bio="all_b", profile="compat").extract_keywords(text, method="excess_attn", top_k=1000, with_scores=True))
    default = dict(extractor(tiny, bio="all_b").extract_keywords(text, method="excess_attn", top_k=1000, with_scores=True))
    assert min(default.values()) < 0  # excess_attn goes negative on some tokens
    assert set(compat) == set(default)
    for span, score in default.items():
        assert compat[span] == pytest.approx(max(score, 0.0), abs=1e-6)


def test_default_does_not_need_word_candidates(tiny):
    text = "the 42 of 7 x"  # stop words, digits and one letter: no word candidate at all
    assert extractor(tiny, bio="all_b", profile="compat").extract_keywords(text, method="samrank") == []
    got = extractor(tiny, bio="all_b").extract_keywords(text, method="samrank", top_k=10)
    assert {"42", "7"} <= set(got)


def test_long_texts_are_scored_in_every_window(tiny):
    text = " ".join(TEXTS * 6) + " quantum zebra"
    ex = extractor(tiny, bio="all_b")
    assert ex.resources.bio().run(text).n_windows > 1
    default = dict(ex.extract_keywords(text, method="samrank", top_k=1000, with_scores=True))
    compat = dict(extractor(tiny, bio="all_b", profile="compat").extract_keywords(text, method="samrank", top_k=1000, with_scores=True))
    tail = [s for s in default if s in "quantum zebra"]
    assert tail, default
    for span in tail:  # only the last window reads the tail: compat has no token for it and floors at 0
        assert compat[span] == 0.0 and default[span] > 0.0


def test_one_forward_pass_when_the_backbone_is_shared(tiny, monkeypatch):
    from keyatten_lite.model.bundle import Bundle

    calls = []
    run_outputs = Bundle.run_outputs
    run_attention = Bundle.run_attention
    monkeypatch.setattr(Bundle, "run_outputs", lambda self, *a, **k: calls.append((self.name, "outputs")) or run_outputs(self, *a, **k))
    monkeypatch.setattr(Bundle, "run_attention", lambda self, *a, **k: calls.append((self.name, "attention")) or run_attention(self, *a, **k))
    shared = extractor(tiny)
    got_shared = shared.extract_keywords(TEXTS[0], method="samrank", top_k=20, with_scores=True)
    assert shared.resources.bio_shared and calls == [("bio-tiny", "outputs")]
    assert shared.bundle is shared.resources.bio().bundle
    calls.clear()
    separate = extractor(tiny, model="foreign")
    got_separate = separate.extract_keywords(TEXTS[0], method="samrank", top_k=20, with_scores=True)
    assert not separate.resources.bio_shared
    assert sorted(calls) == [("bio-tiny", "outputs"), ("tiny-attention", "outputs")]
    # Same weights in both graphs: the same ranking.
    assert [p for p, _ in got_shared] == [p for p, _ in got_separate]
    np.testing.assert_allclose([s for _, s in got_shared], [s for _, s in got_separate], atol=1e-5)
    # No model at all: the BIO bundle's attention (same result), with the default bundle not needed.
    from keyatten_lite import KeyAttenExtractor

    own = KeyAttenExtractor(model=tiny["bio"], language="en", candidate_scoring="bio", bio_model_path=tiny["bio"])
    assert own.extract_keywords(TEXTS[0], method="samrank", top_k=20) == [p for p, _ in got_shared]


@pytest.mark.parametrize("profile", ["compat", "default"])
def test_batch_equals_single_and_idf(tiny, profile):
    ex = extractor(tiny, bio="all_b", profile=profile)
    texts = TEXTS + ["", "   ", "Graph Neural networks, GRAPH neural networks."]
    ex.fit_idf(texts)
    for method in ("samrank", "cls_attn_idf", "received_attn_idf", "bio_confidence", "bio_order"):
        batch = ex.extract_keywords_batch(texts, method=method, top_k=7, batch_size=2, with_scores=True)
        single = [ex.extract_keywords(t, method=method, top_k=7, with_scores=True) for t in texts]
        assert [[p for p, _ in r] for r in batch] == [[p for p, _ in r] for r in single]
        for b, s in zip(batch, single):
            np.testing.assert_allclose([x for _, x in b], [x for _, x in s], atol=1e-5)
        assert batch[3] == batch[4] == []
        assert all(p.lower() in t.lower() for r, t in zip(batch, texts) for p, _ in r)


def test_bio_alone_methods(tiny):
    from keyatten_lite.extractors.bio_tagger import BIOExtractor

    ex = extractor(tiny)
    text = " ".join(TEXTS)
    spans = BIOExtractor(tiny["bio"]).extract_spans(text)
    assert spans
    assert ex.extract_keywords(text, method="bio_order", top_k=100) == spans
    confident = ex.extract_keywords(text, method="bio_confidence", top_k=100, with_scores=True)
    assert sorted(p for p, _ in confident) == sorted(spans)
    assert [s for _, s in confident] == sorted((s for _, s in confident), reverse=True)
    assert all(0.0 < s <= 1.0 for _, s in confident)


def test_bad_input(tiny, tmp_path):
    from keyatten_lite import KeyAttenExtractor

    with pytest.raises(InvalidArgumentError, match="bio_model_path"):
        KeyAttenExtractor(language="en", candidate_scoring="bio")
    with pytest.raises(BundleNotFoundError):
        KeyAttenExtractor(language="en", candidate_scoring="bio", bio_model_path=str(tmp_path / "missing"))
    with pytest.raises(BundleNotFoundError, match="models build"):
        KeyAttenExtractor(language="en", candidate_scoring="bio", bio_model_path="no-such-bio-bundle")
    with pytest.raises(InvalidArgumentError, match="pickle"):
        KeyAttenExtractor(language="en", candidate_scoring="bio", bio_model_path="models/bio_model_full.pt")
    with pytest.raises(InvalidArgumentError):
        KeyAttenExtractor(language="en", candidate_scoring="bio", bio_model_path=42)
    ex = extractor(tiny)
    assert ex.extract_keywords("", method="samrank") == []
    assert ex.extract_keywords_batch([], method="samrank") == []
    with pytest.raises(InvalidArgumentError, match="raw str"):
        ex.extract_keywords(["graph", "neural"], method="samrank")
    with pytest.raises(InvalidArgumentError, match="top_k"):
        ex.extract_keywords(TEXTS[0], top_k=0)
    with pytest.raises(InvalidArgumentError, match="unknown method"):
        ex.extract_keywords(TEXTS[0], method="bio")
    with pytest.raises(InvalidArgumentError, match="IDF"):
        ex.extract_keywords(TEXTS[0], method="samrank_idf")
    word_mode = KeyAttenExtractor(model=tiny["attention"], language="en")
    with pytest.raises(InvalidArgumentError, match="candidate_scoring='bio'"):
        word_mode.extract_keywords(TEXTS[0], method="bio_confidence")
    # An attention bundle given as the BIO bundle: refused when first used.
    not_bio = KeyAttenExtractor(model=tiny["attention"], language="en", candidate_scoring="bio", bio_model_path=tiny["attention"])
    with pytest.raises(BundleError, match="not a BIO bundle"):
        not_bio.extract_keywords(TEXTS[0], method="samrank")


# --------------------------------------------------------------------------- trained bundles


@pytest.mark.slow
@pytest.mark.parametrize("bio_name,attention,language,data", [
    ("bio-minilm-en", "minilm-l6-en", "en", "en/inspec.jsonl"),
    ("bio-e5-small-zh", "e5-small-zh", "zh", "zh/csl_test.jsonl"),
])
def test_trained_bundles_on_real_text(bio_name, attention, language, data):
    from conftest import default_bundle_path, read_jsonl

    from keyatten_lite import KeyAttenExtractor

    default_bundle_path(bio_name)
    default_bundle_path(attention)
    docs = read_jsonl(data, limit=6)
    texts = [d["text"] for d in docs]
    ex = KeyAttenExtractor(language=language, candidate_scoring="bio", bio_model_path=bio_name)
    ex.fit_idf(texts)
    batch = ex.extract_keywords_batch(texts, method="samrank_idf", top_k=10, with_scores=True)
    assert ex.resources.bio_shared  # the default attention bundle and the BIO bundle share the backbone
    assert sum(len(r) for r in batch) >= 10
    for text, ranked in zip(texts, batch):
        assert all(p.lower() in text.lower() for p, _ in ranked)
        single = ex.extract_keywords(text, method="samrank_idf", top_k=10, with_scores=True)
        assert [p for p, _ in ranked] == [p for p, _ in single]  # padding moves scores by ~1e-8 only
        np.testing.assert_allclose([s for _, s in ranked], [s for _, s in single], atol=1e-5)
    alone = ex.extract_keywords_batch(texts, method="bio_confidence", top_k=1000)
    assert all(set(p for p, _ in r) <= set(a) for r, a in zip(batch, alone))  # same candidates, other order


def test_lite_bio_eval_systems_share_one_pass(tiny, monkeypatch, tmp_path):
    from keyatten_lite.evaluation.baselines import RunContext, build_system
    from keyatten_lite.model.bundle import Bundle
    from keyatten_lite.evaluation.metrics import Document

    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(tmp_path))  # no default bundle: the BIO graph's attention
    system = build_system(f"lite-bio:{tiny['bio']}:samrank_idf:compat", RunContext())
    assert (system.method, system.profile, system.uses_idf) == ("samrank_idf", "compat", True)
    with pytest.raises(InvalidArgumentError):
        build_system(f"lite-bio:{tiny['bio']}:nonsense", RunContext()).check_available()
    docs = [Document(str(i), "en", text) for i, text in enumerate(TEXTS)]
    calls = []
    run_outputs = Bundle.run_outputs
    monkeypatch.setattr(Bundle, "run_outputs", lambda self, *a, **k: calls.append(1) or run_outputs(self, *a, **k))
    results = {}
    context = RunContext(top_n=5)  # the systems of one run share it
    systems = [build_system(f"lite-bio:{tiny['bio']}:{m}", context) for m in ("samrank_idf", "cls_attn", "bio_confidence")]
    for spec in systems:  # as run_evaluation does: every system is built before any predicts
        spec.check_available()
    for spec in systems:
        results[spec.method] = spec.predict(docs)
    assert len(calls) == 1  # the BIO + attention pass ran once for all three systems (one batch)
    ex = extractor(tiny)
    ex.fit_idf(TEXTS)
    for method, predicted in results.items():
        assert predicted == ex.extract_keywords_batch(TEXTS, method=method, top_k=5)
