"""``keyatten-lite models pack``: a built bundle (or a language's default bundles) into one
deterministic tar file (format: ``model/archive.py``)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Iterable

from keyatten_lite.errors import BundleNotFoundError, InvalidArgumentError
from keyatten_lite.model.archive import (
    HashingReader,
    HashingWriter,
    PACK_FORMAT,
    PACK_FORMAT_VERSION,
    PACK_NAME,
    PackChecksumError,
    PackError,
    VARIANTS,
    file_mode,
    fsync_dir,
    is_file_name,
    is_name,
    json_bytes,
)
from keyatten_lite.model.bundle import (
    MANIFEST_NAME,
    VARIANT_FILES,
    read_manifest,
    resolve_bundle_path,
    sha256_file,
    validate_manifest,
)
from keyatten_lite.model.registry import DEFAULT_BIO_BUNDLES, bundles_dir, default_bundle_for


def _resolve_source(name_or_dir: str | os.PathLike, home: str | os.PathLike | None) -> Path:
    if not isinstance(name_or_dir, (str, os.PathLike)) or not os.fspath(name_or_dir):
        raise InvalidArgumentError(f"name_or_dir must be a bundle name or directory, got {name_or_dir!r}")
    text = os.fspath(name_or_dir)
    if home is not None and not Path(text).expanduser().is_dir() and "/" not in text and "\\" not in text:
        path = bundles_dir(home) / text
        if not path.is_dir():
            raise BundleNotFoundError(f"no bundle named {text!r} in {path.parent}")
        return path
    return resolve_bundle_path(text)


def _normalise_variants(variants: Iterable[str] | str, default: str) -> list[str]:
    if isinstance(variants, str):
        variants = (variants,)
    try:
        requested = list(variants)
    except TypeError:
        raise InvalidArgumentError(f"variants must be a sequence of 'default', 'fp32', 'int8', got {variants!r}") from None
    if not requested:
        raise InvalidArgumentError("variants must name at least one variant ('default', 'fp32' or 'int8')")
    chosen: set[str] = set()
    for variant in requested:
        if variant == "default":
            chosen.add(default)
        elif variant in VARIANTS:
            chosen.add(variant)
        else:
            raise InvalidArgumentError(f"unknown variant {variant!r}: use 'default', 'fp32' or 'int8'")
    return [v for v in VARIANTS if v in chosen]


def _variant_files(manifest: dict, variant: str) -> set[str]:
    """The files variant ``variant`` needs: its graph and that graph's external data."""
    files = manifest["files"]
    graph = VARIANT_FILES[variant]
    needed = {name for name in files if name == graph or name.startswith(graph + ".")}
    external = (manifest.get("graph") or {}).get("external_data") if variant == "fp32" else None
    if isinstance(external, str) and external in files:
        needed.add(external)
    return needed


