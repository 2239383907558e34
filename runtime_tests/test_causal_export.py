"""Decoder-only export end to end on tiny random Qwen3 / Qwen2 models (built locally, no downloads).

Torch references come from transformers itself (eager attention, its own 2-D mask handling), not from
the exporter's wrapper, so the wrapper's hand-built 4-D causal mask is checked independently. Keyword
parity is checked against keyatten 0.3.1's torch backend on the same tiny checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("onnx")

from tiny_models import make_tiny_llama, make_tiny_qwen2, make_tiny_qwen3  # noqa: E402

from keyatten_lite.model.bundle import open_bundle  # noqa: E402
from keyatten_lite.errors import ChecksumError  # noqa: E402
from keyatten_lite_export import ExportError, causal, core, verify  # noqa: E402
from keyatten_lite_export.__main__ import main as export_main  # noqa: E402
from keyatten_lite_export.encoder import export_bundle  # noqa: E402

NUM_LAYERS = 6
DEFAULT_LAYER = 4  # min(5, max(0, floor(0.75 * 6)))
TEXTS = [
    "深度学习模型在自然语言处理任务中取得了显著进展",
    "keyword",
    "Decoder-only models read text from left to right.",
    "北京是中国的首都，上海是最大的城市。电池储能系统的热管理对安全性至关重要",
    "量子计算",
]
ZH_DOC = "基于注意力机制的关键词抽取方法无需训练数据。北京是中国的首都，上海是最大的城市。电池储能系统的热管理对安全性至关重要。"


# --------------------------------------------------------------------------------------- helpers


def torch_attention(
    model_dir: Path, input_ids: np.ndarray, attention_mask: np.ndarray, num_layers: int = NUM_LAYERS
) -> np.ndarray:
    """[L, B, S, S] head-mean attention of the FULL model, with transformers' own 2-D mask handling."""
    model = transformers.AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(input_ids),
            attention_mask=torch.from_numpy(attention_mask),
            output_attentions=True,
            use_cache=False,
        )
    assert len(out.attentions) == num_layers
    return torch.stack([a.mean(dim=1) for a in out.attentions]).numpy()


def encode(bundle, texts, side):
    ids = [enc.ids for enc in bundle.tokenizer().encode_batch(texts)]
    return verify.pad_batch(ids, bundle.pad_token_id, side)


def graph_node_names(path: Path) -> list[str]:
    import onnx

    return [node.name for node in onnx.load(str(path), load_external_data=False).graph.node]


# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("causal-export")


@pytest.fixture(scope="module")
def qwen3_dir(work) -> Path:
    return make_tiny_qwen3(work / "tiny-qwen3")


@pytest.fixture(scope="module")
def qwen2_dir(work) -> Path:
    return make_tiny_qwen2(work / "tiny-qwen2")


@pytest.fixture(scope="module")
def qwen3_bundle(work, qwen3_dir) -> Path:
    """Default layer only (Python API), with the int8 variant."""
    out = work / "bundles" / "qwen3"
    export_bundle(qwen3_dir, out, name="tiny-qwen3", int8=True)
    return out


@pytest.fixture(scope="module")
def qwen2_bundle(work, qwen2_dir) -> Path:
    """Layers 2 and 4 of 6 through the CLI (`model` alias), max length overridden."""
    out = work / "bundles" / "qwen2"
    argv = ["model", str(qwen2_dir), "-o", str(out), "--name", "tiny-qwen2", "--layers", "2,4", "--max-length", "128"]
    assert export_main(argv) == 0
    return out


@pytest.fixture(scope="module")
def external_bundle(work, qwen3_dir) -> Path:
    """A graph written with one external-data file (threshold lowered so a tiny model needs it)."""
    out = work / "bundles" / "qwen3-external"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(core, "EXTERNAL_DATA_THRESHOLD_BYTES", 0)  # the trace step reads it there
        export_bundle(qwen3_dir, out, name="tiny-qwen3-external", layers=[1], int8=True)
    return out


# --------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("which", ["qwen3", "qwen2"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_runtime_matches_transformers(which, side, request):
    model_dir = request.getfixturevalue(f"{which}_dir")
    bundle = open_bundle(request.getfixturevalue(f"{which}_bundle"))
    ids, mask = encode(bundle, TEXTS, side)
    assert mask.min() == 0 and (mask[:, 0].min() == 0) == (side == "left")  # padding on that side
    expected = torch_attention(model_dir, ids, mask)[bundle.exported_layers]
    got = bundle.run_attention(ids, mask)
    assert got.shape == expected.shape
    assert verify.valid_max_abs_diff(got, expected, mask) <= 1e-4
    for row in range(len(TEXTS)):
        keep = np.flatnonzero(mask[row])
        rows = got[:, row][:, keep]  # valid queries, all keys
        np.testing.assert_allclose(rows.sum(-1), 1.0, atol=1e-5)
        assert np.all(np.delete(rows, keep, axis=-1) == 0.0)  # padded keys get exactly 0
        valid = rows[:, :, keep]
        assert np.all(np.triu(valid, k=1) == 0.0)  # causal: nothing above the diagonal


