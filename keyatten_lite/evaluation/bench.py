"""`keyatten-lite bench`: speed and memory of keyatten-lite against keyatten 0.3.1 on torch.

Every measurement runs in a fresh worker subprocess (``python -m keyatten_lite.evaluation.bench --worker JSON``), so
that thread settings, imported libraries and peak RSS of one configuration never leak into another.
Steps, interleaved per repeat and thread count:

* ``lite``: keyatten-lite with one bundle/variant/method/threads: load time, docs/s of
  ``extract_keywords_batch``, p50/p95 latency of single ``extract_keywords`` calls, peak RSS, and the
  floor: ``session.run`` alone replayed on the token batches the extractor fed the graph (recorded
  during the batch run), so the share of time spent outside the model is visible.
* ``keyatten``: keyatten 0.3.1 with backend="torch" on the same checkpoint, documents and thread count
  (``torch.set_num_threads``).
* ``cold``: a grandchild process that imports, loads and extracts one document; wall time measured from
  outside and peak RSS from ``getrusage(RUSAGE_CHILDREN)`` of its only parent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from keyatten_lite.errors import InvalidArgumentError

_RESULT_MARKER = "@@BENCH_RESULT@@ "
WARMUP_TEXT = {"en": "Graph neural networks learn representations of graph data.", "zh": "自然语言处理是人工智能的重要方向"}


# ----------------------------------------------------------------------------------------------------------------
# Inside a worker


def _peak_rss_bytes(who: int | None = None) -> int:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF if who is None else who)
    # Linux reports KiB, macOS bytes.
    return int(usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), without importing numpy in the caller."""
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def _load_texts(config: dict) -> tuple[list[str], str]:
    from keyatten_lite.evaluation.metrics import read_dataset

    documents = read_dataset(config["corpus"])[config.get("offset", 0) : config.get("offset", 0) + config["limit"]]
    if not documents:
        raise InvalidArgumentError(f"{config['corpus']}: no documents in the selected range")
    return [d.text for d in documents], documents[0].lang


def _timed_single_calls(extract, texts: Sequence[str]) -> list[float]:
    latencies = []
    for text in texts:
        started = time.perf_counter()
        extract(text)
        latencies.append(time.perf_counter() - started)
    return latencies


def _worker_lite(config: dict) -> dict:
    texts, language = _load_texts(config)
    started = time.perf_counter()
    from keyatten_lite.extractors.keyatten import KeyAttenExtractor

    extractor = KeyAttenExtractor(
        model=config["bundle"], language=language, variant=config["variant"], intra_op_threads=config["threads"],
        profile=config.get("profile", "compat"),  # like for like with keyatten 0.3.1
    )
    bundle = extractor.bundle
    method = config["method"]
    result: dict[str, Any] = {"bundle_path": str(bundle.path), "language": language}
    if method.endswith("_idf"):
        idf_started = time.perf_counter()
        extractor.fit_idf(texts)
        result["idf_fit_s"] = time.perf_counter() - idf_started
    extractor.extract_keywords(WARMUP_TEXT[language], method=method, top_k=10)  # creates the session
    result["load_s"] = time.perf_counter() - started - result.get("idf_fit_s", 0.0)

    # Batch throughput, recording what reaches the graph for the floor measurement.
    recorded: list[tuple[Any, Any]] = []
    original_run = bundle.run_attention

    def recording_run(input_ids, attention_mask):
        recorded.append((input_ids, attention_mask))
        return original_run(input_ids, attention_mask)

    bundle.run_attention = recording_run  # instance attribute shadows the method for this worker only
    started = time.perf_counter()
    extractor.extract_keywords_batch(texts, method=method, top_k=10, batch_size=config["batch_size"])
    batch_s = time.perf_counter() - started
    bundle.run_attention = original_run
    result.update(batch_s=batch_s, docs_per_s=len(texts) / batch_s)

    # Floor: session.run alone on the same batches (same session, same threads).
    import numpy as np

    session = bundle.session()
    feeds = []
    for input_ids, attention_mask in recorded:
        arrays = {
            "input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
            "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64),
        }
        feeds.append({name: arrays[name] for name in bundle.input_names})
    started = time.perf_counter()
    for feed in feeds:
        session.run([bundle.output_name], feed)
    floor_s = time.perf_counter() - started
    tokens = sum(int(np.asarray(m).sum()) for _, m in recorded)
    cells = sum(int(np.asarray(m).size) for _, m in recorded)
    result.update(
        floor_s=floor_s,
        floor_docs_per_s=len(texts) / floor_s if floor_s > 0 else None,
        model_share=floor_s / batch_s if batch_s > 0 else None,
        n_batches=len(recorded),
        padding_share=1.0 - tokens / cells if cells else 0.0,
        tokens_per_doc=tokens / len(texts),
    )

    single = texts[: config["single_docs"]]
    latencies = _timed_single_calls(lambda t: extractor.extract_keywords(t, method=method, top_k=10), single)
    result.update(
        single_n=len(latencies),
        p50_ms=1000 * percentile(latencies, 50),
        p95_ms=1000 * percentile(latencies, 95),
        peak_rss_bytes=_peak_rss_bytes(),
    )
    return result


