"""QK bundles (keyatten 0.3.1 §9, QKLoRAExtractor): the queries and keys of one layer, not attention.

The graph takes ``input_ids`` and ``attention_mask`` and returns, float32 ``[batch, seq, heads*head_dim]``:

* ``q_proj``, ``k_proj``: the raw outputs of the layer's query and key projections (LoRA delta
  included once merged). 0.3.1 reads these (§9.3 step 2): for Qwen3 they come before q_norm/k_norm
  and before RoPE, so they are not what forms the attention logits.
* ``q_attn``, ``k_attn``: the queries and keys the attention really multiplies: after q_norm/k_norm
  (Qwen3) and after RoPE (Qwen3, Qwen2, Llama), heads flattened back in head order. For BERT-like
  encoders (absolute positions, no q/k norm) they equal ``q_proj``/``k_proj``.

KV heads are not repeated in the graph (``k_*`` holds ``num_kv_heads`` heads); the runtime repeats
them. The layer: §9.2 ``"auto"`` (keyatten's recommended ``min(L-1, max(0, floor(0.75 L)))``) or an
index (negative counts from L); the model is cut after it, as :mod:`.causal` does.

A peft LoRA adapter is merged in fp32 first (:func:`.lora.merge_lora`, into a scratch directory) and
the merged model is exported. Besides the usual ONNX vs traced-torch check on padded probe batches
(both padding sides for causal models), the export compares the graph with base + the adapter
*unmerged* (peft, native masks, as 0.3.1 runs it): max |q - q_ref| and |k - k_ref| over valid
positions of all four outputs must be <= ``QK_TOLERANCE``, or nothing is written.

    python -m keyatten_lite_export qk MODEL [--adapter A] -o OUT [--layer auto|N] [--name N]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import ExportError, ParityError, core
from . import manifest as manifest_mod
from .causal import CausalKind
from .encoder import EncoderKind

__all__ = [
    "QK_OUTPUTS",
    "QK_TOLERANCE",
    "QKKind",
    "QKProjections",
    "decoder_layers",
    "export_qk_bundle",
    "qk_layer_modules",
    "resolve_qk_layer",
]

QK_OUTPUTS = ("q_proj", "k_proj", "q_attn", "k_attn")
QK_TOLERANCE = 1e-4
_PROJECTION_NAMES = (("q_proj", "k_proj"), ("query", "key"))


# ---------------------------------------------------------------------------------------------
# Finding the layer (§9.2)


def decoder_layers(model) -> Sequence[Any] | None:
    """The block list of ``model`` (§9.2 walk: the model, ``.model``, ``.base_model``,
    ``.base_model.model``; each checked for ``.layers``, ``.language_model.layers``, ``.model.layers``),
    then BERT's ``.encoder.layer``; None when none is found."""
    roots = [model]
    for path in (("model",), ("base_model",), ("base_model", "model")):
        node = model
        for attribute in path:
            node = getattr(node, attribute, None)
        if node is not None:
            roots.append(node)
    for root in roots:
        for path in (("layers",), ("language_model", "layers"), ("model", "layers"), ("encoder", "layer")):
            node = root
            for attribute in path:
                node = getattr(node, attribute, None)
            if node is not None and hasattr(node, "__len__") and len(node):
                return node
    return None


def qk_layer_modules(block) -> dict | None:
    """``{"attention", "q", "k", "q_norm", "k_norm", "head_dim"}`` of one block, or None when it has no
    query/key projections (§9.2: ``self_attn``, ``attention`` or the block itself; BERT's
    ``attention.self`` with ``query``/``key``)."""
    candidates = [getattr(block, "self_attn", None), getattr(block, "attention", None), block]
    inner = getattr(getattr(block, "attention", None), "self", None)
    if inner is not None:
        candidates.append(inner)
    for attention in candidates:
        if attention is None:
            continue
        for q_name, k_name in _PROJECTION_NAMES:
            q, k = getattr(attention, q_name, None), getattr(attention, k_name, None)
            if q is None or k is None:
                continue
            head_dim = getattr(attention, "head_dim", None) or getattr(attention, "attention_head_size", None)
            if not isinstance(head_dim, int) or head_dim < 1:
                raise ExportError(f"{type(attention).__name__} has query/key projections but no head_dim")
            return {
                "attention": attention, "q": q, "k": k, "head_dim": int(head_dim),
                "q_norm": getattr(attention, "q_norm", None), "k_norm": getattr(attention, "k_norm", None),
            }
    return None


