#!/usr/bin/env python
"""Cold start and peak memory of keyatten-lite on an edge box (issue 13, items 3 and 4).

For each language's default bundle and each variant (fp32, int8) this runs N fresh processes. Each one
imports keyatten_lite, builds a ``KeyAttenExtractor(language=..., variant=...)`` and extracts the
keywords of one short document (or of ``--docs`` documents in one batch call). It prints the median
wall time of the whole process (interpreter start included), the median peak RSS (``ru_maxrss`` the child reads with
``resource.getrusage`` before it exits; ``VmHWM`` of /proc/self/status beside it, which Linux does not
carry over from the parent across fork + exec), the load average, and the median time of each step, taken inside the
child by wrapping the runtime's own functions (no code change needed in the runtime):

* ``import``: ``import keyatten_lite`` and ``from keyatten_lite import KeyAttenExtractor``;
* ``bundle_open``: ``open_bundle`` (manifest, checksums or the verified signature, graph I/O), of which
  ``verify`` is the checksum part;
* ``tokenizer``: ``Bundle.tokenizer`` (``tokenizers.Tokenizer.from_file``);
* ``session``: ``Bundle._create_session`` (onnxruntime InferenceSession);
* ``jieba``: the Chinese segmenter's first use (import jieba, its dictionaries);
* ``extract``: the rest of the first ``extract_keywords`` call (the forward pass and the scoring).

Several trees can be compared in one run, interleaved process by process so that load changes hit
them alike: ``--tree after`` is this interpreter and its ``sys.path``; ``--tree
before=PYTHON[:PYTHONPATH]`` another checkout (run from /tmp so the current directory does not shadow
it). Example (the numbers in docs/results/edge.md)::

    PYTHONPATH=/work/pp /work/main/.venv/bin/python scripts/edge_bench.py -n 5 \\
        --tree before=/work/main/.venv/bin/python: --tree after --json docs/results/edge.json

Before timing, one untimed process per tree and configuration warms the OS page cache and writes
whatever the runtime keeps in its home (the verified signature, jieba's dictionary cache), so the
numbers are those of every start after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

TEXTS = {
    "zh": (
        "本文采用Navier-Stokes方程和K-ε两方程模型对不同负载时家用空调贯流风机内部偏心涡的演化规律进行了数值模拟."
        "研究表明,随着出口外界负载的增加,贯流风机内部偏心涡增大,偏心涡卷吸的区域增强;同时偏心涡的涡核不断向远离蜗舌的方向移动."
    ),
    "en": (
        "Separate accounts go mainstream. New entrants are shaking up the separate-account industry by "
        "supplying Web-based platforms that give advisers the tools to pick investment managers and "
        "rebalance client portfolios."
    ),
}
DATA = {"zh": "zh/csl_test.jsonl", "en": "en/inspec.jsonl"}
STEPS = ("import", "bundle_open", "verify", "tokenizer", "session", "jieba", "extract")

# ----------------------------------------------------------------------------------------- child


def _child(language: str, variant: str, n_docs: int, data_dir: str) -> None:
    import resource

    t_start = time.perf_counter()
    times = dict.fromkeys(STEPS, 0.0)
    t0 = time.perf_counter()
    import keyatten_lite
    from keyatten_lite import KeyAttenExtractor

    times["import"] = time.perf_counter() - t0
    stack: list[str] = []

    def timed(owner, attr: str, step: str) -> None:
        original = getattr(owner, attr, None)
        if original is None or getattr(original, "_edge_bench", False):
            return

        def wrapper(*args, **kwargs):
            if step in stack:  # re-entrant call: counted by the outer one
                return original(*args, **kwargs)
            stack.append(step)
            begin = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - begin
                stack.pop()
                times[step] += elapsed
                # exclusive times: a nested step is taken out of the one enclosing it (verify stays
                # inside bundle_open, as its part)
                if stack and not (stack[-1] == "bundle_open" and step == "verify"):
                    times[stack[-1]] -= elapsed

        wrapper._edge_bench = True
        setattr(owner, attr, wrapper)

    import importlib

    bundle_module = None
    for module_name in ("keyatten_lite.model.bundle", "keyatten_lite.bundle"):
        try:
            bundle_module = importlib.import_module(module_name)
            break
        except ImportError:
            continue
    timed(bundle_module, "open_bundle", "bundle_open")
    for name in ("_verify_files", "_verify_file"):
        if hasattr(bundle_module, name):
            timed(bundle_module, name, "verify")
            break
    timed(bundle_module.Bundle, "tokenizer", "tokenizer")
    timed(bundle_module.Bundle, "_create_session", "session")
    segment_module = None
    for module_name in ("keyatten_lite.text.segment", "keyatten_lite.segment"):
        try:
            segment_module = importlib.import_module(module_name)
            break
        except ImportError:
            continue
    if segment_module is not None and hasattr(segment_module, "ChineseSegmenter"):
        original_ready = segment_module.ChineseSegmenter._ready

        def ready(self):
            result = original_ready(self)
            jieba = sys.modules.get("jieba")
            if jieba is not None:  # jieba builds its prefix dictionary on the first cut
                timed(jieba.Tokenizer, "initialize", "jieba")
            return result

        segment_module.ChineseSegmenter._ready = ready
        timed(segment_module.ChineseSegmenter, "_ready", "jieba")

    if n_docs <= 1:
        docs = [TEXTS[language]]
    else:
        with open(os.path.join(data_dir, DATA[language]), encoding="utf-8") as handle:
            docs = [json.loads(line)["text"] for _, line in zip(range(n_docs), handle)]
    t0 = time.perf_counter()
    extractor = KeyAttenExtractor(language=language, variant=variant)
    stack.append("extract")
    if len(docs) == 1:
        first = list(extractor.extract_keywords(docs[0], top_k=10))[:3]
    else:
        results = extractor.extract_keywords_batch(docs, top_k=10)
        first = results[0][:3]
    stack.pop()
    times["extract"] += time.perf_counter() - t0
    rusage = resource.getrusage(resource.RUSAGE_SELF)
    hwm_kib = None
    try:
        with open("/proc/self/status") as status:
            hwm_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        pass
    print(
        "EDGE_BENCH "
        + json.dumps(
            {
                "steps": times,
                "in_process_s": time.perf_counter() - t_start,
                "maxrss_kib": rusage.ru_maxrss,
                "vmhwm_kib": hwm_kib,
                "version": getattr(keyatten_lite, "__version__", None),
                "module": keyatten_lite.__file__,
                "sample": [str(x) for x in first],
            },
            ensure_ascii=False,
        ),
        flush=True,
    )


# ----------------------------------------------------------------------------------------- parent


def _parse_tree(text: str) -> dict:
    label, _, spec = text.partition("=")
    if not spec:
        return {"label": label, "python": sys.executable, "pythonpath": os.environ.get("PYTHONPATH"), "cwd": None}
    python, sep, pythonpath = spec.partition(":")
    # A tree given as PYTHON[:PYTHONPATH] runs from /tmp so that the current folder shadows nothing.
    return {"label": label, "python": python, "pythonpath": pythonpath if sep else None, "cwd": "/tmp"}


def _run_once(tree: dict, language: str, variant: str, n_docs: int, data_dir: str) -> dict:
    env = dict(os.environ)
    env.update(tree.get("env", {}))
    if tree["pythonpath"] is None:
        env.pop("PYTHONPATH", None)
    else:
        env["PYTHONPATH"] = tree["pythonpath"]
    command = [tree["python"], os.path.abspath(__file__), "--child", language, variant, str(n_docs), data_dir]
    begin = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=tree["cwd"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    wall = time.perf_counter() - begin
    lines = [line for line in out.decode("utf-8", "replace").splitlines() if line.startswith("EDGE_BENCH ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{tree['label']} {language} {variant} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    record = json.loads(lines[-1][len("EDGE_BENCH "):])
    record["wall_s"] = wall
    record["peak_rss_mib"] = record["maxrss_kib"] / 1024
    record["vmhwm_mib"] = (record["vmhwm_kib"] or record["maxrss_kib"]) / 1024
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=5, help="fresh processes per configuration (>= 5)")
    parser.add_argument("--tree", action="append", help="LABEL (this interpreter) or LABEL=PYTHON[:PYTHONPATH]")
    parser.add_argument("--language", action="append", choices=["zh", "en"])
    parser.add_argument("--variant", action="append", choices=["fp32", "int8"])
    parser.add_argument("--docs", type=int, default=1, help="documents per process (1: a short one; >1: from the data)")
    parser.add_argument("--data", default=os.environ.get("KEYATTEN_LITE_DATA") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))
    parser.add_argument("--env", action="append", default=[], metavar="LABEL:NAME=VALUE",
                        help="an environment variable for one tree (e.g. after-plain:KEYATTEN_LITE_OPTIMIZED=0)")
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument("--json", help="write every run and the medians here")
    args = parser.parse_args(argv)
    trees = [_parse_tree(t) for t in (args.tree or ["after"])]
    for item in args.env:
        label, _, assignment = item.partition(":")
        name, _, value = assignment.partition("=")
        for tree in trees:
            if tree["label"] == label:
                tree.setdefault("env", {})[name] = value
    languages = args.language or ["zh", "en"]
    variants = args.variant or ["fp32", "int8"]
    configs = [(t, lang, var) for lang in languages for var in variants for t in trees]
    runs: dict[tuple, list] = {(t["label"], lang, var): [] for t, lang, var in configs}
    loads = [os.getloadavg()]
    if not args.no_warmup:
        for tree, lang, var in configs:
            _run_once(tree, lang, var, args.docs, args.data)
    for i in range(args.runs):  # interleaved: run i of every configuration, then run i + 1
        for tree, lang, var in configs:
            runs[(tree["label"], lang, var)].append(_run_once(tree, lang, var, args.docs, args.data))
        loads.append(os.getloadavg())
    summary = []
    for (label, lang, var), records in runs.items():
        row = {
            "tree": label,
            "language": lang,
            "variant": var,
            "docs": args.docs,
            "runs": len(records),
            "cold_start_s": statistics.median(r["wall_s"] for r in records),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in records),
            "vmhwm_mib": statistics.median(r["vmhwm_mib"] for r in records),
            "steps_s": {s: statistics.median(r["steps"][s] for r in records) for s in STEPS},
            "sample": records[0]["sample"],
        }
        summary.append(row)
    load1 = [l[0] for l in loads]
    print(f"load average (1 min) during the runs: min {min(load1):.2f}, median {statistics.median(load1):.2f}, max {max(load1):.2f}")
    print(f"{'tree':<8} {'lang':<4} {'var':<5} {'cold s':>7} {'peak MiB':>9}  " + " ".join(f"{s:>11}" for s in STEPS))
    for row in summary:
        print(
            f"{row['tree']:<8} {row['language']:<4} {row['variant']:<5} {row['cold_start_s']:7.2f} "
            f"{row['peak_rss_mib']:9.0f}  " + " ".join(f"{row['steps_s'][s]:11.3f}" for s in STEPS)
        )
    if args.docs == 1:
        targets = {"zh": (1.5, 320), "en": (0.6, 150)}
        for row in summary:
            sec, mib = targets[row["language"]]
            print(
                f"target {row['tree']} {row['language']} {row['variant']}: cold {row['cold_start_s']:.2f} s "
                f"(<= {sec}: {'met' if row['cold_start_s'] <= sec else 'NOT met'}), peak {row['peak_rss_mib']:.0f} MiB "
                f"(<= {mib}: {'met' if row['peak_rss_mib'] <= mib else 'NOT met'})"
            )
    if args.json:
        payload = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": " ".join([sys.executable] + sys.argv),
            "cpus": os.cpu_count(),
            "loadavg": loads,
            "summary": summary,
            "runs": {"|".join(k): v for k, v in runs.items()},
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, ensure_ascii=False, indent=1)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        sys.exit(main())
