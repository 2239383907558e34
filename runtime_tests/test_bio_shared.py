"""BIO bundles that share their backbone's graph (export/bio_shared.py, model/bundle.py's
SharedBackboneBundle), on a tiny random BERT: the same spans, emissions and attention as torch and as
the full BIO bundle, no graph of their own, and clear refusals when the backbone is missing, changed
or lacks the hidden state."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from keyatten_lite.errors import BundleError, BundleNotFoundError

from test_bio import TINY_TEXTS, make_tiny_bert, tiny_head, torch_reference


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("onnx")
    from keyatten_lite_export.bio import export_bio_bundle
    from keyatten_lite_export.bio_shared import share_backbone
    from keyatten_lite_export.encoder import export_bundle

    root = tmp_path_factory.mktemp("bio-shared")
    model_dir = make_tiny_bert(root / "src")
    head = tiny_head()
    bundles = root / "bundles"
    backbone = export_bundle(model_dir, bundles / "tiny-bert", name="tiny-bert", int8=True, hidden_output=True)
    plain = export_bundle(model_dir, root / "plain" / "tiny-bert", name="tiny-bert")
    full_dir = root / "full" / "bio-tiny"
    export_bio_bundle(model_dir, full_dir, head, name="bio-tiny", extra_manifest={"language": "en"})
    manifest = share_backbone(full_dir, bundles / "tiny-bert", bundles / "bio-tiny", head, model_dir)
    return {
        "model_dir": model_dir, "head": head, "root": root, "bundles": bundles, "full": full_dir,
        "backbone": backbone, "plain": plain, "manifest": manifest,
    }


def test_the_backbone_emits_the_hidden_state_and_the_same_attention(shared):
    from keyatten_lite.model.bundle import open_bundle

    outputs = [o["name"] for o in shared["backbone"]["graph"]["outputs"]]
    assert outputs == ["attentions", "last_layer_input"]
    assert shared["backbone"]["parity"]["fp32"]["last_layer_input"]["max_abs_diff"] <= 1e-3
    with_hidden = open_bundle(shared["bundles"] / "tiny-bert")
    without = open_bundle(shared["root"] / "plain" / "tiny-bert")
    ids = np.array([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    np.testing.assert_allclose(with_hidden.run_attention(ids, mask), without.run_attention(ids, mask), atol=1e-6)


def test_shared_bundle_has_no_graph_and_decodes_like_torch(shared):
    from keyatten_lite.extractors.bio_tagger import BIOExtractor

    files = sorted(p.name for p in (shared["bundles"] / "bio-tiny").iterdir())
    assert files == ["bundle.json", "head.onnx", "tokenizer.json"]
    manifest = shared["manifest"]
    assert manifest["backbone"]["bundle"] == "tiny-bert"
    report = manifest["parity"]["fp32"]["shared_backbone"]
    assert report["emissions_max_abs_diff"] <= 1e-4 and report["attention_max_abs_diff"] <= 1e-4
    done, total = report["viterbi_paths_equal"].split("/")
    assert done == total and int(total) > 0
    shared_tagger = BIOExtractor(shared["bundles"] / "bio-tiny")
    full_tagger = BIOExtractor(shared["full"])
    assert type(shared_tagger.bundle).__name__ == "SharedBackboneBundle"
    references = [torch_reference(shared["model_dir"], shared["head"], text) for text in TINY_TEXTS]
    assert sum(len(spans) for spans, _, _ in references) >= 3
    for text, (spans, attentions, emissions) in zip(TINY_TEXTS, references):
        run = shared_tagger.run(text)
        assert run.spans == spans == full_tagger.run(text).spans
        assert np.abs(run.attentions - attentions).max() <= 1e-4
        assert np.abs(run.emissions - emissions).max() <= 1e-4
    assert shared_tagger.extract_spans_batch(TINY_TEXTS) == [r[0] for r in references]


def test_cache_keys_change_with_the_backbone(shared):
    from keyatten_lite.model.bundle import open_bundle

    bundle = open_bundle(shared["bundles"] / "bio-tiny")
    assert bundle.content_hash != bundle.backbone.content_hash
    assert bundle.content_hash == open_bundle(shared["bundles"] / "bio-tiny").content_hash


def _copy(shared, tmp_path):
    target = tmp_path / "bundles"
    shutil.copytree(shared["bundles"], target)
    return target


def test_a_missing_or_changed_backbone_is_refused(shared, tmp_path):
    from keyatten_lite.model.bundle import open_bundle

    bundles = _copy(shared, tmp_path)
    manifest_path = bundles / "bio-tiny" / "bundle.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["backbone"]["files"]["model.onnx"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="different model.onnx"):
        open_bundle(bundles / "bio-tiny")
    manifest["backbone"]["files"]["model.onnx"] = shared["manifest"]["backbone"]["files"]["model.onnx"]
    manifest["backbone"]["head_graph"] = "model.onnx"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="head_graph"):
        open_bundle(bundles / "bio-tiny")
    shutil.copy(shared["bundles"] / "bio-tiny" / "bundle.json", manifest_path)
    shutil.rmtree(bundles / "tiny-bert")
    with pytest.raises(BundleNotFoundError, match="tiny-bert"):
        open_bundle(bundles / "bio-tiny")
    # a backbone without the hidden state (an attention-only export of the same model)
    shutil.copytree(shared["root"] / "plain" / "tiny-bert", bundles / "tiny-bert")
    with pytest.raises(BundleError):
        open_bundle(bundles / "bio-tiny")


def test_share_backbone_refuses_a_backbone_without_hidden_state(shared, tmp_path):
    from keyatten_lite_export import ExportError
    from keyatten_lite_export.bio_shared import share_backbone

    with pytest.raises(ExportError, match="last_layer_input"):
        share_backbone(
            shared["full"], shared["root"] / "plain" / "tiny-bert", tmp_path / "out", shared["head"], shared["model_dir"]
        )
    assert not (tmp_path / "out").exists()


def test_packed_shared_bundle_installs_beside_its_backbone(shared, tmp_path):
    from keyatten_lite.extractors.bio_tagger import BIOExtractor
    from keyatten_lite.model.install import install_pack
    from keyatten_lite.model.pack import pack_bundle

    pack_bundle(shared["bundles"] / "tiny-bert", tmp_path / "backbone.tar.gz", variants=("fp32",))
    summary = pack_bundle(shared["bundles"] / "bio-tiny", tmp_path / "bio.tar.gz")
    assert summary["bytes"] < 200_000  # bundle.json, tokenizer.json and head.onnx: no backbone copy
    home = tmp_path / "home"
    install_pack(tmp_path / "bio.tar.gz", home=home)
    with pytest.raises(BundleNotFoundError, match="tiny-bert"):
        BIOExtractor(home / "bundles" / "bio-tiny")  # installed, but its backbone is not there yet
    install_pack(tmp_path / "backbone.tar.gz", home=home)
    installed = BIOExtractor(home / "bundles" / "bio-tiny")
    original = BIOExtractor(shared["bundles"] / "bio-tiny")
    assert installed.extract_spans_batch(TINY_TEXTS) == original.extract_spans_batch(TINY_TEXTS)
