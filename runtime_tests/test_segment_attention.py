"""Candidate-segment attention (CSA, keyatten 0.3.1 §8) on onnxruntime: the prompt and span rules, the
seeds and the averaging, and parity with keyatten 0.3.1's own CandidateSegmentAttentionExtractor on a
tiny random Qwen3 with a random LoRA adapter saved by peft (0.3.1 runs it unmerged; keyatten-lite
merges it at export and runs the ONNX graph)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.extractors.segment_attention import (
    CandidatePool,
    CandidateSegmentAttentionExtractor,
    build_segment_text,
    candidate_token_spans,
    combine_passes,
    fuse_rankings,
    received_scores,
    resolve_auto_layer,
    shuffled_orders,
)

sys.path.insert(0, str(Path(__file__).parent))

DOC = "自然语言处理是人工智能的重要方向，关键词提取依赖注意力机制。"
CANDIDATES = ["自然语言处理", "人工智能", "关键词提取", "注意力机制", "重要方向"]


def test_prompt_spans_point_at_the_candidates():
    for numbered in (False, True):
        prompt = build_segment_text("选择关键词。", DOC, CANDIDATES, language="zh", number_candidates=numbered)
        assert [prompt.text[s:e] for s, e in prompt.spans] == CANDIDATES
        assert prompt.text[slice(*prompt.document_span)] == DOC
        assert prompt.text.startswith("选择关键词。\n\n文章：\n" + DOC + "\n\n候选：\n")
        marker = "[2] " if numbered else "<候选>\n"
        assert prompt.text[prompt.spans[1][0] - len(marker) : prompt.spans[1][0]] == marker
    english = build_segment_text("Pick.", "A text.", ["text", "a"], language="en")
    assert [english.text[s:e] for s, e in english.spans] == ["text", "a"]


def test_token_spans_and_received_scores():
    offsets = [(0, 0), (0, 2), (2, 4), (4, 5), (5, 9), (0, 0)]
    assert candidate_token_spans(offsets, [(1, 4), (4, 5), (9, 12), (5, 6)]) == [(1, 3), (3, 4), None, (4, 5)]
    attention = np.arange(16, dtype=np.float64).reshape(4, 4)
    assert received_scores(attention, [(0, 2), None, (3, 4)]) == [(24 + 28) / 2, None, 36.0]


def test_orders_seeds_and_the_average_over_usable_passes():
    expected = list(CANDIDATES)
    random.Random(7).shuffle(expected)
    assert shuffled_orders(CANDIDATES, "random", [7])[0] == expected
    assert shuffled_orders(CANDIDATES, "bio", [7, 8]) == [CANDIDATES, CANDIDATES]
    ranked = combine_passes([{"a": 1.0, "b": 3.0}, {"a": 3.0}, {"c": 2.0}], top_k=5)
    assert ranked == [("b", 3.0), ("a", 2.0), ("c", 2.0)]  # equal scores: text order
    assert resolve_auto_layer(28, list(range(28))) == 21
    assert resolve_auto_layer(28, [20, 22]) == 22  # equal distance: the larger index
    assert resolve_auto_layer(6, [4]) == 4


@pytest.fixture(scope="module")
def tiny_csa(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    pytest.importorskip("onnx")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    from keyatten_lite_export.encoder import export_bundle
    from keyatten_lite_export.lora import merge_lora, merged_parity
    from tiny_models import make_tiny_qwen3

    root = tmp_path_factory.mktemp("csa")
    base = make_tiny_qwen3(root / "qwen3")
    torch.manual_seed(3)
    model = AutoModel.from_pretrained(str(base), attn_implementation="eager")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # init_lora_weights=False already makes B random; make the delta clearly visible
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(4.0)
    peft_model.save_pretrained(str(root / "adapter"))
    merged = merge_lora(base, root / "adapter", root / "merged")
    manifest = export_bundle(merged, root / "bundle", name="tiny-csa")
    lora_delta = merged_parity(base, None, merged, [DOC], manifest["exported_layers"])
    parity = merged_parity(base, root / "adapter", merged, [DOC, "注意力机制与关键词提取。"], manifest["exported_layers"])
    return {"base": base, "adapter": root / "adapter", "bundle": root / "bundle", "manifest": manifest,
            "parity": parity, "lora_delta": lora_delta}


def test_merged_adapter_matches_the_unmerged_one(tiny_csa):
    # merging changes nothing measurable, while the adapter itself changes the attention
    assert tiny_csa["parity"] <= 1e-5
    assert tiny_csa["lora_delta"] > 1e-3
    assert tiny_csa["manifest"]["parity"]["fp32"]["max_abs_diff"] <= 1e-4


class _FixedCandidates:
    def __init__(self, candidates):
        self.spans = [(c, 1.0 - 0.01 * i) for i, c in enumerate(candidates)]

    def extract_spans_profile(self, text, profile="balanced"):
        return list(self.spans)


def _keyatten_csa(tiny_csa, **kwargs):
    pytest.importorskip("torchcrf")
    keyatten = pytest.importorskip("keyatten")
    extractor = keyatten.CandidateSegmentAttentionExtractor(
        model=str(tiny_csa["base"]), adapter_path=str(tiny_csa["adapter"]), bio_model_path="unused", language="zh",
        device="cpu", dtype="float32", **kwargs,
    )
    extractor._get_bio_extractor = lambda: _FixedCandidates(CANDIDATES)  # same candidates on both sides
    return extractor


def _fix_candidates(extractor, candidates=CANDIDATES, default_ranking=()):
    """The extractor's candidate pool replaced by fixed candidates (BIO order = their order)."""
    extractor.candidate_pool = lambda text: CandidatePool(tuple(candidates), tuple(candidates), tuple(default_ranking))
    return extractor


