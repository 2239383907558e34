"""Docs/s of `--engine ray` (1 and 2 actors) against the one-process CLI, memory per actor, identity.

    nice -n 10 .venv/bin/python scripts/ray_scale.py [--en 500 --zh 500] [-o docs/results/scale.json]

Corpus: the first ``--en`` Inspec and ``--zh`` CSL-dev documents (../shared/data), interleaved, in one
JSONL file. Runs, one after the other on this machine:

* ``cli``: ``python -m keyatten_lite.cli extract -i corpus.jsonl -o cli.jsonl`` (one process,
  onnxruntime's default threads); wall time from start to exit, peak RSS of the process.
* ``ray-1x1``, ``ray-2x1``: ``ray_extract`` with 1 and 2 actors of 1 CPU each on a local Ray started
  once by this script (``num_cpus`` = the machine's cores, no dashboard, 256 MiB object store); wall
  time of the call (planning, actor start, model loading, extraction, writing, final check) and the
  peak RSS (VmHWM) of each actor process, sampled from /proc every 0.25 s.
* ``ray-2x1-killed``: as ``ray-2x1``, but one actor is killed (SIGKILL to the pid it reported) once
  a third of the chunks are written; Ray restarts it and retries its tasks.

Every Ray output is compared with the CLI's: the same set of lines and the same line for every id.
Writes the figures to ``-o`` and prints them.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("KEYATTEN_LITE_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO))


def load_corpus(n_en: int, n_zh: int) -> list[dict]:
    def first(relative: str, n: int) -> list[dict]:
        out = []
        with open(DATA / relative, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    rec = json.loads(line)
                    out.append({"id": rec["id"], "lang": rec.get("lang"), "text": rec["text"]})
                    if len(out) >= n:
                        break
        return out

    en, zh = first("en/inspec.jsonl", n_en), first("zh/csl_dev.jsonl", n_zh)
    records = []
    for i in range(max(len(en), len(zh))):
        records.extend(x[i] for x in (en, zh) if i < len(x))
    return records


def rss_mb(pid: int, field: str = "VmHWM") -> float | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class ActorWatcher(threading.Thread):
    """Samples the peak RSS of every actor that wrote its pid into ``pid_dir``."""

    def __init__(self, pid_dir: Path) -> None:
        super().__init__(daemon=True)
        self.pid_dir = pid_dir
        self.peak: dict[int, float] = {}
        self.stop = threading.Event()

    def pids(self) -> list[int]:
        return sorted(int(p.read_text()) for p in self.pid_dir.glob("actor-*.pid")) if self.pid_dir.exists() else []

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in self.pids():
                value = rss_mb(pid)
                if value is not None:
                    self.peak[pid] = max(self.peak.get(pid, 0.0), value)
            time.sleep(0.25)


def compare(ray_dir: Path, cli_lines: list[str]) -> dict:
    lines = []
    for part in sorted(glob.glob(str(ray_dir / "part-*.jsonl"))):
        lines.extend(Path(part).read_text(encoding="utf-8").splitlines())
    ray_ids = [json.dumps(json.loads(line)["id"]) for line in lines]
    by_id = {json.dumps(json.loads(line)["id"]): line for line in lines}
    cli_by_id = {json.dumps(json.loads(line)["id"]): line for line in cli_lines}
    return {
        "records": len(lines),
        "each_id_once": len(ray_ids) == len(set(ray_ids)) == len(cli_lines),
        "same_lines": sorted(lines) == sorted(cli_lines),
        "same_per_id": by_id == cli_by_id,
        "differing_ids": sum(1 for k in cli_by_id if by_id.get(k) != cli_by_id[k]),
    }


def run_cli(corpus: Path, out: Path, threads: int | None) -> dict:
    cmd = [sys.executable, "-m", "keyatten_lite.cli", "extract", "-i", str(corpus), "-o", str(out)]
    if threads:
        cmd += ["--threads", str(threads)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"CLI failed: {proc.stderr.read().decode()[-2000:]}")
    return {"load_avg_1min_at_end": round(os.getloadavg()[0], 2), "seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "threads": threads or "onnxruntime default"}


def run_ray(corpus: Path, work: Path, name: str, actors: int, threads: int, cli_lines: list[str], kill: bool) -> dict:
    from keyatten_lite.distributed.ray_engine import ray_extract

    out, pid_dir = work / name, work / f"{name}-pids"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(pid_dir, ignore_errors=True)
    watcher = ActorWatcher(pid_dir)
    watcher.start()
    result: dict = {}

    def target() -> None:
        try:
            result["summary"] = ray_extract([str(corpus)], out, actors=actors, threads=threads, _actor_pid_dir=str(pid_dir))
        except BaseException as exc:  # noqa: BLE001
            result["error"] = repr(exc)

    t0 = time.perf_counter()
    worker = threading.Thread(target=target)
    worker.start()
    killed = None
    first_part_at = None
    while worker.is_alive():
        parts = glob.glob(str(out / "part-*.jsonl"))
        if parts and first_part_at is None:
            first_part_at = time.perf_counter() - t0
        if kill and killed is None and len(parts) >= 5 and watcher.pids():
            before = watcher.pids()
            killed = {"pid": before[0], "parts_written_before": len(parts), "at_s": round(time.perf_counter() - t0, 2)}
            os.kill(killed["pid"], signal.SIGKILL)
        time.sleep(0.05)
    worker.join()
    seconds = time.perf_counter() - t0
    watcher.stop.set()
    watcher.join()
    if "error" in result:
        raise SystemExit(f"{name}: {result['error']}")
    summary = result["summary"]
    parts = sorted((os.path.getmtime(p), len(Path(p).read_text(encoding="utf-8").splitlines()))
                   for p in glob.glob(str(out / "part-*.jsonl")))
    record = {
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
        "actors": actors,
        "threads_per_actor": threads,
        "seconds": round(seconds, 2),
        "docs_per_s": round(summary["records"] / seconds, 2),
        "first_chunk_after_s": round(first_part_at, 2) if first_part_at else None,
        "actor_peak_rss_mb": {str(pid): round(mb, 1) for pid, mb in sorted(watcher.peak.items())},
        "summary": summary,
        "identity": compare(out, cli_lines),
    }
    if len(parts) >= 3 and parts[-1][0] > parts[0][0]:
        # Throughput once the first chunk is out (actor start and first model load excluded).
        record["steady_docs_per_s"] = round(sum(n for _, n in parts[1:]) / (parts[-1][0] - parts[0][0]), 2)
    if kill:
        record["killed"] = {**(killed or {}), "restarted_pids": sorted(set(watcher.pids()) - set(before)) if killed else []}
    print(f"{name}: {json.dumps(record)}", flush=True)
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--en", type=int, default=500)
    parser.add_argument("--zh", type=int, default=500)
    parser.add_argument("--cli-threads", type=int, default=None, help="--threads of the one-process CLI")
    parser.add_argument("-o", "--output", default=str(REPO / "docs" / "results" / "scale.json"))
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    import onnxruntime
    import pyarrow
    import ray

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="keyatten-ray-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    records = load_corpus(args.en, args.zh)
    corpus = work / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
    load_start = os.getloadavg()
    cpus = os.cpu_count() or 1

    print(f"{len(records)} documents; CLI ...", flush=True)
    cli = run_cli(corpus, work / "cli.jsonl", args.cli_threads)
    cli["docs_per_s"] = round(len(records) / cli["seconds"], 2)
    print(f"cli: {json.dumps(cli)}", flush=True)
    cli_lines = (work / "cli.jsonl").read_text(encoding="utf-8").splitlines()

    ray.init(address="local", num_cpus=cpus, object_store_memory=256 * 1024**2, include_dashboard=False, log_to_driver=False,
             logging_level="warning")
    try:
        runs = {
            "ray-1x1": run_ray(corpus, work, "ray-1x1", 1, 1, cli_lines, kill=False),
            "ray-2x1": run_ray(corpus, work, "ray-2x1", 2, 1, cli_lines, kill=False),
            "ray-2x1-killed": run_ray(corpus, work, "ray-2x1-killed", 2, 1, cli_lines, kill=True),
        }
    finally:
        ray.shutdown()

    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": cpus, "load_avg_at_start": [round(x, 2) for x in load_start],
                    "load_avg_at_end": [round(x, 2) for x in os.getloadavg()], "platform": platform.platform()},
        "versions": {"python": platform.python_version(), "ray": ray.__version__, "pyarrow": pyarrow.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "corpus": {"documents": len(records), "inspec": min(args.en, len(records)), "csl_dev": args.zh,
                   "order": "interleaved en/zh", "method": "received_attn", "top_k": 10, "batch_size": 16,
                   "bundles": {"en": "minilm-l6-en", "zh": "e5-small-zh"}, "variant": "fp32"},
        "cli": cli,
        "ray": runs,
        "all_identical": all(r["identity"]["same_lines"] and r["identity"]["same_per_id"] and r["identity"]["each_id_once"]
                             for r in runs.values()),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))
    return 0 if result["all_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
