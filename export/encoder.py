"""Export a Hugging Face model's head-mean attention to an ONNX bundle (the ``encoder`` command).

The graph takes ``input_ids`` and ``attention_mask`` (int64 [batch, seq]) and returns ``attentions``
float32 [n_layers, batch, seq, seq]: for each requested layer, the attention probabilities averaged
over heads, all from one forward pass. The steps (load, wrap, trace, verify, quantise, place) are
:mod:`.core`'s; this module says what is particular to encoders: ``AutoModel`` cut after the deepest
requested layer, every layer by default, right padding, token types made inside the graph.
:func:`export_bundle` takes decoder-only models too: their config routes them to :mod:`.causal`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from . import core
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
]


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


class EncoderKind(core.ExportKind):
    """Encoders: every layer by default, the model's positions, right padding."""

    def plan(self, config, layers, max_length):
        positions = usable_positions(config)
        if max_length is None:
            max_length = positions if positions is not None else 512
        return resolve_layers(layers, layer_count(config)), core.checked_max_length(max_length, positions)

    def load(self, source, keep_layers, revision):
        return load_encoder(source, keep_layers=keep_layers, revision=revision)

    def wrap(self, model, layers):
        return AttentionLayers(model, layers)


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
) -> dict:
    """Export an encoder or a decoder-only model to a verified bundle at ``out_dir``; returns the manifest.

    The architecture comes from the config (:func:`is_causal_config`). ``layers``: "all" exports every
    layer; a list takes absolute or negative indices; None means every layer for encoders and
    keyatten's recommended layer (floor(0.75 L)) for causal models. ``max_length`` defaults to the
    model's positions (causal: capped at ``causal.DEFAULT_MAX_LENGTH_CAP``). ``revision`` is passed to
    every ``from_pretrained`` call (hub ids). Raises ParityError (and writes nothing) if ORT and torch
    disagree above ``verify.FP32_TOLERANCE``.
    """
    return core.export_model(
        lambda config: CausalKind() if is_causal_config(config) else EncoderKind(),
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
