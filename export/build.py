"""Build the default bundles from their recipes (models/*.json) into ``<home>/bundles/<name>``.

Idempotent: a bundle whose manifest records the same recipe hash, and which still opens with its
checksums intact, is skipped unless ``force``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from keyatten_lite.model.bundle import FORMAT_VERSION, open_bundle, read_manifest
from keyatten_lite.errors import BundleError
from keyatten_lite.model.registry import bundles_dir

from . import ExportError

__all__ = ["recipe_hash", "recipe_layers", "selected_recipes", "build_default_bundles"]


def recipe_hash(recipe: dict) -> str:
    """sha256 of the recipe and the bundle format version: any change to either means a rebuild."""
    payload = json.dumps({"recipe": recipe, "format_version": FORMAT_VERSION}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def recipe_layers(recipe: dict) -> list[int] | None:
    layers = recipe.get("layers", "all")
    if layers == "all" or layers is None:
        return None
    if isinstance(layers, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
        return layers
    raise ExportError(f"recipe {recipe.get('name')!r}: layers must be 'all' or a list of ints, got {layers!r}")


def selected_recipes(names: Sequence[str] | None = None) -> list[dict]:
    """The recipes called ``names``, or every recipe marked default."""
    from . import sources

    if names:
        return [sources.load_recipe(name) for name in names]
    return [recipe for recipe in sources.list_recipes() if recipe.get("default", True)]


def _up_to_date(target: Path, wanted_hash: str) -> bool:
    try:
        manifest = read_manifest(target)
        if (manifest.get("build") or {}).get("recipe_sha256") != wanted_hash:
            return False
        open_bundle(target)  # checksums and graph I/O: a damaged bundle is rebuilt
    except BundleError:
        return False
    return True


def build_default_bundles(
    home: str | os.PathLike | None = None,
    force: bool = False,
    names: Sequence[str] | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Prepare and export each recipe; returns one ``{name, path, status, ...}`` dict per recipe."""
    from . import sources
    from .encoder import export_bundle

    say = log or (lambda message: None)
    root = bundles_dir(home)
    root.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    # Attention bundles first (minutes), then the BIO taggers (trained; they need the data folder).
    for recipe in sorted(selected_recipes(names), key=lambda r: r.get("kind") == "bio"):
        if recipe.get("kind") == "bio":
            # BIO taggers are trained, not just exported (export/bio.py; docs/bio.md gives the times).
            from .bio import build_bio_bundle, data_dir

            try:
                data_dir()
            except ExportError as exc:
                if names:  # asked for by name: say why it cannot be built
                    raise
                say(f"{recipe['name']}: skipped, no training data ({exc})")
                results.append(
                    {"name": recipe["name"], "path": str(root / recipe["name"]), "status": "skipped (no training data)"}
                )
                continue
            results.append(build_bio_bundle(recipe, home, force=force, log=say))
            continue
        name = recipe["name"]
        target = root / name
        wanted_hash = recipe_hash(recipe)
        if not force and _up_to_date(target, wanted_hash):
            say(f"{name}: up to date ({target})")
            results.append({"name": name, "path": str(target), "status": "skipped", "recipe_sha256": wanted_hash})
            continue
        say(f"{name}: preparing the source model")
        # The work directory sits beside the bundles (same file system) and starts with a dot, so
        # list_installed never shows it; it is removed whatever happens.
        with tempfile.TemporaryDirectory(prefix=f".prepare-{name}-", dir=root) as work:
            info = sources.prepare(recipe, Path(work))
            say(f"{name}: exporting {info['model_id']}")
            manifest = export_bundle(
                info["model_dir"],
                target,
                name=name,
                layers=recipe_layers(recipe),
                int8=bool(recipe.get("int8", False)),
                max_length=recipe.get("max_length"),
                source_info={key: value for key, value in info.items() if key != "model_dir"},
                overwrite=True,
                extra_manifest={
                    "language": recipe.get("language"),
                    "build": {"recipe": name, "recipe_sha256": wanted_hash},
                },
            )
        fp32 = manifest["parity"]["fp32"]["max_abs_diff"]
        say(f"{name}: built in {manifest['export_seconds']:.1f} s, fp32 parity {fp32:.2e} ({target})")
        results.append(
            {
                "name": name,
                "path": str(target),
                "status": "built",
                "recipe_sha256": wanted_hash,
                "export_seconds": manifest["export_seconds"],
                "parity": manifest["parity"],
            }
        )
    return results
