#!/usr/bin/env python
"""Measure onnxruntime SessionOptions for the default bundles' graphs (issue 13 items 3 and 4).

Each configuration runs in fresh processes that load only numpy and onnxruntime (the inputs are
tokenised once by the parent, with the bundle's tokenizer, and passed in an .npz), create the session,
run one short document, then (``--batch``) 100 documents in batches of 16 padded to the longest; the
child reports the creation time, the run times and ``ru_maxrss`` after each phase, and saves its
attention outputs so the parent can compare them with the ``base`` configuration (max abs diff).

    PYTHONPATH=/work/pp python scripts/edge_session_options.py --bundle minilm-l6-en --variant fp32 -n 3

Results are what docs/results/edge.md quotes; the choice is in keyatten_lite/model/bundle.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CONFIGS = {
    # name: (graph_optimization_level, {SessionOptions attribute: value}, {config entry: value})
    "base": ("ORT_ENABLE_ALL", {}, {}),
    "extended": ("ORT_ENABLE_EXTENDED", {}, {}),
    "basic": ("ORT_ENABLE_BASIC", {}, {}),
    "disable_all": ("ORT_DISABLE_ALL", {}, {}),
    "no_arena": ("ORT_ENABLE_ALL", {"enable_cpu_mem_arena": False}, {}),
    "no_mem_pattern": ("ORT_ENABLE_ALL", {"enable_mem_pattern": False}, {}),
    "no_prepacking": ("ORT_ENABLE_ALL", {}, {"session.disable_prepacking": "1"}),
    "env_allocators": ("ORT_ENABLE_ALL", {}, {"session.use_env_allocators": "1"}),
    "threads1": ("ORT_ENABLE_ALL", {"intra_op_num_threads": 1}, {}),
    "no_arena_no_pattern": ("ORT_ENABLE_ALL", {"enable_cpu_mem_arena": False, "enable_mem_pattern": False}, {}),
    "lean": (
        "ORT_ENABLE_ALL",
        {"enable_cpu_mem_arena": False, "enable_mem_pattern": False},
        {"session.disable_prepacking": "1"},
    ),
    # the optimised graph saved once (``--saved`` makes it), loaded with optimisation off
    "saved_all": ("ORT_DISABLE_ALL", {}, {}),
    "saved_all_ext": ("ORT_DISABLE_ALL", {}, {}),
    "saved_ext_no_arena": ("ORT_DISABLE_ALL", {"enable_cpu_mem_arena": False}, {}),
    "saved_ext_no_pattern": ("ORT_DISABLE_ALL", {"enable_mem_pattern": False}, {}),
    "saved_extended_ext": ("ORT_DISABLE_ALL", {}, {}),
}
# saved configurations: (level the graph is optimised at when saved, external initializers)
SAVED = {
    "saved_all": ("ORT_ENABLE_ALL", False),
    "saved_all_ext": ("ORT_ENABLE_ALL", True),
    "saved_ext_no_arena": ("ORT_ENABLE_ALL", True),
    "saved_ext_no_pattern": ("ORT_ENABLE_ALL", True),
    "saved_extended_ext": ("ORT_ENABLE_EXTENDED", True),
}


def _child(graph: str, config: str, inputs: str, out: str, batch: bool) -> None:
    import resource

    import numpy as np
    import onnxruntime as ort

    def rss() -> float:
        # VmHWM (MiB): the peak of this process's own memory map. ru_maxrss would not do here: Linux
        # carries the parent's peak across fork/vfork + exec, and this parent holds the tokenizer.
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    level, attrs, entries = CONFIGS[config]
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.log_severity_level = 3
    for key, value in attrs.items():
        setattr(options, key, value)
    for key, value in entries.items():
        options.add_session_config_entry(key, value)
    data = np.load(inputs)
    rss_imported = rss()
    begin = time.perf_counter()
    session = ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])
    create = time.perf_counter() - begin
    rss_created = rss()
    feeds = {"input_ids": data["single_ids"], "attention_mask": data["single_mask"]}
    feeds = {i.name: feeds[i.name] for i in session.get_inputs()}
    begin = time.perf_counter()
    (single,) = session.run(["attentions"], feeds)
    first_run = time.perf_counter() - begin
    rss_single = rss()
    result = {"create_s": create, "first_run_s": first_run, "rss_imported": rss_imported,
              "rss_created": rss_created, "rss_single": rss_single}
    saved = {"single": single}
    if batch:
        begin = time.perf_counter()
        n_batches = int(data["n_batches"])
        for b in range(n_batches):
            feeds = {"input_ids": data[f"ids{b}"], "attention_mask": data[f"mask{b}"]}
            feeds = {i.name: feeds[i.name] for i in session.get_inputs()}
            (output,) = session.run(["attentions"], feeds)
            if b == 0:
                saved["batch0"] = output
        result["batch_s"] = time.perf_counter() - begin
        result["rss_batch"] = rss()
    np.savez(out, **saved)
    print("SESSION_BENCH " + json.dumps(result), flush=True)


def _prepare_inputs(bundle, language: str, data_dir: str, path: str, n_docs: int = 100, batch_size: int = 16) -> None:
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from edge_bench import DATA, TEXTS

    tokenizer = bundle.tokenizer()
    limit = bundle.max_length

    def encode(texts):
        rows = [tokenizer.encode(t).ids[:limit] for t in texts]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), bundle.pad_token_id or 0, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask

    arrays = {}
    arrays["single_ids"], arrays["single_mask"] = encode([TEXTS[language]])
    with open(os.path.join(data_dir, DATA[language]), encoding="utf-8") as handle:
        docs = [json.loads(line)["text"] for _, line in zip(range(n_docs), handle)]
    batches = [docs[i : i + batch_size] for i in range(0, len(docs), batch_size)]
    for b, texts in enumerate(batches):
        arrays[f"ids{b}"], arrays[f"mask{b}"] = encode(texts)
    arrays["n_batches"] = np.array(len(batches))
    np.savez(path, **arrays)


def _save_optimized(graph: str, target: str, external: bool, level: str = "ORT_ENABLE_ALL") -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.optimized_model_filepath = target
    options.log_severity_level = 3
    if external:
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         os.path.basename(target) + ".data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    begin = time.perf_counter()
    ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])
    return time.perf_counter() - begin


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--language", required=True, choices=["zh", "en"])
    parser.add_argument("--variant", default="fp32", choices=["fp32", "int8"])
    parser.add_argument("--config", action="append", help="configurations (default: all)")
    parser.add_argument("-n", "--runs", type=int, default=3)
    parser.add_argument("--batch", action="store_true", help="also run 100 documents")
    parser.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json")
    args = parser.parse_args()
    import numpy as np

    from keyatten_lite.model.bundle import open_bundle

    bundle = open_bundle(args.bundle, variant=args.variant)
    workdir = args.workdir or tempfile.mkdtemp(prefix="edge-session-")
    os.makedirs(workdir, exist_ok=True)
    inputs = os.path.join(workdir, f"inputs-{args.language}.npz")
    if not os.path.exists(inputs):
        _prepare_inputs(bundle, args.language, args.data, inputs)
    configs = args.config or list(CONFIGS)
    graphs = {name: str(bundle.graph_path) for name in configs}
    saving = {}
    for name, (level, external) in SAVED.items():
        if name in configs:
            target = os.path.join(workdir, f"{bundle.name}-{args.variant}-{name}.onnx")
            saving[name] = _save_optimized(str(bundle.graph_path), target, external, level)
            graphs[name] = target
    records: dict[str, list] = {name: [] for name in configs}
    for i in range(args.runs):
        for name in configs:  # interleaved
            out = os.path.join(workdir, f"out-{name}.npz")
            command = [sys.executable, os.path.abspath(__file__), "--child", graphs[name], name, inputs, out,
                       "1" if args.batch else "0"]
            begin = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True)
            wall = time.perf_counter() - begin
            lines = [l for l in proc.stdout.splitlines() if l.startswith("SESSION_BENCH ")]
            if proc.returncode or not lines:
                print(f"{name} failed: {proc.stderr[-2000:]}", file=sys.stderr)
                records.pop(name, None)
                continue
            record = json.loads(lines[-1][len("SESSION_BENCH "):])
            record["wall_s"] = wall
            if name in records:
                records[name].append(record)
    reference = np.load(os.path.join(workdir, "out-base.npz")) if "base" in records else None
    rows = []
    for name, runs in records.items():
        if not runs:
            continue
        row = {"config": name, "runs": len(runs)}
        for key in runs[0]:
            row[key] = statistics.median(r[key] for r in runs)
        if name in saving:
            row["save_s"] = saving[name]
        if reference is not None:
            got = np.load(os.path.join(workdir, f"out-{name}.npz"))
            row["max_abs_diff"] = max(float(np.max(np.abs(got[k] - reference[k]))) for k in reference.files)
        rows.append(row)
    print(f"{args.bundle} {args.variant} load {os.getloadavg()[0]:.2f}")
    print(f"{'config':<20} {'create s':>8} {'1st run':>8} {'batch s':>8} {'rss imp':>8} {'rss crt':>8} {'rss 1':>8} {'rss 100':>8} {'maxdiff':>9}")
    for row in rows:
        print(f"{row['config']:<20} {row['create_s']:8.3f} {row['first_run_s']:8.3f} {row.get('batch_s', float('nan')):8.2f} "
              f"{row['rss_imported']:8.0f} {row['rss_created']:8.0f} {row['rss_single']:8.0f} {row.get('rss_batch', float('nan')):8.0f} "
              f"{row.get('max_abs_diff', float('nan')):9.2e}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"bundle": args.bundle, "variant": args.variant, "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                       "loadavg": os.getloadavg(), "rows": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6] == "1")
    else:
        sys.exit(main())
