"""Decoder-only (causal) models: what their export does differently from an encoder's.

Same graph I/O as encoders (``input_ids``, ``attention_mask`` -> ``attentions`` [n_layers, B, S, S],
head mean), and the same steps (:mod:`.core`). What differs:

* The wrapper builds the 4-D additive mask itself (causal AND key padding, ``finfo.min``) and hands it
  to the model, which passes a 4-D mask through unchanged. transformers' own mask code (vmap) cannot
  be traced by the legacy exporter on transformers 4.53-4.57 (export notes P2).
* The model is loaded with ``num_hidden_layers = deepest layer + 1``, ``use_cache=False`` and eager
  attention; a 0.6B decoder cut at 3/4 depth then fits in one graph file and in export RAM.
* Default layer: keyatten's ``min(L-1, max(0, floor(0.75 L)))`` of the full model (§2.5); only that
  layer is exported unless the caller names others.
* Either padding side works: RoPE scores depend on relative positions only, so a left-padded row
  gives the attention of the unpadded sequence without ``position_ids``. The manifest records the
  tokenizer's side; parity is checked on both.
* ``max_length`` is capped (Qwen configs say 32768, and attention memory grows as S², §12.1.9).
* No pad token: the EOS pads, and the manifest says so (``pad_token_from``).

``encoder.export_bundle`` routes here by config (:func:`core.is_causal_config`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

from . import ExportError, core
from .core import layer_count, resolve_layers, usable_positions
from .manifest import recommended_layer_for

__all__ = [
    "DEFAULT_MAX_LENGTH_CAP",
    "TESTED_MODEL_TYPES",
    "resolve_causal_layers",
    "causal_max_length",
    "causal_pad_token_id",
    "tokenizer_padding_side",
    "load_causal",
    "causal_additive_mask",
    "CausalAttentionLayers",
    "CausalKind",
]

DEFAULT_MAX_LENGTH_CAP = 8192
# Exported and parity-checked in runtime_tests/test_causal_export.py. Other causal types are tried;
# the parity check refuses the bundle if the 4-D mask is not honoured.
TESTED_MODEL_TYPES = ("qwen3", "qwen2", "llama")


def resolve_causal_layers(layers: Sequence[int] | str | None, num_layers: int) -> list[int]:
    """None: keyatten's recommended layer only; "all": every layer; else as core.resolve_layers."""
    if layers is None:
        return [recommended_layer_for(num_layers)]
    return resolve_layers(layers, num_layers)


def causal_max_length(positions: int | None, requested: int | None, cap: int = DEFAULT_MAX_LENGTH_CAP) -> int:
    """``requested`` if given (checked against the model's positions), else min(positions, cap)."""
    if requested is None:
        return min(positions, cap) if positions is not None else cap
    return core.checked_max_length(requested, positions)


def causal_pad_token_id(hf_tokenizer) -> int:
    """The tokenizer's pad id, else its EOS (decoder tokenizers often have no pad token)."""
    for candidate in (hf_tokenizer.pad_token_id, hf_tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    raise ExportError("the tokenizer has neither a pad nor an eos token; cannot pad batches")


def tokenizer_padding_side(hf_tokenizer) -> str:
    side = getattr(hf_tokenizer, "padding_side", "right")
    if side not in ("left", "right"):
        raise ExportError(f"the tokenizer's padding_side is {side!r}, expected 'left' or 'right'")
    return side


def load_causal(source: str | os.PathLike, keep_layers: int, revision: str | None = None):
    """(model, config, tokenizer): eager attention, no KV cache, fp32, ``keep_layers`` blocks.

    ``config`` is the truncated model's. Remote code is never trusted (the loaders' default).
    """
    import torch

    def model_kwargs(config) -> dict[str, Any]:
        if getattr(config, "model_type", None) not in TESTED_MODEL_TYPES:
            logging.getLogger(__name__).warning(
                "model type %r has not been tested with the causal exporter; the parity check decides",
                getattr(config, "model_type", None),
            )
        return {
            "attn_implementation": "eager",
            "num_hidden_layers": int(keep_layers),
            "use_cache": False,
            # Embedding checkpoints often say bfloat16; the graph and the parity reference are fp32.
            "dtype": torch.float32,
        }

    model, _, tokenizer = core.load_pretrained(source, model_kwargs, revision=revision)
    return model, model.config, tokenizer


def causal_additive_mask(attention_mask, dtype):
    """[B, 1, S, S] additive mask: 0 where query i may see key j (j <= i and j is real), else finfo.min.

    Built from tensor ops only (no Python ints of the sequence length), so the traced graph keeps a
    dynamic ``seq`` axis.
    """
    import torch

    # Position of each column as a tensor: cumsum of ones, independent of the padding.
    positions = torch.ones_like(attention_mask).cumsum(dim=-1)
    causal = positions[:, None, :] <= positions[:, :, None]  # [B, S(query), S(key)]
    allowed = causal & attention_mask.bool()[:, None, :]
    blocked = torch.logical_not(allowed).to(dtype)
    return (blocked * torch.finfo(dtype).min)[:, None, :, :]


def _make_wrapper_class():
    class CausalAttentionLayers(core.attention_module_class()):
        """Head-mean attention of ``layers`` of a decoder, stacked: [n_layers, B, S, S]."""

        def __init__(self, model, layers: Sequence[int]):
            super().__init__(model, layers)
            self.mask_dtype = next(model.parameters()).dtype

        def model_inputs(self, input_ids, attention_mask) -> dict:
            mask = causal_additive_mask(attention_mask, self.mask_dtype)
            return {"input_ids": input_ids, "attention_mask": mask, "use_cache": False}

    return CausalAttentionLayers


def CausalAttentionLayers(model, layers: Sequence[int]):  # noqa: N802 - a factory that reads like the class
    """Build the torch wrapper for a decoder (eval mode; torch imported on demand)."""
    return _make_wrapper_class()(model, layers).eval()


class CausalKind(core.ExportKind):
    """Decoder-only models: the recommended layer, a capped max_length, either padding side."""

    architecture = "causal"
    # Parity on both sides: the runtime may pad either way, whatever the tokenizer prefers.
    parity_sides = ("right", "left")

    def plan(self, config, layers, max_length):
        return (
            resolve_causal_layers(layers, layer_count(config)),
            causal_max_length(usable_positions(config), max_length),
        )

    def load(self, source, keep_layers, revision):
        return load_causal(source, keep_layers, revision=revision)

    def wrap(self, model, layers):
        return CausalAttentionLayers(model, layers)

    def pad_id(self, hf_tokenizer) -> int:
        return causal_pad_token_id(hf_tokenizer)

    def padding_side(self, hf_tokenizer) -> str:
        return tokenizer_padding_side(hf_tokenizer)

    def manifest_fields(self, hf_tokenizer, pad_id, extra_manifest):
        special_tokens, _, extra = super().manifest_fields(hf_tokenizer, pad_id, None)
        if special_tokens["pad"] is None:
            special_tokens["pad"] = pad_id
            extra["pad_token_from"] = "eos"
        if extra_manifest:
            extra.update(extra_manifest)
        return special_tokens, pad_id, extra
