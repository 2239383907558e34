"""Summarise docs/results/quality-{dev,test}-*.json (issue 14) into one markdown table.

    python scripts/default_quality_summary.py > docs/results/quality-summary.md

Each file is a `keyatten-lite eval` result (reference: the default method of the default profile) or a
`scripts/tune_default.py report` result (the same fields, for sets whose default-profile passes were
read from cached reads). Rows: the default method, compat, YAKE, TF-IDF; cells F1@5/10/15 and the
paired-bootstrap difference of the default method minus that system at F1@10 with its 95 % interval.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
ORDER = ["dev-www", "dev-kpcrowd", "dev-inspec", "dev-semeval2017", "dev-semeval2010", "dev-csl",
         "test-inspec", "test-semeval2017", "test-semeval2010", "test-csl"]


def load(path: Path):
    data = json.loads(path.read_text(encoding="utf-8"))
    if "comparisons" in data:  # keyatten-lite eval
        scores = {s["label"]: {k: v["macro_f1"] for k, v in s["scores"].items()} for s in data["systems"]}
        ref = data["systems"][0]["label"]
        boot = {}
        for c in data["comparisons"]:
            if c["metric"] == "macro_f1":  # other minus reference: flip to reference minus other
                boot.setdefault(c["label"], {})[str(c["k"])] = (-c["difference"], -c["ci_high"], -c["ci_low"])
        n = len(data["config"]["document_ids"])
    else:  # tune_default.py report
        scores, ref, n = data["systems"], data["reference"], data["n_docs"]
        boot = {name: {k: tuple(v) for k, v in per.items()} for name, per in data["bootstrap"].items()}
    return scores, ref, boot, n


def main() -> int:
    out = ["| set | docs | system | F1@5 | F1@10 | F1@15 | default − system @5 / @10 / @15 [95 % CI] |", "|---|---|---|---|---|---|---|"]
    for name in ORDER:
        path = RESULTS / f"quality-{name}.json"
        if not path.is_file():
            out.append(f"| {name} | – | not run | | | | |")
            continue
        scores, ref, boot, n = load(path)
        for system, s in scores.items():
            cells = " | ".join(f"{s[k]:.3f}" for k in ("5", "10", "15"))
            if system == ref:
                diff = "(reference)"
            else:
                diff = "; ".join(f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for d, lo, hi in (boot[system][k] for k in ("5", "10", "15")))
            out.append(f"| {name} | {n} | {system} | {cells} | {diff} |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