def test_llama_family(tmp_path):
    # Llama: same mask path; the 4-layer model's default is its last layer (min(3, floor(3.0))).
    model_dir = make_tiny_llama(tmp_path / "tiny-llama", layers=4)
    manifest = export_bundle(model_dir, tmp_path / "bundle", name="tiny-llama")
    assert manifest["model_type"] == "llama" and manifest["exported_layers"] == [3]
    bundle = open_bundle(tmp_path / "bundle")
    ids, mask = encode(bundle, TEXTS, "left")
    expected = torch_attention(model_dir, ids, mask, num_layers=4)[[3]]
    assert verify.valid_max_abs_diff(bundle.run_attention(ids, mask), expected, mask) <= 1e-4


def test_layers_really_differ(qwen3_dir, qwen3_bundle):
    # Guards the comparisons against a degenerate model whose layers all look alike.
    bundle = open_bundle(qwen3_bundle)
    ids, mask = encode(bundle, TEXTS, "right")
    attention = torch_attention(qwen3_dir, ids, mask)
    assert verify.valid_max_abs_diff(attention[0:1], attention[4:5], mask) > 0.05


def test_left_padding_gives_the_unpadded_attention(qwen3_bundle):
    # RoPE depends on relative positions only, so no position_ids are needed for left padding.
    bundle = open_bundle(qwen3_bundle)
    ids, mask = encode(bundle, TEXTS, "left")
    batched = bundle.run_attention(ids, mask)
    for row, text in enumerate(TEXTS):
        single_ids = np.asarray([bundle.tokenizer().encode(text).ids], dtype=np.int64)
        alone = bundle.run_attention(single_ids, np.ones_like(single_ids))
        keep = np.flatnonzero(mask[row])
        np.testing.assert_allclose(batched[:, row][:, keep][:, :, keep], alone[:, 0], atol=1e-5)


def test_int8_variant(qwen3_bundle):
    manifest = json.loads((qwen3_bundle / "bundle.json").read_text(encoding="utf-8"))
    agreement = manifest["parity"]["int8"]
    assert agreement["max_abs_diff"] > 0.0 and -1.0 <= agreement["spearman"] <= 1.0
    bundle = open_bundle(qwen3_bundle, variant="int8")
    ids, mask = encode(bundle, TEXTS, "left")
    got = bundle.run_attention(ids, mask)
    keep = np.flatnonzero(mask[0])
    np.testing.assert_allclose(got[:, 0][:, keep].sum(-1), 1.0, atol=1e-4)


# --------------------------------------------------------------------------------------- manifest


def test_manifest_records_the_causal_export(qwen3_bundle, qwen3_dir):
    manifest = json.loads((qwen3_bundle / "bundle.json").read_text(encoding="utf-8"))
    assert manifest["architecture"] == "causal" and manifest["model_type"] == "qwen3"
    assert manifest["num_layers"] == NUM_LAYERS  # the full model, not the cut graph
    assert manifest["exported_layers"] == [DEFAULT_LAYER]
    assert manifest["default_layer"] == manifest["recommended_layer"] == DEFAULT_LAYER
    assert manifest["padding_side"] == "left"  # from tokenizer_config.json
    eos = manifest["special_tokens"]["eos"]
    assert eos is not None and manifest["special_tokens"]["bos"] is None
    assert manifest["pad_token_id"] == manifest["special_tokens"]["pad"] == eos
    assert manifest["max_length"] == 256  # min(max_position_embeddings, 8192)
    fp32 = manifest["parity"]["fp32"]
    assert fp32["max_abs_diff"] <= 1e-4
    assert set(fp32["padding_sides"]) == {"left", "right"}
    assert len(fp32["padding_sides"]) == len(fp32["batch_lengths"])
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json", "model.int8.onnx"}
    safetensors = (qwen3_dir / "model.safetensors").read_bytes()
    assert manifest["source"]["files_sha256"]["model.safetensors"] == hashlib.sha256(safetensors).hexdigest()


