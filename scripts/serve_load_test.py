#!/usr/bin/env python3
"""Bounded load test of `keyatten-lite serve` on loopback (docs/serve.md, docs/results/serve.md).

    nice -n 10 .venv/bin/python scripts/serve_load_test.py            # ~2-5 minutes on 2 cores
    nice -n 10 .venv/bin/python scripts/serve_load_test.py --configs 8,16,16-fifo-w5,1 --repeats 5

For each server configuration of --configs (default: the server's defaults = length-bucketed
micro-batches of 8; the batcher before length buckets = arrival order, 16, with a 5 ms wait; and
batching off), it starts the server in a subprocess on a free 127.0.0.1 port with the real default
English bundle and warms it up. Then, for --repeats rounds (the configurations interleaved, their
order rotating each round), it sends a fixed number of single-text requests (--requests, default
200) at 1, 8 and 32 concurrent clients (persistent http.client connections in threads). It reports
p50/p95/p99 latency over all rounds, docs/s, every answer counted by status, the mean documents
per model call (from /metrics), the server's peak RSS during each burst, the load average, and
whether batched keywords agree with unbatched ones; then stops the servers with SIGTERM. Every
loop is bounded in count and in time (--burst-timeout, --startup-timeout). Results go to
docs/results/serve.md and docs/results/serve.json.

Texts: short English documents (at most --max-chars characters) from $KEYATTEN_LITE_DATA/en/
inspec.jsonl and www.jsonl (default ../shared/data), else a built-in list.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only, never anything else
BUILTIN_TEXTS = [
    "Graph neural networks learn node representations from graph-structured data.",
    "Dynamic resource provisioning keeps web application response times within the service level agreement.",
    "A fast parallel algorithm for sparse matrix multiplication on distributed memory computers.",
    "Convolutional neural networks classify medical images of skin lesions with high accuracy.",
    "Query expansion with word embeddings improves recall in ad hoc information retrieval.",
    "Energy-efficient scheduling of real-time tasks on multicore processors with dynamic voltage scaling.",
    "A survey of recommender systems based on collaborative filtering and matrix factorization.",
    "Robust speech recognition in noisy environments using deep recurrent neural networks.",
]


def load_texts(limit: int, max_chars: int) -> tuple[list[str], str]:
    data = Path(os.environ.get("KEYATTEN_LITE_DATA", REPO.parent / "shared" / "data")) / "en"
    per_file: list[list[str]] = []
    sources = []
    for name in ("inspec.jsonl", "www.jsonl"):
        path = data / name
        if not path.exists():
            continue
        texts = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if len(texts) >= limit:
                    break
                if line.strip():
                    t = json.loads(line).get("text")
                    if isinstance(t, str) and 0 < len(t) <= max_chars:
                        texts.append(t)
        if texts:
            per_file.append(texts)
            sources.append(f"{path} ({len(texts)} texts)")
    if not per_file:
        return list(BUILTIN_TEXTS), "built-in texts"
    mixed = [t for group in zip(*per_file) for t in group]  # alternate files
    for group in per_file:
        mixed += group[len(mixed) // len(per_file):]
    return mixed[:limit], ", ".join(sources)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB, from /proc (0, 0 where unavailable)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    fields = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
    return int(fields.get("VmRSS", 0)), int(fields.get("VmHWM", 0))


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def batch_counters(port: int) -> tuple[float, float]:
    """(sum, count) of keyatten_batch_documents from /metrics."""
    _, text = http_get(port, "/metrics")
    values = dict(re.findall(r"^(keyatten_batch_documents_(?:sum|count)) (\S+)$", text, re.M))
    return float(values.get("keyatten_batch_documents_sum", 0)), float(values.get("keyatten_batch_documents_count", 0))


class ServerConfig:
    """One server configuration: ``N`` (length buckets, the default), ``N-fifo`` (arrival order, the
    batcher before length buckets), optionally ``-wMS`` (max_wait_ms; else --max-wait-ms) and
    ``-oD`` (overtake_docs; else the server's default)."""

    SPEC = re.compile(r"^(\d+)(-fifo)?(?:-w(\d+(?:\.\d+)?))?(?:-o(\d+(?:\.\d+)?))?$")

    def __init__(self, spec: str, default_wait_ms: float) -> None:
        m = self.SPEC.match(spec.strip())
        if not m or int(m.group(1)) < 1:
            raise ValueError(f"bad configuration {spec!r}: N[-fifo][-wMS][-oD] with N >= 1")
        self.spec = spec.strip()
        self.max_batch = int(m.group(1))
        self.buckets = m.group(2) is None
        self.wait_ms = float(m.group(3)) if m.group(3) is not None else default_wait_ms
        self.overtake = float(m.group(4)) if m.group(4) is not None else None
        if self.max_batch == 1:
            self.label = "off" if self.wait_ms == 0 else f"off (wait {self.wait_ms:g} ms)"
        else:
            extra = (f", wait {self.wait_ms:g} ms" if self.wait_ms else "") + (
                f", overtake {self.overtake:g}" if self.overtake is not None else ""
            )
            self.label = f"{'buckets' if self.buckets else 'fifo'} ({self.max_batch}{extra})"

    def flags(self) -> list[str]:
        out = ["--max-batch", str(self.max_batch), "--max-wait-ms", f"{self.wait_ms:g}"]
        if self.overtake is not None:
            out += ["--overtake-docs", f"{self.overtake:g}"]
        return out if self.buckets else out + ["--no-length-buckets"]


class ServerProcess:
    def __init__(self, args: argparse.Namespace, config: ServerConfig) -> None:
        self.port = free_port()
        self.cmd = [
            sys.executable, "-m", "keyatten_lite.serve.cli",
            "--host", HOST, "--port", str(self.port), *config.flags(),
            "--max-queue", str(args.max_queue), "--preload", "en",
            "--log-level", "warning", "--no-access-log",
        ]
        if args.threads:
            self.cmd += ["--threads", str(args.threads)]
        self.log = tempfile.NamedTemporaryFile("w+", prefix="keyatten-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if http_get(self.port, "/health", timeout=2)[0] == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 20) -> str:
        self.log.flush()
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-n:])

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        if self.proc.returncode in (0, -signal.SIGTERM):
            Path(self.log.name).unlink(missing_ok=True)  # kept for a look when the server failed
        else:
            print(f"server log kept: {self.log.name}", file=sys.stderr)
        return self.proc.returncode


