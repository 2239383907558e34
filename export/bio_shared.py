"""A BIO bundle that shares its backbone's graph instead of carrying a copy of it (build time).

The BIO tagger's emissions are ``Linear(hidden, 3)`` over the backbone's last hidden state, and the
backbone is the attention bundle of the same language (``backbone`` in the recipe). When that bundle's
graph also emits ``last_layer_input`` (recipe ``hidden_output: true``: the hidden state entering the
last layer, which the attention graph computes anyway), the BIO bundle needs only a small graph of its
own, ``head.onnx``: the last layer and the head, ``(last_layer_input, attention_mask) -> emissions``.
Emitting the last hidden state from the attention graph instead was measured and refused: it keeps the
last layer's value, output and MLP alive and made every attention-only pass 7-16 % slower.
At run time keyatten_lite.model.bundle.SharedBackboneBundle runs the backbone's graph, then head.onnx.

:func:`share_backbone` turns a full BIO bundle (exported and checked against torch by :mod:`.bio`)
into the shared one, after measuring that the two give the same attention and emissions on the
probe texts (max abs difference, Viterbi paths) — the parity recorded in the manifest under
``parity.fp32.shared_backbone``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from keyatten_lite.model.manifest import read_manifest

from . import ExportError, ParityError, core, verify
from . import manifest as manifest_mod
from .bio_train import EMISSIONS_OUTPUT, BIOHead
from .encoder import HIDDEN_OUTPUT

__all__ = ["HEAD_GRAPH", "SHARED_TOLERANCE", "export_head_graph", "share_backbone"]

HEAD_GRAPH = "head.onnx"
HEAD_INPUTS = ("last_layer_input", "attention_mask")
# The last layer and the head in their own graph instead of inside the full one: float rounding only.
SHARED_TOLERANCE = 1e-4


def _head_module_class():
    import torch

    class LastLayerAndHead(torch.nn.Module):
        """(hidden state entering the last layer [B, S, H], attention_mask [B, S]) -> emissions [B, S, 3]."""

        def __init__(self, layer, head: BIOHead):
            super().__init__()
            self.layer = layer
            self.classifier = torch.nn.Linear(head.weight.shape[1], head.weight.shape[0])
            with torch.no_grad():
                self.classifier.weight.copy_(torch.from_numpy(head.weight))
                self.classifier.bias.copy_(torch.from_numpy(head.bias))

        def forward(self, hidden, attention_mask):
            # The additive mask BERT's eager attention uses: 0 for real keys, the dtype's minimum for padding.
            extended = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
            out = self.layer(hidden, attention_mask=extended)
            return self.classifier(out[0] if isinstance(out, tuple) else out)

    return LastLayerAndHead


def export_head_graph(model_dir: str | Path, head: BIOHead, path: Path) -> None:
    """Trace the encoder's last layer and ``head`` into ``path`` (legacy exporter, opset 17)."""
    import torch

    from .encoder import load_encoder

    model, config, _ = load_encoder(model_dir)
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if layers is None or len(layers) == 0:
        raise ExportError(f"{config.model_type}: no encoder.layer list; a shared backbone needs a BERT-style encoder")
    module = _head_module_class()(layers[-1], head).eval()
    hidden = torch.randn(2, 7, config.hidden_size)
    mask = torch.ones(2, 7, dtype=torch.int64)
    mask[1, 5:] = 0
    with torch.no_grad(), core.quiet_transformers():
        torch.onnx.export(
            module, (hidden, mask), str(path), input_names=list(HEAD_INPUTS), output_names=[EMISSIONS_OUTPUT],
            dynamic_axes={name: {0: "batch", 1: "seq"} for name in (*HEAD_INPUTS, EMISSIONS_OUTPUT)},
            opset_version=core.OPSET, dynamo=False,
        )


def _probe_batches(tokenizer_path: Path, pad_id: int, max_length: int):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    texts = list(verify.PROBE_TEXTS) + [verify.LONG_PROBE_TEXT]
    id_lists = [enc.ids[: max_length - 1] + enc.ids[-1:] if len(enc.ids) > max_length else enc.ids
                for enc in tokenizer.encode_batch(texts)]
    return verify.probe_batches(id_lists[:-1], id_lists[-1], pad_id)


def _compare(full_session, backbone_session, head_session, head: BIOHead, batches) -> dict:
    from keyatten_lite.scoring.bio_decode import viterbi_decode

    attention_worst, emission_worst, paths_equal, sequences = 0.0, 0.0, 0, 0
    crf = (head.start, head.end, head.transitions)
    for ids, mask in batches:
        feeds = {"input_ids": ids, "attention_mask": mask}
        full_attention, full_emissions = full_session.run([core.OUTPUT_NAME, EMISSIONS_OUTPUT], feeds)
        attention, hidden = backbone_session.run([core.OUTPUT_NAME, HIDDEN_OUTPUT], feeds)
        (emissions,) = head_session.run([EMISSIONS_OUTPUT], {HEAD_INPUTS[0]: hidden, HEAD_INPUTS[1]: mask})
        attention_worst = max(attention_worst, verify.valid_max_abs_diff(full_attention, attention, mask))
        for row, n_valid in enumerate(mask.sum(axis=1)):
            n = int(n_valid)
            diff = np.abs(full_emissions[row, :n].astype(np.float64) - emissions[row, :n].astype(np.float64))
            emission_worst = max(emission_worst, float(diff.max()) if np.all(np.isfinite(diff)) else float("inf"))
            paths_equal += viterbi_decode(full_emissions[row, :n], *crf) == viterbi_decode(emissions[row, :n], *crf)
            sequences += 1
    return {
        "compared_with": "the same BIO bundle with the whole backbone in its own graph (checked against torch above)",
        "attention_max_abs_diff": attention_worst,
        "emissions_max_abs_diff": emission_worst,
        "viterbi_paths_equal": f"{paths_equal}/{sequences}",
        "tolerance": SHARED_TOLERANCE,
    }