def _ours(tiny_csa, **kwargs):
    extractor = CandidateSegmentAttentionExtractor(str(tiny_csa["bundle"]), language="zh", profile="compat", **kwargs)
    return _fix_candidates(extractor)


def _assert_same_ranking(theirs, ours, tolerance=1e-4):
    assert len(theirs) == len(ours)
    for (a_text, a_score), (b_text, b_score) in zip(theirs, ours):
        assert abs(a_score - b_score) <= tolerance * max(1.0, abs(a_score)), (theirs, ours)
    # ties (scores within tolerance) compared as sets
    groups_a, groups_b = {}, {}
    for text, score in theirs:
        groups_a.setdefault(round(score / tolerance), set()).add(text)
    for text, score in ours:
        groups_b.setdefault(round(score / tolerance), set()).add(text)
    assert [t for t, _ in theirs] == [t for t, _ in ours] or groups_a == groups_b


@pytest.mark.parametrize("order,seeds", [("bio", None), ("random", None), ("random", [1, 2, 3]), ("random", [5, 8, 13, 21, 34])])
def test_same_keywords_as_keyatten_031(tiny_csa, order, seeds):
    theirs = _keyatten_csa(tiny_csa, candidate_order=order).extract_keywords_with_scores(DOC, top_k=10, random_seeds=seeds)
    ours = _ours(tiny_csa, candidate_order=order).extract_keywords_with_scores(DOC, top_k=10, random_seeds=seeds)
    assert len(ours) == len(CANDIDATES)
    _assert_same_ranking(theirs, ours)
    worst = max(abs(a - b) for (_, a), (_, b) in zip(theirs, ours))
    print(f"CSA parity {order} seeds={seeds}: same order {[t for t, _ in theirs] == [t for t, _ in ours]}, "
          f"max abs score diff {worst:.2e}, scores {[round(s, 4) for _, s in ours]}")


def test_batch_equals_one_by_one_and_numbering(tiny_csa):
    ours = _ours(tiny_csa, candidate_order="random", random_seeds=[1, 2], number_candidates=True)
    texts = [DOC, "关键词提取依赖注意力机制。", "人工智能的重要方向。"]
    batch = ours.extract_keywords_batch(texts, top_k=3, with_scores=True)
    for text, ranked in zip(texts, batch):
        single = ours.extract_keywords_with_scores(text, top_k=3)
        assert [t for t, _ in ranked] == [t for t, _ in single]
        assert np.allclose([s for _, s in ranked], [s for _, s in single], atol=1e-5)
    theirs = _keyatten_csa(tiny_csa, candidate_order="random", number_candidates=True)
    _assert_same_ranking(theirs.extract_keywords_with_scores(DOC, top_k=3, random_seeds=[1, 2]), batch[0])


