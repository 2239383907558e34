"""Model bundles: a directory with bundle.json, model.onnx, tokenizer.json (and model.int8.onnx).

A BIO tagger bundle may instead share the graph of an attention bundle (``backbone`` in bundle.json):
it carries bundle.json, tokenizer.json and a small ``head.onnx`` (the backbone's last layer and the BIO
head), which turns the backbone's ``last_layer_input`` into the emissions (:class:`SharedBackboneBundle`).

``open_bundle`` checks the manifest, the sha256 of every listed file (hashed once, then trusted through
the verified record of model/verified.py) and the graph's inputs and outputs
(read straight from the ONNX protobuf, so no inference session is needed for that) and returns a
``Bundle``. The onnxruntime session and the tokenizer are created on first use. The layout is
described in docs/bundle-format.md.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import threading
from pathlib import Path

import numpy as np

from keyatten_lite.model.onnx_io import read_onnx_io
from keyatten_lite.errors import BundleError, BundleNotFoundError, ChecksumError, InvalidArgumentError
from keyatten_lite.model.manifest import (  # re-exported: bundle.json's format lives in model/manifest.py
    BUNDLE_FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    VARIANT_FILES,
    check_graph_io,
    read_manifest_and_digest,
    read_manifest,
    validate_manifest,
)

__all__ = [
    "BUNDLE_FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "VARIANT_FILES",
    "Bundle",
    "SharedBackboneBundle",
    "open_bundle",
    "resolve_bundle_path",
    "read_manifest",
    "validate_manifest",
    "read_onnx_io",
    "sha256_file",
    "verify_bundle",
]

# Files already hashed in this process: (path, size, mtime_ns, expected sha256). Several extractors
# opening the same bundle then pay for hashing once. Across processes, the verified record in the home
# does the same (model/verified.py).
_VERIFIED: set[tuple[str, int, int, str]] = set()
_VERIFIED_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------
# Files and manifest


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_bundle_path(model: str | os.PathLike) -> Path:
    """The bundle directory for ``model``: an existing directory, or a name under ``bundles_dir()``."""
    from keyatten_lite.model.registry import DEFAULT_BIO_BUNDLES, DEFAULT_BUNDLES, OPTIONAL_BUNDLES, bundles_dir

    if not isinstance(model, (str, os.PathLike)) or not os.fspath(model):
        raise InvalidArgumentError(f"model must be a bundle directory or a bundle name, got {model!r}")
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    looks_like_name = os.sep not in text and (os.altsep is None or os.altsep not in text)
    if looks_like_name:
        installed = bundles_dir() / text
        if installed.is_dir():
            return installed
        if text in DEFAULT_BIO_BUNDLES or text in DEFAULT_BUNDLES or text in OPTIONAL_BUNDLES:
            how = "`keyatten-lite models build`" + (f" --name {text}" if text in OPTIONAL_BUNDLES else "")
            raise BundleNotFoundError(
                f"bundle {text!r} is not built yet (looked in {installed}); run {how} once (it needs the export "
                "extras: `pip install torch==2.13.0` then `pip install -e .[export]`), or `models install` a pack"
            )
        raise BundleNotFoundError(
            f"no bundle named {text!r} in {bundles_dir()} and no directory {text!r}; default bundles: "
            f"{', '.join(DEFAULT_BUNDLES)} (build them with `keyatten-lite models build`)"
        )
    if path.exists():
        raise BundleNotFoundError(f"{path} is a file, but a bundle is a directory (with bundle.json)")
    raise BundleNotFoundError(f"bundle directory {path} does not exist")


def _verify_file(bundle_dir: Path, name: str, rel_name: str, entry: dict, *, use_memo: bool = True) -> None:
    path = bundle_dir / rel_name
    if not path.is_file():
        raise BundleError(
            f"bundle {name!r} ({bundle_dir}): file {rel_name} listed in bundle.json is missing; "
            "rebuild the bundle (`keyatten-lite models build --force`)"
        )
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, entry["sha256"])
    if use_memo:
        with _VERIFIED_LOCK:
            if key in _VERIFIED:
                return
    if stat.st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
        raise ChecksumError(
            f"bundle {name!r} ({bundle_dir}): {rel_name} does not match the sha256 recorded in "
            "bundle.json (the file is damaged or was modified); rebuild the bundle "
            "(`keyatten-lite models build --force`)"
        )
    with _VERIFIED_LOCK:
        _VERIFIED.add(key)


def _verify_files(bundle_dir: Path, name: str, manifest: dict, manifest_sha256: str, *, force: bool = False) -> dict:
    """Check every listed file: trust a matching verified record (model/verified.py), else hash them all
    and record the result. ``force`` (``models verify``) always hashes and never trusts a memo."""
    from keyatten_lite.model import verified

    record_file = verified.record_path(name, manifest_sha256)
    if not force and verified.record_matches(verified.load_record(record_file), bundle_dir, manifest, manifest_sha256):
        return {"hashed": False, "record": record_file}
    signatures: dict[str, dict] = {}
    stable = True
    try:
        for rel_name, entry in manifest["files"].items():
            try:
                before = verified.file_signature(bundle_dir / rel_name)
            except OSError:
                before = None  # _verify_file names the missing file
            _verify_file(bundle_dir, name, rel_name, entry, use_memo=not force)
            after = verified.file_signature(bundle_dir / rel_name)
            # A file that changed while it was hashed is not recorded: the next open hashes again.
            stable = stable and before == after
            signatures[rel_name] = after
    except BundleError:
        if force:
            verified.remove_record(name, manifest_sha256)
        raise
    written = verified.write_record(name, bundle_dir, manifest, manifest_sha256, signatures) if stable else None
    return {"hashed": True, "record": written}


def verify_bundle(model: str | os.PathLike) -> dict:
    """Hash every file of a bundle against bundle.json now (no memo, no record trusted), and refresh
    its verified record. Raises ChecksumError / BundleError on a mismatch (the record is removed).

    Returns ``{"name", "path", "files", "bytes", "seconds", "record"}`` (``record``: the record's path,
    None when the home is not writable).
    """
    import time

    begin = time.perf_counter()
    path = resolve_bundle_path(model)
    manifest, manifest_sha256 = read_manifest_and_digest(path)
    name = manifest.get("name", path.name)
    validate_manifest(manifest, f"bundle {name!r} ({path})")
    result = _verify_files(path, name, manifest, manifest_sha256, force=True)
    return {
        "name": name,
        "path": str(path),
        "files": len(manifest["files"]),
        "bytes": sum(entry["bytes"] for entry in manifest["files"].values()),
        "seconds": time.perf_counter() - begin,
        "record": None if result["record"] is None else str(result["record"]),
    }


# ---------------------------------------------------------------------------------------------
# Bundle


class Bundle:
    """An opened, verified bundle. Create with :func:`open_bundle`."""

    def __init__(
        self,
        path: Path,
        manifest: dict,
        *,
        variant: str = "fp32",
        intra_op_threads: int | None = None,
        providers: list[str] | None = None,
    ):
        self.path = path
        self.manifest = manifest
        self.variant = variant
        self.graph_path = path / VARIANT_FILES[variant]
        self.intra_op_threads = intra_op_threads
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        self.name: str = manifest["name"]
        self.architecture: str = manifest["architecture"]
        self.num_layers: int = manifest["num_layers"]
        self.exported_layers: list[int] = list(manifest["exported_layers"])
        self.default_layer: int = manifest["default_layer"]
        self.recommended_layer: int | None = manifest.get("recommended_layer")
        self.max_length: int = manifest["max_length"]
        self.pad_token_id: int | None = manifest["pad_token_id"]
        self.padding_side: str = manifest["padding_side"]
        self.special_token_ids: dict[str, int | None] = dict(manifest["special_tokens"])
        self.input_names: list[str] = [spec["name"] for spec in manifest["graph"]["inputs"]]
        self.output_name: str = manifest["graph"]["outputs"][0]["name"]
        # Every declared output (the first is the attention; BIO bundles add "emissions").
        self.output_names: list[str] = [spec["name"] for spec in manifest["graph"]["outputs"]]
        # "attention" for plain bundles; "bio-tagger" for bundles that also carry BIO emissions.
        self.kind: str = str(manifest.get("kind", "attention"))
        self._lock = threading.Lock()
        self._session = None
        self._tokenizer = None

    def __repr__(self) -> str:
        return (
            f"Bundle(name={self.name!r}, path={str(self.path)!r}, variant={self.variant!r}, "
            f"exported_layers={self.exported_layers})"
        )

    @property
    def is_causal(self) -> bool:
        return self.architecture == "causal"

    @property
    def content_hash(self) -> str:
        """sha256 over the manifest's files table: changes whenever any bundle file changes."""
        files = json.dumps(self.manifest["files"], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(files.encode("utf-8")).hexdigest()

    def layer_position(self, layer: int) -> int:
        """Index into ``exported_layers`` (and the graph output's first axis) of user layer ``layer``.

        Negative layers count from ``num_layers`` (-1 is the last layer), as in keyatten.
        """
        if not isinstance(layer, numbers.Integral) or isinstance(layer, bool):
            raise InvalidArgumentError(f"layer index must be an int, got {layer!r}")
        layer = int(layer)
        absolute = layer if layer >= 0 else self.num_layers + layer
        if not 0 <= absolute < self.num_layers:
            raise InvalidArgumentError(
                f"layer {layer} is out of range for {self.name!r}, which has {self.num_layers} layers "
                f"(use {-self.num_layers}..{self.num_layers - 1}); exported layers: {self.exported_layers}"
            )
        if absolute not in self.exported_layers:
            raise InvalidArgumentError(
                f"layer {layer} (absolute {absolute}) was not exported in bundle {self.name!r}; "
                f"available layers: {self.exported_layers} (re-export with `keyatten-lite-export "
                f"encoder ... --layers` to add it)"
            )
        return self.exported_layers.index(absolute)

    # -- lazy resources --------------------------------------------------------------------------

    def tokenizer(self):
        """The bundle's ``tokenizers.Tokenizer``, padding and truncation off (callers truncate)."""
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    from tokenizers import Tokenizer

                    file_name = self.manifest["tokenizer"]["file"]
                    try:
                        tokenizer = Tokenizer.from_file(str(self.path / file_name))
                    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
                        raise BundleError(
                            f"bundle {self.name!r}: {file_name} cannot be loaded ({exc}); rebuild the bundle"
                        ) from None
                    tokenizer.no_padding()
                    tokenizer.no_truncation()
                    self._tokenizer = tokenizer
        return self._tokenizer

    def session(self):
        """The onnxruntime InferenceSession (created once, thread-safely)."""
        return self._once("_session", self._create_session)

    def _once(self, attribute: str, make):
        """``self.<attribute>``, made by ``make()`` on first use (thread-safely)."""
        if getattr(self, attribute) is None:
            with self._lock:
                if getattr(self, attribute) is None:
                    setattr(self, attribute, make())
        return getattr(self, attribute)

    def _session_options(self, ort):
        options = ort.SessionOptions()
        if self.intra_op_threads is not None:
            options.intra_op_num_threads = int(self.intra_op_threads)
        # Spinning worker threads burn the cores other work needs between runs (onnx-export-notes P8).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        return options

    def _create_session(self):
        import onnxruntime as ort

        from keyatten_lite.model.session import create_session, session_key

        def make_options():
            return self._session_options(ort)

        # Chosen by measurement (scripts/edge_session_options.py, docs/results/edge.md): all graph
        # optimisations, done once and saved in the home with the weights in an external file that
        # onnxruntime memory-maps; later sessions load it with optimisation off (zh fp32: 1.9 s and
        # 877 MiB -> 0.2 s and 145 MiB; outputs identical). Arena, memory pattern and prepacking stay
        # at onnxruntime's defaults: turning them off saved no memory on one document and made the
        # 100-document batch slower.
        level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        key = session_key(self.name, self.variant, self.content_hash, ort.__version__, "all")
        try:
            session = create_session(ort, self.graph_path, make_options, self.providers, key=key, level=level)
        except Exception as exc:  # onnxruntime raises its own non-exported exception types
            raise BundleError(
                f"bundle {self.name!r}: onnxruntime cannot load {self.graph_path.name} ({exc})"
            ) from None
        got_inputs = {i.name for i in session.get_inputs()}
        got_outputs = {o.name for o in session.get_outputs()}
        if got_inputs != set(self.input_names) or not set(self.output_names) <= got_outputs:
            raise BundleError(
                f"bundle {self.name!r}: {self.graph_path.name} has inputs {sorted(got_inputs)} and outputs "
                f"{sorted(got_outputs)}, which do not match bundle.json; rebuild the bundle"
            )
        return session

    def _feeds(self, input_ids, attention_mask) -> dict[str, np.ndarray]:
        """Validated int64 graph feeds (InvalidArgumentError on bad shapes, dtypes or lengths)."""
        ids = np.asarray(input_ids)
        mask = np.asarray(attention_mask)
        if ids.ndim != 2 or ids.shape[0] < 1 or ids.shape[1] < 1:
            raise InvalidArgumentError(f"input_ids must be a non-empty 2-D [batch, seq] array, got shape {ids.shape}")
        if mask.shape != ids.shape:
            raise InvalidArgumentError(
                f"attention_mask shape {mask.shape} differs from input_ids shape {ids.shape}"
            )
        for label, array in (("input_ids", ids), ("attention_mask", mask)):
            if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
                raise InvalidArgumentError(f"{label} must hold integers, got dtype {array.dtype}")
        if ids.shape[1] > self.max_length:
            # Past max_position_embeddings ORT fails with an opaque broadcast error (export notes P6).
            raise InvalidArgumentError(
                f"sequence length {ids.shape[1]} exceeds the bundle's max_length {self.max_length}; "
                "truncate the tokens first"
            )
        feeds = {
            "input_ids": np.ascontiguousarray(ids, dtype=np.int64),
            "attention_mask": np.ascontiguousarray(mask, dtype=np.int64),
        }
        return {name: feeds[name] for name in self.input_names}

    def _check_attention_shape(self, output: np.ndarray, batch: int, seq: int) -> None:
        expected = (len(self.exported_layers), batch, seq, seq)
        if output.shape != expected:
            raise BundleError(
                f"bundle {self.name!r}: graph returned attention of shape {output.shape}, expected {expected}; "
                "the graph does not follow the bundle format"
            )

    def _run(self, wanted: list[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        def run(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            values = self.session().run(wanted, f)
            return {name: np.asarray(value, dtype=np.float32) for name, value in zip(wanted, values)}

        if self.variant == "int8" and feeds["input_ids"].shape[0] > 1:  # batch-dependent numbers (model/rows.py)
            from keyatten_lite.model.rows import run_rows_alone

            return run_rows_alone(run, feeds, {n: (1, (2, 3)) if n == self.output_name else (0, (1,)) for n in wanted})
        return run(feeds)

    def run_attention(self, input_ids, attention_mask) -> np.ndarray:
        """Head-mean attention, float32 ``[n_exported_layers, batch, seq, seq]`` (queries x keys)."""
        if self.kind == "qk":
            raise BundleError(
                f"bundle {self.name!r} holds queries and keys (kind 'qk', for QKLoRAExtractor), not attention maps"
            )
        feeds = self._feeds(input_ids, attention_mask)
        output = self._run([self.output_name], feeds)[self.output_name]
        self._check_attention_shape(output, *feeds["input_ids"].shape)
        return output

    def run_outputs(self, input_ids, attention_mask, names=None) -> dict[str, np.ndarray]:
        """Several graph outputs from one forward pass: ``{name: float32 array}``.

        ``names`` defaults to every output the manifest declares (``attentions``, and ``emissions``
        ``[batch, seq, 3]`` for BIO bundles). Only the requested outputs are computed and returned.
        """
        wanted = list(self.output_names if names is None else names)
        unknown = [name for name in wanted if name not in self.output_names]
        if unknown or not wanted:
            raise InvalidArgumentError(
                f"bundle {self.name!r} has outputs {self.output_names}; cannot return {unknown or wanted}"
            )
        feeds = self._feeds(input_ids, attention_mask)
        outputs = self._run(wanted, feeds)
        if self.kind != "qk" and self.output_name in outputs:
            self._check_attention_shape(outputs[self.output_name], *feeds["input_ids"].shape)
        return outputs


class SharedBackboneBundle(Bundle):
    """A BIO tagger that runs the graph of another bundle (its backbone): the backbone's attention
    and ``last_layer_input`` from one pass, then its own ``head.onnx`` (the last layer and the BIO
    head) on that hidden state for the emissions. Create with :func:`open_bundle`."""

    EMISSIONS = "emissions"

    def __init__(self, path: Path, manifest: dict, backbone: Bundle, **kwargs):
        super().__init__(path, manifest, variant=backbone.variant, **kwargs)
        self.backbone = backbone
        self.graph_path = backbone.graph_path
        record = manifest["backbone"]
        self.hidden_output: str = record["hidden_output"]
        self.head_graph_path = path / record["head_graph"]
        self.head_inputs: list[str] = list(record["head_inputs"])
        self._head_session = None

    def __repr__(self) -> str:
        return f"SharedBackboneBundle(name={self.name!r}, path={str(self.path)!r}, backbone={self.backbone!r})"

    @property
    def content_hash(self) -> str:
        """Changes with the bundle's files, its head and its backbone's files."""
        parts = {"files": self.manifest["files"], "bio": self.manifest["bio"], "backbone": self.backbone.content_hash}
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def session(self):
        return self.backbone.session()

    def head_session(self):
        """The onnxruntime session of head.onnx (created once; small: one layer and the head)."""
        return self._once("_head_session", self._create_head_session)

    def _create_head_session(self):
        import onnxruntime as ort

        options = self._session_options(ort)
        try:
            session = ort.InferenceSession(str(self.head_graph_path), sess_options=options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own non-exported exception types
            raise BundleError(f"bundle {self.name!r}: onnxruntime cannot load {self.head_graph_path.name} ({exc})") from None
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if set(inputs) != set(self.head_inputs) or self.EMISSIONS not in outputs:
            raise BundleError(
                f"bundle {self.name!r}: {self.head_graph_path.name} has inputs {inputs} and outputs {outputs}, "
                f"expected {self.head_inputs} -> {self.EMISSIONS!r}; rebuild the bundle"
            )
        return session

    def _run(self, wanted: list[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        graph_names = [self.hidden_output if name == self.EMISSIONS else name for name in wanted]
        outputs = self.backbone._run(list(dict.fromkeys(graph_names)), feeds)
        result = {}
        for name in wanted:
            if name == self.EMISSIONS:
                hidden_name, mask_name = self.head_inputs
                head_feeds = {hidden_name: outputs[self.hidden_output], mask_name: feeds["attention_mask"]}
                (emissions,) = self.head_session().run([self.EMISSIONS], head_feeds)
                result[name] = np.asarray(emissions, dtype=np.float32)
            else:
                result[name] = outputs[name]
        return result


def _backbone_dir(path: Path, name: str) -> Path:
    """The backbone beside the BIO bundle (how builds and installs place them), else by name."""
    sibling = path.parent / name
    if (sibling / MANIFEST_NAME).is_file():
        return sibling
    return resolve_bundle_path(name)


def _open_backbone(path: Path, manifest: dict, where: str, **kwargs) -> Bundle:
    record = manifest["backbone"]
    try:
        backbone_path = _backbone_dir(path, record["bundle"])
    except BundleNotFoundError as exc:
        raise BundleNotFoundError(f"{where} shares the graph of bundle {record['bundle']!r}, which is not installed: {exc}") from None
    backbone = open_bundle(backbone_path, **kwargs)
    if "backbone" in backbone.manifest:
        raise BundleError(f"{where}: its backbone {record['bundle']!r} itself shares a backbone")
    graph_file = VARIANT_FILES[backbone.variant]
    theirs = backbone.manifest["files"]
    if graph_file not in record["files"]:
        raise BundleError(f"{where}: its head was not made for the {backbone.variant} graph of {record['bundle']!r}")
    for rel_name, sha in record["files"].items():
        if rel_name in theirs and theirs[rel_name]["sha256"] != sha:
            raise BundleError(
                f"{where}: backbone {record['bundle']!r} has a different {rel_name} than the one its head was "
                "trained on (sha256 differs); rebuild both with `keyatten-lite models build --force`"
            )
    if record["hidden_output"] not in backbone.output_names:
        raise BundleError(
            f"{where}: backbone {record['bundle']!r} does not emit {record['hidden_output']!r}; rebuild it"
        )
    own_tokenizer = manifest["files"].get(manifest["tokenizer"]["file"], {}).get("sha256")
    if own_tokenizer != theirs.get(backbone.manifest["tokenizer"]["file"], {}).get("sha256"):
        raise BundleError(f"{where}: its tokenizer differs from backbone {record['bundle']!r}'s; rebuild both")
    return backbone


def open_bundle(
    model: str | os.PathLike,
    *,
    variant: str = "fp32",
    intra_op_threads: int | None = None,
    providers: list[str] | None = None,
    verify_checksums: bool = True,
) -> Bundle:
    """Open and verify a bundle directory or an installed bundle name (see docs/bundle-format.md)."""
    if variant not in VARIANT_FILES:
        raise InvalidArgumentError(f"variant must be one of {sorted(VARIANT_FILES)}, got {variant!r}")
    if intra_op_threads is not None and (
        not isinstance(intra_op_threads, numbers.Integral) or isinstance(intra_op_threads, bool) or intra_op_threads < 1
    ):
        raise InvalidArgumentError(f"intra_op_threads must be a positive int or None, got {intra_op_threads!r}")
    path = resolve_bundle_path(model)
    manifest, manifest_sha256 = read_manifest_and_digest(path)
    name = manifest.get("name", path.name)
    where = f"bundle {name!r} ({path})"
    validate_manifest(manifest, where)
    graph_file = VARIANT_FILES[variant]
    if graph_file not in manifest["files"] and "backbone" not in manifest:
        other = next(v for v, f in VARIANT_FILES.items() if f in manifest["files"])
        raise BundleError(f"{where} has no {variant} variant ({graph_file} is not in bundle.json); use variant="
                          f"{other!r} or rebuild it (`models build --force`, or a pack with --variant {variant})")
    if verify_checksums:
        _verify_files(path, name, manifest, manifest_sha256)
    else:
        for rel_name in manifest["files"]:
            if not (path / rel_name).is_file():
                raise BundleError(f"{where}: file {rel_name} listed in bundle.json is missing; rebuild the bundle")
    for rel_name in manifest["files"]:
        if rel_name in VARIANT_FILES.values():  # a shared-backbone BIO bundle's head.onnx has its own I/O
            check_graph_io(path / rel_name, manifest, where)
    if "backbone" in manifest:
        backbone = _open_backbone(
            path, manifest, where, variant=variant, intra_op_threads=intra_op_threads, providers=providers,
            verify_checksums=verify_checksums,
        )
        return SharedBackboneBundle(path, manifest, backbone, intra_op_threads=intra_op_threads, providers=providers)
    return Bundle(path, manifest, variant=variant, intra_op_threads=intra_op_threads, providers=providers)
