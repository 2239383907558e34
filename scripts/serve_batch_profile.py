#!/usr/bin/env python3
"""Why does micro-batching lose on a small CPU? Profile one batched call vs the same texts one by one.

    nice -n 10 .venv/bin/python scripts/serve_batch_profile.py [--threads 2] [--rounds 5]
    nice -n 10 .venv/bin/python scripts/serve_batch_profile.py --fit     # the batcher's cost model
    nice -n 10 .venv/bin/python scripts/serve_batch_profile.py --proxy   # its token estimate

In-process, on the real default English bundle (the texts of scripts/serve_load_test.py). It wraps
``Bundle.run_attention`` (shape and seconds of every onnxruntime call) and
``DefaultProfileExtractor.prepare`` (segmentation + candidates) of the extractor's own bundle, and
times whole ``extract_keywords_batch`` calls; "other" is the rest (tokenisation, per-window scoring,
ranking). The scenarios are interleaved round by round so the machine's load hits them alike; each
figure is the minimum over rounds (the least disturbed by other jobs); cpu = process CPU time,
all threads. Also: ms per document against batch size for texts of one length
(does a shared forward pass pay at all?), and the padded tokens a mixed batch costs.
"as the server plans it" is the micro-batch split by keyatten_lite.serve.batcher.plan_groups on
estimate_tokens. --fit fits seconds ~ a + b*B*S + c*B*S^2 + d*B per call (B documents padded to S
tokens; the source of CALL_COST_TOKENS and QUADRATIC_TOKENS in keyatten_lite/serve/batcher.py);
--proxy measures estimate_tokens against the bundles' tokenizers (the source of TOKEN_WEIGHTS).
Prints a report and writes --json (default: none).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

from serve_load_test import load_texts  # noqa: E402


class Recorder:
    def __init__(self, extractor) -> None:
        self.extractor = extractor
        self.calls: list[tuple[tuple[int, int], float]] = []
        self.prepare_s = 0.0
        extractor.extract_keywords_batch(["Warm-up text for the recorder."], with_scores=True)
        bundle = extractor.bundle
        original_run = bundle.run_attention
        default = extractor._default_profile()
        original_prepare = default.prepare

        def run_attention(input_ids, attention_mask):
            t = time.perf_counter()
            out = original_run(input_ids, attention_mask)
            self.calls.append((tuple(input_ids.shape), time.perf_counter() - t))
            return out

        def prepare(text):
            t = time.perf_counter()
            out = original_prepare(text)
            self.prepare_s += time.perf_counter() - t
            return out

        bundle.run_attention = run_attention  # instance attributes shadow the methods
        default.prepare = prepare

    def measure(self, groups: list[list[str]]) -> dict:
        """One extract_keywords_batch call per group; totals over the groups."""
        self.calls = []
        self.prepare_s = 0.0
        t = time.perf_counter()
        c = time.process_time()
        for g in groups:
            self.extractor.extract_keywords_batch(g, with_scores=True)
        total = time.perf_counter() - t
        cpu = time.process_time() - c
        ort = sum(s for _, s in self.calls)
        return {
            "total_s": total,
            "cpu_s": cpu,
            "ort_s": ort,
            "prepare_s": self.prepare_s,
            "other_s": total - ort - self.prepare_s,
            "ort_calls": len(self.calls),
            "shapes": [list(shape) for shape, _ in self.calls],
            "padded_tokens": sum(b * s for (b, s), _ in self.calls),
        }


def token_lengths(extractor, texts: list[str]) -> list[int]:
    tok = extractor.bundle.tokenizer()
    return [len(e.ids) + 2 for e in tok.encode_batch(texts, add_special_tokens=False)]


def median_of(rows: list[dict]) -> dict:
    out = {}
    for k in ("total_s", "cpu_s", "ort_s", "prepare_s", "other_s"):
        out[k] = min(r[k] for r in rows)
    out["ort_calls"] = rows[0]["ort_calls"]
    out["shapes"] = rows[0]["shapes"]
    out["padded_tokens"] = rows[0]["padded_tokens"]
    return out


def planned(texts: list[str], language: str = "en") -> list[list[str]]:
    from keyatten_lite.serve.batcher import estimate_tokens, plan_groups

    return [[texts[i] for i in sorted(g)] for g in plan_groups([estimate_tokens(t, language) for t in texts], len(texts))]


def fit(args) -> int:
    """Least squares of one call's seconds on (1, B*S, B*S^2, B), groups of similar length."""
    import numpy as np

    from keyatten_lite import KeyAttenExtractor

    texts, _ = load_texts(200, 600)
    ex = KeyAttenExtractor(language="en", intra_op_threads=args.threads)
    rec = Recorder(ex)
    lengths = dict(zip(texts, token_lengths(ex, texts)))
    ordered = sorted(texts, key=lambda t: lengths[t])
    configs = [(b, q) for b in (1, 2, 4, 8, 16) for q in (0.05, 0.3, 0.55, 0.8, 0.97)]
    best: dict[tuple[int, float], dict] = {}
    rng = random.Random(args.seed)
    load0 = os.getloadavg()
    for _ in range(args.rounds):
        rng.shuffle(configs)
        for b, q in configs:
            first = int(q * (len(ordered) - b))
            m = rec.measure([ordered[first : first + b]])
            (shape,) = m["shapes"]
            if (b, q) not in best or m["cpu_s"] < best[(b, q)]["cpu_s"]:
                best[(b, q)] = {**m, "B": shape[0], "S": shape[1]}
    rows = list(best.values())
    X = np.array([[1.0, r["B"] * r["S"], r["B"] * r["S"] ** 2, r["B"]] for r in rows])
    out = {"threads": args.threads, "rounds": args.rounds, "loadavg_start": load0, "loadavg_end": os.getloadavg()}
    for name, key in (("wall", "total_s"), ("cpu", "cpu_s"), ("onnxruntime", "ort_s")):
        y = np.array([r[key] for r in rows])
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        err = float(np.median(np.abs(X @ coef - y) / y))
        a, b, c, d = (1000 * float(v) for v in coef)
        out[name] = {"a_ms": a, "b_ms_per_token": b, "c_ms_per_token2": c, "d_ms_per_doc": d, "median_rel_err": err}
        print(
            f"{name:>11}: a {a:.2f} ms/call, b {b:.4f} ms/padded token, c {c:.2e} ms/token^2, d {d:.2f} ms/doc "
            f"(median error {err:.0%}); a/b = {a / b:.0f} tokens, b/c = {b / c:.0f} tokens" if b > 0 and c > 0 else
            f"{name:>11}: fit not usable (a {a:.2f}, b {b:.4f}, c {c:.2e}): too noisy, rerun on a quieter machine"
        )
    for r in sorted(rows, key=lambda r: (r["S"], r["B"])):
        print(f"  B={r['B']:2d} S={r['S']:3d}: {1000 * r['total_s'] / r['B']:.1f} ms/doc wall, {1000 * r['cpu_s'] / r['B']:.1f} ms/doc CPU")
    print(f"load {load0[0]:.2f} -> {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def proxy(args) -> int:
    """How close estimate_tokens (and characters / 5) comes to the real token count."""
    import numpy as np

    from keyatten_lite.model.bundle import open_bundle
    from keyatten_lite.serve.batcher import estimate_tokens

    data = Path(os.environ.get("KEYATTEN_LITE_DATA", REPO.parent / "shared" / "data"))
    sets = (
        ("en", "minilm-l6-en", ["inspec.jsonl", "www.jsonl", "semeval2017.jsonl", "kpcrowd-dev.jsonl"]),
        ("zh", "e5-small-zh", ["csl_dev.jsonl", "csl_test.jsonl"]),
    )
    out = {}
    for language, bundle_name, files in sets:
        texts = []
        for name in files:
            path = data / language / name
            if not path.exists():
                continue
            with open(path, encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    if i >= 300:
                        break
                    t = json.loads(line).get("text")
                    if isinstance(t, str) and 0 < len(t) <= 2000:  # within one window
                        texts.append(t)
        if not texts:
            print(f"{language}: no texts under {data / language}")
            continue
        tok = open_bundle(bundle_name).tokenizer()
        real = np.array([len(e.ids) + 2 for e in tok.encode_batch(texts, add_special_tokens=False)], dtype=float)
        est = np.array([estimate_tokens(t, language)[0] for t in texts], dtype=float)
        per = 5.0 if language == "en" else 1.4
        chars = np.array([len(t) / per + 2 for t in texts])
        row = {}
        for name, values in (("estimate_tokens", est), (f"characters / {per:g}", chars)):
            rel = np.abs(values - real) / real
            row[name] = {"median": float(np.median(rel)), "p95": float(np.percentile(rel, 95)), "max": float(rel.max())}
            print(f"{language} ({bundle_name}, {len(texts)} texts) {name}: relative error median {np.median(rel):.1%}, "
                  f"95% within {np.percentile(rel, 95):.1%}, max {rel.max():.1%}")
        out[language] = row
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=16, help="documents per batch (default 16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fit", action="store_true", help="fit the per-call cost model instead")
    ap.add_argument("--proxy", action="store_true", help="measure the token estimate instead")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    if args.fit:
        return fit(args)
    if args.proxy:
        return proxy(args)

    from keyatten_lite import KeyAttenExtractor

    texts, source = load_texts(200, 600)
    ex = KeyAttenExtractor(language="en", intra_op_threads=args.threads)
    rec = Recorder(ex)
    lengths = dict(zip(texts, token_lengths(ex, texts)))
    rng = random.Random(args.seed)
    sample = rng.sample(texts, args.n)  # what a micro-batch gets: arrival order, mixed lengths
    by_len = sorted(sample, key=lambda t: lengths[t])
    q = max(1, args.n // 4)
    scenarios = {
        f"{args.n} single calls": [[t] for t in sample],
        f"1 call of {args.n} mixed": [sample],
        f"4 calls of {q}, length-sorted": [by_len[i : i + q] for i in range(0, args.n, q)],
        "as the server plans it": planned(sample),
        f"{args.n} copies of one text, 1 call": [[sample[0]] * args.n],
        f"{args.n} copies of one text, single calls": [[sample[0]] for _ in range(args.n)],
    }
    results: dict[str, list[dict]] = {k: [] for k in scenarios}
    load0 = os.getloadavg()
    for _ in range(args.rounds):
        for name, groups in scenarios.items():
            results[name].append(rec.measure(groups))
    med = {k: median_of(v) for k, v in results.items()}

    print(f"texts: {source}; sample of {args.n}: token lengths {sorted(lengths[t] for t in sample)}")
    print(f"threads {args.threads}, rounds {args.rounds}, load {load0[0]:.2f} -> {os.getloadavg()[0]:.2f}")
    print(f"{'scenario':<42} {'ms/doc':>7} {'cpu/doc':>7} {'ort ms':>8} {'prep ms':>8} {'other ms':>8} {'calls':>5} {'padded tok':>10}")
    for name, m in med.items():
        n_docs = sum(len(g) for g in scenarios[name])
        print(
            f"{name:<42} {1000 * m['total_s'] / n_docs:7.1f} {1000 * m['cpu_s'] / n_docs:7.1f} {1000 * m['ort_s']:8.0f} {1000 * m['prepare_s']:8.0f} "
            f"{1000 * m['other_s']:8.0f} {m['ort_calls']:5d} {m['padded_tokens']:10d}  {m['shapes'] if m['ort_calls'] <= 4 else ''}"
        )

    # Does a shared forward pass pay at all? ms/doc vs batch size, texts of (nearly) one length.
    curve = {}
    for target in (40, 100, 150):
        pool = sorted(texts, key=lambda t: abs(lengths[t] - target))[:16]
        row = {}
        for b in (1, 2, 4, 8, 16):
            groups = [pool[i : i + b] for i in range(0, 16, b)]
            runs = [rec.measure(groups) for _ in range(args.rounds)]
            m = median_of(runs)
            row[b] = {"ms_per_doc": 1000 * m["total_s"] / 16, "cpu_ms_per_doc": 1000 * m["cpu_s"] / 16, "ort_ms_per_doc": 1000 * m["ort_s"] / 16}
        curve[target] = {"lengths": sorted(lengths[t] for t in pool), "by_batch": row}
        print(
            f"~{target} tokens ({min(curve[target]['lengths'])}-{max(curve[target]['lengths'])}): ms/doc wall / cpu by batch size: "
            + ", ".join(f"{b}: {v['ms_per_doc']:.1f} / {v['cpu_ms_per_doc']:.1f}" for b, v in row.items())
        )
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "threads": args.threads, "rounds": args.rounds, "source": source,
            "sample_token_lengths": [lengths[t] for t in sample],
            "all_token_lengths": sorted(lengths.values()),
            "scenarios": med, "curve": curve,
            "loadavg_start": load0, "loadavg_end": os.getloadavg(),
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
