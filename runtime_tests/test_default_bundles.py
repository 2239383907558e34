"""The installed default bundles: recorded parity, and parity re-measured against torch on fresh texts.

Skips when a default bundle is not built (`keyatten-lite models build`) or torch is absent. The source
model is rebuilt from the bundle's recipe (sources.prepare into a temporary directory), loaded with
only the exported layers, and compared on probe texts the exporter never saw.
"""

from __future__ import annotations

import inspect
import json

import pytest

from keyatten_lite.model.bundle import open_bundle
from keyatten_lite.model.registry import DEFAULT_BUNDLES, bundles_dir

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4
# Not among the exporter's probes (checked below), Chinese and English, very different lengths.
FRESH_TEXTS = [
    "Reinforcement learning agents balance exploration against exploitation when rewards are sparse.",
    "土壤微生物群落结构对作物产量的影响研究",
    "Protein folding",
    "本文提出一种基于图卷积网络的交通流量预测方法，并在两个公开数据集上验证了其有效性。",
    "Wind turbines convert kinetic energy into electricity; blade design controls efficiency and noise.",
    "卫星遥感",
]


def _installed(name: str):
    path = bundles_dir() / name
    if not (path / "bundle.json").is_file():
        pytest.skip(f"default bundle {name!r} is not built in {bundles_dir()} (run `keyatten-lite models build`)")
    return path


@pytest.mark.parametrize("name", sorted(DEFAULT_BUNDLES))
def test_recorded_parity(name):
    path = _installed(name)
    bundle = open_bundle(path)  # verifies every checksum and the graph I/O
    fp32 = bundle.manifest["parity"]["fp32"]
    assert fp32["tolerance"] == TOLERANCE
    assert 0.0 <= fp32["max_abs_diff"] <= TOLERANCE
    assert fp32["probes"] >= 8
    assert bundle.manifest["architecture"] == "encoder"
    assert bundle.exported_layers == list(range(bundle.num_layers))
    if "model.int8.onnx" in bundle.manifest["files"]:
        int8 = bundle.manifest["parity"]["int8"]
        assert 0.0 <= int8["top10_overlap"] <= 1.0 and -1.0 <= int8["spearman"] <= 1.0


@pytest.mark.parametrize("name", sorted(DEFAULT_BUNDLES))
def test_parity_on_fresh_texts(name, tmp_path):
    path = _installed(name)
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import AutoModel, AutoTokenizer

    from keyatten_lite_export import sources, verify

    assert not set(FRESH_TEXTS) & set(verify.PROBE_TEXTS)
    bundle = open_bundle(path)
    recipe_name = (bundle.manifest.get("build") or {}).get("recipe", name)
    recipe = sources.load_recipe(recipe_name)
    kwargs = {"verify": False} if "verify" in inspect.signature(sources.prepare).parameters else {}
    info = sources.prepare(recipe, tmp_path, **kwargs)
    assert info["model_id"] == bundle.manifest["source"]["model_id"]

    # The bundle's tokenizer.json must encode exactly as the source's transformers tokenizer.
    encodings = bundle.tokenizer().encode_batch(FRESH_TEXTS)
    reference_ids = AutoTokenizer.from_pretrained(info["model_dir"], use_fast=True)(FRESH_TEXTS)["input_ids"]
    assert [enc.ids for enc in encodings] == [list(ids) for ids in reference_ids]
    input_ids, attention_mask = verify.pad_batch([enc.ids for enc in encodings], bundle.pad_token_id)
    assert attention_mask.min() == 0

    keep = max(bundle.exported_layers) + 1
    model = AutoModel.from_pretrained(info["model_dir"], attn_implementation="eager", num_hidden_layers=keep).eval()
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(input_ids),
            attention_mask=torch.from_numpy(attention_mask),
            token_type_ids=torch.zeros_like(torch.from_numpy(input_ids)),
            output_attentions=True,
        )
    expected = torch.stack([out.attentions[i].mean(dim=1) for i in bundle.exported_layers]).numpy()
    got = bundle.run_attention(input_ids, attention_mask)
    diff = verify.valid_max_abs_diff(got, expected, attention_mask)
    print(json.dumps({"bundle": name, "fresh_max_abs_diff": diff}))
    assert diff <= TOLERANCE
