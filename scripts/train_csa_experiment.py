#!/usr/bin/env python3
"""First training experiment for the CSA reranker (issue 15, item 3): LoRA on the query/key projections of
the upper layers of the default encoder, a listwise loss on the candidates' received attention.

    .venv/bin/python scripts/train_csa_experiment.py --language zh --train 0:800 --out /tmp/csa-zh

Build time only (torch, transformers, peft). Steps:

1. The recipe's source model (``models/<bundle>.json``, prepared as `models build` does); per training
   document the runtime's candidates (``CandidateSegmentAttentionExtractor.candidates``: up to
   ``--max-candidates`` BIO ``high_recall`` spans, plus ``--word-candidates`` of the default extractor's
   keywords); a candidate is positive when it equals a gold keyword (lower case, whitespace removed).
2. Each document's prompt (keyatten_lite.extractors.segment_attention.build_segment_text, the candidates in
   a seeded random order, the document shortened as the runtime does) goes through the encoder truncated
   after the read layer ("auto": floor(0.75 L)). Only layers >= ``--first-lora-layer`` carry LoRA, so the
   lower layers run without gradients.
3. Loss: cross-entropy between softmax(score / T) over the candidates and the uniform distribution over the
   positive ones, score = the candidate's mean received attention at the read layer (head mean, summed over
   the query rows), exactly what the runtime ranks by.
4. The adapter is saved (peft), merged (export/lora.py) and exported as an attention bundle of the read
   layer, which `CandidateSegmentAttentionExtractor(model=...)` or `eval -s lite-csa:<dir>` reads.

Nothing here depends on a dataset's name: ``--data-file`` and the id range pick the training documents.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def norm(text: str) -> str:
    return "".join(text.lower().split())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--language", default="zh", choices=["zh", "en"])
    ap.add_argument("--data-file", default=None, help="JSONL with id/text/keywords (default: zh/csl_dev.jsonl or en/inspec.jsonl)")
    ap.add_argument("--train", default="0:800", help="document index range START:END of the file")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--first-lora-layer", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-candidates", type=int, default=30, help="BIO candidates per document")
    ap.add_argument("--word-candidates", type=int, default=0, help="plus the default extractor's top N keywords")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer
    from transformers import AutoModel

    from keyatten_lite.extractors.segment_attention import (
        DEFAULT_INSTRUCTIONS,
        CandidateSegmentAttentionExtractor,
        build_segment_text,
        candidate_token_spans,
        resolve_auto_layer,
    )
    from keyatten_lite.model.registry import default_bundle_for
    from keyatten_lite_export import sources
    from keyatten_lite_export.encoder import export_bundle
    from keyatten_lite_export.lora import merge_lora

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_file = Path(args.data_file or REPO.parent / "shared" / "data" / ("zh/csl_dev.jsonl" if args.language == "zh" else "en/inspec.jsonl"))
    start, end = (int(x) for x in args.train.split(":"))
    docs = [json.loads(line) for line in open(data_file, encoding="utf-8")][start:end]
    bundle_name = default_bundle_for(args.language)
    log = {"args": vars(args), "data_file": str(data_file), "documents": len(docs)}

    t = time.perf_counter()
    runtime = CandidateSegmentAttentionExtractor(
        bundle_name, language=args.language, max_candidates=args.max_candidates, word_candidates=args.word_candidates
    )  # the runtime's own candidates and document fitting
    candidates = [runtime.candidates(d["text"]) for d in docs]
    log["candidate_seconds"] = round(time.perf_counter() - t, 1)
    gold = [{norm(k) for k in d["keywords"]} for d in docs]
    labels = [[norm(c) in g for c in cands] for cands, g in zip(candidates, gold)]
    usable = [i for i, lab in enumerate(labels) if any(lab) and len(lab) >= 2]
    log["docs_with_a_positive"] = len(usable)
    log["candidate_recall_of_gold"] = float(np.mean([len({norm(c) for c in cands} & g) / max(1, len(g)) for cands, g in zip(candidates, gold)]))
    print(json.dumps(log), flush=True)

    work = Path(tempfile.mkdtemp(prefix="csa-src-"))
    info = sources.prepare(sources.load_recipe(bundle_name), work)
    model_dir = Path(info["model_dir"])
    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager", dtype=torch.float32)
    n_layers = model.config.num_hidden_layers
    layer = resolve_auto_layer(n_layers, list(range(n_layers)))
    model.encoder.layer = model.encoder.layer[: layer + 1]  # nothing above the read layer matters
    model.config.num_hidden_layers = layer + 1
    targets = [f"encoder.layer.{i}.attention.self.{m}" for i in range(args.first_lora_layer, layer + 1) for m in ("query", "key")]
    peft_model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules=targets))
    optimizer = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=args.lr)

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=runtime.max_length)
    instruction = DEFAULT_INSTRUCTIONS[args.language]
    rng = random.Random(args.seed)
    losses = []
    t = time.perf_counter()
    peft_model.train()
    for epoch in range(args.epochs):
        order = list(usable)
        rng.shuffle(order)
        for step, i in enumerate(order):
            pairs = list(zip(candidates[i], labels[i]))
            rng.shuffle(pairs)
            cands = [c for c, _ in pairs]
            document = runtime._fit_document(docs[i]["text"], cands)
            prompt = build_segment_text(instruction, document, cands, language=args.language)
            enc = tokenizer.encode(prompt.text)
            spans = candidate_token_spans(enc.offsets, prompt.spans)
            keep = [(s, lab) for s, (_, lab) in zip(spans, pairs) if s is not None]
            if len(keep) < 2 or not any(lab for _, lab in keep):
                continue
            ids = torch.tensor([enc.ids])
            outputs = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
            received = outputs.attentions[layer][0].mean(dim=0).sum(dim=0)  # [S]
            scores = torch.stack([received[a:b].mean() for (a, b), _ in keep])
            target = torch.tensor([float(lab) for _, lab in keep])
            target = target / target.sum()
            loss = -(target * torch.log_softmax(scores / args.temperature, dim=0)).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
            if step % 100 == 0:
                print(f"epoch {epoch} step {step}/{len(order)} mean loss {np.mean(losses[-100:]):.4f} "
                      f"({time.perf_counter() - t:.0f} s)", flush=True)
    log["train_seconds"] = round(time.perf_counter() - t, 1)
    log["loss_first_100"] = float(np.mean(losses[:100]))
    log["loss_last_100"] = float(np.mean(losses[-100:]))
    peft_model.save_pretrained(str(out / "adapter"))
    log["adapter_bytes"] = sum(p.stat().st_size for p in (out / "adapter").iterdir())

    # The merge reads the full base (all layers); the adapter only touches layers up to the read layer.
    merged = merge_lora(model_dir, out / "adapter", out / "merged", overwrite=True)
    manifest = export_bundle(merged, out / "bundle", name=f"csa-{bundle_name}", layers=[layer], overwrite=True)
    log["bundle"] = str(out / "bundle")
    log["export_parity"] = manifest["parity"]["fp32"]["max_abs_diff"]
    (out / "train_log.json").write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(log), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
