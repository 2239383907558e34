"""bundle.json: reading it, and checking that it is a manifest this runtime can use (no file access
beyond the manifest itself, and the graph's declared inputs and outputs read from the ONNX protobuf).
The layout is described in docs/bundle-format.md; :mod:`keyatten_lite.model.bundle` opens bundles."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


from keyatten_lite.errors import BundleError, BundleNotFoundError
from keyatten_lite.model.onnx_io import read_onnx_io

BUNDLE_FORMAT = "keyatten-lite-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "bundle.json"
VARIANT_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}

REQUIRED_KEYS = (
    "format",
    "format_version",
    "name",
    "architecture",
    "num_layers",
    "exported_layers",
    "default_layer",
    "graph",
    "special_tokens",
    "pad_token_id",
    "padding_side",
    "max_length",
    "tokenizer",
    "files",
)




def read_manifest(path: str | os.PathLike) -> dict:
    """Parse ``<path>/bundle.json`` (no validation beyond being a JSON object)."""
    return read_manifest_and_digest(path)[0]


def read_manifest_and_digest(path: str | os.PathLike) -> tuple[dict, str]:
    """``bundle.json`` parsed, and the sha256 of the very bytes parsed (what verified records key on)."""
    manifest_path = Path(path) / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleNotFoundError(
            f"{Path(path)} is not a keyatten-lite bundle: it has no {MANIFEST_NAME}; build bundles with "
            "`keyatten-lite models build` or `keyatten-lite-export encoder`"
        )
    try:
        raw = manifest_path.read_bytes()
        manifest = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON ({exc}); rebuild the bundle") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object; rebuild the bundle")
    return manifest, hashlib.sha256(raw).hexdigest()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_manifest(manifest: dict, where: str = "bundle") -> None:
    """Raise BundleError unless ``manifest`` is a format-1 manifest this runtime can use."""
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{where}: bundle.json has format {manifest.get('format')!r}, expected {BUNDLE_FORMAT!r}; "
            "this is not a keyatten-lite bundle"
        )
    version = manifest.get("format_version")
    if not _is_int(version) or version != FORMAT_VERSION:
        hint = (
            "it was made by a newer keyatten-lite: upgrade keyatten-lite"
            if _is_int(version) and version > FORMAT_VERSION
            else "rebuild it with `keyatten-lite models build --force`"
        )
        raise BundleError(
            f"{where}: unsupported bundle format_version {version!r} (this keyatten-lite reads "
            f"version {FORMAT_VERSION}); {hint}"
        )
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise BundleError(f"{where}: bundle.json lacks required keys {missing}; rebuild the bundle")

    def bad(message: str) -> BundleError:
        return BundleError(f"{where}: bundle.json {message}; rebuild the bundle")

    if manifest["architecture"] not in ("encoder", "causal"):
        raise bad(f"has architecture {manifest['architecture']!r}, expected 'encoder' or 'causal'")
    num_layers = manifest["num_layers"]
    if not _is_int(num_layers) or num_layers < 1:
        raise bad(f"has num_layers {num_layers!r}, expected a positive integer")
    layers = manifest["exported_layers"]
    if (
        not isinstance(layers, list)
        or not layers
        or not all(_is_int(x) and 0 <= x < num_layers for x in layers)
        or len(set(layers)) != len(layers)
    ):
        raise bad(f"has exported_layers {layers!r}, expected distinct layer indices in [0, {num_layers})")
    for key in ("default_layer", "recommended_layer"):
        value = manifest.get(key)
        if value is not None and not (_is_int(value) and 0 <= value < num_layers):
            raise bad(f"has {key} {value!r}, expected a layer index in [0, {num_layers})")
    if manifest["default_layer"] is None:
        raise bad("has no default_layer")
    if manifest["padding_side"] not in ("right", "left"):
        raise bad(f"has padding_side {manifest['padding_side']!r}, expected 'right' or 'left'")
    if not _is_int(manifest["max_length"]) or manifest["max_length"] < 2:
        raise bad(f"has max_length {manifest['max_length']!r}, expected an integer >= 2")
    if manifest["pad_token_id"] is not None and not _is_int(manifest["pad_token_id"]):
        raise bad(f"has pad_token_id {manifest['pad_token_id']!r}, expected an integer or null")
    if not isinstance(manifest["special_tokens"], dict):
        raise bad("has special_tokens that is not an object")
    tokenizer = manifest["tokenizer"]
    if not isinstance(tokenizer, dict) or not isinstance(tokenizer.get("file"), str):
        raise bad("has no tokenizer.file")
    backbone = manifest.get("backbone")
    if backbone is not None:
        _validate_backbone_record(manifest, bad)
    if manifest.get("kind") == "qk":
        _validate_qk_record(manifest, bad)

    files = manifest["files"]
    if not isinstance(files, dict) or not files:
        raise bad("has no files table")
    for rel_name, entry in files.items():
        # Plain names only: a manifest must not point outside its own directory.
        if not isinstance(rel_name, str) or rel_name in ("", ".", "..") or "/" in rel_name or "\\" in rel_name:
            raise bad(f"lists file {rel_name!r}, expected a plain file name")
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or len(entry["sha256"]) != 64
            or not _is_int(entry.get("bytes"))
        ):
            raise bad(f"has a malformed files entry for {rel_name!r} (needs sha256 and bytes)")
    if tokenizer["file"] not in files:
        raise bad(f"does not list {tokenizer['file']} in files")
    # A packed bundle may carry only its default variant (an int8-only edge install); a bundle that
    # shares a backbone carries no graph at all.
    if backbone is None and not any(graph_file in files for graph_file in VARIANT_FILES.values()):
        raise bad(f"lists none of the graphs {', '.join(VARIANT_FILES.values())} in files")
    default_variant = manifest.get("default_variant", "fp32")
    if default_variant not in VARIANT_FILES:
        raise bad(f"has default_variant {default_variant!r}, expected one of {sorted(VARIANT_FILES)}")

    graph = manifest["graph"]
    if not isinstance(graph, dict):
        raise bad("has a graph entry that is not an object")
    for side in ("inputs", "outputs"):
        specs = graph.get(side)
        if (
            not isinstance(specs, list)
            or not specs
            or not all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in specs)
        ):
            raise bad(f"has no graph.{side} list of {{name, dtype, shape}}")


QK_OUTPUTS = ("q_proj", "k_proj", "q_attn", "k_attn")


def _validate_qk_record(manifest: dict, bad) -> None:
    """A ``kind: "qk"`` bundle (QKLoRAExtractor): the q/k of one exported layer, and their head layout."""
    record = manifest.get("qk")
    if not isinstance(record, dict):
        raise bad("has kind 'qk' but no qk record")
    for key in ("head_dim", "num_heads", "num_kv_heads"):
        if not _is_int(record.get(key)) or record[key] < 1:
            raise bad(f"has qk.{key} {record.get(key)!r}, expected a positive integer")
    if record["num_heads"] % record["num_kv_heads"]:
        raise bad(f"has qk.num_heads {record['num_heads']} not a multiple of qk.num_kv_heads {record['num_kv_heads']}")
    if record.get("layer") not in manifest["exported_layers"]:
        raise bad(f"has qk.layer {record.get('layer')!r}, expected one of exported_layers {manifest['exported_layers']}")
    outputs = manifest["graph"].get("outputs") if isinstance(manifest["graph"], dict) else None
    names = {spec.get("name") for spec in outputs or [] if isinstance(spec, dict)}
    missing = [name for name in QK_OUTPUTS if name not in names]
    if missing:
        raise bad(f"is a qk bundle whose graph lacks the outputs {missing}")


def _validate_backbone_record(manifest: dict, bad) -> None:
    backbone = manifest["backbone"]
    if not isinstance(backbone, dict):
        raise bad("has a backbone entry that is not an object")
    name = backbone.get("bundle")
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise bad(f"has backbone.bundle {name!r}, expected a plain bundle name")
    if not isinstance(backbone.get("hidden_output"), str):
        raise bad("has no backbone.hidden_output")
    files = backbone.get("files")
    if not isinstance(files, dict) or not files or not all(isinstance(v, str) and len(v) == 64 for v in files.values()):
        raise bad("has no backbone.files table of sha256 digests")
    if manifest.get("kind") != "bio-tagger":
        raise bad(f"shares a backbone but has kind {manifest.get('kind')!r}; only BIO taggers can")
    head_graph = backbone.get("head_graph")
    if not isinstance(head_graph, str) or head_graph not in manifest.get("files", {}) or head_graph in VARIANT_FILES.values():
        raise bad(f"has backbone.head_graph {head_graph!r}, expected a graph file it lists (not {sorted(VARIANT_FILES.values())})")
    inputs = backbone.get("head_inputs")
    if not (isinstance(inputs, list) and len(inputs) == 2 and all(isinstance(x, str) for x in inputs)):
        raise bad("has no backbone.head_inputs [hidden state, attention mask]")



def check_graph_io(graph_path: Path, manifest: dict, where: str) -> None:
    """BundleError unless the graph's inputs and outputs are the ones bundle.json describes."""
    try:
        actual = read_onnx_io(graph_path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{where}: {graph_path.name} is not a readable ONNX graph ({exc}); rebuild the bundle") from None
    for side in ("inputs", "outputs"):
        declared = {spec["name"]: spec for spec in manifest["graph"][side]}
        found = {spec["name"]: spec for spec in actual[side]}
        if side == "inputs" and set(declared) != set(found):
            raise BundleError(
                f"{where}: {graph_path.name} takes inputs {sorted(found)} but bundle.json declares "
                f"{sorted(declared)}; rebuild the bundle"
            )
        for out_name, spec in declared.items():
            if out_name not in found:
                raise BundleError(
                    f"{where}: bundle.json names graph {side[:-1]} {out_name!r}, which {graph_path.name} "
                    f"lacks (it has {sorted(found)}); rebuild the bundle"
                )
            got = found[out_name]
            if spec.get("dtype") is not None and got["dtype"] is not None and spec["dtype"] != got["dtype"]:
                raise BundleError(
                    f"{where}: graph {side[:-1]} {out_name!r} is {got['dtype']} in {graph_path.name} but "
                    f"{spec['dtype']} in bundle.json; rebuild the bundle"
                )
            if (
                isinstance(spec.get("shape"), list)
                and got["shape"] is not None
                and len(spec["shape"]) != len(got["shape"])
            ):
                raise BundleError(
                    f"{where}: graph {side[:-1]} {out_name!r} has rank {len(got['shape'])} in "
                    f"{graph_path.name} but {len(spec['shape'])} in bundle.json; rebuild the bundle"
                )