def share_backbone(
    full_dir: str | Path,
    backbone_dir: str | Path,
    out_dir: str | Path,
    head: BIOHead,
    model_dir: str | Path,
    *,
    check: Any = None,
) -> dict:
    """Write the shared-backbone form of the full BIO bundle at ``full_dir`` to ``out_dir``.

    Refuses (ExportError / ParityError, writing nothing) when the backbone lacks ``last_hidden_state``,
    has another tokenizer, or gives other attention or emissions than the full bundle (beyond
    :data:`SHARED_TOLERANCE`, or any Viterbi path). ``check(work_dir, manifest)`` runs on the staged
    bundle before it goes live (the caller opens it with the runtime). Returns the manifest written.
    """
    full_dir, backbone_dir, out_dir = Path(full_dir), Path(backbone_dir), Path(out_dir)
    # ``model_dir`` is the source model the full bundle was exported from: head.onnx takes its last layer.
    full = read_manifest(full_dir)
    backbone = read_manifest(backbone_dir)
    outputs = [spec["name"] for spec in backbone["graph"]["outputs"]]
    if HIDDEN_OUTPUT not in outputs:
        raise ExportError(
            f"backbone {backbone['name']!r} does not emit {HIDDEN_OUTPUT!r}; build it with hidden_output: true"
        )
    if "model.onnx" not in backbone["files"]:
        raise ExportError(f"backbone {backbone['name']!r} has no fp32 graph, which the BIO head was checked on")
    tokenizer_file = full["tokenizer"]["file"]
    if full["files"][tokenizer_file]["sha256"] != backbone["files"][backbone["tokenizer"]["file"]]["sha256"]:
        raise ExportError(f"backbone {backbone['name']!r} has another tokenizer than the BIO bundle")
    for key in ("num_layers", "exported_layers", "max_length", "pad_token_id", "padding_side", "special_tokens"):
        if full[key] != backbone[key]:
            raise ExportError(f"backbone {backbone['name']!r} differs from the BIO bundle in {key}")
    if max(backbone["exported_layers"]) != backbone["num_layers"] - 1:
        raise ExportError(f"backbone {backbone['name']!r} does not run its last layer; export every layer")

    core.prepare_target(out_dir, True)
    with core.staged_bundle(out_dir) as work_dir:
        export_head_graph(model_dir, head, work_dir / HEAD_GRAPH)
        batches = _probe_batches(full_dir / tokenizer_file, full["pad_token_id"], full["max_length"])
        report = _compare(
            verify.onnx_session(full_dir / "model.onnx"), verify.onnx_session(backbone_dir / "model.onnx"),
            verify.onnx_session(work_dir / HEAD_GRAPH), head, batches,
        )
        manifest = _shared_manifest(full, backbone, report, work_dir, tokenizer_file)
        shutil.copyfile(full_dir / tokenizer_file, work_dir / tokenizer_file)
        manifest_mod.write_manifest(work_dir, manifest)
        if check is not None:
            check(work_dir, manifest)
    return manifest


def _shared_manifest(full, backbone, report, work_dir: Path, tokenizer_file: str) -> dict:
    if not (
        report["attention_max_abs_diff"] <= SHARED_TOLERANCE
        and report["emissions_max_abs_diff"] <= SHARED_TOLERANCE
        and report["viterbi_paths_equal"].split("/")[0] == report["viterbi_paths_equal"].split("/")[1]
    ):
        raise ParityError(f"the shared backbone does not reproduce the BIO bundle: {report}; nothing was written")

    manifest = dict(full)
    manifest["files"] = {tokenizer_file: full["files"][tokenizer_file], **manifest_mod.files_table(work_dir, [HEAD_GRAPH])}
    manifest["graph"] = {
        "inputs": full["graph"]["inputs"],
        "outputs": [spec for spec in full["graph"]["outputs"] if spec["name"] in (core.OUTPUT_NAME, EMISSIONS_OUTPUT)],
        "shared_from": backbone["name"],
    }
    manifest["backbone"] = {
        "bundle": backbone["name"],
        "hidden_output": HIDDEN_OUTPUT,
        "head_graph": HEAD_GRAPH,
        "head_inputs": list(HEAD_INPUTS),
        "files": {name: entry["sha256"] for name, entry in sorted(backbone["files"].items())},
    }
    manifest["default_variant"] = "fp32"
    parity = dict(full["parity"])
    parity["fp32"] = {**parity["fp32"], "shared_backbone": report}
    manifest["parity"] = parity
    manifest.pop("packed_without", None)
    return manifest

