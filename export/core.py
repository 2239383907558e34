"""The steps every export goes through, once: load -> wrap -> trace -> verify -> quantise -> place.

An export *kind* (:class:`ExportKind`; :mod:`.encoder`, :mod:`.causal` and :mod:`.bio` each define
one) says what differs: how the model is loaded, the torch module that emits the graph's outputs, the
padding, extra checks, and the kind's own manifest fields. :func:`export_model` runs the steps:

* load: the Hugging Face model with eager attention (other implementations return no attentions,
  export notes P1), cut after the deepest exported layer;
* wrap: a torch module returning the head-mean attention of the exported layers, stacked
  ``[n_layers, batch, seq, seq]`` (:func:`attention_module_class`; the BIO graph adds emissions);
* trace: ``torch.onnx.export``, legacy exporter, opset 17, dynamic batch and seq (:func:`export_onnx`);
* verify: ONNX vs torch on padded probe batches, refused above ``verify.FP32_TOLERANCE``;
* quantise: the dynamic QInt8 variant ``model.int8.onnx`` and its agreement with fp32;
* place: the bundle is built in a temporary directory beside the target, checked by the runtime
  loader, and renamed into place (:func:`staged_bundle`).

torch, transformers and onnxruntime are imported inside functions.
"""

from __future__ import annotations

import contextlib
import functools
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
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from . import ExportError
from . import manifest as manifest_mod
from . import verify

__all__ = [
    "OPSET", "INPUT_NAMES", "OUTPUT_NAME", "EXTERNAL_DATA_THRESHOLD_BYTES", "EXTERNAL_DATA_SUFFIX",
    "NAME_PATTERN", "layer_count", "is_causal_config", "usable_positions", "resolve_layers",
    "checked_max_length", "quiet_transformers", "logging_disabled", "load_config", "load_pretrained",
    "zero_token_types", "attention_module_class", "sample_inputs", "export_onnx", "place_graph",
    "graph_file_names", "quantize_int8", "write_tokenizer", "prepare_target", "move_into_place",
    "staged_bundle", "ExportKind", "export_model",
]

OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "attentions"
# Protobuf cannot hold a message over 2 GiB (export notes P5). A graph whose tensors come near that
# is saved as model.onnx plus ONE external-data file, model.onnx.data, instead of the legacy
# exporter's one-file-per-tensor layout.
EXTERNAL_DATA_THRESHOLD_BYTES = 2_000_000_000
EXTERNAL_DATA_SUFFIX = ".data"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
# Position tables of these models start after pad_token_id (RoBERTa's offset, keyatten §12.1.9).
_PADDING_OFFSET_TYPES = {"roberta", "xlm-roberta", "camembert", "data2vec-text", "xmod", "roberta-prelayernorm"}


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


def checked_max_length(requested, positions: int | None) -> int:
    """``requested`` when it is an int >= 2 within the model's positions; ExportError otherwise."""
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 2:
        raise ExportError(f"max_length must be an int >= 2, got {requested!r}")
    if positions is not None and requested > positions:
        raise ExportError(f"max_length {requested} exceeds the {positions} positions the model has")
    return requested


# ---------------------------------------------------------------------------------------------
# Load


@contextlib.contextmanager
def quiet_transformers():
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
def logging_disabled(level: int = logging.WARNING):
    previous = logging.root.manager.disable
    logging.disable(level)
    try:
        yield
    finally:
        logging.disable(previous)


def load_config(source: str | os.PathLike, revision: str | None = None):
    from transformers import AutoConfig

    with quiet_transformers():
        return AutoConfig.from_pretrained(os.fspath(source), revision=revision)


