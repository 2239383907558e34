"""Command line of the exporter.

    python -m keyatten_lite_export encoder SRC -o OUT --name N [--layers 3,5|all] [--int8] [--max-length 512]
                                           [--revision REV]
        (SRC: an encoder or a decoder-only model, a local directory or a hub id; `model` is an alias)
    python -m keyatten_lite_export train-csa RECIPE -o ADAPTER_DIR [--data DIR]
        (a CSA reranker's LoRA adapter trained from its recipe, export/csa.py)
    python -m keyatten_lite_export train-qk RECIPE -o ADAPTER_DIR [--data DIR]
        (a QK-LoRA extractor's adapter trained from its recipe, export/qk_train.py)
    python -m keyatten_lite_export merge-lora BASE ADAPTER -o MERGED [--force]
        (a peft LoRA adapter merged into its base in fp32: an ordinary model directory for `encoder`)
    python -m keyatten_lite_export qk MODEL [--adapter A] -o OUT [--layer auto|N] [--name N] [--max-length N]
        (QKLoRAExtractor: one layer's queries and keys, a peft adapter merged in fp32 and checked unmerged)
    python -m keyatten_lite_export build [--home H] [--force] [--name N]
    python -m keyatten_lite_export list
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from keyatten_lite.errors import KeyAttenLiteError

from . import ExportError


def _parse_layers(text: str):
    if text.strip().lower() == "all":
        return "all"
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers takes 'all' or comma-separated ints, got {text!r}") from None


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cmd_encoder(args) -> int:
    from .encoder import export_bundle

    manifest = export_bundle(
        args.source,
        args.output,
        name=args.name,
        layers=args.layers,
        int8=args.int8,
        max_length=args.max_length,
        overwrite=args.force,
        revision=args.revision,
    )
    parity = manifest["parity"]
    summary = {
        "name": manifest["name"],
        "path": args.output,
        "architecture": manifest["architecture"],
        "num_layers": manifest["num_layers"],
        "exported_layers": manifest["exported_layers"],
        "default_layer": manifest["default_layer"],
        "padding_side": manifest["padding_side"],
        "max_length": manifest["max_length"],
        "files_bytes": {file_name: entry["bytes"] for file_name, entry in manifest["files"].items()},
        "export_seconds": manifest["export_seconds"],
        "fp32_max_abs_diff": parity["fp32"]["max_abs_diff"],
        "int8": parity.get("int8"),
    }
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def _cmd_merge_lora(args) -> int:
    from .lora import merge_lora

    out = merge_lora(args.base, args.adapter, args.output, overwrite=args.force)
    print(json.dumps({"merged": str(out), "base": args.base, "adapter": args.adapter}, ensure_ascii=False))
    return 0


def _cmd_train_csa(args) -> int:
    from . import sources
    from .csa import csa_recipe_source, train_csa_adapter, training_documents

    recipe = csa_recipe_source(sources.load_recipe(args.recipe))
    docs = training_documents(recipe, args.data)
    if docs is None:
        raise ExportError(f"{args.recipe}: training data not found (pass --data DIR or set KEYATTEN_LITE_DATA)")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="csa-backbone-") as work:
        info = sources.prepare(recipe, Path(work))
        log = train_csa_adapter(recipe, info["model_dir"], args.output, docs=docs, home=args.home, say=_log)
    print(json.dumps({"adapter": args.output, **log}, ensure_ascii=False))
    return 0


def _cmd_train_qk(args) -> int:
    from . import sources
    from .csa import training_documents
    from .qk_train import qk_recipe_source, train_qk_adapter

    recipe = qk_recipe_source(sources.load_recipe(args.recipe))
    docs = training_documents(recipe, args.data)
    if docs is None:
        raise ExportError(f"{args.recipe}: training data not found (pass --data DIR or set KEYATTEN_LITE_DATA)")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="qk-backbone-") as work:
        info = sources.prepare(recipe, Path(work))
        log = train_qk_adapter(recipe, info["model_dir"], args.output, docs=docs, say=_log)
    print(json.dumps({"adapter": args.output, **log}, ensure_ascii=False))
    return 0


def _cmd_qk(args) -> int:
    from .qk import export_qk_bundle

    manifest = export_qk_bundle(
        args.source, args.output, adapter=args.adapter, name=args.name, layer=args.layer,
        max_length=args.max_length, overwrite=args.force, revision=args.revision, tolerance=args.tolerance,
    )
    fp32 = manifest["parity"]["fp32"]
    summary = {
        "name": manifest["name"], "path": args.output, "architecture": manifest["architecture"], "kind": manifest["kind"],
        "qk": manifest["qk"], "padding_side": manifest["padding_side"], "max_length": manifest["max_length"],
        "fp32_max_abs_diff": fp32["max_abs_diff"], "reference": fp32.get("reference"),
        "export_seconds": manifest["export_seconds"],
    }
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def _cmd_build(args) -> int:
    from .build import build_default_bundles

    results = build_default_bundles(home=args.home, force=args.force, names=args.name or None, log=_log)
    for result in results:
        print(json.dumps({k: result[k] for k in ("name", "status", "path")}, ensure_ascii=False))
    return 0


def _cmd_list(args) -> int:
    from keyatten_lite.model.registry import bundles_dir, list_installed

    from . import sources

    installed = {entry["name"]: entry for entry in list_installed(args.home)}
    print(f"recipes (bundles in {bundles_dir(args.home)}):")
    for recipe in sources.list_recipes():
        name = recipe["name"]
        state = "built" if name in installed and installed[name]["error"] is None else "not built"
        default = "default" if recipe.get("default", True) else "optional"
        print(f"  {name:<18} {recipe.get('language', '?'):<3} {default:<8} {state:<9} {recipe.get('source', {}).get('model_id', '')}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keyatten-lite-export", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    enc = sub.add_parser(
        "encoder",
        aliases=["model"],
        help="export a Hugging Face model (encoder or decoder-only; directory or hub id) to a bundle",
    )
    enc.add_argument("source", metavar="SRC", help="local model directory or hub id")
    enc.add_argument("-o", "--output", required=True, help="bundle directory to create")
    enc.add_argument("--name", required=True, help="bundle name recorded in bundle.json")
    enc.add_argument(
        "--layers",
        type=_parse_layers,
        default=None,
        help="'all', or e.g. 3,5 or -1 (default: all layers for encoders; for decoder-only models "
        "keyatten's recommended layer min(L-1, floor(0.75 L)), and the graph is cut after it)",
    )
    enc.add_argument("--int8", action="store_true", help="also write model.int8.onnx (dynamic QInt8)")
    enc.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="token positions incl. specials (default: the model's; decoder-only models: at most 8192)",
    )
    enc.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) of SRC")
    enc.add_argument("--force", action="store_true", help="replace an existing bundle at OUT")
    enc.set_defaults(func=_cmd_encoder)

    merge = sub.add_parser("merge-lora", help="merge a peft LoRA adapter into its base model (fp32)")
    merge.add_argument("base", help="base model directory")
    merge.add_argument("adapter", help="peft adapter directory (adapter_config.json + weights)")
    merge.add_argument("-o", "--output", required=True, help="directory for the merged model")
    merge.add_argument("--force", action="store_true", help="write into a non-empty OUTPUT")
    merge.set_defaults(func=_cmd_merge_lora)

    train_csa = sub.add_parser(
        "train-csa", help="train a CSA reranker recipe's LoRA adapter (models/csa-*.json) from the data folder"
    )
    train_csa.add_argument("recipe", help="recipe name, e.g. csa-e5-small-zh")
    train_csa.add_argument("-o", "--output", required=True, help="adapter directory (peft files + train_log.json)")
    train_csa.add_argument("--data", default=None, help="data folder (default: $KEYATTEN_LITE_DATA or ../shared/data)")
    train_csa.add_argument("--home", default=None, help="keyatten-lite home with the default and BIO bundles")
    train_csa.set_defaults(func=_cmd_train_csa)

    train_qk = sub.add_parser(
        "train-qk", help="train a QK-LoRA recipe's adapter (models/qk-*.json) from the data folder"
    )
    train_qk.add_argument("recipe", help="recipe name, e.g. qk-e5-small-zh")
    train_qk.add_argument("-o", "--output", required=True, help="adapter directory (peft files + train_log.json)")
    train_qk.add_argument("--data", default=None, help="data folder (default: $KEYATTEN_LITE_DATA or ../shared/data)")
    train_qk.set_defaults(func=_cmd_train_qk)

    qk = sub.add_parser("qk", help="export one layer's queries and keys (QKLoRAExtractor), optionally with a LoRA adapter")
    qk.add_argument("source", metavar="MODEL", help="local model directory or hub id (the base when --adapter is given)")
    qk.add_argument("--adapter", default=None, help="peft LoRA adapter directory: merged in fp32, parity-checked unmerged")
    qk.add_argument("-o", "--output", required=True, help="bundle directory to create")
    qk.add_argument("--name", default=None, help="bundle name recorded in bundle.json (default: OUT's name)")
    qk.add_argument("--layer", default="auto", help="'auto' (keyatten's min(L-1, floor(0.75 L))) or a layer index")
    qk.add_argument("--max-length", type=int, default=None, help="token positions incl. specials")
    qk.add_argument("--tolerance", type=float, default=1e-4, help="max abs q/k difference allowed (default 1e-4)")
    qk.add_argument("--revision", default=None, help="hub revision of MODEL (not with --adapter)")
    qk.add_argument("--force", action="store_true", help="replace an existing bundle at OUT")
    qk.set_defaults(func=_cmd_qk)

    build = sub.add_parser("build", help="build the default bundles from their recipes")
    build.add_argument("--home", default=None, help="keyatten-lite home (default: $KEYATTEN_LITE_HOME or ~/.cache/keyatten-lite)")
    build.add_argument("--force", action="store_true", help="rebuild even when up to date")
    build.add_argument("--name", action="append", help="only this recipe (repeatable)")
    build.set_defaults(func=_cmd_build)

    lst = sub.add_parser("list", help="list the recipes and whether each bundle is built")
    lst.add_argument("--home", default=None)
    lst.set_defaults(func=_cmd_list)

    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ExportError, KeyAttenLiteError) as exc:
        print(f"keyatten-lite-export: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
