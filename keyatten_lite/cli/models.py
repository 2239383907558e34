"""`keyatten-lite models build|list|pack|install`: make the default bundles, show what is installed,
move bundles to machines without torch.

Building needs the export extras (torch, transformers, onnx); the runtime never imports them itself:
`models build` hands over to the separate keyatten_lite_export package.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys

from keyatten_lite.errors import InvalidArgumentError, KeyAttenLiteError
from keyatten_lite.model.archive import DEFAULT_MAX_BYTES as PACK_MAX_BYTES

__all__ = ["register", "EXPORT_INSTALL_HINT"]

EXPORT_INSTALL_HINT = (
    "building bundles needs the export extras, which are not installed: run "
    "`pip install torch==2.13.0` first (the CPU wheel), then `pip install -e .[export]` "
    "(or `pip install keyatten-lite[export]`)"
)
_EXPORT_MODULES = ("torch", "transformers", "onnx", "keyatten_lite_export")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `models` command (with `build` and `list`) to a top-level subparsers object."""
    models = subparsers.add_parser("models", help="build or list model bundles")
    models.set_defaults(func=lambda args: _print_help(models))
    actions = models.add_subparsers(dest="models_command", metavar="ACTION")

    build = actions.add_parser(
        "build", help="export the default bundles and train the BIO taggers (needs torch; run once)"
    )
    build.add_argument("--force", action="store_true", help="rebuild bundles that are already up to date")
    build.add_argument("--name", action="append", help="only this bundle (repeatable; default: all defaults)")
    build.set_defaults(func=_cmd_build)

    listing = actions.add_parser("list", help="show installed bundles")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=_cmd_list)
    _register_pack(actions)
    _register_verify(actions)
    return models


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _missing_export_modules() -> list[str]:
    missing = []
    for module in _EXPORT_MODULES:
        try:
            if importlib.util.find_spec(module) is None:
                missing.append(module)
        except (ImportError, ValueError):
            missing.append(module)
    return missing


def _cmd_build(args) -> int:
    missing = _missing_export_modules()
    if missing:
        raise KeyAttenLiteError(f"{EXPORT_INSTALL_HINT} (missing: {', '.join(missing)})")
    from keyatten_lite_export import ExportError
    from keyatten_lite_export.build import build_default_bundles

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        results = build_default_bundles(force=args.force, names=args.name or None, log=log)
    except ExportError as exc:
        raise KeyAttenLiteError(str(exc)) from exc
    for result in results:
        print(f"{result['name']}: {result['status']} ({result['path']})")
    return 0


def _format_size(n_bytes: int) -> str:
    size = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _parity_text(parity) -> str:
    if not isinstance(parity, dict):
        return "-"
    parts = []
    fp32 = parity.get("fp32") or {}
    if isinstance(fp32.get("max_abs_diff"), (int, float)):
        parts.append(f"fp32 {fp32['max_abs_diff']:.1e}")
    int8 = parity.get("int8") or {}
    if isinstance(int8.get("top10_overlap"), (int, float)):
        parts.append(f"int8 top10 {int8['top10_overlap']:.2f}")
    return ", ".join(parts) or "-"


def _layers_text(entry: dict) -> str:
    layers = entry.get("layers") or []
    if entry.get("num_layers") and layers == list(range(entry["num_layers"])):
        return f"all {entry['num_layers']}"
    return ",".join(str(x) for x in layers) or "-"


def _cmd_list(args) -> int:
    import json

    from keyatten_lite.model.registry import DEFAULT_BIO_BUNDLES, DEFAULT_BUNDLES, bundles_dir, list_installed

    entries = list_installed()
    if args.json:
        print(json.dumps(entries, ensure_ascii=False, indent=2))
        return 0
    print(f"bundles in {bundles_dir()}:")
    if not entries:
        print("  (none)")
    header = f"  {'name':<18} {'format':<6} {'size':>9}  {'variants':<10} {'layers':<10} parity"
    if entries:
        print(header)
    for entry in entries:
        if entry["error"]:
            print(f"  {entry['name']:<18} damaged: {entry['error']}")
            continue
        print(
            f"  {entry['name']:<18} {str(entry['format_version']):<6} {_format_size(entry['size_bytes']):>9}  "
            f"{'+'.join(entry['variants']) or '-':<10} {_layers_text(entry):<10} {_parity_text(entry['parity'])}"
        )
    installed = {entry["name"] for entry in entries}
    missing = [name for name in DEFAULT_BUNDLES if name not in installed]
    if missing:
        print(f"not built: {', '.join(missing)} (run `keyatten-lite models build`)")
    missing_bio = [name for name in DEFAULT_BIO_BUNDLES if name not in installed]
    if missing_bio:
        print(
            f"BIO taggers not built: {', '.join(missing_bio)} (`keyatten-lite models build` trains them "
            "when the evaluation data is present; docs/bio.md)"
        )
    return 0


