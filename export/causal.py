"""Decoder-only (causal) models: loading, the attention wrapper, and the causal export defaults.

Same graph I/O as encoders (``input_ids``, ``attention_mask`` -> ``attentions`` [n_layers, B, S, S],
head mean). What differs:

* The wrapper builds the 4-D additive mask itself (causal AND key padding, ``finfo.min``) and hands it
  to the model, which passes a 4-D mask through unchanged. transformers' own mask code (vmap) cannot
  be traced by the legacy exporter on transformers 4.53-4.57 (export notes P2).
* The model is loaded with ``num_hidden_layers = deepest layer + 1``, ``use_cache=False`` and eager
  attention; a 0.6B decoder cut at 3/4 depth then fits in one graph file and in export RAM.
* Default layer: keyatten's ``min(L-1, max(0, floor(0.75 L)))`` of the full model (§2.5); only that
  layer is exported unless the caller names others.
* Either padding side works: RoPE scores depend on relative positions only, so a left-padded row
  gives the attention of the unpadded sequence without ``position_ids``. The manifest records the
  tokenizer's side.
* ``max_length`` is capped (Qwen configs say 32768, and attention memory grows as S², §12.1.9).

Export itself (trace, parity, int8, manifest) is shared with encoders in :mod:`.encoder`;
``encoder.export_bundle`` routes here by config (:func:`encoder.is_causal_config`).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from . import ExportError
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
]

DEFAULT_MAX_LENGTH_CAP = 8192
# Exported and parity-checked in runtime_tests/test_causal_export.py. Other causal types are tried;
# the parity check refuses the bundle if the 4-D mask is not honoured.
TESTED_MODEL_TYPES = ("qwen3", "qwen2", "llama")


def resolve_causal_layers(layers: Sequence[int] | str | None, num_layers: int) -> list[int]:
    """None: keyatten's recommended layer only; "all": every layer; else as encoder.resolve_layers."""
    from .encoder import resolve_layers

    if layers is None:
        return [recommended_layer_for(num_layers)]
    return resolve_layers(layers, num_layers)


def causal_max_length(positions: int | None, requested: int | None, cap: int = DEFAULT_MAX_LENGTH_CAP) -> int:
    """``requested`` if given (checked against the model's positions), else min(positions, cap)."""
    if requested is None:
        return min(positions, cap) if positions is not None else cap
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 2:
        raise ExportError(f"max_length must be an int >= 2, got {requested!r}")
    if positions is not None and requested > positions:
        raise ExportError(f"max_length {requested} exceeds the {positions} positions the model has")
    return requested


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
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from .encoder import _quiet_transformers

    source = os.fspath(source)
    with _quiet_transformers():
        config = AutoConfig.from_pretrained(source, revision=revision)
        if getattr(config, "model_type", None) not in TESTED_MODEL_TYPES:
            import logging

            logging.getLogger(__name__).warning(
                "model type %r has not been tested with the causal exporter; the parity check decides",
                getattr(config, "model_type", None),
            )
        kwargs: dict[str, Any] = {
            "revision": revision,
            "attn_implementation": "eager",
            "num_hidden_layers": int(keep_layers),
            "use_cache": False,
            # Embedding checkpoints often say bfloat16; the graph and the parity reference are fp32.
            "dtype": torch.float32,
        }
        model = AutoModel.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, use_fast=True)
    model.eval()
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{source} has no fast tokenizer (tokenizer.json); bundles need one")
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
    import torch

    from .encoder import layer_count

    class _CausalAttentionLayers(torch.nn.Module):
        """Head-mean attention of ``layers`` of a decoder, stacked: [n_layers, B, S, S]."""

        def __init__(self, model, layers: Sequence[int]):
            super().__init__()
            self.model = model
            self.layers = [int(x) for x in layers]
            self.expected_count = layer_count(model.config)
            self.mask_dtype = next(model.parameters()).dtype

        def forward(self, input_ids, attention_mask):
            mask = causal_additive_mask(attention_mask, self.mask_dtype)
            outputs = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                output_attentions=True,
                use_cache=False,
                return_dict=True,
            )
            attentions = outputs.attentions
            if attentions is None or len(attentions) != self.expected_count:
                raise ExportError(
                    f"the model returned {0 if not attentions else len(attentions)} attention maps for "
                    f"{self.expected_count} layers; it must be loaded with attn_implementation='eager'"
                )
            # GQA: transformers already repeats key/value heads, so this is the mean over query heads.
            return torch.stack([attentions[i].mean(dim=1) for i in self.layers], dim=0)

    return _CausalAttentionLayers


def CausalAttentionLayers(model, layers: Sequence[int]):  # noqa: N802 - a factory that reads like the class
    """Build the torch wrapper for a decoder (eval mode; torch imported on demand)."""
    return _make_wrapper_class()(model, layers).eval()