def _worker_keyatten(config: dict) -> dict:
    texts, language = _load_texts(config)
    started = time.perf_counter()
    import torch
    from keyatten import KeyAttenExtractor as ReferenceExtractor

    torch.set_num_threads(config["threads"])
    extractor = ReferenceExtractor(model=config["model_dir"], language=language, backend="torch")
    method = config["method"]
    result: dict[str, Any] = {"language": language, "torch_threads": torch.get_num_threads()}
    if method.endswith("_idf"):
        idf_started = time.perf_counter()
        extractor.fit_idf(texts)
        result["idf_fit_s"] = time.perf_counter() - idf_started
    extractor.extract_keywords(WARMUP_TEXT[language], method=method, top_k=10)  # loads the model
    result["load_s"] = time.perf_counter() - started - result.get("idf_fit_s", 0.0)
    started = time.perf_counter()
    extractor.extract_keywords_batch(texts, method=method, top_k=10)
    batch_s = time.perf_counter() - started
    result.update(batch_s=batch_s, docs_per_s=len(texts) / batch_s)
    single = texts[: config["single_docs"]]
    latencies = _timed_single_calls(lambda t: extractor.extract_keywords(t, method=method, top_k=10), single)
    result.update(
        single_n=len(latencies),
        p50_ms=1000 * percentile(latencies, 50),
        p95_ms=1000 * percentile(latencies, 95),
        peak_rss_bytes=_peak_rss_bytes(),
    )
    return result


_COLD_LITE = """
import json, sys, time
t0 = time.perf_counter()
from keyatten_lite import KeyAttenExtractor
t1 = time.perf_counter()
ex = KeyAttenExtractor(profile="compat", model={bundle!r}, language={language!r}, variant={variant!r}, intra_op_threads={threads!r})
out = ex.extract_keywords({text!r}, method={method!r}, top_k=10)
t2 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "load_and_first_s": t2 - t1, "n_keywords": len(out)}}))
"""

_COLD_KEYATTEN = """
import json, sys, time
t0 = time.perf_counter()
import torch
from keyatten import KeyAttenExtractor
torch.set_num_threads({threads!r})
t1 = time.perf_counter()
ex = KeyAttenExtractor(model={model_dir!r}, language={language!r}, backend="torch")
out = ex.extract_keywords({text!r}, method={method!r}, top_k=10)
t2 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "load_and_first_s": t2 - t1, "n_keywords": len(out)}}))
"""


def _worker_cold(config: dict) -> dict:
    """Run the cold-start script as this worker's only child: RUSAGE_CHILDREN then covers exactly it."""
    import resource

    texts, language = _load_texts({**config, "limit": 1})
    template = _COLD_LITE if config["system"] == "lite" else _COLD_KEYATTEN
    method = config["method"]
    if method.endswith("_idf"):  # a cold start has no IDF state; time the attention method underneath
        method = method[: -len("_idf")]
    script = template.format(
        bundle=config.get("bundle"), variant=config.get("variant"), model_dir=config.get("model_dir"),
        language=language, threads=config["threads"], text=texts[0], method=method,
    )
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_worker_env(config))
    wall_s = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"cold-start child failed: {completed.stderr.strip()[-2000:]}")
    inner = json.loads(completed.stdout.strip().splitlines()[-1])
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    rss = int(usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024)
    return {"wall_s": wall_s, "peak_rss_bytes": rss, "cold_method": method, **inner}