def load_pretrained(
    source: str | os.PathLike,
    model_kwargs: Callable[[Any], Mapping[str, Any]],
    revision: str | None = None,
):
    """(model, config, tokenizer): the config, then ``AutoModel`` with ``model_kwargs(config)`` and
    ``revision``, then the fast tokenizer; the model in eval mode. ``config`` is the full model's."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    source = os.fspath(source)
    with quiet_transformers():
        config = AutoConfig.from_pretrained(source, revision=revision)
        model = AutoModel.from_pretrained(source, **{**model_kwargs(config), "revision": revision})
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, use_fast=True)
    model.eval()
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{source} has no fast tokenizer (tokenizer.json); bundles need one")
    return model, config, tokenizer


# ---------------------------------------------------------------------------------------------
# Wrap


def zero_token_types(model) -> bool:
    """Whether the model takes token types: then they are made inside the graph (always 0 for
    single-segment text), not a graph input."""
    type_vocab = getattr(model.config, "type_vocab_size", 0) or 0
    return bool(type_vocab > 0 and "token_type_ids" in inspect.signature(model.forward).parameters)


@functools.cache
def attention_module_class():
    """The torch module class every graph is traced from (made on first use: torch is imported then).

    ``AttentionLayers(model, layers)(input_ids, attention_mask)`` is the head-mean attention of
    ``layers``, stacked ``[n_layers, B, S, S]``. Subclasses change :meth:`model_inputs` (the causal
    mask) or :meth:`forward` (the BIO emissions), reading both from :meth:`attend`.
    """
    import torch

    class AttentionLayers(torch.nn.Module):
        def __init__(self, model, layers: Sequence[int]):
            super().__init__()
            self.model = model
            self.layers = [int(x) for x in layers]
            self.expected_count = layer_count(model.config)
            self.zero_token_types = zero_token_types(model)

        def model_inputs(self, input_ids, attention_mask) -> dict:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if self.zero_token_types:
                kwargs["token_type_ids"] = torch.zeros_like(input_ids)
            return kwargs

        def attend(self, input_ids, attention_mask, hidden_states: bool = False):
            """(stacked head-mean attention of ``layers``, the model's outputs) from one pass; with
            ``hidden_states`` the outputs hold every layer's input and the last output too."""
            outputs = self.model(
                **self.model_inputs(input_ids, attention_mask), output_attentions=True,
                output_hidden_states=hidden_states, return_dict=True,
            )
            attentions = outputs.attentions
            if attentions is None or len(attentions) != self.expected_count:
                raise ExportError(
                    f"the model returned {0 if not attentions else len(attentions)} attention maps for "
                    f"{self.expected_count} layers; it must be loaded with attn_implementation='eager'"
                )
            # GQA: transformers already repeats key/value heads, so this is the mean over query heads.
            return torch.stack([attentions[i].mean(dim=1) for i in self.layers], dim=0), outputs

        def forward(self, input_ids, attention_mask):
            return self.attend(input_ids, attention_mask)[0]

    return AttentionLayers


# ---------------------------------------------------------------------------------------------
# Trace


def sample_inputs(vocab: int, sample_length: int = 16):
    """Seeded random ids, batch 2, the second row half padding: the trace sample of every graph."""
    import torch

    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab, (2, sample_length), generator=generator, dtype=torch.int64)
    attention_mask = torch.ones((2, sample_length), dtype=torch.int64)
    attention_mask[1, sample_length // 2 :] = 0
    return input_ids, attention_mask


def export_onnx(
    module,
    onnx_path: Path,
    sample_length: int = 16,
    *,
    output_axes: Mapping[str, Mapping[int, str]] | None = None,
    sample=None,
) -> float:
    """Trace ``module`` with the legacy exporter (opset 17, dynamic batch and seq); returns seconds.

    ``output_axes``: output name -> its dynamic axes (default: ``attentions`` [L, batch, seq, seq]).
    ``sample``: the (input_ids, attention_mask) to trace with (default :func:`sample_inputs`).
    Writes ``onnx_path``, plus ``onnx_path`` + ``EXTERNAL_DATA_SUFFIX`` (all weights in one file) when
    the graph exceeds ``EXTERNAL_DATA_THRESHOLD_BYTES``. The trace goes to a scratch folder first,
    because above 2 GiB the legacy exporter writes one file per tensor beside the graph.
    """
    import torch

    if output_axes is None:
        output_axes = {OUTPUT_NAME: {1: "batch", 2: "seq", 3: "seq"}}
    if sample is None:
        sample = sample_inputs(int(getattr(module.model.config, "vocab_size", 100) or 100), sample_length)
    axes = {0: "batch", 1: "seq"}
    started = time.perf_counter()
    onnx_path = Path(onnx_path)
    scratch = Path(tempfile.mkdtemp(prefix=".trace-", dir=onnx_path.parent))
    traced = scratch / onnx_path.name
    try:
        with quiet_transformers(), torch.no_grad():
            torch.onnx.export(
                module,
                tuple(sample),
                str(traced),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(INPUT_NAMES),
                output_names=list(output_axes),
                dynamic_axes={"input_ids": axes, "attention_mask": axes, **{k: dict(v) for k, v in output_axes.items()}},
                do_constant_folding=True,
            )
        # The legacy exporter restores the module's training flag after tracing: keep eval mode.
        module.eval()
        place_graph(scratch, traced, onnx_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return time.perf_counter() - started


def place_graph(scratch: Path, traced: Path, onnx_path: Path) -> None:
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


def quantize_int8(onnx_path: Path, int8_path: Path) -> None:
    """Dynamic QInt8, per channel (``model.int8.onnx``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic logs a "consider pre-processing" warning on the root logger each time.
    with warnings.catch_warnings(), logging_disabled():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(onnx_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True)


# ---------------------------------------------------------------------------------------------
# Tokenizer, placing the bundle


def write_tokenizer(hf_tokenizer, path: Path) -> None:
    """tokenizer.json with padding and truncation off (sentence-transformers ships fixed 128, P7)."""
    data = json.loads(hf_tokenizer.backend_tokenizer.to_str())
    data["padding"] = None
    data["truncation"] = None
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def prepare_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ExportError(f"{out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not overwrite:
            raise ExportError(f"{out_dir} already exists and is not empty; remove it or pass overwrite/--force")
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def move_into_place(work_dir: Path, out_dir: Path) -> None:
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


@contextlib.contextmanager
def staged_bundle(out_dir: Path) -> Iterator[Path]:
    """A temporary directory beside ``out_dir``: renamed onto it when the block succeeds, else removed."""
    work_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield work_dir
        # mkdtemp made the directory 0700; a bundle is ordinary readable data.
        os.chmod(work_dir, 0o755)
        move_into_place(work_dir, out_dir)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------
# The pipeline


class ExportKind:
    """What one kind of bundle says about the shared steps (the defaults are the encoder's)."""

    architecture = "encoder"
    parity_sides: tuple[str, ...] = ("right",)  # padding sides the parity batches use
    int8_on_every_batch = False  # run the int8 graph on every probe batch, not just the agreement ones

    def plan(self, config, layers, max_length) -> tuple[list[int], int]:
        """(exported layers, max_length) from the full model's config and the caller's request."""
        raise NotImplementedError

    def load(self, source: str, keep_layers: int, revision: str | None):
        """(model, config, tokenizer), the model cut to ``keep_layers`` blocks."""
        raise NotImplementedError

    def wrap(self, model, layers: Sequence[int]):
        """The torch module to trace (eval mode)."""
        raise NotImplementedError

    def pad_id(self, hf_tokenizer) -> int:
        return hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0

    def padding_side(self, hf_tokenizer) -> str:
        return "right"  # absolute position embeddings: the runtime pads on the right

    def output_axes(self) -> dict:
        return {OUTPUT_NAME: {1: "batch", 2: "seq", 3: "seq"}}

    def graph_outputs(self, n_layers: int) -> list[dict]:
        return [{"name": OUTPUT_NAME, "dtype": "float32", "shape": [n_layers, "batch", "seq", "seq"]}]

    def run_torch(self, module, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, ...]:
        """The graph's outputs from the torch module, float32, in output order."""
        import torch

        module.eval()
        with torch.no_grad():
            out = module(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))
        outs = out if isinstance(out, tuple) else (out,)
        return tuple(o.detach().cpu().numpy().astype(np.float32) for o in outs)

    def run_onnx(self, session, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, ...]:
        """The graph's outputs from onnxruntime, float32, in output order."""
        return (verify.run_onnx_attention(session, input_ids, attention_mask),)

    def fp32_parity(self, torch_runs, onnx_runs, batches, probes: int) -> dict:
        """The fp32 parity report of ONNX vs torch (ParityError above the tolerance): the first
        output, compared as attention maps."""
        index = {id(ids): i for i, (ids, _) in enumerate(batches)}
        return verify.check_fp32_parity(
            lambda ids, mask: torch_runs[index[id(ids)]][0],
            lambda ids, mask: onnx_runs[index[id(ids)]][0],
            batches,
            probes=probes,
        )

    def check_fp32(self, report: dict, torch_runs, onnx_runs, batches, sides: Sequence[str]) -> None:
        """Add to (or refuse on) the fp32 parity report, after the attention check passed."""
        report["padding_sides"] = list(sides)

    def check_int8(self, report: dict, fp32_runs, int8_runs, batches) -> None:
        """Add to the int8 agreement report (``int8_runs`` holds None for batches it was not run on)."""

    def manifest_fields(self, hf_tokenizer, pad_id: int, extra_manifest: Mapping[str, Any] | None) -> tuple[dict, Any, dict]:
        """(special_tokens, pad_token_id, extra top-level keys) of the manifest."""
        extra: dict[str, Any] = {"export_seconds": None, "timings": {}}
        if extra_manifest:
            extra.update(extra_manifest)
        return manifest_mod.special_token_ids(hf_tokenizer), hf_tokenizer.pad_token_id, extra

    def accept(self, work_dir: Path, manifest: dict, int8: bool) -> None:
        """The runtime loader must accept what was written (checksums, graph I/O, keys) before it goes live."""
        from keyatten_lite.model.bundle import open_bundle

        open_bundle(work_dir, variant="int8" if int8 else "fp32")


def export_model(
    kind_for: Callable[[Any], ExportKind],
    source: str | os.PathLike,
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
    """Run every step for the kind ``kind_for(full config)`` picks; returns the manifest written.

    Raises ParityError (and writes nothing) if ORT and torch disagree above ``verify.FP32_TOLERANCE``.
    """
    started = time.perf_counter()
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ExportError(f"bundle name {name!r} must be letters, digits, '.', '_' or '-' (at most 100)")
    source = os.fspath(source)
    out_dir = Path(out_dir).expanduser().absolute()
    prepare_target(out_dir, overwrite)
    texts = list(probe_texts) if probe_texts is not None else list(verify.PROBE_TEXTS)
    if len(texts) < 2:
        raise ExportError("parity needs at least two probe texts")

    full_config = load_config(source, revision)
    kind = kind_for(full_config)
    # The full model's depth: the default layer rule and num_layers refer to it, not to the cut graph.
    num_layers = layer_count(full_config)
    wanted, max_length = kind.plan(full_config, layers, max_length)

    with staged_bundle(out_dir) as work_dir:
        timings: dict[str, float] = {}
        t = time.perf_counter()
        model, config, hf_tokenizer = kind.load(source, max(wanted) + 1, revision)
        module = kind.wrap(model, wanted)
        pad_id = kind.pad_id(hf_tokenizer)
        padding_side = kind.padding_side(hf_tokenizer)
        timings["load"] = time.perf_counter() - t

        onnx_path = work_dir / "model.onnx"
        timings["onnx_export"] = export_onnx(module, onnx_path, output_axes=kind.output_axes())
        graph_files = graph_file_names(onnx_path)
        tokenizer_path = work_dir / "tokenizer.json"
        write_tokenizer(hf_tokenizer, tokenizer_path)

        t = time.perf_counter()
        with quiet_transformers():  # the long probe exceeds model_max_length on purpose
            id_lists = verify.probe_id_lists(hf_tokenizer, tokenizer_path, texts + [verify.LONG_PROBE_TEXT], max_length)
        # Batch size and sequence length both vary between the batches (dynamic axes really work).
        batches, sides = [], []
        for side in kind.parity_sides:
            side_batches = verify.probe_batches(id_lists[:-1], id_lists[-1], pad_id, padding_side=side)
            batches += side_batches
            sides += [side] * len(side_batches)
        session = verify.onnx_session(onnx_path)
        torch_runs, onnx_runs = [], []
        for ids, mask in batches:
            torch_runs.append(kind.run_torch(module, ids, mask))
            onnx_runs.append(kind.run_onnx(session, ids, mask))
        parity = {"fp32": kind.fp32_parity(torch_runs, onnx_runs, batches, probes=len(id_lists))}
        kind.check_fp32(parity["fp32"], torch_runs, onnx_runs, batches, sides)
        timings["verify"] = time.perf_counter() - t
        # The torch model is done with; free it before quantising (GBs for a 0.6B decoder).
        del module, model
        gc.collect()

        file_names = graph_files + ["tokenizer.json"]
        if int8:
            t = time.perf_counter()
            int8_path = work_dir / "model.int8.onnx"
            quantize_int8(onnx_path, int8_path)
            int8_session = verify.onnx_session(int8_path)
            # One batch per padding side plus the long probe: agreement is measured where it is used.
            chosen = [0, 2] + ([3] if len(batches) > 3 else [])
            needed = range(len(batches)) if kind.int8_on_every_batch else chosen
            int8_runs = [kind.run_onnx(int8_session, *batches[i]) if i in needed else None for i in range(len(batches))]
            parity["int8"] = verify.int8_agreement(
                [(onnx_runs[i][0], int8_runs[i][0], batches[i][0], batches[i][1]) for i in chosen],
                hf_tokenizer.all_special_ids,
            )
            kind.check_int8(parity["int8"], onnx_runs, int8_runs, batches)
            del int8_session
            file_names.append("model.int8.onnx")
            timings["int8"] = time.perf_counter() - t
        del session

        unexpected = sorted(p.name for p in work_dir.iterdir() if p.name not in file_names)
        if unexpected:
            raise ExportError(f"the export produced unexpected files {unexpected}; a bundle holds only its listed files")

        graph = {
            "inputs": [{"name": n, "dtype": "int64", "shape": ["batch", "seq"]} for n in INPUT_NAMES],
            "outputs": kind.graph_outputs(len(wanted)),
            "opset": OPSET,
            "exporter": manifest_mod.EXPORTER_LABEL,
        }
        if len(graph_files) > 1:
            graph["external_data"] = graph_files[1]
        special_tokens, pad_token_id, extra = kind.manifest_fields(hf_tokenizer, pad_id, extra_manifest)
        manifest = manifest_mod.build_manifest(
            name=name,
            source=manifest_mod.source_record(source, source_info, revision),
            architecture=kind.architecture,
            model_type=str(getattr(config, "model_type", "")),
            num_layers=num_layers,
            exported_layers=wanted,
            graph=graph,
            special_tokens=special_tokens,
            pad_token_id=pad_token_id,
            padding_side=padding_side,
            max_length=max_length,
            parity=parity,
            files=manifest_mod.files_table(work_dir, file_names),
            extra=extra,
        )
        manifest["timings"] = {key: round(value, 3) for key, value in timings.items()}
        manifest["export_seconds"] = round(time.perf_counter() - started, 3)
        manifest_mod.write_manifest(work_dir, manifest)
        kind.accept(work_dir, manifest, int8)
    return manifest