def test_cli_layers_pad_fallback_and_max_length(qwen2_bundle):
    manifest = json.loads((qwen2_bundle / "bundle.json").read_text(encoding="utf-8"))
    assert manifest["architecture"] == "causal" and manifest["model_type"] == "qwen2"
    assert manifest["exported_layers"] == [2, 4] and manifest["default_layer"] == DEFAULT_LAYER
    assert manifest["padding_side"] == "right"
    # The tokenizer has no pad token: EOS stands in, and the manifest says so.
    assert manifest["pad_token_id"] == manifest["special_tokens"]["eos"] == manifest["special_tokens"]["pad"]
    assert manifest["pad_token_from"] == "eos"
    assert manifest["max_length"] == 128
    assert manifest["graph"]["outputs"][0]["shape"][0] == 2


def test_graph_is_cut_after_the_exported_layer(qwen3_bundle, qwen2_bundle):
    for bundle_dir in (qwen3_bundle, qwen2_bundle):
        names = graph_node_names(bundle_dir / "model.onnx")
        assert any("layers.4/" in name for name in names)
        assert not any("layers.5/" in name for name in names)


def test_causal_max_length_rule():
    assert causal.causal_max_length(32768, None) == causal.DEFAULT_MAX_LENGTH_CAP == 8192
    assert causal.causal_max_length(512, None) == 512
    assert causal.causal_max_length(None, None) == 8192
    assert causal.causal_max_length(32768, 16384) == 16384
    with pytest.raises(ExportError, match="exceeds"):
        causal.causal_max_length(512, 1024)
    with pytest.raises(ExportError):
        causal.causal_max_length(512, 1)


def test_default_layer_rule():
    expected = {28: 21, 36: 27, 12: 9, 6: 4, 4: 3, 1: 0}  # keyatten §2.5 examples
    assert {n: causal.resolve_causal_layers(None, n) for n in expected} == {n: [v] for n, v in expected.items()}
    assert causal.resolve_causal_layers("all", 3) == [0, 1, 2]
    assert causal.resolve_causal_layers([-1, 2], 6) == [2, 5]


# --------------------------------------------------------------------------------------- runtime use


def test_extractor_picks_the_recommended_layer(qwen3_bundle, qwen2_bundle):
    from keyatten_lite.extractors.keyatten import KeyAttenExtractor

    extractor = KeyAttenExtractor(model=str(qwen3_bundle), language="zh")
    assert extractor.is_causal
    assert extractor.resources.read_layers() == ([0], [1.0])
    assert extractor.bundle.exported_layers[0] == extractor.bundle.manifest["default_layer"] == DEFAULT_LAYER
    two = KeyAttenExtractor(model=str(qwen2_bundle), language="zh")
    assert two.resources.read_layers() == ([1], [1.0])  # layer 4 is the second of [2, 4]


@pytest.mark.parametrize("which", ["qwen3", "qwen2"])
def test_batched_extraction_equals_single(which, request):
    # Left (qwen3) and right (qwen2) padded batches must give each document's unbatched keywords.
    from keyatten_lite.extractors.keyatten import KeyAttenExtractor

    extractor = KeyAttenExtractor(model=str(request.getfixturevalue(f"{which}_bundle")), language="zh")
    docs = [ZH_DOC, TEXTS[0], TEXTS[3]]
    batched = extractor.extract_keywords_batch(docs, top_k=5, with_scores=True, batch_size=3)
    for doc, got in zip(docs, batched):
        single = extractor.extract_keywords(doc, top_k=5, with_scores=True)
        assert [p for p, _ in got] == [p for p, _ in single]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in single], atol=1e-5)


@pytest.mark.parametrize("which", ["qwen3", "qwen2"])
@pytest.mark.parametrize("mode", ["word", "token_span"])
def test_keywords_match_keyatten_031(which, mode, request):
    """All twelve methods, word and token_span modes, automatic layer, IDF fitted on the same texts:
    0.3.1's top 8 must be an ordering of ours up to tied scores."""
    keyatten = pytest.importorskip("keyatten")
    from keyatten_lite.extractors.keyatten import KeyAttenExtractor
    from keyatten_lite_export.parity import ALL_METHODS, same_up_to_ties

    model_dir = request.getfixturevalue(f"{which}_dir")
    bundle = request.getfixturevalue(f"{which}_bundle")
    if which == "qwen2":
        # The tiny Qwen2 has no pad token; 0.3.1's word path pads even one document and raises.
        # Give its copy EOS as pad, which is what the exporter and the runtime fall back to.
        model_dir = _with_eos_as_pad(model_dir, request.getfixturevalue("tmp_path"))
    docs = [ZH_DOC] + TEXTS[:3]
    reference = keyatten.KeyAttenExtractor(model=str(model_dir), language="zh", backend="torch", candidate_scoring=mode)
    lite = KeyAttenExtractor(model=str(bundle), language="zh", candidate_scoring=mode, profile="compat")
    reference.fit_idf(docs)
    lite.fit_idf(docs)
    differing = []
    for method in ALL_METHODS:
        ours_all = lite.extract_keywords_batch(docs, method=method, top_k=1000, with_scores=True)
        for i, (doc, ours) in enumerate(zip(docs, ours_all)):
            theirs = reference.extract_keywords(doc, method=method, top_k=8)
            if not same_up_to_ties(ours, theirs, 8, 1e-5):
                differing.append((method, i, theirs, ours[:8]))
    assert not differing