def _plan_bundle(source: Path, variants: Iterable[str] | str, *, skip_missing: bool) -> dict:
    """What to pack from one bundle directory (hashes every file it will pack, refuses damage)."""
    name = source.name
    if not is_name(name):
        raise PackError(
            f"bundle directory name {name!r} is not a simple name (letters, digits, '-', '_', '.'); "
            "rename the directory: the name is where `models install` puts it"
        )
    manifest = read_manifest(source)
    where = f"bundle {name!r} ({source})"
    validate_manifest(manifest, where)
    files: dict = manifest["files"]
    for rel_name in files:
        if not is_file_name(rel_name) or rel_name in (PACK_NAME, MANIFEST_NAME):
            raise PackError(f"{where}: bundle.json lists file {rel_name!r}, which cannot be packed")
    default = manifest.get("default_variant", "fp32")
    if default not in VARIANTS:
        default = "fp32"
    chosen = _normalise_variants(variants, default)
    present = [v for v in chosen if VARIANT_FILES[v] in files]
    missing = [v for v in chosen if v not in present]
    if "backbone" in manifest:  # no graph of its own: its backbone is packed (or installed) beside it
        missing = []
    if missing and not skip_missing:
        raise PackError(
            f"{where} has no {', '.join(missing)} variant ({', '.join(VARIANT_FILES[v] for v in missing)} "
            "is not in bundle.json); pack variants it has"
        )
    graph_files = {f for v in VARIANTS for f in _variant_files(manifest, v)}
    keep = {f for v in present for f in _variant_files(manifest, v)}
    omitted = {f: files[f] for f in sorted(graph_files - keep)}
    packed = {f: files[f] for f in sorted(files) if f not in omitted}
    for rel_name, entry in packed.items():
        path = source / rel_name
        if not path.is_file():
            raise PackError(f"{where}: {rel_name} listed in bundle.json is missing; rebuild the bundle")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise PackChecksumError(
                f"{where}: {rel_name} does not match the sha256 recorded in bundle.json; refusing to pack "
                "a damaged bundle (rebuild it with `keyatten-lite models build --force`)"
            )
    manifest_bytes = (source / MANIFEST_NAME).read_bytes()
    original_sha = hashlib.sha256(manifest_bytes).hexdigest()
    if omitted:
        trimmed = dict(manifest)
        trimmed["files"] = packed
        trimmed["packed_without"] = sorted(omitted)
        manifest_bytes = json_bytes(trimmed)
    return {
        "name": name,
        "path": source,
        "variants": present,
        "packed": packed,
        "omitted": omitted,
        "manifest_bytes": manifest_bytes,
        "manifest_sha256": original_sha,
    }


def _tarinfo(name: str, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if directory:
        info.type, info.mode, info.size = tarfile.DIRTYPE, 0o755, 0
    else:
        info.type, info.mode, info.size = tarfile.REGTYPE, 0o644, size
    return info


def _compression_for(output: Path, compress: str | None) -> str | None:
    lower = output.name.lower()
    by_suffix = "gzip" if lower.endswith((".tar.gz", ".tgz")) else None if lower.endswith(".tar") else "unknown"
    if compress == "auto":
        return "gzip" if by_suffix == "unknown" else by_suffix
    if compress not in ("gzip", None):
        raise InvalidArgumentError(f"compress must be 'gzip', None or 'auto', got {compress!r}")
    if by_suffix != "unknown" and by_suffix != compress:
        raise InvalidArgumentError(
            f"output {output.name!r} says {'gzip' if by_suffix else 'plain tar'} by its suffix but "
            f"compress={compress!r}; name it .tar.gz/.tgz for gzip or .tar for plain"
        )
    return compress


def _write_archive(plans: list[dict], output_file: str | os.PathLike, compress: str | None) -> dict:
    output = Path(output_file).expanduser()
    if output.is_dir():
        raise InvalidArgumentError(f"output {output} is a directory; give the archive's file name")
    comp = _compression_for(output, compress)
    names = sorted(plan["name"] for plan in plans)
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"bundle names repeat in one archive: {names}")
    directory = output.parent if str(output.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=directory)
    summary_bundles = []
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as raw:
            sink = HashingWriter(raw)
            gz = gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=6) if comp else None
            with tarfile.TarFile(fileobj=gz or sink, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for plan in sorted(plans, key=lambda p: p["name"]):
                    name = plan["name"]
                    entries = dict(plan["packed"])
                    entries[MANIFEST_NAME] = {
                        "sha256": hashlib.sha256(plan["manifest_bytes"]).hexdigest(),
                        "bytes": len(plan["manifest_bytes"]),
                    }
                    pack_record = {
                        "format": PACK_FORMAT,
                        "format_version": PACK_FORMAT_VERSION,
                        "bundle": name,
                        "bundles": names,
                        "variants": plan["variants"],
                        "files": {k: entries[k] for k in sorted(entries)},
                        "omitted": plan["omitted"],
                        "manifest": {
                            "source_sha256": plan["manifest_sha256"],
                            "rewritten": bool(plan["omitted"]),
                        },
                    }
                    pack_bytes = json_bytes(pack_record)
                    members = {PACK_NAME: pack_bytes, MANIFEST_NAME: plan["manifest_bytes"]}
                    members.update({f: None for f in plan["packed"]})
                    tar.addfile(_tarinfo(name, directory=True))
                    for rel_name in sorted(members):
                        data = members[rel_name]
                        if data is not None:
                            tar.addfile(_tarinfo(f"{name}/{rel_name}", len(data)), io.BytesIO(data))
                            continue
                        entry = plan["packed"][rel_name]
                        with open(plan["path"] / rel_name, "rb") as src:
                            reader = HashingReader(src)
                            tar.addfile(_tarinfo(f"{name}/{rel_name}", entry["bytes"]), reader)
                        if reader.count != entry["bytes"] or reader.digest.hexdigest() != entry["sha256"]:
                            raise PackChecksumError(
                                f"bundle {name!r}: {rel_name} changed while it was being packed; pack again"
                            )
                    summary_bundles.append(
                        {
                            "name": name,
                            "variants": plan["variants"],
                            "files": pack_record["files"],
                            "omitted": sorted(plan["omitted"]),
                            "manifest_rewritten": bool(plan["omitted"]),
                        }
                    )
            if gz is not None:
                gz.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temp_name, output)
    except BaseException:
        try:
            os.unlink(temp_name)
        except OSError:
            pass
        raise
    fsync_dir(directory)
    return {
        "archive": str(output),
        "compress": comp,
        "bytes": sink.count,
        "sha256": sink.digest.hexdigest(),
        "bundles": summary_bundles,
        "files": {
            f"{b['name']}/{f}": entry for b in summary_bundles for f, entry in b["files"].items()
        },
        "content_bytes": sum(e["bytes"] for b in summary_bundles for e in b["files"].values()),
    }


