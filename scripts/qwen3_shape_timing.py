"""Time the Qwen3-Embedding-0.6B route on this machine without downloading it (docs/causal.md).

Builds a random model with Qwen3-Embedding-0.6B's shape (random weights cost the same time as trained
ones), exports it at the recommended layer 21 in fp32 and int8 with keyatten-lite-export, and times one
document of about 128 and 512 tokens through the graph and through ``KeyAttenExtractor``.

    python scripts/qwen3_shape_timing.py [--work DIR] [--threads 2]

Needs the export extra, about 9 GB of RAM and 5 GB of disk; prints JSON and writes DIR/timing.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "runtime_tests"))

QWEN3_06B_SHAPE = dict(
    vocab_size=151669, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
    num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=32768,
    rope_theta=1000000.0, tie_word_embeddings=True,
)


def make_model(source: Path) -> int:
    """A random Qwen3-0.6B-shaped embedding checkpoint with a small byte-level tokenizer; parameters."""
    import torch
    from tiny_models import _write_decoder_tokenizer
    from transformers import Qwen3Config, Qwen3ForCausalLM

    source.mkdir(parents=True, exist_ok=True)
    tokenizer = _write_decoder_tokenizer(
        source, append_eos="<|endoftext|>", eos="<|endoftext|>", pad="<|endoftext|>", padding_side="left"
    )
    eos = tokenizer.token_to_id("<|endoftext|>")
    config = Qwen3Config(eos_token_id=eos, pad_token_id=eos, bos_token_id=None, **QWEN3_06B_SHAPE)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config)
    model.model.save_pretrained(source)  # embedding repos hold the bare model
    path = source / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["architectures"] = ["Qwen3ForCausalLM"]  # what causal detection reads (§2.4)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return sum(p.numel() for p in model.model.parameters())


def text_of_tokens(tokenizer, words: list[str], target: int) -> str:
    """The longest prefix of the repeated word list that stays within ``target`` tokens."""
    text = ""
    for i in range(100_000):
        candidate = f"{text} {words[i % len(words)]}".strip()
        if len(tokenizer.encode(candidate).ids) > target:
            break
        text = candidate
    return text


def time_bundle(bundle_dir: Path, threads: int, repeats: int = 5) -> dict:
    import numpy as np
    from tiny_models import DECODER_CORPUS

    from keyatten_lite import KeyAttenExtractor
    from keyatten_lite.model.bundle import open_bundle

    words = " ".join(DECODER_CORPUS).split()
    out: dict = {}
    for variant in ("fp32", "int8"):
        started = time.perf_counter()
        bundle = open_bundle(bundle_dir, variant=variant, intra_op_threads=threads)
        tokenizer = bundle.tokenizer()
        extractor = KeyAttenExtractor(model=str(bundle_dir), language="en", variant=variant,
                                      intra_op_threads=threads, profile="compat")
        for target in (128, 512):
            text = text_of_tokens(tokenizer, words, target)
            ids = np.asarray([tokenizer.encode(text).ids], dtype=np.int64)
            mask = np.ones_like(ids)
            bundle.run_attention(ids, mask)  # warm-up (and, the first time, session creation)
            if target == 128:
                out[f"{variant}_open_and_first_run_s"] = time.perf_counter() - started
            graph, extract = [], []
            for _ in range(repeats):
                t = time.perf_counter()
                bundle.run_attention(ids, mask)
                graph.append(time.perf_counter() - t)
            extractor.extract_keywords(text, method="fusion_attn", top_k=10)
            for _ in range(repeats):
                t = time.perf_counter()
                extractor.extract_keywords(text, method="fusion_attn", top_k=10)
                extract.append(time.perf_counter() - t)
            out[f"{variant}_{target}"] = {
                "tokens": int(ids.shape[1]),
                "graph_ms_median": 1000 * statistics.median(graph),
                "extract_ms_median": 1000 * statistics.median(extract),
            }
            print(variant, target, out[f"{variant}_{target}"], file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", help="working directory (default: a new temporary one)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layer", type=int, default=21)
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="qwen3-shape-"))
    source, bundle = work / "src", work / "bundle"
    report: dict = {"work": str(work), "threads": args.threads, "layer": args.layer}
    if not (source / "config.json").exists():
        report["parameters"] = make_model(source)
    if not (bundle / "bundle.json").exists():
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "keyatten_lite_export", "encoder", str(source), "-o", str(bundle),
                        "--name", "qwen3-0.6b-shape", "--layers", str(args.layer), "--int8"], check=True)
        report["export_wall_s"] = time.perf_counter() - started
    manifest = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
    report["files_bytes"] = {f: (bundle / f).stat().st_size for f in ("model.onnx", "model.int8.onnx")}
    report["parity"] = manifest.get("parity")
    report["export_timings"] = manifest.get("timings")
    report["timing"] = time_bundle(bundle, args.threads)
    (work / "timing.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
