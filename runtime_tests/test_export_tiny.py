"""Exporter and bundle loader, end to end on a tiny random BERT (built here, no downloads).

The tiny model has peaked attention (large init range) so layers and positions really differ, and its
tokenizer.json carries sentence-transformers-style fixed padding/truncation that the export must drop.
Torch references come straight from transformers (eager attention), not from the exporter's wrapper.
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnx")

import keyatten_lite_export  # noqa: E402
from keyatten_lite.model.bundle import open_bundle
from keyatten_lite.model.onnx_io import read_onnx_io  # noqa: E402
from keyatten_lite.errors import BundleError, ChecksumError, InvalidArgumentError  # noqa: E402
from keyatten_lite_export import ExportError, ParityError, verify  # noqa: E402
from keyatten_lite_export.__main__ import main as export_main  # noqa: E402
from keyatten_lite_export.encoder import export_bundle  # noqa: E402
from tiny_models import TEXTS_A, TEXTS_B, make_tiny_bert  # noqa: E402

NUM_LAYERS = 3  # make_tiny_bert's default depth


def torch_head_mean_attention(model_dir: Path, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """[L, B, S, S] from transformers itself (all layers, eager)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(input_ids),
            attention_mask=torch.from_numpy(attention_mask),
            output_attentions=True,
        )
    assert len(out.attentions) == NUM_LAYERS
    return torch.stack([a.mean(dim=1) for a in out.attentions]).numpy()


def encode(bundle, texts):
    ids = [enc.ids for enc in bundle.tokenizer().encode_batch(texts)]
    return verify.pad_batch(ids, bundle.pad_token_id)


# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-export")


@pytest.fixture(scope="module")
def tiny_dir(work) -> Path:
    return make_tiny_bert(work / "tiny-bert")


@pytest.fixture(scope="module")
def full_bundle(work, tiny_dir) -> Path:
    """Every layer, with the int8 variant (through the Python API)."""
    out = work / "bundles" / "tiny-all"
    manifest = export_bundle(tiny_dir, out, name="tiny-all", int8=True)
    assert manifest["exported_layers"] == [0, 1, 2]
    return out


