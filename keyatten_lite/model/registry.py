"""Where model bundles live on disk, and which bundle is the default for a language.

The home directory is ``$KEYATTEN_LITE_HOME`` when set, else ``~/.cache/keyatten-lite``; bundles are the
sub-directories of ``<home>/bundles``. Nothing here opens a graph or hashes a file, so listing is cheap.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyatten_lite.errors import InvalidArgumentError

__all__ = [
    "HOME_ENV",
    "DEFAULT_BUNDLES",
    "DEFAULT_BIO_BUNDLES",
    "DEFAULT_CSA_BUNDLES",
    "default_csa_bundle_for",
    "DEFAULT_QK_BUNDLES",
    "default_qk_bundle_for",
    "OPTIONAL_BUNDLES",
    "home_dir",
    "bundles_dir",
    "default_bundle_for",
    "list_installed",
]

HOME_ENV = "KEYATTEN_LITE_HOME"
MANIFEST_NAME = "bundle.json"

# The bundles `keyatten-lite models build` makes (recipes in models/<name>.json of the export package).
DEFAULT_BUNDLES: dict[str, dict] = {
    "minilm-l6-en": {
        "language": "en",
        "model_id": "sentence-transformers/all-MiniLM-L6-v2",
        "description": "all-MiniLM-L6-v2, 6-layer uncased English BERT encoder",
    },
    "e5-small-zh": {
        "language": "zh",
        "model_id": "intfloat/multilingual-e5-small",
        "description": "multilingual-e5-small with the vocabulary trimmed to the pieces Chinese and English use "
        "(62,032 of 250,002; the same numbers as the full model on such text)",
    },
}

# Bundles built only on request (`keyatten-lite models build NAME`).
OPTIONAL_BUNDLES: dict[str, dict] = {
    "e5-small-multi": {
        "language": "zh",
        "model_id": "intfloat/multilingual-e5-small",
        "description": "multilingual-e5-small with its full 250k-piece vocabulary, for languages other than zh/en",
    },
}


# BIO taggers `keyatten-lite models build` trains when the evaluation data is present (docs/bio.md):
# candidate_scoring="bio" with bio_model_path=<name>. Each shares the backbone of an attention bundle.
DEFAULT_BIO_BUNDLES: dict[str, dict] = {
    "bio-minilm-en": {"language": "en", "backbone": "minilm-l6-en", "description": "BIO tagger on all-MiniLM-L6-v2"},
    "bio-e5-small-zh": {"language": "zh", "backbone": "e5-small-zh", "description": "BIO tagger on multilingual-e5-small"},
}


# CSA rerankers (a LoRA-tuned encoder merged and cut at its read layer; export/csa.py) that
# `keyatten-lite models build` builds from the shipped adapter (retrained when the data is present).
DEFAULT_CSA_BUNDLES: dict[str, dict] = {
    "csa-e5-small-zh": {"language": "zh", "backbone": "e5-small-zh", "description": "CSA reranker on multilingual-e5-small"},
    "csa-minilm-en": {"language": "en", "backbone": "minilm-l6-en", "description": "CSA reranker on all-MiniLM-L6-v2"},
}


def default_csa_bundle_for(language: str, home: str | os.PathLike | None = None) -> str | None:
    """The trained CSA bundle of ``language`` when it is built, else None (the reranker runs zero-shot)."""
    return _built_bundle_of(DEFAULT_CSA_BUNDLES, language, home)


def _built_bundle_of(registry: dict[str, dict], language: str, home: str | os.PathLike | None) -> str | None:
    """The first bundle of ``registry`` for ``language`` (region suffix ignored) that is built in ``home``."""
    primary = str(language).strip().lower().replace("_", "-").split("-")[0]
    for name, info in registry.items():
        if info["language"] == primary and (bundles_dir(home) / name / MANIFEST_NAME).is_file():
            return name
    return None


# QK-LoRA extractors (an encoder with a LoRA adapter on its read layer's query/key projections, merged;
# export/qk_train.py) that `keyatten-lite models build` builds from the shipped adapter (retrained when the
# data is present): QKLoRAExtractor(language=...) with no model.
DEFAULT_QK_BUNDLES: dict[str, dict] = {
    "qk-e5-small-zh": {"language": "zh", "backbone": "e5-small-zh", "description": "QK-LoRA extractor on multilingual-e5-small"},
    "qk-minilm-en": {"language": "en", "backbone": "minilm-l6-en", "description": "QK-LoRA extractor on all-MiniLM-L6-v2"},
}


def default_qk_bundle_for(language: str, home: str | os.PathLike | None = None) -> str | None:
    """The trained QK bundle of ``language`` when it is built, else None."""
    return _built_bundle_of(DEFAULT_QK_BUNDLES, language, home)


def home_dir() -> Path:
    """``$KEYATTEN_LITE_HOME`` if set and non-empty, else ``~/.cache/keyatten-lite``."""
    override = os.environ.get(HOME_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "keyatten-lite"


def bundles_dir(home: str | os.PathLike | None = None) -> Path:
    """``<home>/bundles``; ``home`` defaults to :func:`home_dir`."""
    base = Path(home).expanduser() if home is not None else home_dir()
    return base / "bundles"


def default_bundle_for(language: str) -> str:
    """Name of the default bundle for ``language`` ("en" or "zh", region suffixes allowed)."""
    if not isinstance(language, str) or not language.strip():
        raise InvalidArgumentError(f"language must be a non-empty string such as 'en' or 'zh', got {language!r}")
    primary = language.strip().lower().replace("_", "-").split("-")[0]
    for name, info in DEFAULT_BUNDLES.items():
        if info["language"] == primary:
            return name
    languages = sorted({info["language"] for info in DEFAULT_BUNDLES.values()})
    raise InvalidArgumentError(
        f"no default bundle for language {language!r} (defaults exist for {', '.join(languages)}); "
        "pass model= a bundle directory"
    )


def _dir_size(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def list_installed(home: str | os.PathLike | None = None) -> list[dict]:
    """Every bundle directory under :func:`bundles_dir`, sorted by name.

    Each entry: name, path, format_version, size_bytes, parity, variants, layers, and ``error`` (None,
    or why the manifest could not be read). Checksums are not verified here: ``open_bundle`` does that.
    """
    root = bundles_dir(home)
    if not root.is_dir():
        return []
    entries: list[dict] = []
    for path in sorted(root.iterdir()):
        # Dot-directories are half-built exports (encoder.export_bundle builds beside the target).
        if not path.is_dir() or path.name.startswith("."):
            continue
        manifest_path = path / MANIFEST_NAME
        entry: dict = {
            "name": path.name,
            "path": str(path),
            "format_version": None,
            "size_bytes": _dir_size(path),
            "parity": None,
            "variants": [],
            "layers": [],
            "num_layers": None,
            "error": None,
        }
        if not manifest_path.is_file():
            entry["error"] = f"no {MANIFEST_NAME}"
            entries.append(entry)
            continue
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if not isinstance(manifest, dict):
                raise ValueError("manifest is not a JSON object")
        except (OSError, ValueError) as exc:
            entry["error"] = f"unreadable {MANIFEST_NAME}: {exc}"
            entries.append(entry)
            continue
        files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
        # "name" stays the directory name: that is what open_bundle(name) resolves.
        entry.update(
            format_version=manifest.get("format_version"),
            parity=manifest.get("parity"),
            variants=[v for v, f in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")) if f in files],
            layers=list(manifest.get("exported_layers") or []),
            num_layers=manifest.get("num_layers"),
        )
        entries.append(entry)
    return entries