def resolve_qk_layer(layer: int | str | None, num_layers: int) -> int:
    """§9.2: ``"auto"``/None -> keyatten's recommended layer; an int (negative adds L) checked in range."""
    if layer is None or (isinstance(layer, str) and layer.strip().lower() == "auto"):
        return manifest_mod.recommended_layer_for(num_layers)
    if isinstance(layer, bool):
        raise ExportError(f"layer must be 'auto' or a layer index, got {layer!r}")
    try:
        value = int(layer.strip()) if isinstance(layer, str) else int(layer)
    except (TypeError, ValueError):
        raise ExportError(f"layer must be 'auto' or a layer index, got {layer!r}") from None
    absolute = value + num_layers if value < 0 else value
    if not 0 <= absolute < num_layers:
        raise ExportError(f"layer {layer!r} is out of range for a model with {num_layers} layers")
    return absolute


# ---------------------------------------------------------------------------------------------
# The torch module


def _qk_projections_class():
    import torch

    class _QKProjections(torch.nn.Module):
        """(q_proj, k_proj, q_attn, k_attn) of one layer from one pass of ``inner.model`` fed with
        ``inner.model_inputs`` (an attention wrapper of :mod:`.core`/:mod:`.causal`: native or 4-D masks)."""

        def __init__(self, inner, layer: int):
            super().__init__()
            self.inner = inner
            layers = decoder_layers(inner.model)
            if layers is None or not 0 <= layer < len(layers):
                raise ExportError(f"cannot find block {layer} of {type(inner.model).__name__}")
            site = qk_layer_modules(layers[layer])
            if site is None:
                supported = [i for i, block in enumerate(layers) if qk_layer_modules(block) is not None]
                raise ExportError(f"layer {layer} has no query/key projections; supported layers: {supported}")
            self.head_dim = site["head_dim"]
            self.num_heads = int(site["q"].out_features) // self.head_dim
            self.num_kv_heads = int(site["k"].out_features) // self.head_dim
            self.qk_norm = site["q_norm"] is not None and site["k_norm"] is not None
            self._seen: dict[str, Any] = {}
            self._rope = getattr(sys.modules.get(type(site["attention"]).__module__), "apply_rotary_pos_emb", None)

            def keep(name):
                def hook(module, args, output):
                    self._seen[name] = output
                return hook

            def keep_positions(module, args, kwargs):
                if kwargs.get("position_embeddings") is not None:
                    self._seen["position_embeddings"] = kwargs["position_embeddings"]

            site["q"].register_forward_hook(keep("q"))
            site["k"].register_forward_hook(keep("k"))
            if self.qk_norm:
                site["q_norm"].register_forward_hook(keep("q_norm"))
                site["k_norm"].register_forward_hook(keep("k_norm"))
            site["attention"].register_forward_pre_hook(keep_positions, with_kwargs=True)

        @property
        def model(self):
            return self.inner.model

        def forward(self, input_ids, attention_mask):
            self._seen.clear()
            self.inner.model(**self.inner.model_inputs(input_ids, attention_mask))
            q, k = self._seen["q"], self._seen["k"]
            q_heads = self._seen["q_norm"] if self.qk_norm else q.unflatten(-1, (-1, self.head_dim))
            k_heads = self._seen["k_norm"] if self.qk_norm else k.unflatten(-1, (-1, self.head_dim))
            positions = self._seen.get("position_embeddings")
            if positions is not None:
                if self._rope is None:
                    raise ExportError("the attention takes rotary position embeddings but its module has no apply_rotary_pos_emb")
                cos, sin = positions
                q_rot, k_rot = self._rope(q_heads.transpose(1, 2), k_heads.transpose(1, 2), cos, sin)
                q_heads, k_heads = q_rot.transpose(1, 2), k_rot.transpose(1, 2)
            return q.float(), k.float(), q_heads.flatten(2).float(), k_heads.flatten(2).float()

    return _QKProjections