def test_bad_arguments_are_refused(tiny_csa):
    with pytest.raises(InvalidArgumentError, match="merge-lora"):
        CandidateSegmentAttentionExtractor(str(tiny_csa["bundle"]), adapter_path="x")
    with pytest.raises(InvalidArgumentError, match="candidate_order"):
        CandidateSegmentAttentionExtractor(str(tiny_csa["bundle"]), candidate_order="reverse")
    with pytest.raises(InvalidArgumentError, match="max_candidates"):
        CandidateSegmentAttentionExtractor(str(tiny_csa["bundle"]), max_candidates=1)
    for layer in ("deep", 2.5, True, 99):
        with pytest.raises(InvalidArgumentError):
            CandidateSegmentAttentionExtractor(str(tiny_csa["bundle"]), layer=layer)
    assert CandidateSegmentAttentionExtractor(str(tiny_csa["bundle"]), layer="4").layer == 4
    for seeds in ("123", [1, "2"], 7, [True]):
        with pytest.raises(InvalidArgumentError, match="seed"):
            CandidateSegmentAttentionExtractor(str(tiny_csa["bundle"]), random_seeds=seeds)
    with pytest.raises(InvalidArgumentError, match="seed"):
        CandidateSegmentAttentionExtractor(str(tiny_csa["bundle"]), candidate_seed="42")
    with pytest.raises(InvalidArgumentError, match="seed"):
        _ours(tiny_csa).extract_keywords(DOC, random_seeds=[1.5])
    ours = _ours(tiny_csa)
    assert ours.extract_keywords_batch(["", "   "]) == [[], []]
    with pytest.raises(InvalidArgumentError):
        ours.extract_keywords_batch([DOC, 3])
    with pytest.raises(InvalidArgumentError):
        ours.extract_keywords_batch(DOC)


def test_default_profile_shortens_the_document_not_the_candidates(tiny_csa):
    long_doc = DOC * 12
    compat = _ours(tiny_csa, candidate_order="bio", max_length=400)
    assert compat.extract_keywords(long_doc) == []  # 0.3.1 cuts the candidate section off first (§8.3)
    default = _fix_candidates(CandidateSegmentAttentionExtractor(
        str(tiny_csa["bundle"]), language="zh", candidate_order="bio", max_length=400, rank_fusion=False))
    ranked = default.extract_keywords(long_doc, with_scores=True)
    assert sorted(t for t, _ in ranked) == sorted(CANDIDATES)
    # a document that fits is left whole: the default and compat profiles agree on it
    short = default.extract_keywords(DOC, with_scores=True)
    assert short == _ours(tiny_csa, candidate_order="bio", max_length=400).extract_keywords(DOC, with_scores=True)


def test_eval_spec_for_csa():
    from keyatten_lite.evaluation.baselines import CsaSystem, RunContext, build_system
    from keyatten_lite.evaluation.csa_peer import parse_csa_spec

    # Parts left out keep the extractor's defaults (None here).
    assert parse_csa_spec("lite-csa", "") == (None, None, None, None, None, None, None)
    assert parse_csa_spec("lite-csa::bio", ":bio") == (None, "bio", None, None, None, None, None)
    assert parse_csa_spec("x", "my-bundle:random:3") == ("my-bundle", "random", 3, None, None, None, None)
    assert parse_csa_spec("x", "b::2:15:20") == ("b", None, 2, 15, 20, None, None)
    assert parse_csa_spec("x", "b::::20:reranker")[5] is False and parse_csa_spec("x", ":::::fused")[5] is True
    assert parse_csa_spec("x", "::::::raw")[6] is False and parse_csa_spec("x", "b:::::reranker:clean")[5:] == (False, True)
    for bad in (":sideways", "::0", ":random:x", "a:random:1:extra", "a:random:1:2:1", "a:random:1:2:3:4",
                "a:random:1:2:3:mixed", "a:random:1:2:3:fused:x", "a:random:1:2:3:fused:tidy", "::::::clean:x"):
        with pytest.raises(InvalidArgumentError):
            parse_csa_spec("lite-csa:" + bad, bad)
    system = build_system("lite-csa::random:5", RunContext())
    assert isinstance(system, CsaSystem) and (system.order, system.n_seeds) == ("random", 5)