def burst(server: ServerProcess, texts: list[str], n_requests: int, clients: int, timeout: float) -> dict:
    """``n_requests`` single-text requests from ``clients`` threads; bounded by ``timeout`` seconds."""
    lock = threading.Lock()
    next_index = [0]
    records: list[dict] = []
    deadline = time.monotonic() + timeout
    stop_sampling = threading.Event()
    peak_rss = [rss_kib(server.proc.pid)[0]]

    def sample() -> None:
        while not stop_sampling.wait(0.02):
            peak_rss[0] = max(peak_rss[0], rss_kib(server.proc.pid)[0])

    def client() -> None:
        conn = None
        while True:
            with lock:
                i = next_index[0]
                if i >= n_requests or time.monotonic() >= deadline:
                    break
                next_index[0] += 1
            text = texts[i % len(texts)]
            body = json.dumps({"text": text}).encode()
            started = time.perf_counter()
            rec = {"i": i, "text": i % len(texts)}
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(HOST, server.port, timeout=max(1.0, deadline - time.monotonic()))
                conn.request("POST", "/extract", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                payload = resp.read()
                rec["status"] = str(resp.status)
                if resp.status == 200:
                    rec["keywords"] = json.loads(payload)["keywords"]
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as exc:  # counted, never retried
                rec["status"] = f"error:{type(exc).__name__}"
                if conn is not None:
                    conn.close()
                conn = None
            rec["latency"] = time.perf_counter() - started
            with lock:
                records.append(rec)
        if conn is not None:
            conn.close()

    before = batch_counters(server.port)
    load_before = os.getloadavg()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 30)
    wall = time.perf_counter() - started
    stop_sampling.set()
    sampler.join(5)
    after = batch_counters(server.port)
    load_after = os.getloadavg()

    statuses: dict[str, int] = {}
    for r in records:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    ok = sorted(r["latency"] for r in records if r["status"] == "200")
    calls = after[1] - before[1]
    return {
        "clients": clients,
        "requested": n_requests,
        "sent": len(records),
        "statuses": dict(sorted(statuses.items())),
        "all_answered_200": statuses.get("200", 0) == n_requests,
        "wall_s": wall,
        "docs_per_s": len(ok) / wall if wall > 0 else 0.0,
        "p50_ms": percentile(ok, 50) * 1000,
        "p95_ms": percentile(ok, 95) * 1000,
        "p99_ms": percentile(ok, 99) * 1000,
        "max_ms": (ok[-1] * 1000) if ok else math.nan,
        "latencies": ok,
        "model_calls": calls,
        "mean_docs_per_call": (after[0] - before[0]) / calls if calls else math.nan,
        "peak_rss_mib": peak_rss[0] / 1024,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "keywords": {r["text"]: r["keywords"] for r in records if "keywords" in r},
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (nan when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def agreement(a: dict, b: dict) -> dict:
    common = sorted(set(a) & set(b))
    same_phrases = sum([p for p, _ in a[k]] == [p for p, _ in b[k]] for k in common)
    diffs = [
        abs(x - y)
        for k in common
        if [p for p, _ in a[k]] == [p for p, _ in b[k]]
        for (_, x), (_, y) in zip(a[k], b[k])
        if x is not None and y is not None
    ]
    return {"documents": len(common), "same_phrase_lists": same_phrases, "max_abs_score_diff": max(diffs) if diffs else 0.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200, help="requests per configuration and repeat (default 200)")
    ap.add_argument("--clients", default="1,8,32", help="concurrency levels (default 1,8,32)")
    ap.add_argument(
        "--configs", "--max-batches", dest="configs", default="8,16-fifo-w5,1",
        help="server configurations: N (length buckets), N-fifo (arrival order), -wMS (max_wait_ms), -oD (overtake_docs); "
        "1 = batching off (default 8,16-fifo-w5,1: the server's defaults, the batcher before length "
        "buckets with its defaults, off)",
    )
    ap.add_argument("--repeats", type=int, default=1, help="interleaved rounds over every (clients, configuration) (default 1)")
    ap.add_argument("--max-wait-ms", type=float, default=0.0, help="max_wait_ms where a configuration gives none (default 0)")
    ap.add_argument("--max-queue", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="onnxruntime intra-op threads")
    ap.add_argument("--max-chars", type=int, default=600, help="longest text used (default 600 characters)")
    ap.add_argument("--texts", type=int, default=200, help="distinct texts (default 200)")
    ap.add_argument("--burst-timeout", type=float, default=120.0, help="seconds per burst at most")
    ap.add_argument("--startup-timeout", type=float, default=180.0)
    ap.add_argument("--warmup", type=int, default=10, help="sequential requests before measuring")
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "serve.md"))
    args = ap.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    try:
        configs = [ServerConfig(c, args.max_wait_ms) for c in args.configs.split(",") if c.strip()]
    except ValueError as exc:
        ap.error(str(exc))
    if args.requests < 1 or not clients or min(clients) < 1 or args.requests > 100_000:
        ap.error("--requests must be in 1..100000 and --clients positive")
    if not configs or len(configs) > 6 or len({c.label for c in configs}) != len(configs):
        ap.error("--configs: 1 to 6 distinct configurations")
    if not 1 <= args.repeats <= 20:
        ap.error("--repeats must be in 1..20")

    texts, source = load_texts(args.texts, args.max_chars)
    started_at = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    load_start = os.getloadavg()
    bursts: list[dict] = []
    servers: list[tuple[ServerConfig, ServerProcess, float, float]] = []
    exit_status: dict[str, int | None] = {}
    try:
        # All servers run side by side (idle ones cost no CPU) and the bursts are interleaved, so
        # that the load of other jobs on the machine drifts across configurations alike.
        for config in configs:
            server = ServerProcess(args, config)
            servers.append((config, server, 0.0, 0.0))
            ready_s = server.wait_ready(args.startup_timeout)
            idle_rss = rss_kib(server.proc.pid)[0] / 1024
            servers[-1] = (config, server, ready_s, idle_rss)
            print(f"{config.label} ({' '.join(config.flags())}): ready in {ready_s:.1f} s, RSS {idle_rss:.0f} MiB", flush=True)
            for i in range(args.warmup):
                warm = burst(server, texts[i:] + texts[:i], 1, 1, 30)
                if not warm["all_answered_200"]:
                    raise RuntimeError(f"warm-up request failed: {warm['statuses']}\n{server.log_tail()}")
            # and one concurrent burst, so that onnxruntime has seen batched shapes before we measure
            burst(server, texts[::-1], 2 * max(clients), max(clients), 60)
        for rep in range(args.repeats):
            for c in clients:
                # rotate the order each round, so no configuration always runs first
                order = servers[rep % len(servers):] + servers[: rep % len(servers)]
                for config, server, ready_s, idle_rss in order:
                    r = burst(server, texts, args.requests, c, args.burst_timeout)
                    r.update(batching=config.label, spec=config.spec, max_batch=config.max_batch, repeat=rep)
                    bursts.append(r)
                    print(
                        f"  [{rep + 1}/{args.repeats}] {config.label:>22}, {c:>3} clients: {r['statuses']} p50 {r['p50_ms']:.0f} ms "
                        f"p95 {r['p95_ms']:.0f} ms p99 {r['p99_ms']:.0f} ms, {r['docs_per_s']:.1f} docs/s, "
                        f"{r['mean_docs_per_call']:.2f} docs/call, peak RSS {r['peak_rss_mib']:.0f} MiB, load {r['loadavg_after'][0]:.2f}",
                        flush=True,
                    )
    finally:
        for config, server, _, _ in servers:
            rc = server.stop()
            exit_status[config.label] = rc
            print(f"server {config.label} stopped (exit status {rc})", flush=True)
    elapsed = time.monotonic() - t0
    info = {cfg.label: (ready_s, idle_rss) for cfg, _, ready_s, idle_rss in servers}
    runs = []
    for config in configs:
        for c in clients:
            parts = [b for b in bursts if b["batching"] == config.label and b["clients"] == c]
            if parts:
                r = combine(parts)
                r.update(
                    batching=config.label, spec=config.spec, max_batch=config.max_batch, buckets=config.buckets,
                    max_wait_ms=config.wait_ms, ready_s=info[config.label][0], idle_rss_mib=info[config.label][1],
                    server_exit_status=exit_status.get(config.label),
                )
                runs.append(r)

    by = {(r["batching"], r["clients"]): r for r in runs}
    agree = {}
    reference = by.get(("off", min(clients))) or (runs[0] if runs else None)
    for r in runs:
        if reference is not None and r is not reference:
            agree[f"{r['batching']}/{r['clients']}"] = agreement(reference["keywords"], r["keywords"])
    write_results(args, runs, agree, texts, source, started_at, elapsed, load_start, os.getloadavg())
    ok = all(r["all_answered_200"] for r in runs)
    print(f"wrote {args.out} ({elapsed:.0f} s); every request answered 200: {ok}")
    return 0 if ok else 1