def QKProjections(inner, layer: int):  # noqa: N802 - a factory that reads like the class
    """The torch module of a QK graph around an attention wrapper ``inner`` (eval mode)."""
    return _qk_projections_class()(inner, int(layer)).eval()


def _valid_max_abs_diff(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], mask: np.ndarray) -> tuple[float, float]:
    """(max |a - b|, max |a|) over the valid positions of [B, S, W] outputs (inf on a shape mismatch or NaN)."""
    valid = mask.astype(bool)
    worst, peak = 0.0, 0.0
    for a, b in zip(reference, candidate):
        if a.shape != b.shape:
            return float("inf"), peak
        diff = np.abs(a[valid].astype(np.float64) - b[valid].astype(np.float64))
        if not np.all(np.isfinite(diff)):
            return float("inf"), peak
        worst = max(worst, float(diff.max(initial=0.0)))
        peak = max(peak, float(np.abs(a[valid]).max(initial=0.0)))
    return worst, peak


def _compare(runs_a, runs_b, batches) -> tuple[float, float]:
    pairs = [_valid_max_abs_diff(a, b, mask) for a, b, (_, mask) in zip(runs_a, runs_b, batches)]
    return max(w for w, _ in pairs), max(p for _, p in pairs)


# ---------------------------------------------------------------------------------------------
# The export kind


class QKKind(core.ExportKind):
    """One layer's q/k; loading, padding and masks are those of the encoder or causal kind."""

    def __init__(self, causal: bool, layer, reference: tuple[str, str | None] | None = None, tolerance: float = QK_TOLERANCE) -> None:
        self.tolerance = float(tolerance)
        self.base = CausalKind() if causal else EncoderKind()
        self.architecture = self.base.architecture
        self.parity_sides = self.base.parity_sides
        self.requested_layer = layer
        self.reference = reference  # (base model, adapter or None): what the graph must reproduce
        self.layer: int | None = None
        self.shape: dict[str, int] = {}

    def plan(self, config, layers, max_length):
        self.layer = resolve_qk_layer(self.requested_layer, core.layer_count(config))
        return self.base.plan(config, [self.layer], max_length)

    def load(self, source, keep_layers, revision):
        return self.base.load(source, keep_layers, revision)

    def wrap(self, model, layers):
        module = QKProjections(self.base.wrap(model, layers), self.layer)
        self.shape = {"head_dim": module.head_dim, "num_heads": module.num_heads, "num_kv_heads": module.num_kv_heads}
        self.qk_norm = module.qk_norm
        return module

    def pad_id(self, hf_tokenizer) -> int:
        return self.base.pad_id(hf_tokenizer)

    def padding_side(self, hf_tokenizer) -> str:
        return self.base.padding_side(hf_tokenizer)

    def output_axes(self) -> dict:
        return {name: {0: "batch", 1: "seq"} for name in QK_OUTPUTS}

    def graph_outputs(self, n_layers: int) -> list[dict]:
        widths = {"q": self.shape["num_heads"] * self.shape["head_dim"], "k": self.shape["num_kv_heads"] * self.shape["head_dim"]}
        return [{"name": name, "dtype": "float32", "shape": ["batch", "seq", widths[name[0]]]} for name in QK_OUTPUTS]

    def run_onnx(self, session, input_ids, attention_mask):
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        return tuple(np.asarray(x, dtype=np.float32) for x in session.run(list(QK_OUTPUTS), feeds))

    def fp32_parity(self, torch_runs, onnx_runs, batches, probes: int) -> dict:
        worst, peak = _compare(torch_runs, onnx_runs, batches)
        report = {
            "max_abs_diff": worst, "tolerance": self.tolerance, "max_abs_value": peak, "probes": int(probes),
            "outputs": list(QK_OUTPUTS), "batch_lengths": [[int(n) for n in mask.sum(axis=1)] for _, mask in batches],
        }
        if not worst <= self.tolerance:
            raise ParityError(
                f"ONNX q/k differ from torch by {worst:.3g} (tolerance {self.tolerance:g}, values up to {peak:.3g}); "
                "the bundle was not written"
            )
        return report

    def check_fp32(self, report, torch_runs, onnx_runs, batches, sides) -> None:
        """The graph against the model as 0.3.1 runs it: base + unmerged adapter, native masks."""
        super().check_fp32(report, torch_runs, onnx_runs, batches, sides)
        if self.reference is None:
            return
        import torch

        from .lora import load_model

        base, adapter = self.reference
        with core.quiet_transformers():
            model = load_model(base, adapter)
        module = QKProjections(core.attention_module_class()(model, [self.layer]).eval(), self.layer)
        with torch.no_grad():
            reference_runs = [
                tuple(t.numpy() for t in module(torch.from_numpy(ids), torch.from_numpy(mask))) for ids, mask in batches
            ]
        worst, peak = _compare(reference_runs, onnx_runs, batches)
        report["reference"] = {
            "model": "torch + peft adapter unmerged" if adapter is not None else "torch (native masks)",
            "max_abs_diff": worst, "tolerance": self.tolerance, "max_abs_value": peak,
        }
        del module, model
        if not worst <= self.tolerance:
            raise ParityError(
                f"ONNX q/k differ from the {'unmerged adapter' if adapter else 'torch model'} by {worst:.3g} "
                f"(tolerance {self.tolerance:g}, values up to {peak:.3g}); the bundle was not written"
            )

    def manifest_fields(self, hf_tokenizer, pad_id, extra_manifest):
        special_tokens, pad_token_id, extra = self.base.manifest_fields(hf_tokenizer, pad_id, extra_manifest)
        extra["kind"] = "qk"
        extra["qk"] = {
            "layer": int(self.layer), **self.shape, "qk_norm": bool(self.qk_norm),
            "outputs": {"compat": ["q_proj", "k_proj"], "default": ["q_attn", "k_attn"]},
            **(extra.get("qk") or {}),
        }
        return special_tokens, pad_token_id, extra