def test_rank_fusion_adds_reciprocal_ranks_of_every_list():
    reranked = [("a", 0.9), ("b", 0.5), ("c", 0.1)]
    fused = fuse_rankings(reranked, [["c", "b"], ["C ", "x"]], top_k=3, k=10)
    expected = {"a": 1 / 10, "b": 1 / 11 + 1 / 11, "c": 1 / 12 + 1 / 10 + 1 / 10}  # "C " folds to "c"
    assert [t for t, _ in fused] == ["c", "b", "a"]
    assert all(abs(score - expected[t]) < 1e-12 for t, score in fused)
    assert fuse_rankings(reranked, [], top_k=2) == [("a", 1 / 10), ("b", 1 / 11)]  # alone: the reranker's order
    assert fuse_rankings([], [["a"]], top_k=5) == []  # only reranked candidates are ranked


def test_default_profile_fuses_the_reranker_with_the_candidate_rankings(tiny_csa):
    plain = _fix_candidates(CandidateSegmentAttentionExtractor(str(tiny_csa["bundle"]), language="zh", rank_fusion=False))
    reranked = plain.extract_keywords(DOC, top_k=len(CANDIDATES), with_scores=True)
    default_order = [t for t, _ in reversed(reranked)]  # the default extractor disagrees with the reranker
    fused = _fix_candidates(CandidateSegmentAttentionExtractor(str(tiny_csa["bundle"]), language="zh"), default_ranking=default_order)
    assert fused.rank_fusion and not plain.rank_fusion
    expected = fuse_rankings(reranked, [CANDIDATES, default_order], top_k=len(CANDIDATES))
    assert fused.extract_keywords(DOC, top_k=len(CANDIDATES), with_scores=True) == expected
    assert fused.extract_keywords(DOC, top_k=2) == [t for t, _ in expected[:2]]
    assert [t for t, _ in expected] != [t for t, _ in reranked]  # the other lists changed the order
    with pytest.raises(InvalidArgumentError, match="compat"):
        CandidateSegmentAttentionExtractor(str(tiny_csa["bundle"]), language="zh", profile="compat", rank_fusion=True)
    with pytest.raises(InvalidArgumentError, match="rank_fusion"):
        CandidateSegmentAttentionExtractor(str(tiny_csa["bundle"]), language="zh", rank_fusion="yes")


def test_word_candidates_join_the_bio_candidates():
    from conftest import default_bundle_path

    default_bundle_path("e5-small-zh")
    default_bundle_path("bio-e5-small-zh")
    plain = CandidateSegmentAttentionExtractor("e5-small-zh", language="zh", max_candidates=10, word_candidates=0)
    mixed = CandidateSegmentAttentionExtractor("e5-small-zh", language="zh", max_candidates=10, word_candidates=5)
    bio_only = plain.candidates(DOC)
    both = mixed.candidates(DOC)
    assert both[: len(bio_only)] == bio_only  # the tagger's candidates first, in its order
    added = both[len(bio_only):]
    assert 0 < len(added) <= 5
    keys = ["".join(c.lower().split()) for c in both]
    assert len(keys) == len(set(keys))  # no candidate twice
    assert set(added) <= set(mixed.word_extractor().extract_keywords(DOC, top_k=5))
    ranked = mixed.extract_keywords(DOC, top_k=20, with_scores=True)
    assert {t for t, _ in ranked} <= set(both) and len(ranked) >= 2
    with pytest.raises(InvalidArgumentError, match="compat"):
        CandidateSegmentAttentionExtractor(language="zh", profile="compat", word_candidates=3)


