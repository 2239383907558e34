"""One recipe's build into ``<home>/bundles/<name>``, shared by attention and BIO recipes.

Idempotent: a bundle whose manifest records the same recipe hash, and which still opens with its
checksums intact, is skipped unless ``force``. Otherwise the recipe's source is prepared in a work
directory beside the bundles (same file system; its name starts with a dot, so ``list_installed``
never shows it; it is removed whatever happens) and handed to the kind's export.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from keyatten_lite.errors import BundleError
from keyatten_lite.model.bundle import FORMAT_VERSION, open_bundle, read_manifest
from keyatten_lite.model.registry import bundles_dir

from . import ExportError

__all__ = ["recipe_hash", "up_to_date", "build_recipe"]


def recipe_hash(recipe: Mapping[str, Any]) -> str:
    """sha256 of the recipe and the bundle format version: any change to either means a rebuild."""
    payload = json.dumps({"recipe": recipe, "format_version": FORMAT_VERSION}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def up_to_date(target: Path, wanted_hash: str) -> bool:
    """The bundle at ``target`` was built from a recipe with this hash and still opens."""
    try:
        manifest = read_manifest(target)
        if (manifest.get("build") or {}).get("recipe_sha256") != wanted_hash:
            return False
        open_bundle(target)  # checksums and graph I/O: a damaged bundle is rebuilt
    except BundleError:
        return False
    return True


def build_recipe(
    recipe: Mapping[str, Any],
    home: str | os.PathLike | None,
    export: Callable[[dict, Path, dict], dict],
    *,
    force: bool = False,
    say: Callable[[str], None] = lambda message: None,
    preparing: str = "the source model",
) -> dict:
    """Skip when up to date, else prepare the source and call ``export(info, target, kwargs)``.

    ``info`` is what ``sources.prepare`` returned; ``kwargs`` holds the export arguments every recipe
    shares (int8, max_length, source_info, overwrite, extra_manifest with the language and the
    recipe hash). ``export`` returns the result fields beyond name, path, status and recipe_sha256.
    """
    from . import sources

    recipe = dict(recipe)
    name = recipe["name"]
    root = bundles_dir(home)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    wanted_hash = recipe_hash(recipe)
    if not force and up_to_date(target, wanted_hash):
        say(f"{name}: up to date ({target})")
        return {"name": name, "path": str(target), "status": "skipped", "recipe_sha256": wanted_hash}
    default_variant = recipe.get("default_variant", "fp32")
    if default_variant not in ("fp32", "int8") or (default_variant == "int8" and not recipe.get("int8")):
        raise ExportError(f"recipe {name!r}: default_variant {default_variant!r} needs that variant exported (int8: true)")
    say(f"{name}: preparing {preparing}")
    with tempfile.TemporaryDirectory(prefix=f".prepare-{name}-", dir=root) as work:
        info = sources.prepare(recipe, Path(work))
        kwargs = {
            "int8": bool(recipe.get("int8", False)),
            "max_length": recipe.get("max_length"),
            "source_info": {key: value for key, value in info.items() if key != "model_dir"},
            "overwrite": True,
            "extra_manifest": {
                "language": recipe.get("language"),
                # What KeyAttenExtractor(variant=None) reads in the default profile (docs/results/variants.md).
                "default_variant": default_variant,
                "build": {"recipe": name, "recipe_sha256": wanted_hash},
            },
        }
        fields = export(info, target, kwargs)
    return {"name": name, "path": str(target), "status": "built", "recipe_sha256": wanted_hash, **fields}