def export_qk_bundle(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    adapter: str | os.PathLike | None = None,
    name: str | None = None,
    layer: int | str = "auto",
    max_length: int | None = None,
    overwrite: bool = False,
    probe_texts: Sequence[str] | None = None,
    revision: str | None = None,
    extra_manifest: Mapping[str, Any] | None = None,
    tolerance: float = QK_TOLERANCE,
) -> dict:
    """Export the q/k of one layer of ``source`` (+ ``adapter``, merged in fp32) to a bundle; returns
    the manifest. Raises ParityError (and writes nothing) when ONNX and torch (traced, and base +
    unmerged adapter) differ by more than ``tolerance`` (absolute; raise it for a model whose q/k
    values are large, the report records their peak)."""
    out = Path(out_dir).expanduser().absolute()
    name = name or out.name
    extra = dict(extra_manifest or {})
    scratch = None
    try:
        exported_from = source
        source_info = None
        if adapter is not None:
            from .lora import merge_lora

            if revision is not None:
                raise ExportError("--revision cannot be combined with an adapter (merge a local base directory)")
            scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.merge-", dir=out.parent if out.parent.is_dir() else None))
            exported_from = merge_lora(source, adapter, scratch / "merged")
            source_info = manifest_mod.source_record(os.fspath(source), None)
            source_info["adapter"] = manifest_mod.source_record(os.fspath(adapter), None)
            extra["qk"] = {**(extra.get("qk") or {}), "adapter": "merged in fp32 (peft merge_and_unload)"}
        config = core.load_config(exported_from, revision)
        causal = core.is_causal_config(config)
        return core.export_model(
            lambda _config: QKKind(causal, layer, reference=(os.fspath(source), None if adapter is None else os.fspath(adapter)),
                                   tolerance=tolerance),
            exported_from, out, name=name, max_length=max_length, source_info=source_info, overwrite=overwrite,
            extra_manifest=extra, probe_texts=probe_texts, revision=revision,
        )
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
