"""Export a Hugging Face model's head-mean attention to an ONNX bundle (the ``encoder`` command).

The graph takes ``input_ids`` and ``attention_mask`` (int64 [batch, seq]) and returns ``attentions``
float32 [n_layers, batch, seq, seq]: for each requested layer, the attention probabilities averaged
over heads, all from one forward pass. The steps (load, wrap, trace, verify, quantise, place) are
:mod:`.core`'s; this module says what is particular to encoders: ``AutoModel`` cut after the deepest
requested layer, every layer by default, right padding, token types made inside the graph. With
``hidden_output`` the graph also returns ``last_layer_input`` float32 [batch, seq, hidden], the hidden
state that enters the last layer (computed anyway for that layer's attention, so it costs nothing), and
a BIO tagger bundle can share the backbone: it carries only the last layer and its head (docs/bio.md).
:func:`export_bundle` takes decoder-only models too: their config routes them to :mod:`.causal`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from . import ParityError, core
from .causal import CausalKind
from .core import (
    EXTERNAL_DATA_SUFFIX,
    EXTERNAL_DATA_THRESHOLD_BYTES,
    INPUT_NAMES,
    OPSET,
    OUTPUT_NAME,
    export_onnx,
    graph_file_names,
    is_causal_config,
    layer_count,
    resolve_layers,
    usable_positions,
)

__all__ = [
    "OPSET",
    "INPUT_NAMES",
    "OUTPUT_NAME",
    "layer_count",
    "is_causal_config",
    "usable_positions",
    "resolve_layers",
    "load_encoder",
    "AttentionLayers",
    "EncoderKind",
    "EXTERNAL_DATA_THRESHOLD_BYTES",
    "EXTERNAL_DATA_SUFFIX",
    "export_onnx",
    "graph_file_names",
    "export_bundle",
    "HIDDEN_OUTPUT",
]

HIDDEN_OUTPUT = "last_layer_input"
# |torch - ORT| on the hidden state (values of order 1-10, so a looser bound than attention's).
HIDDEN_TOLERANCE = 1e-3


def load_encoder(source: str | os.PathLike, keep_layers: int | None = None, revision: str | None = None):
    """(model, config, tokenizer): eager attention, truncated to ``keep_layers`` blocks when given."""

    def model_kwargs(config) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"attn_implementation": "eager"}
        if keep_layers is not None and keep_layers < layer_count(config):
            kwargs["num_hidden_layers"] = keep_layers
        return kwargs

    return core.load_pretrained(source, model_kwargs, revision=revision)


def AttentionLayers(model, layers: Sequence[int]):  # noqa: N802 - a factory that reads like the class
    """The torch wrapper module (the class is made lazily so torch is imported on demand)."""
    # eval() on the wrapper itself: the legacy exporter restores the wrapper's training flag after
    # tracing, recursively, which would switch dropout back on in the torch reference.
    return core.attention_module_class()(model, layers).eval()


def _attention_and_hidden_class():
    class AttentionAndHidden(core.attention_module_class()):
        """(head-mean attentions [L, B, S, S], the last layer's input hidden state [B, S, H]) from one
        pass. The last layer's value, output and MLP stay dead code, as in the attention-only graph."""

        def forward(self, input_ids, attention_mask):
            stacked, outputs = self.attend(input_ids, attention_mask, hidden_states=True)
            return stacked, outputs.hidden_states[-2]

    return AttentionAndHidden


class EncoderKind(core.ExportKind):
    """Encoders: every layer by default, the model's positions, right padding; optionally the last
    hidden state as a second output."""

    def __init__(self, hidden_output: bool = False) -> None:
        self.hidden_output = bool(hidden_output)
        self.hidden_size: int | None = None

    def plan(self, config, layers, max_length):
        self.hidden_size = int(config.hidden_size)
        positions = usable_positions(config)
        if max_length is None:
            max_length = positions if positions is not None else 512
        return resolve_layers(layers, layer_count(config)), core.checked_max_length(max_length, positions)

    def load(self, source, keep_layers, revision):
        return load_encoder(source, keep_layers=keep_layers, revision=revision)

    def wrap(self, model, layers):
        if self.hidden_output:
            return _attention_and_hidden_class()(model, layers).eval()
        return AttentionLayers(model, layers)

    def output_axes(self) -> dict:
        axes = super().output_axes()
        return {**axes, HIDDEN_OUTPUT: {0: "batch", 1: "seq"}} if self.hidden_output else axes

    def graph_outputs(self, n_layers: int) -> list[dict]:
        outputs = super().graph_outputs(n_layers)
        if self.hidden_output:
            outputs.append({"name": HIDDEN_OUTPUT, "dtype": "float32", "shape": ["batch", "seq", self.hidden_size]})
        return outputs

    def run_onnx(self, session, input_ids, attention_mask):
        if not self.hidden_output:
            return super().run_onnx(session, input_ids, attention_mask)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        return tuple(np.asarray(x, dtype=np.float32) for x in session.run([core.OUTPUT_NAME, HIDDEN_OUTPUT], feeds))

    def check_fp32(self, report, torch_runs, onnx_runs, batches, sides) -> None:
        super().check_fp32(report, torch_runs, onnx_runs, batches, sides)
        if not self.hidden_output:
            return
        worst = 0.0
        for (ids, mask), ref, got in zip(batches, torch_runs, onnx_runs):
            for row, n_valid in enumerate(mask.sum(axis=1)):
                n = int(n_valid)
                diff = np.abs(ref[1][row, :n].astype(np.float64) - got[1][row, :n].astype(np.float64))
                worst = max(worst, float(diff.max()) if diff.size and np.all(np.isfinite(diff)) else float("inf"))
        report[HIDDEN_OUTPUT] = {"max_abs_diff": worst, "tolerance": HIDDEN_TOLERANCE}
        if not worst <= HIDDEN_TOLERANCE:
            raise ParityError(
                f"ONNX {HIDDEN_OUTPUT} differs from torch by {worst:.3g} (tolerance {HIDDEN_TOLERANCE:g}); "
                "the bundle was not written"
            )


def export_bundle(
    model_dir_or_hub_id: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    name: str,
    layers: Sequence[int] | str | None = None,
    int8: bool = False,
    max_length: int | None = None,
    source_info: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    extra_manifest: Mapping[str, Any] | None = None,
    probe_texts: Sequence[str] | None = None,
    revision: str | None = None,
    hidden_output: bool = False,
) -> dict:
    """Export an encoder or a decoder-only model to a verified bundle at ``out_dir``; returns the manifest.

    The architecture comes from the config (:func:`is_causal_config`). ``layers``: "all" exports every
    layer; a list takes absolute or negative indices; None means every layer for encoders and
    keyatten's recommended layer (floor(0.75 L)) for causal models. ``max_length`` defaults to the
    model's positions (causal: capped at ``causal.DEFAULT_MAX_LENGTH_CAP``). ``revision`` is passed to
    every ``from_pretrained`` call (hub ids). ``hidden_output`` (encoders) adds ``last_layer_input``. Raises ParityError (and writes nothing) if ORT and torch
    disagree above ``verify.FP32_TOLERANCE``.
    """
    return core.export_model(
        lambda config: CausalKind() if is_causal_config(config) else EncoderKind(hidden_output),
        model_dir_or_hub_id,
        out_dir,
        name=name,
        layers=layers,
        int8=int8,
        max_length=max_length,
        source_info=source_info,
        overwrite=overwrite,
        extra_manifest=extra_manifest,
        probe_texts=probe_texts,
        revision=revision,
    )