def test_a_trained_reranker_bundle_is_the_default_with_its_candidate_settings(tiny_csa, tmp_path, monkeypatch):
    import json
    import shutil

    from keyatten_lite.model.registry import default_csa_bundle_for

    home = tmp_path / "home"
    target = home / "bundles" / "csa-e5-small-zh"
    shutil.copytree(tiny_csa["bundle"], target)
    manifest = json.loads((target / "bundle.json").read_text(encoding="utf-8"))
    manifest["csa"] = {"read_layer": 4, "candidates": {"max_candidates": 7, "word_candidates": 0}}
    (target / "bundle.json").write_text(json.dumps(manifest), encoding="utf-8")
    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(home))
    assert default_csa_bundle_for("zh") == "csa-e5-small-zh" and default_csa_bundle_for("en") is None
    trained = CandidateSegmentAttentionExtractor(language="zh")
    assert trained.bundle.path == target
    assert (trained.max_candidates, trained.word_candidates, trained.seeds()) == (7, 0, [42, 43, 44])
    # what the caller passes wins; the compatible profile keeps 0.3.1's defaults on the same bundle
    mine = CandidateSegmentAttentionExtractor(language="zh", max_candidates=5, random_seeds=[1])
    assert (mine.max_candidates, mine.seeds()) == (5, [1])
    compat = CandidateSegmentAttentionExtractor(str(target), language="zh", profile="compat")
    assert (compat.max_candidates, compat.word_candidates, compat.seeds()) == (30, 0, [42])
    # English keeps raw spans by default, unless the bundle was trained on clean ones
    assert CandidateSegmentAttentionExtractor(str(target), language="en").clean_candidates is False
    manifest["csa"]["candidates"]["clean_candidates"] = True
    (target / "bundle.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert CandidateSegmentAttentionExtractor(str(target), language="en").clean_candidates is True
    assert CandidateSegmentAttentionExtractor(str(target), language="en", clean_candidates=False).clean_candidates is False
    # a damaged record is refused with a clear error
    manifest["csa"] = {"candidates": {"max_candidates": "20"}}
    (target / "bundle.json").write_text(json.dumps(manifest), encoding="utf-8")
    from keyatten_lite.errors import BundleError

    with pytest.raises(BundleError, match="csa.candidates"):
        CandidateSegmentAttentionExtractor(language="zh")
    # without a trained bundle the reranker runs zero-shot on the language's default bundle
    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(tmp_path / "empty"))
    assert default_csa_bundle_for("zh") is None


@pytest.mark.parametrize("name", ["csa-e5-small-zh", "csa-minilm-en"])
def test_built_reranker_was_retrained_to_the_shipped_adapter(name):
    """CI's check: `models build` retrains the CSA adapter when the data is present and records how far
    it lies from models/adapters/<name>; the bundle must be within the stated tolerance."""
    import json

    from conftest import default_bundle_path

    from keyatten_lite_export.csa import ADAPTER_TOLERANCE, adapter_max_abs_diff, shipped_adapter_dir
    from keyatten_lite_export.sources import load_recipe

    path = default_bundle_path(name)
    manifest = json.loads((path / "bundle.json").read_text(encoding="utf-8"))
    csa = manifest["csa"]
    assert manifest["exported_layers"] == [csa["read_layer"]]  # the graph is cut at the read layer
    origin = csa["adapter"]
    assert adapter_max_abs_diff(shipped_adapter_dir(name), shipped_adapter_dir(name)) == 0.0
    if origin["source"] != "trained here":
        pytest.skip("built from the shipped adapter (no training data here)")
    check = origin["shipped_adapter"]
    assert check["tolerance"] == ADAPTER_TOLERANCE
    # Weights within ADAPTER_TOLERANCE on the training machine's CPU; elsewhere the trajectory (csa.py).
    assert check["within_tolerance"], check
    if check["max_abs_diff"] > ADAPTER_TOLERANCE:
        assert check["by"] == "training trajectory", check
        assert all(v["within"] for k, v in check["trajectory"].items() if k != "steps"), check
    # the trained-on candidates are what the runtime defaults to with this bundle
    training = load_recipe(name)["training"]
    assert csa["candidates"] == {
        **{key: training[key] for key in ("max_candidates", "word_candidates")},
        "clean_candidates": bool(training.get("clean_candidates", False)),  # absent in a recipe: raw spans
    }


