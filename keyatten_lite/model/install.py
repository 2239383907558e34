"""``keyatten-lite models install``: an archive made by ``models pack``, checked member by member and
against PACK.json and the manifest, built in a dot-directory and renamed into place in one step."""

from __future__ import annotations

import ctypes
import ctypes.util
import gzip
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

from keyatten_lite.errors import BundleError, InvalidArgumentError
from keyatten_lite.model.archive import (
    CHUNK,
    DEFAULT_MAX_BYTES,
    HEX64,
    LimitedReader,
    MAX_JSON_BYTES,
    MAX_MEMBERS,
    PACK_FORMAT,
    PACK_FORMAT_VERSION,
    PACK_NAME,
    PackChecksumError,
    PackError,
    VARIANTS,
    fsync_dir,
    is_file_name,
    is_int,
    is_name,
)
from keyatten_lite.model.bundle import (
    MANIFEST_NAME,
    sha256_file,
    validate_manifest,
)
from keyatten_lite.model.registry import bundles_dir


def _sniff(handle, where: str) -> str:
    head = handle.read(512)
    handle.seek(0)
    if not head:
        raise PackError(f"{where} is empty, not a bundle archive")
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if len(head) == 512 and head[257:262] == b"ustar":
        return "tar"
    for magic, kind in ((b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"(\xb5/\xfd", "zstd"), (b"PK\x03\x04", "zip")):
        if head.startswith(magic):
            raise PackError(f"{where} is a {kind} file; bundle archives are tar or gzip tar (`keyatten-lite models pack`)")
    raise PackError(f"{where} is not a tar or gzip tar archive (made by `keyatten-lite models pack`)")


def _member_parts(member: tarfile.TarInfo, where: str) -> tuple[str, str | None]:
    """(bundle folder, file name or None for the folder itself); PackError for any unsafe name."""
    name = member.name
    if not isinstance(name, str) or not name or "\x00" in name:
        raise PackError(f"{where}: member {name!r} has an empty or invalid name")
    if name.startswith("/") or "\\" in name or re.match(r"[A-Za-z]:", name):
        raise PackError(f"{where}: member {name!r} has an absolute path; refusing the archive")
    parts = name.split("/")
    if any(part in ("..", ".") for part in parts):
        raise PackError(f"{where}: member {name!r} has a '..' or '.' path component; refusing the archive")
    if any(part == "" for part in parts):
        raise PackError(f"{where}: member {name!r} is not a normalised path; refusing the archive")
    if len(parts) > 2:
        raise PackError(
            f"{where}: member {name!r} is outside <name>/ or nested below it (bundles hold plain files "
            "only); refusing the archive"
        )
    bundle = parts[0]
    if not is_name(bundle):
        raise PackError(
            f"{where}: member {name!r} is outside a bundle folder: {bundle!r} is not a simple bundle name "
            "(letters, digits, '-', '_', '.'); refusing the archive"
        )
    if len(parts) == 2 and not is_file_name(parts[1]):
        raise PackError(f"{where}: member {name!r} has an unsafe file name; refusing the archive")
    return bundle, parts[1] if len(parts) == 2 else None


def _member_kind_error(member: tarfile.TarInfo, where: str) -> PackError | None:
    if member.issym():
        return PackError(f"{where}: member {member.name!r} is a symbolic link (to {member.linkname!r}); refusing the archive")
    if member.islnk():
        return PackError(f"{where}: member {member.name!r} is a hard link (to {member.linkname!r}); refusing the archive")
    if member.ischr() or member.isblk() or member.isfifo():
        return PackError(f"{where}: member {member.name!r} is a device or fifo; refusing the archive")
    if member.isdir():
        return None
    if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
        return None
    return PackError(f"{where}: member {member.name!r} has unsupported tar type {member.type!r}; refusing the archive")