_WORKERS = {"lite": _worker_lite, "keyatten": _worker_keyatten, "cold": _worker_cold}


def _worker_main(config_json: str) -> int:
    config = json.loads(config_json)
    try:
        result = {"ok": True, **_WORKERS[config["step"]](config)}
    except Exception as error:  # reported to the parent, which records it and goes on
        result = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    print(_RESULT_MARKER + json.dumps(result), flush=True)
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Orchestration (parent process)


def _worker_env(config: dict) -> dict[str, str]:
    env = dict(os.environ)
    threads = str(config.get("threads") or 1)
    # torch/OpenMP/BLAS pools would otherwise size themselves to the machine, not to the configuration.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = threads
    env["TOKENIZERS_PARALLELISM"] = "false"
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_worker(config: dict, timeout_s: float | None = None) -> dict:
    """Run one step in a fresh interpreter; returns its result dict (``ok`` False with ``error`` on failure)."""
    command = [sys.executable, "-m", "keyatten_lite.evaluation.bench", "--worker", json.dumps(config)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, env=_worker_env(config), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout_s} s"}
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(_RESULT_MARKER):
            return json.loads(line[len(_RESULT_MARKER) :])
    return {"ok": False, "error": f"worker exited {completed.returncode}: {completed.stderr.strip()[-2000:]}"}


def plan_steps(
    *,
    corpus: str,
    limit: int,
    bundles: Sequence[str],
    variants: Sequence[str],
    methods: Sequence[str],
    threads: Sequence[int],
    keyatten_model: str | None,
    batch_size: int,
    single_docs: int,
    repeats: int,
    cold: bool,
) -> list[dict]:
    """The ordered list of worker configs: per repeat and thread count, lite configurations and keyatten
    alternate (interleaved so that machine drift hits every system alike); cold starts follow."""
    common = {"corpus": corpus, "limit": limit, "batch_size": batch_size, "single_docs": single_docs}
    steps = []
    for repeat in range(repeats):
        for n_threads in threads:
            for method in methods:
                for bundle in bundles:
                    for variant in variants:
                        steps.append({**common, "step": "lite", "repeat": repeat, "threads": n_threads,
                                      "bundle": bundle, "variant": variant, "method": method})
                if keyatten_model:
                    steps.append({**common, "step": "keyatten", "repeat": repeat, "threads": n_threads,
                                  "model_dir": keyatten_model, "method": method})
        if cold:
            n_threads = max(threads)
            for bundle in bundles:
                for variant in variants:
                    steps.append({**common, "step": "cold", "system": "lite", "repeat": repeat, "threads": n_threads,
                                  "bundle": bundle, "variant": variant, "method": methods[0]})
            if keyatten_model:
                steps.append({**common, "step": "cold", "system": "keyatten", "repeat": repeat, "threads": n_threads,
                              "model_dir": keyatten_model, "method": methods[0]})
    return steps


def step_label(step: dict) -> str:
    if step["step"] == "lite" or step.get("system") == "lite":
        return f"keyatten-lite {Path(str(step['bundle'])).name} {step['variant']}"
    return f"keyatten 0.3.1 torch ({Path(str(step['model_dir'])).name})"