def test_reranker_recipe_helpers(tmp_path):
    pytest.importorskip("safetensors")
    import json

    import numpy as np
    from safetensors.numpy import save_file

    from keyatten_lite_export import ExportError
    from keyatten_lite_export import csa
    from keyatten_lite_export.sources import load_recipe

    assert csa.positive_labels(["自然 语言", "Graph Data", "x"], ["自然语言", "graph data"]) == [True, True, False]
    # training documents: slices of the data folder's files; a missing file means "use the shipped adapter"
    (tmp_path / "zh").mkdir()
    rows = [{"id": str(i), "text": f"t{i}", "keywords": []} for i in range(10)]
    (tmp_path / "zh" / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recipe = {"training": {"documents": [{"dataset": "zh/d.jsonl", "start": 2, "end": 5}, {"dataset": "zh/d.jsonl", "start": 8}]}}
    assert [d["id"] for d in csa.training_documents(recipe, tmp_path)] == ["2", "3", "4", "8", "9"]
    assert csa.training_documents({"training": {"documents": [{"dataset": "zh/none.jsonl"}]}}, tmp_path) is None
    # "numeric-id" orders by the number in the id, as the Inspec splits do ("10" after "9"); others are refused
    shuffled = [{"id": f"x/{i}", "text": "", "keywords": []} for i in (10, 9, 100, 1)]
    (tmp_path / "zh" / "n.jsonl").write_text("".join(json.dumps(r) + "\n" for r in shuffled), encoding="utf-8")
    by_number = {"training": {"documents": [{"dataset": "zh/n.jsonl", "order": "numeric-id", "start": 1}]}}
    assert [d["id"] for d in csa.training_documents(by_number, tmp_path)] == ["x/9", "x/10", "x/100"]
    with pytest.raises(ExportError, match="order"):
        csa.training_documents({"training": {"documents": [{"dataset": "zh/n.jsonl", "order": "shuffled"}]}}, tmp_path)
    # adapters compared tensor by tensor; different tensors: infinitely far
    for name, scale in (("a", 1.0), ("b", 1.0005)):
        (tmp_path / name).mkdir()
        save_file({"w": np.full((2, 3), scale, dtype=np.float32)}, str(tmp_path / name / "adapter_model.safetensors"))
    (tmp_path / "c").mkdir()
    save_file({"v": np.ones((2, 3), dtype=np.float32)}, str(tmp_path / "c" / "adapter_model.safetensors"))
    assert csa.adapter_max_abs_diff(tmp_path / "a", tmp_path / "b") == pytest.approx(5e-4, rel=1e-3)
    assert csa.adapter_max_abs_diff(tmp_path / "a", tmp_path / "c") == float("inf")
    # recipes: the backbone's source joins; a recipe missing settings or of another kind is refused
    full = csa.csa_recipe_source(load_recipe("csa-e5-small-zh"))
    assert full["source"] == load_recipe("e5-small-zh")["source"] and full["kind"] == "csa"
    broken = dict(load_recipe("csa-e5-small-zh"), training={"epochs": 1})
    with pytest.raises(ExportError, match="lacks"):
        csa.csa_recipe_source(broken)
    with pytest.raises(ExportError, match="not a CSA recipe"):
        csa.csa_recipe_source(load_recipe("e5-small-zh"))


def test_a_retrained_adapter_is_judged_by_weights_then_by_its_training_trajectory(tmp_path):
    from safetensors.numpy import save_file

    from keyatten_lite_export import csa

    log = {"docs_with_a_positive": 100, "candidate_recall_of_gold": 0.5, "loss_first_100": 5.0,
           "loss_last_100": 3.0, "steps": 200}
    for name, value in (("shipped", 0.0), ("near", 5e-4), ("far", 0.3)):
        (tmp_path / name).mkdir()
        save_file({"w": np.full((2, 2), value, dtype=np.float32)}, str(tmp_path / name / "adapter_model.safetensors"))
    (tmp_path / "shipped" / "train_log.json").write_text(json.dumps(log), encoding="utf-8")
    assert csa.compare_with_shipped(tmp_path / "near", tmp_path / "shipped", {})["by"] == "weights"
    same_path = csa.compare_with_shipped(tmp_path / "far", tmp_path / "shipped", {**log, "loss_last_100": 3.05})
    assert same_path["within_tolerance"] and same_path["by"] == "training trajectory"
    # A changed recipe shows in the trajectory: another loss, other positives, other step count.
    for changed in ({"loss_last_100": 3.5}, {"docs_with_a_positive": 90}, {"steps": 100}, {"loss_first_100": None}):
        report = csa.compare_with_shipped(tmp_path / "far", tmp_path / "shipped", {**log, **changed})
        assert not report["within_tolerance"] and report["by"] == "neither", changed


def test_training_losses_listwise_and_pairwise():
    torch = pytest.importorskip("torch")
    from keyatten_lite_export.csa import LOSSES, candidate_loss

    assert LOSSES == ("listwise", "pairwise")
    scores = torch.tensor([0.30, 0.10, 0.20, 0.05])
    target = torch.tensor([1.0, 0.0, 1.0, 0.0])
    # Listwise: cross-entropy against the uniform distribution over the two positives, by hand.
    log_p = np.log(np.exp(scores.numpy() / 0.1) / np.exp(scores.numpy() / 0.1).sum())
    assert float(candidate_loss(scores, target, 0.1)) == pytest.approx(-(log_p[0] + log_p[2]) / 2, rel=1e-6)
    # Pairwise: mean softplus((neg - pos) / T) over the 2 x 2 pairs, by hand.
    pairs = [(0.30, 0.10), (0.30, 0.05), (0.20, 0.10), (0.20, 0.05)]
    expected = np.mean([np.log1p(np.exp((n - p) / 0.1)) for p, n in pairs])
    assert float(candidate_loss(scores, target, 0.1, "pairwise")) == pytest.approx(expected, rel=1e-6)
    # A positive ranked below a negative costs more than one ranked above it.
    swapped = torch.tensor([0.10, 0.30, 0.20, 0.05])
    assert float(candidate_loss(swapped, target, 0.1, "pairwise")) > float(candidate_loss(scores, target, 0.1, "pairwise"))
    # No negative: nothing to learn, 0, and still differentiable.
    leaf = torch.tensor([0.3, 0.2], requires_grad=True)
    zero = candidate_loss(leaf, torch.ones(2), 0.1, "pairwise")
    zero.backward()
    assert float(zero) == 0.0 and leaf.grad is not None


def test_span_rules_for_the_taggers_candidates():
    from keyatten_lite.text.spans import WordGrid, align_to_words, is_malformed

    for good in ("电动汽车(EVs)", "“印象”", "Ce3+", "RT-PCR", "\"十二五\"发展规划", "反向混淆", "genetic algorithms",
                 "Young's modulus", "Young’s modulus", "students'", "‘quoted’"):
        assert not is_malformed(good), good
    for bad in ("(正向", "正向)", "规则,", "，混淆", "a (b", "\"quoted", "", "  ", "《标题", "x]", "‘长林"):
        assert is_malformed(bad), bad
    words = ["的", "反向", "混淆", "规则", "与", "反向", "混", "和"]
    tags = ["uj", "d", "v", "n", "p", "d", "v", "c"]
    text = "".join(words)
    grid = WordGrid.of(text, words, tags)
    assert grid.starts == (0, 1, 3, 5, 7, 8, 10, 11, 12)
    assert align_to_words("反向混淆", grid) == "反向混淆"  # on boundaries already
    # a fragment is widened to the words it cuts, at its first occurrence (the later "反向混" ends on a
    # boundary but is still a piece of 反向混淆 where the tagger first found it)
    assert align_to_words("向混淆", grid) == "反向混淆" and align_to_words("反向混", grid) == "反向混淆"
    assert align_to_words("淆规", grid) == "混淆规则"
    # edge function words go: a leading particle or preposition, a trailing conjunction; never the last word
    assert align_to_words("的反向混淆", grid) == "反向混淆"
    assert align_to_words("与反向混和", grid) == "反向混"
    assert align_to_words("的", grid) == "的"
    assert align_to_words("规则与", grid) == "规则与"  # a preposition is trimmed at the start only
    assert align_to_words("不在文中", grid) == "不在文中"  # not verbatim in the text: left as it is
    untagged = WordGrid.of(text, words, [""] + tags[1:])  # a word with no tag is not a function word
    assert align_to_words("的反向混淆", untagged) == "的反向混淆"
    assert WordGrid.of(text, words[:-1], tags[:-1]) is None  # a segmentation that misses a character
    assert WordGrid.of(text, words, tags[:-1]) is None


def test_dictionary_tags_name_function_words():
    from keyatten_lite.text.segment import ChineseSegmenter

    segmenter = ChineseSegmenter()
    tags = segmenter.dictionary_tags(["的", "和", "通过", "竞争", "不在词典的词qz"])
    assert tags[0].startswith("u") and tags[1].startswith("c") and tags[2].startswith("p")
    assert tags[3][:1] in "nv" and tags[4] == "x"


@pytest.mark.parametrize("text", [
    DOC, "采用修正的Rodrigues参数(MRP),建立了 飞行器\n\t姿态模型。", "emoji 😀 与组合字符 é 和\u200b零宽\x00控制",
    "全角ＡＢＣ１２３　空格", "\ud800孤立代理", "",
])
def test_dictionary_segmentation_covers_every_character(text):
    from keyatten_lite.text.segment import ChineseSegmenter

    assert "".join(ChineseSegmenter().dictionary_words(text)) == text
    with pytest.raises(InvalidArgumentError):
        ChineseSegmenter().dictionary_words(b"bytes")


class _SpanTagger:
    """A BIO tagger stand-in that proposes fixed spans, best first."""

    def __init__(self, spans):
        self.spans = spans

    def extract_spans_profile(self, text, profile="high_recall"):
        return [(span, 1.0 - i / 100) for i, span in enumerate(self.spans)]


def test_clean_candidates_leave_out_fragments_and_fill_their_places():
    from conftest import default_bundle_path

    default_bundle_path("e5-small-zh")
    text = "反向混淆规则适用于竞争关系，(正向混淆)与反向混淆不同。"
    spans = ["(正向", "反向混淆", "反", "反向混淆规则适用于竞争关系", "向混淆", "竞争关系", "正向)", "于竞争关系", "淆规", "规则", "，", "适用"]
    made = {}
    for clean in (True, False):
        extractor = CandidateSegmentAttentionExtractor("e5-small-zh", language="zh", max_candidates=4, clean_candidates=clean)
        extractor._bio = _SpanTagger(spans)
        made[clean] = extractor.candidate_pool(text)
    assert made[False].bio_ranking == ("(正向", "反向混淆", "反", "反向混淆规则适用于竞争关系")
    # the malformed and the run-on over MAX_CLEAN_SPAN_CHARS go; a fragment is widened to its words (反 to
    # 反向, 向混淆 onto 反向混淆, 淆规 to 混淆规则) and a leading preposition trimmed (于竞争关系 onto
    # 竞争关系); spans that land on an earlier one are deduplicated, the next ones take the freed places
    assert made[True].bio_ranking == ("反向混淆", "反向", "竞争关系", "混淆规则")
    assert made[True].candidates == made[True].bio_ranking
    assert CandidateSegmentAttentionExtractor("e5-small-zh", language="zh").clean_candidates is True
    with pytest.raises(InvalidArgumentError, match="clean_candidates"):
        CandidateSegmentAttentionExtractor("e5-small-zh", language="zh", clean_candidates="yes")
    with pytest.raises(InvalidArgumentError, match="clean_candidates"):
        CandidateSegmentAttentionExtractor("e5-small-zh", language="zh", profile="compat", clean_candidates=True)
    assert CandidateSegmentAttentionExtractor("e5-small-zh", language="zh", profile="compat").clean_candidates is False


def test_clean_candidates_in_english_drop_malformed_spans_only():
    from conftest import default_bundle_path

    default_bundle_path("minilm-l6-en")
    spans = ["(genetic", "a", "genetic algorithms", "algorithms,", "search", "Young's modulus"]
    text = "A search with genetic algorithms, (genetic search) and Young's modulus."
    extractor = CandidateSegmentAttentionExtractor("minilm-l6-en", language="en", max_candidates=4, clean_candidates=True)
    extractor._bio = _SpanTagger(spans)
    assert extractor.candidate_pool(text).bio_ranking == ("a", "genetic algorithms", "search", "Young's modulus")
    # English keeps the raw spans by default (chosen on dev: Inspec dev F1@10 .302 raw, .300 clean)
    default = CandidateSegmentAttentionExtractor("minilm-l6-en", language="en", max_candidates=4)
    default._bio = _SpanTagger(spans)
    assert default.clean_candidates is False
    assert default.candidate_pool(text).bio_ranking == tuple(spans[:4])


def test_scored_passes_are_what_the_ranking_averages_and_fuses():
    from conftest import default_bundle_path

    default_bundle_path("csa-e5-small-zh")
    extractor = CandidateSegmentAttentionExtractor(language="zh")
    text = "反向混淆规则适用于商标侵权纠纷。本文讨论反向混淆的构成要件、竞争关系与混淆可能性的判断，并比较美国与中国的司法实践。"
    pool = extractor.candidate_pool(text)
    passes = extractor.scored_passes(text, pool)
    assert len(passes) == len(extractor.seeds()) == 3
    assert all(set(p) <= set(pool.candidates) and len(p) >= 2 for p in passes)
    assert passes[0] != passes[1]  # another order, other scores
    reranked = combine_passes(passes, len(pool.candidates))
    fused = fuse_rankings(reranked, [pool.bio_ranking, pool.default_ranking], 10)
    assert extractor.extract_keywords_with_scores(text, top_k=10) == fused
    assert extractor.scored_passes(text, random_seeds=[7]) == extractor.scored_passes(text, pool, random_seeds=[7])
    assert extractor.scored_passes("   ") == []
    with pytest.raises(InvalidArgumentError, match="text"):
        extractor.scored_passes(None)
