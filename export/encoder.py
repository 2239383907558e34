"""Export a Hugging Face model's head-mean attention to an ONNX bundle.

The graph takes ``input_ids`` and ``attention_mask`` (int64 [batch, seq]) and returns ``attentions``
float32 [n_layers, batch, seq, seq]: for each requested layer, the attention probabilities averaged
over heads, all from one forward pass. The model is loaded with eager attention (other
implementations return no attentions, export notes P1) and cut after the deepest requested layer.
Encoders are handled here (right padding); decoder-only models are routed by their config to the
loader and wrapper in :mod:`.causal` and share the rest of the pipeline. The bundle is built in a
temporary directory beside the target and renamed into place only after the parity checks pass.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import ExportError
from . import manifest as manifest_mod
from . import verify

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
    "EXTERNAL_DATA_THRESHOLD_BYTES",
    "EXTERNAL_DATA_SUFFIX",
    "export_onnx",
    "graph_file_names",
    "export_bundle",
]

OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "attentions"
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
# Position tables of these models start after pad_token_id (RoBERTa's offset, keyatten §12.1.9).
_PADDING_OFFSET_TYPES = {"roberta", "xlm-roberta", "camembert", "data2vec-text", "xmod", "roberta-prelayernorm"}
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SOURCE_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model")
# Protobuf cannot hold a message over 2 GiB (export notes P5). A graph whose tensors come near that
# is saved as model.onnx plus ONE external-data file, model.onnx.data, instead of the legacy
# exporter's one-file-per-tensor layout.
EXTERNAL_DATA_THRESHOLD_BYTES = 2_000_000_000
EXTERNAL_DATA_SUFFIX = ".data"


# ---------------------------------------------------------------------------------------------
# Config helpers (pure)


def layer_count(config) -> int:
    """keyatten §2.5: the first positive int among the config's layer-count keys."""
    for key in _LAYER_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    raise ExportError(f"the model config has none of {_LAYER_KEYS}; cannot tell how many layers it has")


def is_causal_config(config) -> bool:
    """keyatten §2.4: is_decoder, or an architecture name containing "CausalLM"."""
    return bool(getattr(config, "is_decoder", False)) or any(
        "CausalLM" in arch for arch in (getattr(config, "architectures", None) or [])
    )


def usable_positions(config) -> int | None:
    """Token positions the model can take, specials included (None when the config does not say)."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return None
    if getattr(config, "model_type", None) in _PADDING_OFFSET_TYPES:
        positions -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return positions


def resolve_layers(layers: Sequence[int] | str | None, num_layers: int) -> list[int]:
    """Absolute, sorted, distinct layer indices; None or "all" means every layer."""
    if layers is None or layers == "all":
        return list(range(num_layers))
    if isinstance(layers, str):
        raise ExportError(f"layers must be 'all' or a list of ints, got {layers!r}")
    resolved = set()
    for layer in layers:
        if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool):
            raise ExportError(f"layer indices must be ints, got {layer!r}")
        absolute = int(layer) if layer >= 0 else num_layers + int(layer)
        if not 0 <= absolute < num_layers:
            raise ExportError(f"layer {layer} is out of range for a model with {num_layers} layers")
        resolved.add(absolute)
    if not resolved:
        raise ExportError("no layers requested")
    return sorted(resolved)


# ---------------------------------------------------------------------------------------------
# torch side


@contextlib.contextmanager
def _quiet_transformers():
    """Silence the expected 'weights not used' notice of a truncated load, and tracer warnings."""
    import transformers

    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.logging.set_verbosity(previous)


@contextlib.contextmanager
def _logging_disabled(level: int = logging.WARNING):
    previous = logging.root.manager.disable
    logging.disable(level)
    try:
        yield
    finally:
        logging.disable(previous)


def load_encoder(source: str | os.PathLike, keep_layers: int | None = None, revision: str | None = None):
    """(model, config, tokenizer): eager attention, truncated to ``keep_layers`` blocks when given."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    source = os.fspath(source)
    with _quiet_transformers():
        config = AutoConfig.from_pretrained(source, revision=revision)
        kwargs: dict[str, Any] = {"attn_implementation": "eager", "revision": revision}
        if keep_layers is not None and keep_layers < layer_count(config):
            kwargs["num_hidden_layers"] = keep_layers
        model = AutoModel.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, use_fast=True)
    model.eval()
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{source} has no fast tokenizer (tokenizer.json); bundles need one")
    return model, config, tokenizer


