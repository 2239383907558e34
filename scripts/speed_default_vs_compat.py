"""Seconds per document of ``KeyAttenExtractor(profile="default")`` against ``profile="compat"``.

    KEYATTEN_LITE_HOME=... python scripts/speed_default_vs_compat.py [--repeats 3] [--threads 2] [-o out.json]

Each run is a fresh worker process (one profile, one language, one variant) that times, from before
importing keyatten_lite: import, extractor construction, ``fit_idf`` and a first
``extract_keywords_batch`` over the documents (``cold``), then a second pass over the same documents in
the same process (``warm``). Workers run one at a time, the two profiles interleaved (their order
alternates per repeat); each figure is the median over the repeats. Documents: the first ``--en``
Inspec and ``--zh`` CSL-dev lines (file order). Prints a markdown table with date, load and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(os.environ.get("KEYATTEN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CORPORA = {"en": ("minilm-l6-en", "en/inspec.jsonl", "Inspec"), "zh": ("e5-small-zh", "zh/csl_dev.jsonl", "CSL dev")}
PROFILES = ("compat", "default")


def worker(config: dict) -> dict:
    started = time.perf_counter()
    from keyatten_lite.extractors.keyatten import KeyAttenExtractor

    bundle, relative, _ = CORPORA[config["language"]]
    with open(DATA / relative, encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line, _ in zip(handle, range(config["limit"]))]
    extractor = KeyAttenExtractor(
        model=bundle, language=config["language"], variant=config["variant"],
        intra_op_threads=config["threads"], profile=config["profile"],
    )
    extractor.fit_idf(texts)
    fitted = time.perf_counter()
    extractor.extract_keywords_batch(texts, method=config["method"], top_k=10)
    first = time.perf_counter()
    extractor.extract_keywords_batch(texts, method=config["method"], top_k=10)
    second = time.perf_counter()
    n = len(texts)
    return {**config, "documents": n, "cold": (first - started) / n, "warm": (second - first) / n,
            "setup_s": fitted - started}


def run_worker(config: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(config["threads"])}
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(config)], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def versions() -> str:
    from importlib.metadata import version

    names = ["keyatten-lite", "onnxruntime", "numpy", "tokenizers", "nltk", "jieba"]
    parts = [f"Python {platform.python_version()}"]
    for name in names:
        try:
            parts.append(f"{name} {version(name)}")
        except Exception:  # noqa: BLE001 - a missing optional package is just not listed
            pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    return ", ".join(parts) + (f"; git {commit}" if commit else "")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def markdown(records: list[dict], args: argparse.Namespace, loads: list[str]) -> str:
    lines = [
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()} with {os.cpu_count()} CPUs, "
        f"{args.threads} onnxruntime threads, `{args.method}`, median of {args.repeats} fresh processes per cell; "
        f"{versions()}.",
        "",
        f"Load before: `{loads[0]}`  ",
        f"Load after: `{loads[-1]}`",
        "",
        "| corpus | variant | compat warm s/doc | default warm s/doc | warm ratio "
        "| compat cold s/doc | default cold s/doc | cold ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for language in ("en", "zh"):
        for variant in args.variants:
            cell = {}
            for profile in PROFILES:
                rows = [r for r in records if (r["language"], r["variant"], r["profile"]) == (language, variant, profile)]
                if rows:
                    cell[profile] = {k: statistics.median(r[k] for r in rows) for k in ("warm", "cold")}
            if len(cell) < 2:
                continue
            bundle, _, corpus = CORPORA[language]
            c, d = cell["compat"], cell["default"]
            lines.append(
                f"| {corpus} {rows[0]['documents']} ({bundle}) | {variant} | {c['warm']:.4f} | {d['warm']:.4f} | "
                f"{d['warm'] / c['warm']:.2f}× | {c['cold']:.4f} | {d['cold']:.4f} | {d['cold'] / c['cold']:.2f}× |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--en", type=int, default=200)
    parser.add_argument("--zh", type=int, default=100)
    parser.add_argument("--languages", nargs="+", default=["en", "zh"], choices=list(CORPORA))
    parser.add_argument("--variants", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    parser.add_argument("--method", default="samrank_idf")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("-o", "--output", help="also write the records and the table as JSON here")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    records: list[dict] = []
    loads = [uptime()]
    for language in args.languages:
        limit = args.en if language == "en" else args.zh
        for variant in args.variants:
            for repeat in range(args.repeats):
                for profile in PROFILES if repeat % 2 == 0 else PROFILES[::-1]:
                    config = {"language": language, "variant": variant, "profile": profile, "limit": limit,
                              "threads": args.threads, "method": args.method}
                    record = run_worker(config)
                    record["load"] = uptime()
                    records.append(record)
                    print(f"{language} {variant} {profile} #{repeat + 1}: warm {record['warm']:.4f} "
                          f"cold {record['cold']:.4f} s/doc ({record['load']})", file=sys.stderr, flush=True)
    loads.append(uptime())
    table = markdown(records, args, loads)
    print(table)
    if args.output:
        Path(args.output).write_text(json.dumps({"records": records, "table": table}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