def _load_json(data: bytes, what: str) -> dict:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PackError(f"{what} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise PackError(f"{what} must hold a JSON object")
    return value


def _check_pack_record(record: dict, bundle: str, where: str) -> dict:
    what = f"{where}: {bundle}/{PACK_NAME}"
    if record.get("format") != PACK_FORMAT:
        raise PackError(f"{what} has format {record.get('format')!r}, expected {PACK_FORMAT!r}")
    version = record.get("format_version")
    if not is_int(version) or version != PACK_FORMAT_VERSION:
        raise PackError(
            f"{what} has pack format_version {version!r}; this keyatten-lite reads version {PACK_FORMAT_VERSION} "
            "(upgrade keyatten-lite or pack again with this version)"
        )
    if record.get("bundle") != bundle:
        raise PackError(f"{what} is for bundle {record.get('bundle')!r}, not for its folder {bundle!r}")
    bundles = record.get("bundles")
    if not isinstance(bundles, list) or not all(is_name(b) for b in bundles) or bundle not in bundles:
        raise PackError(f"{what} has a malformed 'bundles' list")
    files = record.get("files")
    if not isinstance(files, dict) or MANIFEST_NAME not in files:
        raise PackError(f"{what} has no files table listing {MANIFEST_NAME}")
    for rel_name, entry in files.items():
        if (
            not is_file_name(rel_name)
            or rel_name == PACK_NAME
            or not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not HEX64.match(entry["sha256"])
            or not is_int(entry.get("bytes"))
            or entry["bytes"] < 0
        ):
            raise PackError(f"{what} has a malformed entry for {rel_name!r}")
    variants = record.get("variants")
    if not isinstance(variants, list) or not all(v in VARIANTS for v in variants):
        raise PackError(f"{what} has a malformed 'variants' list")
    return record


def _extract(handle, kind: str, staging: Path, max_bytes: int, where: str) -> dict[str, dict]:
    """Stream the archive into ``staging/<bundle>/``; return {bundle: {files: {name: (sha, size)}, ...}}."""
    stream = gzip.GzipFile(fileobj=handle, mode="rb") if kind == "gzip" else handle
    limited = LimitedReader(stream, max_bytes, where)
    bundles: dict[str, dict] = {}
    seen: set[str] = set()
    content_bytes = 0
    count = 0
    with tarfile.open(fileobj=limited, mode="r|") as tar:
        for member in tar:
            count += 1
            if count > MAX_MEMBERS:
                raise PackError(f"{where}: more than {MAX_MEMBERS} members; refusing the archive")
            error = _member_kind_error(member, where)
            if error is not None:
                raise error
            bundle, rel_name = _member_parts(member, where)
            key = f"{bundle}/{rel_name}" if rel_name else bundle
            if key in seen:
                raise PackError(f"{where}: member {key!r} appears more than once; refusing the archive")
            seen.add(key)
            info = bundles.get(bundle)
            if info is None:
                info = bundles[bundle] = {"files": {}, "pack": None, "manifest": None, "dir": staging / bundle}
                info["dir"].mkdir()
            if member.isdir():
                if rel_name is not None:
                    raise PackError(f"{where}: member {member.name!r} is a nested directory; refusing the archive")
                continue
            if rel_name is None:
                raise PackError(f"{where}: member {member.name!r} is a file outside any <name>/ folder")
            content_bytes += member.size
            if member.size < 0 or content_bytes > max_bytes:
                raise PackError(
                    f"{where}: the archive's files add up to more than {max_bytes} bytes (the limit); "
                    "refusing it (pass a larger max_bytes if the bundle really is that big)"
                )
            record = info["pack"]
            if record is not None:
                listed = record["files"].get(rel_name)
                if listed is None:
                    raise PackError(f"{where}: {bundle}/{rel_name} is not listed in {bundle}/{PACK_NAME}; refusing the archive")
                if listed["bytes"] != member.size:
                    raise PackChecksumError(
                        f"{where}: {bundle}/{rel_name} is {member.size} bytes but {PACK_NAME} says {listed['bytes']}"
                    )
            source = tar.extractfile(member)
            if rel_name in (PACK_NAME, MANIFEST_NAME):
                if member.size > MAX_JSON_BYTES:
                    raise PackError(f"{where}: {bundle}/{rel_name} is {member.size} bytes, too big for a manifest")
                data = source.read()
                if len(data) != member.size:
                    raise PackError(f"{where}: the archive is truncated inside {bundle}/{rel_name}")
                if rel_name == PACK_NAME:
                    info["pack"] = _check_pack_record(_load_json(data, f"{where}: {bundle}/{PACK_NAME}"), bundle, where)
                    _check_space(staging, info["pack"], where)
                    for earlier in info["files"]:
                        if earlier not in info["pack"]["files"]:
                            raise PackError(
                                f"{where}: {bundle}/{earlier} is not listed in {bundle}/{PACK_NAME}; refusing the archive"
                            )
                    continue
                info["manifest"] = data
            digest = hashlib.sha256()
            written = 0
            target = info["dir"] / rel_name
            with open(target, "xb") as out:
                if rel_name == MANIFEST_NAME:
                    out.write(data)
                    digest.update(data)
                    written = len(data)
                else:
                    while chunk := source.read(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(target, 0o644)
            if written != member.size:
                raise PackError(f"{where}: the archive is truncated inside {bundle}/{rel_name}")
            info["files"][rel_name] = (digest.hexdigest(), written)
        end_of_members = tar.offset
    # Read to the end: the gzip trailer's CRC and length get checked, and a tar cut off after its last
    # member (the two zero blocks that end an archive missing) is caught.
    while limited.read(CHUNK):
        pass
    if limited.count < end_of_members + 2 * tarfile.BLOCKSIZE:
        raise PackError(f"{where} is truncated (the archive ends before its end-of-archive marker)")
    if not bundles:
        raise PackError(f"{where} holds no bundle")
    return bundles


def _check_space(staging: Path, record: dict, where: str) -> None:
    need = sum(entry["bytes"] for entry in record["files"].values())
    try:
        free = shutil.disk_usage(staging).free
    except OSError:
        return
    if need > free:
        raise PackError(f"{where}: the bundle needs {need} bytes but only {free} are free in {staging.parent}")


def _verify_bundle(bundle: str, info: dict, names: set[str], where: str) -> dict:
    """Check one extracted bundle against its PACK.json and its manifest; return the manifest."""
    record = info["pack"]
    if record is None:
        raise PackError(f"{where}: bundle folder {bundle!r} has no {PACK_NAME}; refusing the archive")
    if set(record["bundles"]) != names:
        extra = sorted(names - set(record["bundles"]))
        raise PackError(
            f"{where}: the archive holds bundles {sorted(names)} but {bundle}/{PACK_NAME} lists "
            f"{sorted(record['bundles'])} ({'more than one bundle: ' + ', '.join(extra) if extra else 'a bundle is missing'}); "
            "refusing the archive"
        )
    listed = {k: v for k, v in record["files"].items()}
    got = info["files"]
    unlisted = sorted(set(got) - set(listed))
    if unlisted:
        raise PackError(f"{where}: {bundle}/{unlisted[0]} is not listed in {bundle}/{PACK_NAME}; refusing the archive")
    missing = sorted(set(listed) - set(got))
    if missing:
        raise PackError(f"{where}: {bundle}/{missing[0]} is listed in {bundle}/{PACK_NAME} but missing from the archive")
    for rel_name, (sha, size) in sorted(got.items()):
        if size != listed[rel_name]["bytes"] or sha != listed[rel_name]["sha256"]:
            raise PackChecksumError(
                f"{where}: {bundle}/{rel_name} does not match the sha256 and size in {bundle}/{PACK_NAME} "
                "(the archive is damaged or was modified)"
            )
    manifest = _load_json(info["manifest"], f"{where}: {bundle}/{MANIFEST_NAME}")
    validate_manifest(manifest, f"{where}: bundle {bundle!r}")
    files = manifest["files"]
    for rel_name in files:
        if rel_name not in got:
            raise PackError(
                f"{where}: {bundle}/{MANIFEST_NAME} lists {rel_name}, which the archive does not hold: the "
                "installed bundle would not open; pack it again with `keyatten-lite models pack`"
            )
    for rel_name, (sha, size) in sorted(got.items()):
        if rel_name == MANIFEST_NAME:
            continue
        entry = files.get(rel_name)
        if entry is None:
            raise PackError(f"{where}: {bundle}/{rel_name} is not listed in {bundle}/{MANIFEST_NAME}; refusing the archive")
        if entry["bytes"] != size or entry["sha256"] != sha:
            raise PackChecksumError(
                f"{where}: {bundle}/{rel_name} does not match the sha256 and size in {bundle}/{MANIFEST_NAME}"
            )
    return manifest


def _same_bundle(existing: Path, new: Path, manifest: dict) -> bool:
    """True when ``existing`` already holds exactly this bundle (same manifest bytes, same files)."""
    try:
        if (existing / MANIFEST_NAME).read_bytes() != (new / MANIFEST_NAME).read_bytes():
            return False
        for rel_name, entry in manifest["files"].items():
            path = existing / rel_name
            if not path.is_file() or path.is_symlink() or path.stat().st_size != entry["bytes"]:
                return False
            if sha256_file(path) != entry["sha256"]:
                return False
    except OSError:
        return False
    return True


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    return False


def _move_into_place(new: Path, final: Path, replace: bool, staging: Path) -> None:
    os.chmod(new, 0o755)
    fsync_dir(new)
    if not replace:
        os.replace(new, final)  # atomic; fails if a non-empty directory appeared meanwhile
        return
    if _exchange(new, final):
        return  # ``new`` now holds the old bundle, removed with the staging directory
    # Fallback (no renameat2): the old bundle steps aside, then the new one takes its name. The final
    # name is briefly absent, but never holds a partial bundle.
    aside = staging / f".old-{final.name}"
    os.replace(final, aside)
    try:
        os.replace(new, final)
    except BaseException:
        os.replace(aside, final)
        raise


def install_pack(
    file: str | os.PathLike,
    *,
    home: str | os.PathLike | None = None,
    force: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[Path]:
    """Install the bundle(s) of an archive made by :func:`pack_bundle` / :func:`pack_language`.

    Into ``<home>/bundles/<name>`` (home: ``$KEYATTEN_LITE_HOME`` or ``~/.cache/keyatten-lite``).
    An installed bundle of the same name is kept when identical, replaced only with ``force=True``,
    else refused. Returns the installed bundle directories. Raises :class:`PackError` (a
    ``BundleError``) for an unsafe, damaged or unlisted archive; nothing is left behind then.
    """
    if not is_int(max_bytes) or max_bytes < 1:
        raise InvalidArgumentError(f"max_bytes must be a positive int, got {max_bytes!r}")
    path = Path(file).expanduser()
    where = f"bundle archive {str(path)!r}"
    if not path.is_file():
        raise PackError(f"{where} does not exist or is not a file")
    root = bundles_dir(home)
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".install-", dir=root))
    except OSError as exc:
        raise PackError(f"{where}: cannot create a staging directory in {root} ({exc})") from None
    try:
        with open(path, "rb") as handle:
            kind = _sniff(handle, where)
            try:
                bundles = _extract(handle, kind, staging, max_bytes, where)
            except PackError:
                raise
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise PackError(f"{where} is truncated or corrupt ({type(exc).__name__}: {exc})") from None
            except FileExistsError as exc:
                raise PackError(f"{where}: member {exc.filename!r} appears more than once") from None
        names = set(bundles)
        manifests = {name: _verify_bundle(name, bundles[name], names, where) for name in sorted(names)}
        plan = []
        for name in sorted(names):
            final = root / name
            if final.is_symlink() or (final.exists() and not final.is_dir()):
                raise PackError(f"{final} exists and is not a bundle directory; remove it first")
            if final.is_dir():
                if _same_bundle(final, bundles[name]["dir"], manifests[name]):
                    plan.append((name, final, "unchanged"))
                    continue
                if not force:
                    raise PackError(
                        f"bundle {name!r} is already installed at {final} and differs from the archive's; "
                        "pass force=True (`keyatten-lite models install --force`) to replace it"
                    )
                plan.append((name, final, "replace"))
            else:
                plan.append((name, final, "new"))
        for name, final, action in plan:
            if action != "unchanged":
                _move_into_place(bundles[name]["dir"], final, action == "replace", staging)
        fsync_dir(root)
        return [final for _, final, _ in plan]
    except OSError as exc:
        if isinstance(exc, BundleError):
            raise
        raise PackError(f"{where}: cannot install into {root} ({exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# command line: `keyatten-lite models pack|install`