def _make_wrapper_class():
    import torch

    class AttentionLayers(torch.nn.Module):
        """Returns the head-mean attention of ``layers``, stacked: [n_layers, B, S, S]."""

        def __init__(self, model, layers: Sequence[int]):
            super().__init__()
            self.model = model
            self.layers = [int(x) for x in layers]
            self.expected_count = layer_count(model.config)
            type_vocab = getattr(model.config, "type_vocab_size", 0) or 0
            accepts_types = "token_type_ids" in inspect.signature(model.forward).parameters
            # Token types are always 0 for single-segment text: made inside the graph, not an input.
            self.zero_token_types = bool(type_vocab > 0 and accepts_types)

        def forward(self, input_ids, attention_mask):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if self.zero_token_types:
                kwargs["token_type_ids"] = torch.zeros_like(input_ids)
            outputs = self.model(**kwargs, output_attentions=True, return_dict=True)
            attentions = outputs.attentions
            if attentions is None or len(attentions) != self.expected_count:
                raise ExportError(
                    f"the model returned {0 if attentions is None else len(attentions)} attention maps for "
                    f"{self.expected_count} layers; it must be loaded with attn_implementation='eager'"
                )
            return torch.stack([attentions[i].mean(dim=1) for i in self.layers], dim=0)

    return AttentionLayers


def AttentionLayers(model, layers: Sequence[int]):  # noqa: N802 - a factory that reads like the class
    """Build the torch wrapper module (the class is made lazily so torch is imported on demand)."""
    # eval() on the wrapper itself: the legacy exporter restores the wrapper's training flag after
    # tracing, recursively, which would switch dropout back on in the torch reference.
    return _make_wrapper_class()(model, layers).eval()


