"""The trimmed Chinese/English bundle against the full multilingual one, on real documents.

For every document of the data (or --per-file N of each file): the pieces of the trimmed tokenizer
equal the full tokenizer's (ids mapped through the keep list), and the attention of every layer,
first window (max_length tokens), agrees (max abs difference). Both bundles must be built
(`keyatten-lite models build --name e5-small-zh --name e5-small-multi`). Writes a JSON report.

    python scripts/trim_parity.py --per-file 200 -o docs/results/vocabulary-parity.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from keyatten_lite.model.bundle import open_bundle  # noqa: E402
from keyatten_lite.state.atomic import atomic_write_bytes  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--per-file", type=int, default=None, help="documents per file (default: all)")
    parser.add_argument("--variant", default="fp32")
    parser.add_argument("-o", "--out", default=None)
    args = parser.parse_args(argv)

    full = open_bundle("e5-small-multi", variant=args.variant, intra_op_threads=2)
    trimmed = open_bundle("e5-small-zh", variant=args.variant, intra_op_threads=2)
    full_tok, trim_tok = full.tokenizer(), trimmed.tokenizer()
    # The trimmed vocabulary keeps the full one's order, so its pieces map back by string.
    full_vocab = full_tok.get_vocab()
    back = {new: full_vocab[piece] for piece, new in trim_tok.get_vocab().items()}
    limit = full.max_length
    report: dict = {"variant": args.variant, "max_length": limit, "files": {}}
    started = time.time()
    for path in sorted(Path(args.data).glob("*/*.jsonl")):
        texts = [json.loads(line)["text"] for line in path.open(encoding="utf-8")][: args.per_file]
        same_pieces = 0
        worst = 0.0
        for text in texts:
            a = full_tok.encode(text)
            b = trim_tok.encode(text)
            same = [back[i] for i in b.ids] == a.ids and a.offsets == b.offsets
            same_pieces += same
            if not same:
                continue
            ids_a = np.asarray([a.ids[: limit - 1] + a.ids[-1:]], dtype=np.int64)
            ids_b = np.asarray([b.ids[: limit - 1] + b.ids[-1:]], dtype=np.int64)
            mask = np.ones_like(ids_a)
            diff = np.abs(full.run_attention(ids_a, mask) - trimmed.run_attention(ids_b, mask)).max()
            worst = max(worst, float(diff))
        report["files"][path.relative_to(args.data).as_posix()] = {
            "documents": len(texts), "identical_pieces": same_pieces, "attention_max_abs_diff": worst,
        }
        print(path.name, report["files"][path.relative_to(args.data).as_posix()], flush=True)
    report["seconds"] = round(time.time() - started, 1)
    report["attention_max_abs_diff"] = max(f["attention_max_abs_diff"] for f in report["files"].values())
    if args.out:
        atomic_write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode("utf-8"))
    print(json.dumps({k: v for k, v in report.items() if k != "files"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
