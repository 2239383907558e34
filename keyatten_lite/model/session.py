"""onnxruntime sessions for bundle graphs, created from a graph optimised once and kept in the home.

Creating a session from a bundle's ``model.onnx`` parses the whole protobuf, copies every initializer
and runs the graph optimisers (attention, layer-norm and GELU fusions) in every process: 1.9 s and
877 MiB for the Chinese fp32 graph on the 2-core test box. The first session of a graph therefore
saves the optimised graph (``optimized_model_filepath``) with its weights in an external data file,

    <home>/optimized/<bundle>-<variant>-<first 16 hex of Bundle.content_hash>-ort<version>-<level>-<cpu>/
        model.onnx  model.onnx.data  record.json

and every later session loads that graph with optimisation off. onnxruntime memory-maps external
initializers, so the weights are not copied: 0.2 s and 145 MiB for the same graph, with outputs equal
to the normal session's (max abs diff 0.0 on real documents; docs/results/edge.md). The key holds
everything the saved graph depends on: the bundle's files, the variant, onnxruntime's version, the
optimisation level and the CPU (an ``ORT_ENABLE_ALL`` graph may use kernels chosen for this CPU's
instruction set), so a different machine sharing the home never loads it.

``record.json`` keeps the size, mtime and inode of both files (as model/verified.py does for bundles);
a directory whose files do not match, or that onnxruntime cannot load, is deleted and made again. Any
failure to write (read-only or full home) falls back to the plain session. ``KEYATTEN_LITE_OPTIMIZED=0``
turns the saved graphs off (they take as much disk as the graphs themselves).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
from pathlib import Path

__all__ = ["OPTIMIZED_ENV", "cpu_key", "optimized_dir", "cache_enabled", "session_key", "create_session"]

OPTIMIZED_ENV = "KEYATTEN_LITE_OPTIMIZED"
_RECORD = "record.json"
_GRAPH = "model.onnx"
_DATA = "model.onnx.data"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_cpu_key: str | None = None


def cpu_key() -> str:
    """12 hex digits naming this machine's CPU for onnxruntime: architecture and feature flags."""
    global _cpu_key
    if _cpu_key is None:
        parts = [platform.machine(), platform.processor()]
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
                for line in info:
                    key = line.split(":", 1)[0].strip().lower()
                    if key in ("flags", "features", "cpu part", "model name", "cpu implementer"):
                        parts.append(line.strip())
                    if key == "processor" and len(parts) > 2 and line.split(":", 1)[1].strip() != "0":
                        break  # the first processor is enough
        except OSError:
            pass
        _cpu_key = hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:12]
    return _cpu_key


def optimized_dir(home: str | os.PathLike | None = None) -> Path:
    from keyatten_lite.model.registry import home_dir

    return (Path(home).expanduser() if home is not None else home_dir()) / "optimized"


def cache_enabled() -> bool:
    return os.environ.get(OPTIMIZED_ENV, "").strip().lower() not in ("0", "false", "no", "off")


def _signature(path: Path) -> dict:
    stat = path.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}


def _valid(folder: Path) -> bool:
    try:
        record = json.loads((folder / _RECORD).read_text(encoding="utf-8"))
        files = record["files"]
        return (
            isinstance(files, dict)
            and set(files) == {_GRAPH, _DATA}
            and all(files[name] == _signature(folder / name) for name in files)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def session_key(bundle_name: str, variant: str, content_hash: str, ort_version: str, level_name: str) -> str:
    """The folder name of a saved graph (dashes only between fields, so older builds can be pruned)."""
    fields = [bundle_name, variant, content_hash[:16], "ort" + ort_version, level_name, cpu_key()]
    return "-".join([_UNSAFE.sub("_", fields[0])] + [_UNSAFE.sub("_", f).replace("-", "_") for f in fields[1:]])


def create_session(ort, graph_path: Path, make_options, providers, *, key: str, level, home=None):
    """An InferenceSession for ``graph_path``: from the saved optimised graph ``key`` when there is a valid
    one; else made from ``graph_path`` at optimisation ``level`` while saving that graph, then loaded
    from the saved copy (so every process runs the same graph). ``make_options()`` returns new
    SessionOptions carrying the caller's other choices."""
    if not cache_enabled() or list(providers) != ["CPUExecutionProvider"]:
        options = make_options()
        options.graph_optimization_level = level
        return ort.InferenceSession(str(graph_path), sess_options=options, providers=providers)
    root = optimized_dir(home)
    folder = root / key
    if folder.is_dir():
        session = _load_saved(ort, folder, make_options(), providers) if _valid(folder) else None
        if session is not None:
            return session
        _remove(folder)
    options = make_options()
    options.graph_optimization_level = level
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
    except OSError:
        return ort.InferenceSession(str(graph_path), sess_options=options, providers=providers)
    try:
        options.optimized_model_filepath = str(staging / _GRAPH)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", _DATA)
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        session = ort.InferenceSession(str(graph_path), sess_options=options, providers=providers)
    except Exception:  # noqa: BLE001 - saving failed (full disk?) or the graph is bad: plain load decides
        _remove(staging)
        options = make_options()
        options.graph_optimization_level = level
        return ort.InferenceSession(str(graph_path), sess_options=options, providers=providers)
    try:
        record = {"graph": str(graph_path), "key": key, "files": {n: _signature(staging / n) for n in (_GRAPH, _DATA)}}
        (staging / _RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        try:
            os.replace(staging, folder)
        except OSError:  # another process saved it first: use theirs
            _remove(staging)
        _prune(root, folder)
    except OSError:  # a full or read-only home: keep the session just made
        _remove(staging)
        return session
    saved = _load_saved(ort, folder, make_options(), providers) if _valid(folder) else None
    return saved if saved is not None else session


def _load_saved(ort, folder: Path, options, providers):
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(str(folder / _GRAPH), sess_options=options, providers=providers)
    except Exception:  # noqa: BLE001 - a damaged saved graph is made again
        return None


def _prune(root: Path, keep: Path) -> None:
    """Drop saved graphs of older builds of the same bundle and variant (same name prefix)."""
    prefix = "-".join(keep.name.split("-")[:-4]) + "-"  # <bundle>-<variant>- (see session_key)
    try:
        for other in root.iterdir():
            if other != keep and other.is_dir() and other.name.startswith(prefix) and not other.name.startswith("."):
                _remove(other)
    except OSError:
        pass
