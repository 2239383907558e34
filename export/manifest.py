"""bundle.json construction: the keys of format version 1 (docs/bundle-format.md)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from keyatten_lite.model.bundle import BUNDLE_FORMAT, FORMAT_VERSION, MANIFEST_NAME, sha256_file

__all__ = [
    "EXPORTER_LABEL",
    "file_entry",
    "files_table",
    "package_versions",
    "special_token_ids",
    "default_layer_for",
    "recommended_layer_for",
    "source_record",
    "build_manifest",
    "write_manifest",
]

EXPORTER_LABEL = "torch.onnx legacy"
_SPECIAL_NAMES = ("cls", "sep", "bos", "eos", "pad", "unk")
_SOURCE_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model")


def file_entry(path: str | os.PathLike) -> dict:
    """``{"sha256", "bytes"}`` of one file."""
    return {"sha256": sha256_file(path), "bytes": Path(path).stat().st_size}


def files_table(bundle_dir: Path, names: Sequence[str]) -> dict:
    return {name: file_entry(bundle_dir / name) for name in names}


def package_versions() -> dict:
    """Versions of the packages that shaped the graph (None when one is not installed)."""
    versions: dict[str, str | None] = {}
    for label, dist in (
        ("torch", "torch"),
        ("transformers", "transformers"),
        ("tokenizers", "tokenizers"),
        ("onnx", "onnx"),
        ("onnxruntime", "onnxruntime"),
        ("keyatten_lite", "keyatten-lite"),
    ):
        try:
            versions[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[label] = None
    if versions["keyatten_lite"] is None:
        from keyatten_lite import __version__

        versions["keyatten_lite"] = __version__
    return versions


def special_token_ids(hf_tokenizer) -> dict:
    """``{cls, sep, bos, eos, pad, unk}`` ids of a transformers tokenizer (None when it has none)."""
    ids: dict[str, int | None] = {}
    for key in _SPECIAL_NAMES:
        value = getattr(hf_tokenizer, f"{key}_token_id", None)
        ids[key] = int(value) if value is not None else None
    return ids


def recommended_layer_for(num_layers: int) -> int:
    """keyatten §2.5: min(L-1, max(0, floor(0.75 L))) (used for causal models)."""
    return min(num_layers - 1, max(0, int(0.75 * num_layers)))


def default_layer_for(architecture: str, num_layers: int, exported_layers: Sequence[int]) -> int:
    """The layer used when the caller names none: the rule of the format, if it was exported.

    Encoders: the last layer; causal models: the recommended layer. When a partial export left that
    layer out, the deepest exported layer stands in, so the default always resolves.
    """
    rule = num_layers - 1 if architecture == "encoder" else recommended_layer_for(num_layers)
    return rule if rule in exported_layers else max(exported_layers)


def source_record(source: str, source_info: Mapping[str, Any] | None, revision: str | None = None) -> dict:
    """The manifest's ``source``: from ``source_info`` (a prepared recipe), else from the path or hub id."""
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
            entry.name: sha256_file(entry)
            for entry in sorted(path.iterdir())
            if entry.is_file() and entry.suffix in _SOURCE_SUFFIXES
        }
        return {"model_id": path.name, "origin": f"local:{path.resolve()}", "files_sha256": files, "verification": {}}
    record = {"model_id": source, "origin": f"hub:{source}", "files_sha256": {}, "verification": {}}
    if revision is not None:
        record["revision"] = revision
    return record


def build_manifest(
    *,
    name: str,
    source: Mapping[str, Any],
    architecture: str,
    model_type: str,
    num_layers: int,
    exported_layers: Sequence[int],
    graph: Mapping[str, Any],
    special_tokens: Mapping[str, int | None],
    pad_token_id: int | None,
    padding_side: str,
    max_length: int,
    parity: Mapping[str, Any],
    files: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """A complete format-1 manifest (key order as in the docs)."""
    layers = [int(x) for x in exported_layers]
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": dict(source),
        "architecture": architecture,
        "model_type": model_type,
        "num_layers": int(num_layers),
        "exported_layers": layers,
        "default_layer": default_layer_for(architecture, num_layers, layers),
        "recommended_layer": recommended_layer_for(num_layers) if architecture == "causal" else None,
        "graph": dict(graph),
        "special_tokens": dict(special_tokens),
        "pad_token_id": pad_token_id,
        "padding_side": padding_side,
        "max_length": int(max_length),
        "add_special_tokens": True,
        "tokenizer": {"file": "tokenizer.json", "padding": None, "truncation": None},
        "parity": dict(parity),
        "versions": package_versions(),
        "files": dict(files),
    }
    if extra:
        manifest.update(extra)
    return manifest


def write_manifest(bundle_dir: Path, manifest: Mapping[str, Any]) -> Path:
    path = Path(bundle_dir) / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