# ---------------------------------------------------------------------- pack / install (model/pack.py, model/install.py)
def _register_pack(subparsers) -> None:
    """Add ``pack`` and ``install`` to the subparsers object of ``keyatten-lite models``."""
    pack = subparsers.add_parser(
        "pack", help="write a bundle (or a language's default bundles) into one tar file to install elsewhere"
    )
    pack.add_argument("name", nargs="?", help="bundle name (in <home>/bundles) or bundle directory")
    pack.add_argument("-o", "--output", required=True, help="archive to write: .tar.gz/.tgz gzip, .tar plain")
    pack.add_argument(
        "--variant",
        action="append",
        choices=["default", "fp32", "int8"],
        help="graph variant to pack (repeatable; default: the bundle's default variant, bundle.json "
        "default_variant). --variant fp32 --variant int8 packs both; a bundle installed with one variant "
        "runs that variant only",
    )
    pack.add_argument("--language", choices=["en", "zh"], help="pack this language's default bundle instead of NAME")
    pack.add_argument("--include-bio", action="store_true", help="with --language: add the language's BIO bundle")
    pack.add_argument("--json", action="store_true", help="print the summary as JSON")
    pack.set_defaults(func=_cmd_pack)

    install = subparsers.add_parser("install", help="install bundles from an archive made by `models pack`")
    install.add_argument("file", help="archive (.tar or .tar.gz; detected from its bytes)")
    install.add_argument("--force", action="store_true", help="replace an installed bundle that differs")
    install.add_argument(
        "--max-bytes", type=int, default=PACK_MAX_BYTES, help="refuse archives that decompress to more (default 8 GiB)"
    )
    install.set_defaults(func=_cmd_install)


def _cmd_pack(args) -> int:
    from keyatten_lite.model.pack import pack_bundle, pack_language

    variants = tuple(args.variant or ("default",))
    if args.language:
        if args.name:
            raise InvalidArgumentError("give either NAME or --language, not both")
        summary = pack_language(args.language, args.output, variants=variants, include_bio=args.include_bio)
    else:
        if not args.name:
            raise InvalidArgumentError("give a bundle NAME (or directory) or --language en|zh")
        if args.include_bio:
            raise InvalidArgumentError("--include-bio goes with --language")
        summary = pack_bundle(args.name, args.output, variants=variants)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
        return 0
    for bundle in summary["bundles"]:
        size = sum(e["bytes"] for e in bundle["files"].values())
        left = f", without {', '.join(bundle['omitted'])}" if bundle["omitted"] else ""
        graphs = "+".join(bundle["variants"]) or "no graph of its own (runs its backbone's)"
        print(f"{bundle['name']}: {graphs}, {len(bundle['files'])} files, {size} bytes{left}")
    print(f"{summary['archive']}: {summary['bytes']} bytes ({summary['compress'] or 'plain tar'}), sha256 {summary['sha256']}")
    return 0


def _cmd_install(args) -> int:
    from keyatten_lite.model.install import install_pack

    for path in install_pack(args.file, force=args.force, max_bytes=args.max_bytes):
        print(f"{path.name}: installed ({path})")
    return 0


# ---------------------------------------------------------------------- verify (model/bundle.py, model/verified.py)
def _register_verify(subparsers) -> None:
    """Add ``verify`` to the subparsers object of ``keyatten-lite models``."""
    verify = subparsers.add_parser(
        "verify",
        help="hash every file of installed bundles against bundle.json now and refresh their verified records",
    )
    verify.add_argument("names", nargs="*", metavar="NAME", help="bundle names or directories (default: every installed bundle)")
    verify.add_argument("--json", action="store_true", help="print the results as JSON")
    verify.set_defaults(func=_cmd_verify)


def _cmd_verify(args) -> int:
    from keyatten_lite.errors import BundleError
    from keyatten_lite.model.bundle import verify_bundle
    from keyatten_lite.model.registry import bundles_dir, list_installed

    names = list(args.names) or [entry["path"] for entry in list_installed()]
    if not names:
        print(f"no bundles installed in {bundles_dir()}", file=sys.stderr)
        return 1
    results, failed = [], 0
    for name in names:
        try:
            result = verify_bundle(name)
        except BundleError as exc:
            failed += 1
            results.append({"bundle": name, "ok": False, "error": str(exc)})
            if not args.json:
                print(f"{name}: FAILED: {exc}", file=sys.stderr)
            continue
        results.append({"bundle": name, "ok": True, **result})
        if not args.json:
            recorded = f"record {result['record']}" if result["record"] else "record not written (home not writable)"
            print(
                f"{result['name']}: ok, {result['files']} files, {result['bytes'] / 1e6:.1f} MB hashed in "
                f"{result['seconds']:.2f} s; {recorded}"
            )
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
    if failed:
        print(f"{failed} of {len(names)} bundles do not match their bundle.json", file=sys.stderr)
        return 1
    return 0
