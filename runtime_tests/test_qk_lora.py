"""QK scoring (keyatten 0.3.1 §9, QKLoRAExtractor) on onnxruntime: the pure scoring functions, the QK
export of a tiny random Qwen3 with a random peft LoRA adapter on q_proj/k_proj (ONNX vs torch + the
adapter unmerged), parity of profile="compat" with keyatten 0.3.1's own extractor, what the default
profile (post-norm, post-RoPE q/k) changes, batching and bad input."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

from keyatten_lite.errors import BundleError, InvalidArgumentError
from keyatten_lite.extractors.qk_lora import (
    QKLoRAExtractor,
    char_scores_from_tokens,
    last_valid_index,
    qk_token_scores,
    rank_spans,
    repeat_kv_heads,
    char_span_means,
)

sys.path.insert(0, str(Path(__file__).parent))

DOCS = {
    "zh": [
        "自然语言处理是人工智能的重要方向，关键词提取依赖注意力机制。",
        "量子计算利用叠加和纠缠来加速特定问题的求解，例如大整数分解与数据库搜索。",
        "电池储能系统的热管理对安全性至关重要，液冷方案正在取代风冷方案。",
    ],
    "en": [
        "Graph neural networks learn representations of nodes from their neighbourhoods and graph data.",
        "Keyword extraction ranks the words of a document by the attention they receive from the last token.",
    ],
}
TOLERANCE = 1e-4


# ------------------------------------------------------------------------------ pure functions
def test_kv_heads_repeat_consecutively():
    keys = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)  # [Hkv=2, S=3, D=2]
    repeated = repeat_kv_heads(keys, 4)
    assert repeated.shape == (4, 3, 2)
    for head, source in enumerate([0, 0, 1, 1]):  # query head h reads KV head h // 2
        assert np.array_equal(repeated[head], keys[source])
    with pytest.raises(InvalidArgumentError):
        repeat_kv_heads(keys, 3)


def test_scores_are_the_head_mean_of_the_last_token_query_against_every_key():
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(5, 4 * 3)).astype(np.float32), rng.normal(size=(5, 2 * 3)).astype(np.float32)
    got = qk_token_scores(q, k, head_dim=3, query_index=3)
    expected = np.zeros(5)
    for h in range(4):
        for i in range(5):
            expected[i] += q[3, h * 3 : h * 3 + 3] @ k[i, (h // 2) * 3 : (h // 2) * 3 + 3] / np.sqrt(3) / 4
    assert np.allclose(got, expected, atol=1e-5)


def test_eos_is_the_last_valid_token_on_either_side():
    assert last_valid_index(np.array([1, 1, 1, 0, 0])) == 2
    assert last_valid_index(np.array([0, 0, 1, 1, 1])) == 4
    with pytest.raises(InvalidArgumentError):
        last_valid_index(np.zeros(3))


def test_char_scores_take_the_best_covering_token_with_a_zero_floor():
    # prefix "PP" (2 chars); text "abcd": token (0, 3) starts in the prefix and is left out
    offsets = [(0, 2), (2, 4), (3, 5), (5, 6), (0, 0), (0, 3)]
    chars = char_scores_from_tokens(offsets, [9.0, 1.0, 2.0, -3.0, 7.0, 8.0], prefix_chars=2, text_chars=4)
    assert chars.tolist() == [1.0, 2.0, 2.0, 0.0]  # negative token -> 0, overlap -> the max
    assert char_span_means(chars, [(0, 2), (3, 4), (2, 2)]).tolist() == [1.5, 0.0, 0.0]
    ranked = rank_spans(["b", "a", "c"], [1.0, 1.0, 2.0], [5, 0, 9], top_k=2)
    assert ranked == [("c", 2.0), ("a", 1.0)]  # equal scores: the earlier span first


# ------------------------------------------------------------------------------ tiny model fixture
@pytest.fixture(scope="module")
def tiny_qk(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    pytest.importorskip("onnx")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    from keyatten_lite_export.qk import export_qk_bundle
    from tiny_models import make_tiny_qwen3

    root = tmp_path_factory.mktemp("qk")
    # 3 blocks, read at the auto layer 2: the random model amplifies fp32 rounding with depth
    base = make_tiny_qwen3(root / "qwen3", layers=3)
    torch.manual_seed(5)
    model = AutoModel.from_pretrained(str(base), attn_implementation="eager")
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj"], init_lora_weights=False)
    )
    with torch.no_grad():  # B is random already (init_lora_weights=False); make the delta clearly visible
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(2.0)
    peft_model.save_pretrained(str(root / "adapter"))
    manifest = export_qk_bundle(base, root / "bundle", adapter=root / "adapter", name="tiny-qk")
    return {"base": base, "adapter": root / "adapter", "bundle": root / "bundle", "manifest": manifest}


def test_export_matches_torch_with_the_adapter_unmerged(tiny_qk):
    import torch

    from keyatten_lite.model.bundle import open_bundle
    from keyatten_lite_export import core
    from keyatten_lite_export.lora import load_model
    from keyatten_lite_export.qk import QKProjections

    manifest = tiny_qk["manifest"]
    assert manifest["kind"] == "qk" and manifest["exported_layers"] == [2]
    assert manifest["qk"] == {**manifest["qk"], "layer": 2, "head_dim": 16, "num_heads": 4, "num_kv_heads": 2, "qk_norm": True}
    fp32 = manifest["parity"]["fp32"]
    assert fp32["padding_sides"] == ["right"] * 3 + ["left"] * 3
    assert fp32["max_abs_diff"] <= TOLERANCE
    assert fp32["reference"]["model"] == "torch + peft adapter unmerged"
    assert fp32["reference"]["max_abs_diff"] <= TOLERANCE
    print(f"QK export parity: ONNX vs traced torch {fp32['max_abs_diff']:.2e}, vs torch+peft unmerged "
          f"{fp32['reference']['max_abs_diff']:.2e} (|q|,|k| up to {fp32['reference']['max_abs_value']:.1f})")
    # the adapter really changes q/k: ONNX against the base model without it
    bundle = open_bundle(tiny_qk["bundle"])
    ids = np.array([bundle.tokenizer().encode(DOCS["zh"][0]).ids], dtype=np.int64)
    mask = np.ones_like(ids)
    ours = bundle.run_outputs(ids, mask, ["q_proj", "k_proj"])
    base = QKProjections(core.attention_module_class()(load_model(tiny_qk["base"]), [2]).eval(), 2)
    with torch.no_grad():
        q, k, _, _ = base(torch.from_numpy(ids), torch.from_numpy(mask))
    delta = max(float(np.abs(ours["q_proj"] - q.numpy()).max()), float(np.abs(ours["k_proj"] - k.numpy()).max()))
    assert delta > 1e-2
    with pytest.raises(BundleError, match="qk"):
        bundle.run_attention(ids, mask)


def _assert_same_ranking(theirs: list[str], ours: list[tuple[str, float]]):
    """Same keywords in order, except that candidates whose scores tie (within the tolerance) may swap."""
    assert len(theirs) == len(ours)
    if theirs == [t for t, _ in ours]:
        return
    groups: dict[int, set] = {}
    for text, score in ours:
        groups.setdefault(round(score / TOLERANCE), set()).add(text)
    position = 0
    for _, members in sorted(groups.items(), key=lambda item: -item[0]):
        assert set(theirs[position : position + len(members)]) == members, (theirs, ours)
        position += len(members)


@pytest.mark.parametrize("language", ["zh", "en"])
def test_compat_matches_keyatten_031(tiny_qk, language):
    keyatten = pytest.importorskip("keyatten")
    theirs = keyatten.QKLoRAExtractor(
        model=str(tiny_qk["base"]), adapter_path=str(tiny_qk["adapter"]), language=language, device="cpu", dtype="float32"
    )
    ours = QKLoRAExtractor(str(tiny_qk["bundle"]), language=language, profile="compat")
    worst = 0.0
    for doc in DOCS[language]:
        ranked = ours.extract_keywords(doc, top_k=10, with_scores=True)
        _assert_same_ranking(theirs.extract_keywords(doc, top_k=10), ranked)
        their_chars = theirs._qk_char_scores(doc)[0]
        our_chars = ours._char_scores([doc], 1)[0]
        assert our_chars.shape == their_chars.shape
        worst = max(worst, float(np.abs(our_chars - their_chars).max()))
        # candidate scores: ours against the span means of 0.3.1's own character scores
        spans = dict(zip(*ours._candidates(doc)[::2]))
        for text, score in ranked:
            assert abs(score - char_span_means(their_chars, [spans[text]])[0]) <= TOLERANCE
    assert worst <= TOLERANCE
    print(f"QK compat vs keyatten 0.3.1 ({language}): same keywords on {len(DOCS[language])} docs, "
          f"max char-score diff {worst:.2e}")


def test_default_profile_reads_the_real_attention_qk(tiny_qk):
    overlaps, worst = [], 0.0
    for language, docs in DOCS.items():
        compat = QKLoRAExtractor(str(tiny_qk["bundle"]), language=language, profile="compat")
        default = QKLoRAExtractor(str(tiny_qk["bundle"]), language=language)
        for doc in docs:
            a = dict(compat.extract_keywords(doc, top_k=1000, with_scores=True))
            b = dict(default.extract_keywords(doc, top_k=1000, with_scores=True))
            assert set(a) == set(b)  # same candidates, other scores
            worst = max(worst, max(abs(a[c] - b[c]) for c in a))
            top_a, top_b = list(a)[:10], list(b)[:10]
            overlaps.append(len(set(top_a) & set(top_b)) / len(top_a))
    assert worst > 1e-2  # q_norm and RoPE change the scores
    print(f"QK default vs compat: mean top-10 overlap {np.mean(overlaps):.2f} (min {min(overlaps):.2f}), "
          f"max candidate score diff {worst:.3f} over {len(overlaps)} docs")


@pytest.mark.parametrize("profile", ["compat", "default"])
def test_batch_equals_one_by_one_on_either_padding_side(tiny_qk, profile):
    texts = DOCS["zh"] + ["", "关键词。"] + DOCS["zh"][:1]
    ours = QKLoRAExtractor(str(tiny_qk["bundle"]), language="zh", profile=profile)
    singles = [ours.extract_keywords(t, top_k=5, with_scores=True) for t in texts]
    for side in ("left", "right"):
        ours.bundle.padding_side = side
        batch = ours.extract_keywords_batch(texts, top_k=5, with_scores=True, batch_size=3)
        for single, ranked in zip(singles, batch):
            assert [t for t, _ in single] == [t for t, _ in ranked]
            assert np.allclose([s for _, s in single], [s for _, s in ranked], atol=1e-4)
    assert batch[3] == []
    assert ours.extract_keywords_batch(texts[:2], top_k=2) == [[t for t, _ in s[:2]] for s in singles[:2]]


def test_bad_input_is_refused(tiny_qk):
    bundle = str(tiny_qk["bundle"])
    ours = QKLoRAExtractor(bundle, language="zh")
    assert ours.extract_keywords("") == [] and ours.extract_keywords("   \n") == []
    assert ours.extract_keywords(DOCS["zh"][0], top_k=0) == []
    for top_k in (-1, "3", True, 2.0):
        with pytest.raises(InvalidArgumentError, match="top_k"):
            ours.extract_keywords(DOCS["zh"][0], top_k=top_k)
    for texts in (DOCS["zh"][0], [DOCS["zh"][0], 3], None):
        with pytest.raises(InvalidArgumentError):
            ours.extract_keywords_batch(texts)
    with pytest.raises(InvalidArgumentError, match="text must be a str"):
        ours.extract_keywords(b"bytes")
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        ours.extract_keywords_batch([DOCS["zh"][0]], batch_size=0)
    for layer in ("deep", 2.5, True, 99, 1):
        with pytest.raises(InvalidArgumentError):
            QKLoRAExtractor(bundle, layer=layer)
    assert QKLoRAExtractor(bundle, layer="2").layer == 2 and QKLoRAExtractor(bundle, layer=-1).layer == -1
    for kwargs in ({"profile": "fast"}, {"language": "fr"}, {"instruction_prefix": 3}, {"max_length": 1}):
        with pytest.raises(InvalidArgumentError):
            QKLoRAExtractor(bundle, **kwargs)


def test_manifest_and_cli_checks(tiny_qk, tmp_path, capsys):
    from keyatten_lite.model.manifest import read_manifest, validate_manifest
    from keyatten_lite_export.__main__ import main

    manifest = read_manifest(tiny_qk["bundle"])
    validate_manifest(manifest)
    for breaking in ({"head_dim": 0}, {"num_kv_heads": 3}, {"layer": 0}):
        bad = copy.deepcopy(manifest)
        bad["qk"].update(breaking)
        with pytest.raises(BundleError, match="qk"):
            validate_manifest(bad)
    bad = copy.deepcopy(manifest)
    bad["graph"]["outputs"] = bad["graph"]["outputs"][:2]
    with pytest.raises(BundleError, match="q_attn"):
        validate_manifest(bad)
    assert main(["qk", str(tiny_qk["base"]), "-o", str(tmp_path / "out"), "--layer", "7"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
