"""Build the default bundles from their recipes (models/*.json) into ``<home>/bundles/<name>``.

Idempotent: a bundle whose manifest records the same recipe hash, and which still opens with its
checksums intact, is skipped unless ``force`` (:mod:`.recipe_build`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from keyatten_lite.model.registry import bundles_dir

from . import ExportError
from .bio import build_bio_bundle, shipped_head_path, training_data_path
from .bio_data import data_dir
from .encoder import export_bundle
from .recipe_build import build_recipe, recipe_hash

__all__ = ["recipe_hash", "recipe_layers", "selected_recipes", "build_default_bundles"]


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


def build_attention_bundle(
    recipe: dict,
    home: str | os.PathLike | None = None,
    *,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Prepare and export one attention recipe; one ``{name, path, status, ...}`` dict."""
    say = log or (lambda message: None)
    name = recipe["name"]

    def export(info: dict, target: Path, kwargs: dict) -> dict:
        say(f"{name}: exporting {info['model_id']}")
        manifest = export_bundle(
            info["model_dir"], target, name=name, layers=recipe_layers(recipe),
            hidden_output=bool(recipe.get("hidden_output", False)), **kwargs
        )
        fp32 = manifest["parity"]["fp32"]["max_abs_diff"]
        say(f"{name}: built in {manifest['export_seconds']:.1f} s, fp32 parity {fp32:.2e} ({target})")
        return {"export_seconds": manifest["export_seconds"], "parity": manifest["parity"]}

    return build_recipe(recipe, home, export, force=force, say=say)


def build_default_bundles(
    home: str | os.PathLike | None = None,
    force: bool = False,
    names: Sequence[str] | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Prepare and export each recipe; returns one ``{name, path, status, ...}`` dict per recipe."""
    say = log or (lambda message: None)
    root = bundles_dir(home)
    root.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    # Attention bundles first (minutes), then the BIO taggers (trained with the data, else shipped heads),
    # then the CSA rerankers, whose training reads candidates from both, and the QK-LoRA extractors.
    stage = {"bio": 1, "csa": 2, "qk": 3}
    for recipe in sorted(selected_recipes(names), key=lambda r: stage.get(r.get("kind"), 0)):
        if recipe.get("kind") == "csa":
            from .csa import build_csa_bundle

            results.append(build_csa_bundle(recipe, home, force=force, log=say))
            continue
        if recipe.get("kind") == "qk":
            from .qk_train import build_qk_bundle

            results.append(build_qk_bundle(recipe, home, force=force, log=say))
            continue
        if recipe.get("kind") != "bio":
            results.append(build_attention_bundle(recipe, home, force=force, log=say))
            continue
        # BIO taggers are trained when the data is present, else built from the shipped head
        # (models/heads/<name>.json; export/bio.py, docs/bio.md gives the times).
        try:
            root = data_dir()
            if training_data_path(recipe) is None:
                raise ExportError(f"{root / recipe['training']['dataset']} not found; set KEYATTEN_LITE_DATA to the data folder")
        except ExportError as exc:
            if shipped_head_path(recipe["name"]).is_file():
                results.append(build_bio_bundle(recipe, home, force=force, log=say))
                continue
            if names:  # asked for by name: say why it cannot be built
                raise
            say(f"{recipe['name']}: skipped, no training data ({exc})")
            results.append(
                {"name": recipe["name"], "path": str(root / recipe["name"]), "status": "skipped (no training data)"}
            )
            continue
        results.append(build_bio_bundle(recipe, home, force=force, log=say))
    return results