def summarise(records: Sequence[dict]) -> dict[str, list[dict]]:
    """Median over repeats of every numeric field, grouped by (label, method, threads) and by cold-start label."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        if not record["result"].get("ok"):
            continue
        step = record["config"]
        key = (step["step"] == "cold", step_label(step), step["method"], step["threads"])
        groups.setdefault(key, []).append(record["result"])
    throughput, cold = [], []
    for (is_cold, label, method, n_threads), results in groups.items():
        row: dict[str, Any] = {"system": label, "method": method, "threads": n_threads, "repeats": len(results)}
        for field in sorted({f for r in results for f, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}):
            values = [r[field] for r in results if isinstance(r.get(field), (int, float))]
            row[field] = statistics.median(values)
            if field in ("docs_per_s", "wall_s") and len(values) > 1:
                row[field + "_range"] = [min(values), max(values)]
        (cold if is_cold else throughput).append(row)
    return {"throughput": throughput, "cold_start": cold}


def _mib(value: float | None) -> str:
    return "" if value is None else f"{value / 2**20:.0f}"


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def bench_markdown(result: dict) -> str:
    config, summary = result["config"], result["summary"]
    lines = [
        f"# Speed and memory: {config['corpus']} ({config['limit']} documents)",
        "",
        f"Date {result['date']}; {result['machine']['cpu_model']}, {result['machine']['usable_cpus']} usable CPUs; "
        f"batch size {config['batch_size']} for keyatten-lite (keyatten 0.3.1 fixes 4); single-call latency over "
        f"the first {config['single_docs']} documents; medians over {config['repeats']} repeat(s), each step in a "
        "fresh process. Floor = onnxruntime session.run alone on the same token batches; model share = floor "
        "time / batch time.",
        "",
        "| system | method | threads | docs/s (batch) | p50 ms | p95 ms | floor docs/s | model share | padding | "
        "tokens/doc | load s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(summary["throughput"], key=lambda r: (r["threads"], r["method"], r["system"])):
        rate = _fmt(row.get("docs_per_s"), ".1f")
        if "docs_per_s_range" in row:
            rate += " ({:.1f}–{:.1f})".format(*row["docs_per_s_range"])
        lines.append(
            f"| {row['system']} | {row['method']} | {row['threads']} | {rate} | {_fmt(row.get('p50_ms'), '.1f')} | "
            f"{_fmt(row.get('p95_ms'), '.1f')} | {_fmt(row.get('floor_docs_per_s'), '.1f')} | "
            f"{_fmt(row.get('model_share'), '.0%')} | {_fmt(row.get('padding_share'), '.0%')} | "
            f"{_fmt(row.get('tokens_per_doc'), '.0f')} | {_fmt(row.get('load_s'), '.2f')} | {_mib(row.get('peak_rss_bytes'))} |"
        )
    if summary["cold_start"]:
        lines += [
            "",
            "Cold start: a fresh process imports the package, loads the model and extracts one document.",
            "",
            "| system | threads | wall s | import s | load + first extraction s | peak RSS MiB |",
            "|---|---|---|---|---|---|",
        ]
        for row in summary["cold_start"]:
            lines.append(
                f"| {row['system']} | {row['threads']} | {_fmt(row.get('wall_s'), '.2f')} | {_fmt(row.get('import_s'), '.2f')} | "
                f"{_fmt(row.get('load_and_first_s'), '.2f')} | {_mib(row.get('peak_rss_bytes'))} |"
            )
    failures = [r for r in result["records"] if not r["result"].get("ok")]
    if failures:
        lines += ["", "Failed steps:", ""]
        lines += [f"- {step_label(r['config'])} {r['config']['step']} threads {r['config']['threads']}: "
                  f"{r['result']['error']}" for r in failures]
    return "\n".join(lines) + "\n"


def plot_bench(result: dict, path: str) -> str | None:
    """Two panels: batch documents/s per system and thread count, cold-start wall seconds per system.

    Returns a message instead of writing when matplotlib is missing (it is not a run-time dependency).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"--plot {path}: matplotlib is not installed (pip install matplotlib); no chart written"
    import numpy as np

    summary = result["summary"]
    rows = summary["throughput"]
    systems = list(dict.fromkeys(f"{r['system']} {r['method']}" for r in rows))
    threads = sorted({r["threads"] for r in rows})
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / max(len(threads), 1)
    for t_index, n_threads in enumerate(threads):
        by_system = {f"{r['system']} {r['method']}": r.get("docs_per_s") or 0.0 for r in rows if r["threads"] == n_threads}
        left.barh(np.arange(len(systems)) + t_index * width, [by_system.get(s, 0.0) for s in systems], width,
                  label=f"{n_threads} thread{'s' if n_threads > 1 else ''}")
    left.set_yticks(np.arange(len(systems)) + width * (len(threads) - 1) / 2, systems, fontsize="small")
    left.set_xlabel("documents / s (batch)")
    left.legend(fontsize="small")
    cold = summary["cold_start"]
    right.barh(np.arange(len(cold)), [r.get("wall_s") or 0.0 for r in cold])
    right.set_yticks(np.arange(len(cold)), [f"{r['system']} ({r['threads']}t)" for r in cold], fontsize="small")
    right.set_xlabel("cold start, s (lower is better)")
    figure.suptitle(f"{Path(result['config']['corpus']).name}, {result['config']['limit']} documents")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None