@pytest.fixture(scope="module")
def layer1_bundle(work, tiny_dir) -> Path:
    """Only layer 1 of 3 (through the CLI)."""
    out = work / "bundles" / "tiny-l1"
    assert export_main(["encoder", str(tiny_dir), "-o", str(out), "--name", "tiny-l1", "--layers", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def references(tiny_dir, full_bundle):
    bundle = open_bundle(full_bundle)
    batches = [encode(bundle, TEXTS_A), encode(bundle, TEXTS_B), encode(bundle, TEXTS_A[:1])]
    return [(ids, mask, torch_head_mean_attention(tiny_dir, ids, mask)) for ids, mask in batches]


def copy_bundle(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def edit_manifest(bundle_dir: Path, change) -> None:
    path = bundle_dir / "bundle.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    change(manifest)
    path.write_text(json.dumps(manifest), encoding="utf-8")


# --------------------------------------------------------------------------------------- parity


def test_runtime_matches_torch_on_padded_batches(full_bundle, references):
    bundle = open_bundle(full_bundle)
    assert any(mask.min() == 0 for _, mask, _ in references)  # padding really happens
    for ids, mask, expected in references:
        got = bundle.run_attention(ids, mask)
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert verify.valid_max_abs_diff(got, expected, mask) <= 1e-5
        for row, n in enumerate(mask.sum(axis=1)):
            valid_rows = got[:, row, :n, :]
            assert np.all(valid_rows[..., n:] == 0.0)  # padded keys get exactly 0
            np.testing.assert_allclose(valid_rows.sum(-1), 1.0, atol=1e-5)


def test_layers_really_differ(references):
    # Guards the equality tests below against a degenerate model whose layers all look alike.
    _, mask, expected = references[0]
    assert verify.valid_max_abs_diff(expected[0:1], expected[2:3], mask) > 1e-2


def test_multi_layer_export_equals_single_layer_export(full_bundle, layer1_bundle, references):
    full, single = open_bundle(full_bundle), open_bundle(layer1_bundle)
    for ids, mask, expected in references:
        got_single = single.run_attention(ids, mask)
        got_full = full.run_attention(ids, mask)
        assert got_single.shape[0] == 1
        assert verify.valid_max_abs_diff(got_single, got_full[1:2], mask) <= 1e-5
        # Truncated graph (model loaded with 2 of 3 layers) vs the full torch model's layer 1.
        assert verify.valid_max_abs_diff(got_single, expected[1:2], mask) <= 1e-5


def test_truncated_graph_has_no_later_layers(full_bundle, layer1_bundle):
    import onnx

    single_nodes = [node.name for node in onnx.load(str(layer1_bundle / "model.onnx")).graph.node]
    full_nodes = [node.name for node in onnx.load(str(full_bundle / "model.onnx")).graph.node]
    assert any("layer.2" in name for name in full_nodes)
    assert not any("layer.2" in name for name in single_nodes)
    assert (layer1_bundle / "model.onnx").stat().st_size < (full_bundle / "model.onnx").stat().st_size
    manifest = json.loads((layer1_bundle / "bundle.json").read_text())
    assert manifest["num_layers"] == NUM_LAYERS
    assert manifest["exported_layers"] == [1]
    assert manifest["default_layer"] == 1  # layer 2 was not exported: deepest exported stands in
    assert manifest["graph"]["outputs"][0]["shape"][0] == 1


# --------------------------------------------------------------------------------------- manifest


def test_manifest_records_the_export(full_bundle, tiny_dir):
    import hashlib

    manifest = json.loads((full_bundle / "bundle.json").read_text(encoding="utf-8"))
    assert manifest["format"] == "keyatten-lite-bundle" and manifest["format_version"] == 1
    assert manifest["architecture"] == "encoder" and manifest["model_type"] == "bert"
    assert manifest["num_layers"] == NUM_LAYERS and manifest["default_layer"] == NUM_LAYERS - 1
    assert manifest["recommended_layer"] is None
    assert manifest["max_length"] == 64 and manifest["padding_side"] == "right"
    assert manifest["special_tokens"]["cls"] == 2 and manifest["special_tokens"]["sep"] == 3
    assert manifest["pad_token_id"] == 0
    assert [spec["name"] for spec in manifest["graph"]["inputs"]] == ["input_ids", "attention_mask"]
    assert manifest["graph"]["outputs"][0]["name"] == "attentions"
    assert manifest["graph"]["opset"] == 17
    fp32 = manifest["parity"]["fp32"]
    assert 0 <= fp32["max_abs_diff"] <= fp32["tolerance"] == 1e-4
    assert fp32["probes"] >= 8
    assert len(set(fp32["batch_lengths"][0])) > 2  # mixed lengths in one padded batch
    assert manifest["export_seconds"] > 0
    for package in ("torch", "transformers", "onnx", "onnxruntime", "keyatten_lite"):
        assert manifest["versions"][package]
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json", "model.int8.onnx"}
    for file_name, entry in manifest["files"].items():
        data = (full_bundle / file_name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    source = manifest["source"]
    safetensors = (tiny_dir / "model.safetensors").read_bytes()
    assert source["files_sha256"]["model.safetensors"] == hashlib.sha256(safetensors).hexdigest()
    assert source["origin"].startswith("local:")


def test_tokenizer_has_padding_and_truncation_removed(full_bundle, tiny_dir):
    source = json.loads((tiny_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert source["padding"] is not None and source["truncation"] is not None
    written = json.loads((full_bundle / "tokenizer.json").read_text(encoding="utf-8"))
    assert written["padding"] is None and written["truncation"] is None
    tokenizer = open_bundle(full_bundle).tokenizer()
    assert tokenizer.padding is None and tokenizer.truncation is None
    encoding = tokenizer.encode("keyword")
    assert len(encoding.ids) < 10 and encoding.ids[0] == 2 and encoding.ids[-1] == 3


def test_graph_io_reader_matches_onnx(full_bundle):
    import onnx

    graph = onnx.load(str(full_bundle / "model.int8.onnx")).graph
    io = read_onnx_io(full_bundle / "model.int8.onnx")
    initializers = {init.name for init in graph.initializer}
    assert [spec["name"] for spec in io["inputs"]] == [i.name for i in graph.input if i.name not in initializers]
    assert [spec["name"] for spec in io["outputs"]] == [o.name for o in graph.output]
    assert [spec["dtype"] for spec in io["inputs"]] == ["int64", "int64"]
    assert io["outputs"][0]["dtype"] == "float32" and io["outputs"][0]["shape"][0] == NUM_LAYERS


# --------------------------------------------------------------------------------------- int8


def test_int8_variant_written_and_measured(full_bundle, references):
    manifest = json.loads((full_bundle / "bundle.json").read_text(encoding="utf-8"))
    agreement = manifest["parity"]["int8"]
    assert 0.0 <= agreement["top10_overlap"] <= 1.0
    assert -1.0 <= agreement["spearman"] <= 1.0
    assert agreement["max_abs_diff"] > 0.0  # quantisation changes something
    bundle = open_bundle(full_bundle, variant="int8")
    assert bundle.graph_path.name == "model.int8.onnx"
    ids, mask, expected = references[0]
    got = bundle.run_attention(ids, mask)
    assert got.shape == expected.shape and np.all(np.isfinite(got))
    n = int(mask[0].sum())
    np.testing.assert_allclose(got[:, 0, :n, :n].sum(-1), 1.0, atol=1e-4)


def test_int8_requested_but_absent(layer1_bundle):
    with pytest.raises(BundleError, match="no int8 variant"):
        open_bundle(layer1_bundle, variant="int8")


# --------------------------------------------------------------------------------------- refusal


def test_refuses_to_write_when_parity_fails(monkeypatch, tiny_dir, tmp_path):
    real_run = verify.run_onnx_attention

    def perturbed(session, input_ids, attention_mask):
        return real_run(session, input_ids, attention_mask) + np.float32(1e-3)

    monkeypatch.setattr(verify, "run_onnx_attention", perturbed)
    target = tmp_path / "out" / "refused"
    with pytest.raises(ParityError, match="not written"):
        export_bundle(tiny_dir, target, name="refused", layers=[0])
    assert not target.exists()
    assert list((tmp_path / "out").iterdir()) == []  # the temporary build directory is gone too


def test_refuses_with_zero_tolerance(monkeypatch, tiny_dir, tmp_path):
    # Tiny random BERT with peaked attention: ORT and torch differ by ~1e-6, never exactly 0 here.
    monkeypatch.setattr(verify, "FP32_TOLERANCE", 0.0)
    with pytest.raises(ParityError):
        export_bundle(tiny_dir, tmp_path / "zero", name="zero", layers=[2])
    assert not (tmp_path / "zero").exists()


def test_existing_target_is_not_overwritten(tiny_dir, tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_bundle(tiny_dir, target, name="taken")
    assert (target / "keep.txt").read_text() == "mine"


def test_bad_layer_and_name_arguments(tiny_dir, tmp_path):
    with pytest.raises(ExportError, match="out of range"):
        export_bundle(tiny_dir, tmp_path / "x", name="x", layers=[3])
    with pytest.raises(ExportError):
        export_bundle(tiny_dir, tmp_path / "y", name="bad/name")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# --------------------------------------------------------------------------------------- damage


def test_tampered_graph_raises_checksum_error(full_bundle, tmp_path):
    copy = copy_bundle(full_bundle, tmp_path)
    graph = copy / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01
    graph.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as info:
        open_bundle(copy)
    assert "model.onnx" in str(info.value) and "tiny-all" in str(info.value)


def test_tampered_int8_graph_fails_even_for_fp32(full_bundle, tmp_path):
    copy = copy_bundle(full_bundle, tmp_path)
    with open(copy / "model.int8.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ChecksumError, match="model.int8.onnx"):
        open_bundle(copy)


def test_missing_tokenizer(full_bundle, tmp_path):
    copy = copy_bundle(full_bundle, tmp_path)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json"):
        open_bundle(copy)
    with pytest.raises(BundleError, match="tokenizer.json"):
        open_bundle(copy, verify_checksums=False)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(format_version=2), "newer keyatten-lite"),
        (lambda m: m.update(format_version="1"), "format_version"),
        (lambda m: m.update(format="something-else"), "not a keyatten-lite bundle"),
        (lambda m: m.pop("exported_layers"), "exported_layers"),
        (lambda m: m.update(exported_layers=[0, 5]), "exported_layers"),
        (lambda m: m.update(padding_side="middle"), "padding_side"),
        (lambda m: m["files"].update({"../evil.onnx": m["files"]["model.onnx"]}), "plain file name"),
        (lambda m: m["graph"]["outputs"][0].update(name="attn"), "'attn'"),
        (lambda m: m["graph"]["outputs"][0].update(dtype="float16"), "float16"),
        (lambda m: m["graph"]["inputs"].append({"name": "token_type_ids", "dtype": "int64"}), "token_type_ids"),
    ],
)
def test_bad_manifest_is_rejected(full_bundle, tmp_path, change, message):
    copy = copy_bundle(full_bundle, tmp_path)
    edit_manifest(copy, change)
    with pytest.raises(BundleError, match=message):
        open_bundle(copy)


def test_manifest_not_json(full_bundle, tmp_path):
    copy = copy_bundle(full_bundle, tmp_path)
    (copy / "bundle.json").write_text("{ broken", encoding="utf-8")
    with pytest.raises(BundleError, match="not valid JSON"):
        open_bundle(copy)


# --------------------------------------------------------------------------------------- Bundle API


def test_layer_position(full_bundle, layer1_bundle):
    full = open_bundle(full_bundle)
    assert [full.layer_position(i) for i in (0, 1, 2, -1, -3)] == [0, 1, 2, 2, 0]
    assert full.layer_position(np.int64(-2)) == 1
    for bad in (3, -4, 100):
        with pytest.raises(InvalidArgumentError, match="out of range"):
            full.layer_position(bad)
    with pytest.raises(InvalidArgumentError):
        full.layer_position(True)
    with pytest.raises(InvalidArgumentError):
        full.layer_position(1.0)

    single = open_bundle(layer1_bundle)
    assert single.layer_position(1) == 0 and single.layer_position(-2) == 0
    for not_exported in (0, 2, -1):
        with pytest.raises(InvalidArgumentError, match=r"available layers: \[1\]"):
            single.layer_position(not_exported)


def test_bundle_fields_and_content_hash(full_bundle, layer1_bundle, tmp_path):
    bundle = open_bundle(full_bundle, intra_op_threads=1)
    assert bundle.name == "tiny-all" and not bundle.is_causal
    assert bundle.exported_layers == [0, 1, 2] and bundle.num_layers == NUM_LAYERS
    assert bundle.special_token_ids["cls"] == 2 and bundle.max_length == 64
    copy = copy_bundle(full_bundle, tmp_path)
    assert open_bundle(copy).content_hash == bundle.content_hash
    assert open_bundle(layer1_bundle).content_hash != bundle.content_hash


def test_run_attention_validates_input(full_bundle):
    bundle = open_bundle(full_bundle)
    ids = np.full((1, 5), 7, dtype=np.int64)
    mask = np.ones((1, 5), dtype=np.int64)
    with pytest.raises(InvalidArgumentError, match="shape"):
        bundle.run_attention(ids, mask[:, :4])
    with pytest.raises(InvalidArgumentError, match="max_length"):
        bundle.run_attention(np.full((1, 65), 7), np.ones((1, 65), dtype=np.int64))
    with pytest.raises(InvalidArgumentError, match="integers"):
        bundle.run_attention(ids.astype(np.float32), mask)
    with pytest.raises(InvalidArgumentError):
        bundle.run_attention(ids[0], mask[0])
    # int32 input and a bool mask are accepted and cast.
    out = bundle.run_attention(ids.astype(np.int32), mask.astype(bool))
    assert out.shape == (NUM_LAYERS, 1, 5, 5)


def test_session_created_once_across_threads(full_bundle, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from keyatten_lite.model.bundle import Bundle

    bundle = open_bundle(full_bundle)
    created = []
    real_create = Bundle._create_session

    def counting_create(self):
        created.append(1)
        return real_create(self)

    monkeypatch.setattr(Bundle, "_create_session", counting_create)
    ids = np.full((1, 6), 7, dtype=np.int64)
    mask = np.ones((1, 6), dtype=np.int64)
    with ThreadPoolExecutor(max_workers=4) as pool:
        outputs = list(pool.map(lambda _: bundle.run_attention(ids, mask), range(8)))
    assert len(created) == 1
    assert all(np.array_equal(outputs[0], out) for out in outputs)


# --------------------------------------------------------------------------------------- build


def _fake_sources(tiny_dir: Path, recipes: dict[str, dict], calls: list[str]):
    module = types.ModuleType("keyatten_lite_export.sources")

    def list_recipes():
        return [json.loads(json.dumps(r)) for r in recipes.values()]

    def load_recipe(name):
        return json.loads(json.dumps(recipes[name]))

    def prepare(recipe, work_dir):
        calls.append(recipe["name"])
        model_dir = Path(work_dir) / recipe["name"]
        shutil.copytree(tiny_dir, model_dir)
        return {
            "model_dir": str(model_dir),
            "model_id": "test/tiny-bert",
            "origin": "pypi:tiny-bert==0.0.1",
            "files_sha256": {"model.safetensors": "ab" * 32},
            "verification": {"checked": True},
        }

    module.list_recipes, module.load_recipe, module.prepare = list_recipes, load_recipe, prepare
    return module


def test_build_default_bundles_is_idempotent(monkeypatch, tiny_dir, tmp_path):
    from keyatten_lite_export.build import build_default_bundles

    recipes = {
        "tiny-a": {"name": "tiny-a", "language": "en", "default": True, "layers": [0], "int8": False, "max_length": 32},
        "tiny-b": {"name": "tiny-b", "language": "zh", "default": False, "layers": "all", "int8": False},
    }
    calls: list[str] = []
    fake = _fake_sources(tiny_dir, recipes, calls)
    monkeypatch.setitem(sys.modules, "keyatten_lite_export.sources", fake)
    monkeypatch.setattr(keyatten_lite_export, "sources", fake, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(home))

    first = build_default_bundles(home=home)
    assert [(r["name"], r["status"]) for r in first] == [("tiny-a", "built")]
    bundle = open_bundle("tiny-a")  # found by name in $KEYATTEN_LITE_HOME/bundles
    manifest = bundle.manifest
    assert manifest["exported_layers"] == [0] and manifest["max_length"] == 32
    assert manifest["language"] == "en"
    assert manifest["source"]["origin"] == "pypi:tiny-bert==0.0.1"
    assert manifest["source"]["verification"] == {"checked": True}
    assert manifest["build"]["recipe"] == "tiny-a"
    assert [p.name for p in (home / "bundles").iterdir()] == ["tiny-a"]  # work dirs removed

    second = build_default_bundles(home=home)
    assert [r["status"] for r in second] == ["skipped"] and calls == ["tiny-a"]

    forced = build_default_bundles(home=home, force=True)
    assert [r["status"] for r in forced] == ["built"] and calls == ["tiny-a", "tiny-a"]

    recipes["tiny-a"]["layers"] = [1]  # a changed recipe means a rebuild
    changed = build_default_bundles(home=home)
    assert [r["status"] for r in changed] == ["built"]
    assert open_bundle("tiny-a").exported_layers == [1]

    named = build_default_bundles(home=home, names=["tiny-b"])
    assert [(r["name"], r["status"]) for r in named] == [("tiny-b", "built")]
    assert open_bundle("tiny-b").exported_layers == [0, 1, 2]
    assert sorted(p.name for p in (home / "bundles").iterdir()) == ["tiny-a", "tiny-b"]