def _with_eos_as_pad(model_dir: Path, tmp_path: Path) -> Path:
    import json
    import shutil

    copy = tmp_path / "with-pad"
    shutil.copytree(model_dir, copy)
    config_path = copy / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["pad_token"] = config.get("eos_token") or "<|endoftext|>"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return copy


_REFERENCES: dict[str, object] = {}


def _keyatten_reference(keyatten, model_dir: Path):
    key = str(model_dir)
    if key not in _REFERENCES:
        # layer_index None: 0.3.1 reads its recommended layer of the full torch model.
        _REFERENCES[key] = keyatten.KeyAttenExtractor(model=key, language="zh", backend="torch")
    return _REFERENCES[key]


# --------------------------------------------------------------------------------------- external data


def test_external_data_bundle(external_bundle, qwen3_dir):
    manifest = json.loads((external_bundle / "bundle.json").read_text(encoding="utf-8"))
    assert sorted(p.name for p in external_bundle.iterdir()) == sorted(list(manifest["files"]) + ["bundle.json"])
    assert set(manifest["files"]) == {"model.onnx", "model.onnx.data", "tokenizer.json", "model.int8.onnx"}
    assert manifest["graph"]["external_data"] == "model.onnx.data"
    data = (external_bundle / "model.onnx.data").read_bytes()
    assert manifest["files"]["model.onnx.data"] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    # The weights really live in that one data file.
    import onnx

    graph = onnx.load(str(external_bundle / "model.onnx"), load_external_data=False).graph
    external = [t for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert "model.embed_tokens.weight" in {t.name for t in external}
    assert {entry.value for t in external for entry in t.external_data if entry.key == "location"} == {"model.onnx.data"}
    bundle = open_bundle(external_bundle)
    ids, mask = encode(bundle, TEXTS, "left")
    expected = torch_attention(qwen3_dir, ids, mask)[[1]]
    assert verify.valid_max_abs_diff(bundle.run_attention(ids, mask), expected, mask) <= 1e-4


def test_damaged_external_data_is_refused(external_bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(external_bundle, copy)
    raw = bytearray((copy / "model.onnx.data").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (copy / "model.onnx.data").write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match="model.onnx.data"):
        open_bundle(copy)


# --------------------------------------------------------------------------------------- hub ids


def test_hub_id_builds_the_right_loader_calls(monkeypatch, qwen2_dir, tmp_path):
    """A hub id goes to from_pretrained with its revision, eager attention and the cut depth.

    The loaders are replaced by ones that record their arguments and read the local tiny model, so no
    network is touched.
    """
    hub_id, revision = "Qwen/Qwen3-Embedding-0.6B", "0123abcd"
    calls: list[tuple[str, str, dict]] = []

    def recording(kind, real):
        def from_pretrained(source, *args, **kwargs):
            if source != hub_id:  # transformers' own nested calls, already redirected
                return real(source, *args, **kwargs)
            calls.append((kind, source, dict(kwargs)))
            kwargs.pop("revision", None)
            return real(str(qwen2_dir), *args, **kwargs)

        return from_pretrained

    for kind in ("AutoConfig", "AutoModel", "AutoTokenizer"):
        cls = getattr(transformers, kind)
        monkeypatch.setattr(cls, "from_pretrained", recording(kind, cls.from_pretrained))

    manifest = export_bundle(hub_id, tmp_path / "hub", name="hub", layers=[1], revision=revision)

    kinds = [kind for kind, _, _ in calls]
    assert {"AutoConfig", "AutoModel", "AutoTokenizer"} <= set(kinds)
    for kind, source, kwargs in calls:
        assert kwargs.get("revision") == revision
        assert kwargs.get("trust_remote_code") is not True
    (model_kwargs,) = [kwargs for kind, _, kwargs in calls if kind == "AutoModel"]
    assert model_kwargs["attn_implementation"] == "eager"
    assert model_kwargs["num_hidden_layers"] == 2  # deepest requested layer + 1
    assert model_kwargs["use_cache"] is False
    assert manifest["source"]["origin"] == f"hub:{hub_id}" and manifest["source"]["revision"] == revision
    assert manifest["num_layers"] == NUM_LAYERS and manifest["exported_layers"] == [1]
