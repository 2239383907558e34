"""Time jieba's default dictionary: parsed from dict.txt (what segment.py does now) vs loaded from the
keyatten_lite.text.jieba_cache text cache, each in a fresh interpreter (median of N runs).

Timed inside the child, after ``import jieba`` (which both paths need): FREQ/total, and the POS table.

    .venv/bin/python scripts/jieba_cache_timing.py [--runs 5] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
mode, cache_dir = sys.argv[1], sys.argv[2]
import jieba
wall, cpu = time.perf_counter(), time.process_time()
if mode == "freq-dict.txt":
    loader = jieba.Tokenizer()
    freq, total = loader.gen_pfdict(loader.get_dict_file())
elif mode == "freq-cache":
    from keyatten_lite.text.jieba_cache import load_default_dictionary
    freq, total = load_default_dictionary(cache_dir)
elif mode == "pos-dict.txt":
    import jieba.posseg
    wall, cpu = time.perf_counter(), time.process_time()  # posseg's import is needed either way
    table = jieba.posseg.POSTokenizer(jieba.Tokenizer()).word_tag_tab
elif mode == "pos-cache":
    import jieba.posseg
    wall, cpu = time.perf_counter(), time.process_time()
    from keyatten_lite.text.jieba_cache import load_pos_table
    table = load_pos_table(cache_dir)
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}))
"""

MODES = ("freq-dict.txt", "freq-cache", "pos-dict.txt", "pos-cache")


def run_child(mode: str, cache_dir: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(cache_dir)], cwd=REPO, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, help="cache folder (default: a temporary one, removed after)")
    args = parser.parse_args()
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="jieba-cache-timing-"))
    try:
        # First use: a miss, which parses dict.txt and writes both files.
        miss_freq = run_child("freq-cache", cache_dir)
        miss_pos = run_child("pos-cache", cache_dir)
        samples: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for _ in range(args.runs):  # interleaved, so background load hits every mode alike
            for mode in MODES:
                samples[mode].append(run_child(mode, cache_dir))
        print(f"jieba default dictionary, fresh interpreter, median of {args.runs} (ms; wall / cpu):")
        for mode in MODES:
            wall = statistics.median(s["wall"] for s in samples[mode]) * 1e3
            cpu = statistics.median(s["cpu"] for s in samples[mode]) * 1e3
            print(f"  {mode:14s} {wall:7.0f} / {cpu:7.0f}")
        print(f"  first use (cache miss: parse + write): freq {miss_freq['wall'] * 1e3:.0f} ms, "
              f"pos {miss_pos['wall'] * 1e3:.0f} ms")
        sizes = {p.name: p.stat().st_size for p in sorted(cache_dir.glob("jieba-*.txt"))}
        print("  cache files: " + ", ".join(f"{name} ({size / 1e6:.1f} MB)" for name, size in sizes.items()))
    finally:
        if args.cache_dir is None:
            shutil.rmtree(cache_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