def pack_bundle(
    name_or_dir: str | os.PathLike,
    output_file: str | os.PathLike,
    *,
    variants: Iterable[str] | str = ("default",),
    compress: str | None = "auto",
    home: str | os.PathLike | None = None,
) -> dict:
    """Write one bundle into a deterministic tar (gzip by default or by a .tar.gz/.tgz suffix).

    ``variants``: "default" (the manifest's ``default_variant``, fp32 when it has none), "fp32",
    "int8"; a bundle installed from a pack runs the variants packed. Returns ``{archive, compress, bytes, sha256,
    bundles, files, content_bytes}``. The archive is written atomically (temp file + rename).
    """
    source = _resolve_source(name_or_dir, home)
    plan = _plan_bundle(source, variants, skip_missing=False)
    return _write_archive([plan], output_file, compress)


def _bio_bundle_for(language: str) -> str:
    primary = language.strip().lower().replace("_", "-").split("-")[0]
    for name, info in DEFAULT_BIO_BUNDLES.items():
        if info["language"] == primary:
            return name
    raise InvalidArgumentError(f"no default BIO bundle for language {language!r}")


def pack_language(
    language: str,
    output_file: str | os.PathLike,
    *,
    variants: Iterable[str] | str = ("default",),
    include_bio: bool = False,
    compress: str | None = "auto",
    home: str | os.PathLike | None = None,
) -> dict:
    """Pack the default bundle of ``language`` (en: minilm-l6-en, zh: e5-small-zh) into one archive;
    with ``include_bio`` also the language's BIO bundle (which gets only the variants it has: the
    default BIO bundles have no graph of their own and run the backbone's fp32 graph, which is then
    packed as well)."""
    names = [default_bundle_for(language)]
    if include_bio:
        names.append(_bio_bundle_for(language))
    sources = [_resolve_source(name, home) for name in names]
    wanted = [variants for _ in names]
    if include_bio and "backbone" in read_manifest(sources[1]):
        # The BIO tagger runs its backbone's fp32 graph (its head was checked on it): pack that too.
        listed = [variants] if isinstance(variants, str) else list(variants)
        wanted[0] = listed + ([] if "fp32" in listed else ["fp32"])
    plans = [
        _plan_bundle(source, wanted[index], skip_missing=index > 0) for index, source in enumerate(sources)
    ]
    return _write_archive(plans, output_file, compress)


# ---------------------------------------------------------------------------------------------
# installing