def combine(parts: list[dict]) -> dict:
    """One row from the repeats of one (configuration, clients): latencies pooled, docs/s = all
    answered documents over all burst time, and each repeat's p95 and docs/s kept for the spread."""
    statuses: dict[str, int] = {}
    for p in parts:
        for k, v in p["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    ok = sorted(x for p in parts for x in p["latencies"])
    wall = sum(p["wall_s"] for p in parts)
    calls = sum(p["model_calls"] for p in parts)
    docs = sum(p["mean_docs_per_call"] * p["model_calls"] for p in parts if p["model_calls"])
    keywords: dict = {}
    for p in parts:
        keywords.update(p["keywords"])
    return {
        "clients": parts[0]["clients"],
        "repeats": len(parts),
        "requested": sum(p["requested"] for p in parts),
        "sent": sum(p["sent"] for p in parts),
        "statuses": dict(sorted(statuses.items())),
        "all_answered_200": all(p["all_answered_200"] for p in parts),
        "wall_s": wall,
        "docs_per_s": len(ok) / wall if wall > 0 else 0.0,
        "p50_ms": percentile(ok, 50) * 1000,
        "p95_ms": percentile(ok, 95) * 1000,
        "p99_ms": percentile(ok, 99) * 1000,
        "max_ms": (ok[-1] * 1000) if ok else math.nan,
        "per_repeat": [
            {"p95_ms": p["p95_ms"], "docs_per_s": p["docs_per_s"], "loadavg_after": p["loadavg_after"][0]} for p in parts
        ],
        "model_calls": calls,
        "mean_docs_per_call": docs / calls if calls else math.nan,
        "peak_rss_mib": max(p["peak_rss_mib"] for p in parts),
        "loadavg_before": parts[0]["loadavg_before"],
        "loadavg_after": parts[-1]["loadavg_after"],
        "loadavg_range": [min(p["loadavg_after"][0] for p in parts), max(p["loadavg_after"][0] for p in parts)],
        "keywords": keywords,
    }


def spread(r: dict, key: str, fmt: str) -> str:
    values = [p[key] for p in r["per_repeat"]]
    return format(min(values), fmt) + "-" + format(max(values), fmt) if len(values) > 1 else format(values[0], fmt)


def write_results(args, runs, agree, texts, source, started_at, elapsed, load_start, load_end) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except Exception:
        ort = "?"
    versions = {}
    for mod in ("starlette", "uvicorn"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = "?"
    command = "nice -n 10 .venv/bin/python scripts/serve_load_test.py" + (
        " " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""
    )
    lengths = sorted(len(t) for t in texts)
    peak_load = max([load_start[0], load_end[0]] + [r["loadavg_range"][1] for r in runs])
    busy = (
        f" (above the {os.cpu_count()} CPUs: other jobs were running, so the figures are indicative; "
        "the configurations were interleaved, compare rows with each other)"
        if peak_load > (os.cpu_count() or 1) else ""
    )
    repeats = max(r["repeats"] for r in runs)
    lines = [
        "# `keyatten-lite serve` load test",
        "",
        "Generated by `scripts/serve_load_test.py` (see docs/serve.md). Loopback only (127.0.0.1); the",
        "load generator (Python threads, one persistent connection each) runs on the same machine and",
        "competes with the server for the CPU.",
        "",
        f"- Command: `{command}`",
        f"- Date: {started_at.strftime('%Y-%m-%d %H:%M:%S UTC')}; total run {elapsed:.0f} s",
        (
            f"- Machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, "
            f"onnxruntime {ort}, starlette {versions['starlette']}, uvicorn {versions['uvicorn']}"
        ),
        f"- Load average (1/5/15 min): {fmt_load(load_start)} at the start, {fmt_load(load_end)} at the end, "
        f"{min(r['loadavg_range'][0] for r in runs):.2f}-{peak_load:.2f} (1 min) after the bursts{busy}",
        (
            "- Model: default English bundle `minilm-l6-en`, profile default, method received_attn, top_k 10, "
            f"`--threads {args.threads}`"
        ),
        (
            f"- Texts: {len(texts)} distinct, {lengths[0]}-{lengths[-1]} characters "
            f"(median {lengths[len(lengths) // 2]}), from {source}"
        ),
        (
            f"- {args.requests} single-text requests per row and round, {repeats} interleaved round(s) (the order of the "
            f"configurations rotates each round), after {args.warmup} sequential and "
            f"{2 * max(r['clients'] for r in runs)} concurrent warm-up requests; `--max-queue {args.max_queue}`"
        ),
        "- Configurations: buckets (N) = `--max-batch N` (length buckets, natural batching: the defaults); "
        "fifo (N, wait W ms) = `--max-batch N --max-wait-ms W --no-length-buckets` (the batcher before length "
        "buckets: arrival order); off = `--max-batch 1`",
        "- p50/p95/p99 over every round's answers together; docs/s = answered documents over the total burst time; "
        "the ranges are the rounds' own p95 and docs/s",
        "",
        "| batching | clients | answered (by status) | p50 ms | p95 ms | p99 ms | docs/s | p95 ms per round | docs/s per round | docs per model call | peak RSS MiB | load avg after |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        statuses = ", ".join(f"{k}: {v}" for k, v in r["statuses"].items())
        lo, hi = r["loadavg_range"]
        lines.append(
            f"| {r['batching']} | {r['clients']} | {statuses} (of {r['requested']}) | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {r['docs_per_s']:.1f} | {spread(r, 'p95_ms', '.0f')} | {spread(r, 'docs_per_s', '.1f')} | "
            f"{r['mean_docs_per_call']:.2f} | {r['peak_rss_mib']:.0f} | {lo:.2f}{f'-{hi:.2f}' if hi != lo else ''} |"
        )
    lines += ["", "Server start-up (to /health 200, with `--preload en` and one warm-up document) and idle RSS:", ""]
    seen = set()
    for r in runs:
        if r["batching"] not in seen:
            seen.add(r["batching"])
            lines.append(
                f"- {r['batching']}: ready in {r['ready_s']:.1f} s, idle RSS {r['idle_rss_mib']:.0f} MiB, "
                f"exit status after SIGTERM {r.get('server_exit_status')}"
            )
    lines += ["", "Do batched answers equal unbatched ones? (reference: batching off, fewest clients)", ""]
    lines += ["| run | documents compared | same keyword list | max abs score difference |", "|---|---:|---:|---:|"]
    for name, a in agree.items():
        lines.append(f"| {name} | {a['documents']} | {a['same_phrase_lists']} | {a['max_abs_score_diff']:.2e} |")
    off = {r["clients"]: r for r in runs if r["batching"] == "off"}
    lines += ["", "Batched vs unbatched (p95, docs/s):", ""]
    for label in dict.fromkeys(r["batching"] for r in runs if r["batching"] != "off"):
        on = {r["clients"]: r for r in runs if r["batching"] == label}
        for c in sorted(set(on) & set(off)):
            better = on[c]["p95_ms"] < off[c]["p95_ms"] and on[c]["docs_per_s"] > off[c]["docs_per_s"]
            lines.append(
                f"- {label}, {c} clients: p95 {on[c]['p95_ms']:.0f} ms vs {off[c]['p95_ms']:.0f} ms unbatched, "
                f"{on[c]['docs_per_s']:.1f} vs {off[c]['docs_per_s']:.1f} docs/s "
                f"({on[c]['mean_docs_per_call']:.1f} docs per model call batched){': both better' if better else ''}"
            )
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    record = {
        "command": command,
        "date": started_at.isoformat(),
        "elapsed_s": elapsed,
        "cpus": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "texts": {"count": len(texts), "source": source, "min_chars": lengths[0], "max_chars": lengths[-1]},
        "config": {k: getattr(args, k) for k in ("requests", "clients", "configs", "repeats", "max_wait_ms", "max_queue", "threads", "max_chars")},
        "versions": {"onnxruntime": ort, **versions},
        "runs": [{k: v for k, v in r.items() if k not in ("keywords", "latencies")} for r in runs],
        "agreement": agree,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def fmt_load(load) -> str:
    return "/".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    sys.exit(main())
