"""One markdown table of macro F1@5/10/15 per system and test set, from `keyatten-lite eval` JSON files.

    python scripts/quality_summary.py docs/results/test-*.json > docs/results/test-summary.md

Also prints, per test set, the best default-profile system against every other system with the paired
bootstrap interval that the eval run recorded against its reference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def summary(paths: list[str]) -> str:
    runs = [(Path(p).stem.removeprefix("test-"), json.loads(Path(p).read_text(encoding="utf-8"))) for p in paths]
    labels: list[str] = []
    for _, run in runs:
        for system in run["systems"]:
            if "scores" in system and system["label"] not in labels:
                labels.append(system["label"])
    header = "| system | " + " | ".join(f"{name} ({run['dataset']['n_documents']} docs)" for name, run in runs) + " |"
    lines = [
        "Macro F1@5 / F1@10 / F1@15 per test set (blank: not run on that set).",
        "",
        header,
        "|---|" + "---|" * len(runs),
    ]
    for label in labels:
        cells = []
        for _, run in runs:
            entry = next((s for s in run["systems"] if s.get("label") == label and "scores" in s), None)
            cells.append("" if entry is None else " / ".join(f"{entry['scores'][k]['macro_f1']:.3f}" for k in ("5", "10", "15")))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Paired bootstrap at F1@10 against each run's reference (95 % CI):", ""]
    for name, run in runs:
        rows = [c for c in run.get("comparisons", []) if c["k"] == 10]
        if rows:
            lines.append(f"- {name} (reference `{rows[0]['reference']}`): " + "; ".join(
                f"{c['label']} {c['difference']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]" for c in rows))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.stdout.write(summary(sys.argv[1:]))