def ratio_rows(result: dict) -> list[dict]:
    """keyatten-lite against keyatten 0.3.1 of the same run, per lite configuration and thread count.

    ``speedup`` = lite docs/s ÷ keyatten docs/s (batch); ``total_over_floor`` = lite batch time ÷ the
    bare ``session.run`` time on the same batches; cold-start and peak-RSS ratios are keyatten ÷ lite.
    """
    summary = result["summary"]
    reference = {r["threads"]: r for r in summary["throughput"] if r["system"].startswith("keyatten 0.3.1")}
    cold_reference = {r["threads"]: r for r in summary["cold_start"] if r["system"].startswith("keyatten 0.3.1")}
    cold_lite = {(r["system"], r["threads"]): r for r in summary["cold_start"]}
    rows = []
    for row in summary["throughput"]:
        if row["system"].startswith("keyatten 0.3.1"):
            continue
        ref = reference.get(row["threads"], {})
        cold = cold_lite.get((row["system"], row["threads"]), {})
        cold_ref = cold_reference.get(row["threads"], {})

        def divide(a, b):
            return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0 else None

        rows.append({
            "system": row["system"], "method": row["method"], "threads": row["threads"],
            "speedup": divide(row.get("docs_per_s"), ref.get("docs_per_s")),
            "p50_speedup": divide(ref.get("p50_ms"), row.get("p50_ms")),
            "total_over_floor": divide(1.0, row.get("model_share")),
            "cold_speedup": divide(cold_ref.get("wall_s"), cold.get("wall_s")),
            "cold_rss_ratio": divide(cold_ref.get("peak_rss_bytes"), cold.get("peak_rss_bytes")),
        })
    return rows


def speed_report(results: Sequence[dict]) -> str:
    """One markdown page from several bench results: each run's tables, then the ratios against keyatten."""
    lines = ["# Speed and memory of keyatten-lite against keyatten 0.3.1 (torch)", ""]
    for result in results:
        lines.append(bench_markdown(result).replace("# Speed and memory:", "## Speed and memory:", 1))
        versions = result.get("versions") or {}
        shown = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if v)
        if shown:
            lines += [f"Versions: {shown}.", ""]
        load = (result.get("machine") or {}).get("load_average")
        if load:
            lines += [f"Load average when the run ended: {load}.", ""]
        lines += [
            "Ratios (same run): speed-up = keyatten-lite docs/s ÷ keyatten docs/s (batch); p50 speed-up = keyatten "
            "p50 ÷ keyatten-lite p50 (single calls); total ÷ floor = keyatten-lite batch time ÷ `session.run` alone; "
            "cold-start and peak-RSS ratios = keyatten ÷ keyatten-lite.",
            "",
            "| keyatten-lite | method | threads | speed-up (batch) | speed-up (p50) | total ÷ floor | cold-start speed-up | cold peak RSS ratio |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in sorted(ratio_rows(result), key=lambda r: (r["threads"], r["system"])):
            times = lambda v: "" if v is None else f"{v:.2f}×"  # noqa: E731
            lines.append(
                f"| {row['system']} | {row['method']} | {row['threads']} | {times(row['speedup'])} | "
                f"{times(row['p50_speedup'])} | {_fmt(row['total_over_floor'], '.2f')} | "
                f"{times(row['cold_speedup'])} | {times(row['cold_rss_ratio'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keyatten_lite.evaluation.bench")
    parser.add_argument("--worker", required=True, help="internal: one step's JSON config")
    return _worker_main(parser.parse_args(argv).worker)


if __name__ == "__main__":
    sys.exit(_main())