def export_onnx(wrapper, onnx_path: Path, sample_length: int = 16) -> float:
    """Trace ``wrapper`` with the legacy exporter (opset 17, dynamic batch and seq); returns seconds.

    Writes ``onnx_path``, plus ``onnx_path`` + ``EXTERNAL_DATA_SUFFIX`` (all weights in one file) when
    the graph exceeds ``EXTERNAL_DATA_THRESHOLD_BYTES``. The trace goes to a scratch folder first,
    because above 2 GiB the legacy exporter writes one file per tensor beside the graph.
    """
    import torch

    vocab = int(getattr(wrapper.model.config, "vocab_size", 100) or 100)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab, (2, sample_length), generator=generator, dtype=torch.int64)
    attention_mask = torch.ones((2, sample_length), dtype=torch.int64)
    attention_mask[1, sample_length // 2 :] = 0
    axes = {0: "batch", 1: "seq"}
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix=".trace-", dir=onnx_path.parent))
    traced = scratch / onnx_path.name
    try:
        with _quiet_transformers(), torch.no_grad():
            torch.onnx.export(
                wrapper,
                (input_ids, attention_mask),
                str(traced),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes={
                    "input_ids": axes,
                    "attention_mask": axes,
                    OUTPUT_NAME: {1: "batch", 2: "seq", 3: "seq"},
                },
                do_constant_folding=True,
            )
        _place_graph(scratch, traced, onnx_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return time.perf_counter() - started


def _place_graph(scratch: Path, traced: Path, onnx_path: Path) -> None:
    """Move a traced graph to ``onnx_path``: as is when small, else with one external-data file."""
    written = [entry for entry in scratch.iterdir() if entry.is_file()]
    total = sum(entry.stat().st_size for entry in written)
    if len(written) == 1 and total <= EXTERNAL_DATA_THRESHOLD_BYTES:
        os.replace(traced, onnx_path)
        return
    import onnx

    model = onnx.load(str(traced))  # pulls in the per-tensor files written beside it
    onnx.save_model(
        model,
        str(onnx_path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=onnx_path.name + EXTERNAL_DATA_SUFFIX,
        size_threshold=1024,
    )


def graph_file_names(onnx_path: Path) -> list[str]:
    """The graph file and, when it was written, its external-data file."""
    names = [onnx_path.name]
    if (onnx_path.parent / (onnx_path.name + EXTERNAL_DATA_SUFFIX)).exists():
        names.append(onnx_path.name + EXTERNAL_DATA_SUFFIX)
    return names


def _torch_attention_fn(wrapper):
    import torch

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        wrapper.eval()
        with torch.no_grad():
            out = wrapper(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))
        return out.detach().cpu().numpy().astype(np.float32)

    return run


# ---------------------------------------------------------------------------------------------
# Bundle assembly


def _write_tokenizer(hf_tokenizer, path: Path) -> None:
    """tokenizer.json with padding and truncation off (sentence-transformers ships fixed 128, P7)."""
    data = json.loads(hf_tokenizer.backend_tokenizer.to_str())
    data["padding"] = None
    data["truncation"] = None
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _probe_id_lists(hf_tokenizer, tokenizer_path: Path, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Probe encodings from the bundle's tokenizer.json, checked against the transformers tokenizer."""
    from tokenizers import Tokenizer

    bundle_tokenizer = Tokenizer.from_file(str(tokenizer_path))
    ours = [enc.ids for enc in bundle_tokenizer.encode_batch(list(texts))]
    theirs = hf_tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    for text, a, b in zip(texts, ours, theirs):
        if list(a) != list(b):
            raise ExportError(
                f"tokenizer.json encodes {text!r} differently from the transformers tokenizer "
                f"({a[:12]}... vs {b[:12]}...); this model's tokenizer cannot be bundled as is"
            )
    return [ids[:max_length] for ids in ours]


def _source_record(source: str, source_info: Mapping[str, Any] | None, revision: str | None = None) -> dict:
    if source_info is not None:
        record = {
            "model_id": source_info.get("model_id"),
            "origin": source_info.get("origin"),
            "files_sha256": dict(source_info.get("files_sha256") or {}),
            "verification": dict(source_info.get("verification") or {}),
        }
        for key, value in source_info.items():
            if key not in record and key != "model_dir":
                record[key] = value
        return record
    path = Path(source)
    if path.is_dir():
        files = {
            entry.name: manifest_mod.sha256_file(entry)
            for entry in sorted(path.iterdir())
            if entry.is_file() and entry.suffix in _SOURCE_SUFFIXES
        }
        return {
            "model_id": path.name,
            "origin": f"local:{path.resolve()}",
            "files_sha256": files,
            "verification": {},
        }
    record = {"model_id": source, "origin": f"hub:{source}", "files_sha256": {}, "verification": {}}
    if revision is not None:
        record["revision"] = revision
    return record


def _prepare_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ExportError(f"{out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not overwrite:
            raise ExportError(f"{out_dir} already exists and is not empty; remove it or pass overwrite/--force")
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def _move_into_place(work_dir: Path, out_dir: Path) -> None:
    """Rename the finished bundle onto ``out_dir``; an old bundle there is swapped out, then removed."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.rmdir(old)
        os.rename(out_dir, old)
    try:
        os.rename(work_dir, out_dir)
    except OSError:
        if old is not None:
            os.rename(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
    started = time.perf_counter()
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ExportError(f"bundle name {name!r} must be letters, digits, '.', '_' or '-' (at most 100)")
    source = os.fspath(model_dir_or_hub_id)
    out_dir = Path(out_dir).expanduser().absolute()
    _prepare_target(out_dir, overwrite)
    texts = list(probe_texts) if probe_texts is not None else list(verify.PROBE_TEXTS)
    if len(texts) < 2:
        raise ExportError("parity needs at least two probe texts")

    from transformers import AutoConfig

    from . import causal as causal_mod

    with _quiet_transformers():
        full_config = AutoConfig.from_pretrained(source, revision=revision)
    is_causal = is_causal_config(full_config)
    # The full model's depth: the default layer rule and num_layers refer to it, not to the cut graph.
    num_layers = layer_count(full_config)
    positions = usable_positions(full_config)
    if is_causal:
        wanted = causal_mod.resolve_causal_layers(layers, num_layers)
        max_length = causal_mod.causal_max_length(positions, max_length)
    else:
        wanted = resolve_layers(layers, num_layers)
        if max_length is None:
            max_length = positions if positions is not None else 512
        elif not isinstance(max_length, int) or max_length < 2:
            raise ExportError(f"max_length must be an int >= 2, got {max_length!r}")
        elif positions is not None and max_length > positions:
            raise ExportError(f"max_length {max_length} exceeds the {positions} positions the model has")

    work_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        timings: dict[str, float] = {}
        t = time.perf_counter()
        if is_causal:
            model, config, hf_tokenizer = causal_mod.load_causal(source, max(wanted) + 1, revision=revision)
            wrapper = causal_mod.CausalAttentionLayers(model, wanted)
            pad_id = causal_mod.causal_pad_token_id(hf_tokenizer)
            padding_side = causal_mod.tokenizer_padding_side(hf_tokenizer)
            # Parity on both sides: the runtime may pad either way, whatever the tokenizer prefers.
            parity_sides = ("right", "left")
        else:
            model, config, hf_tokenizer = load_encoder(source, keep_layers=max(wanted) + 1, revision=revision)
            wrapper = AttentionLayers(model, wanted)
            pad_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0
            padding_side = "right"  # absolute position embeddings: the runtime pads on the right
            parity_sides = ("right",)
        timings["load"] = time.perf_counter() - t

        onnx_path = work_dir / "model.onnx"
        timings["onnx_export"] = export_onnx(wrapper, onnx_path)
        graph_files = graph_file_names(onnx_path)
        tokenizer_path = work_dir / "tokenizer.json"
        _write_tokenizer(hf_tokenizer, tokenizer_path)

        t = time.perf_counter()
        with _quiet_transformers():  # the long probe exceeds model_max_length on purpose
            id_lists = _probe_id_lists(hf_tokenizer, tokenizer_path, texts + [verify.LONG_PROBE_TEXT], max_length)
        # Batch size and sequence length both vary between the batches (dynamic axes really work).
        batches, sides = [], []
        for side in parity_sides:
            side_batches = verify.probe_batches(id_lists[:-1], id_lists[-1], pad_id, padding_side=side)
            batches += side_batches
            sides += [side] * len(side_batches)
        session = verify.onnx_session(onnx_path)
        parity = {
            "fp32": verify.check_fp32_parity(
                _torch_attention_fn(wrapper),
                lambda ids, mask: verify.run_onnx_attention(session, ids, mask),
                batches,
                probes=len(id_lists),
            )
        }
        parity["fp32"]["padding_sides"] = sides
        timings["verify"] = time.perf_counter() - t
        # The torch model is done with; free it before quantising (GBs for a 0.6B decoder).
        del wrapper, model
        gc.collect()

        file_names = graph_files + ["tokenizer.json"]
        if int8:
            t = time.perf_counter()
            from onnxruntime.quantization import QuantType, quantize_dynamic

            int8_path = work_dir / "model.int8.onnx"
            # quantize_dynamic logs a "consider pre-processing" warning on the root logger each time.
            with warnings.catch_warnings(), _logging_disabled():
                warnings.simplefilter("ignore")
                quantize_dynamic(str(onnx_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True)
            int8_session = verify.onnx_session(int8_path)
            # One batch per padding side plus the long probe: agreement is measured where it is used.
            int8_batches = [batches[0], batches[2]] + ([batches[3]] if len(batches) > 3 else [])
            runs = [
                (
                    verify.run_onnx_attention(session, ids, mask),
                    verify.run_onnx_attention(int8_session, ids, mask),
                    ids,
                    mask,
                )
                for ids, mask in int8_batches
            ]
            parity["int8"] = verify.int8_agreement(runs, hf_tokenizer.all_special_ids)
            del int8_session
            file_names.append("model.int8.onnx")
            timings["int8"] = time.perf_counter() - t
        del session

        unexpected = sorted(p.name for p in work_dir.iterdir() if p.name not in file_names)
        if unexpected:
            raise ExportError(f"the export produced unexpected files {unexpected}; a bundle holds only its listed files")

        n_layers = len(wanted)
        graph = {
            "inputs": [{"name": n, "dtype": "int64", "shape": ["batch", "seq"]} for n in INPUT_NAMES],
            "outputs": [{"name": OUTPUT_NAME, "dtype": "float32", "shape": [n_layers, "batch", "seq", "seq"]}],
            "opset": OPSET,
            "exporter": manifest_mod.EXPORTER_LABEL,
        }
        if len(graph_files) > 1:
            graph["external_data"] = graph_files[1]
        special_tokens = manifest_mod.special_token_ids(hf_tokenizer)
        extra: dict[str, Any] = {"export_seconds": None, "timings": {}}
        if is_causal and special_tokens["pad"] is None:
            special_tokens["pad"] = pad_id
            extra["pad_token_from"] = "eos"
        if extra_manifest:
            extra.update(extra_manifest)
        manifest = manifest_mod.build_manifest(
            name=name,
            source=_source_record(source, source_info, revision),
            architecture="causal" if is_causal else "encoder",
            model_type=str(getattr(config, "model_type", "")),
            num_layers=num_layers,
            exported_layers=wanted,
            graph=graph,
            special_tokens=special_tokens,
            pad_token_id=pad_id if is_causal else hf_tokenizer.pad_token_id,
            padding_side=padding_side,
            max_length=max_length,
            parity=parity,
            files=manifest_mod.files_table(work_dir, file_names),
            extra=extra,
        )
        manifest["timings"] = {key: round(value, 3) for key, value in timings.items()}
        manifest["export_seconds"] = round(time.perf_counter() - started, 3)
        manifest_mod.write_manifest(work_dir, manifest)

        # The runtime loader must accept what we wrote (checksums, graph I/O, keys) before it goes live.
        from keyatten_lite.model.bundle import open_bundle

        open_bundle(work_dir, variant="int8" if int8 else "fp32")
        # mkdtemp made the directory 0700; a bundle is ordinary readable data.
        os.chmod(work_dir, 0o755)
        _move_into_place(work_dir, out_dir)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    return manifest
