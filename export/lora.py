"""Merge a peft LoRA adapter into its base model (build time), so that the runtime sees a plain model.

keyatten 0.3.1 runs its rerankers with the adapter *unmerged* (``PeftModel.from_pretrained``, §8.1,
§9.1). keyatten-lite merges it once, in fp32, into the base weights (``merge_and_unload``) and saves an
ordinary Hugging Face directory, which ``keyatten-lite-export encoder`` then exports like any model
(encoder, or causal at the read layer). :func:`merged_parity` measures what merging changes: the
head-mean attention of the merged model against base + unmerged adapter, max abs difference over the
valid positions of some probe texts.

    python -m keyatten_lite_export merge-lora BASE ADAPTER -o MERGED_DIR

The adapter is read with peft's own loader (safetensors weights and adapter_config.json); torch,
transformers and peft are imported inside the functions.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from . import ExportError

__all__ = ["load_model", "merge_lora", "merged_parity"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "merges.txt", "vocab.json", "added_tokens.json", "sentencepiece.bpe.model")


def load_model(base: str | os.PathLike, adapter: str | os.PathLike | None = None):
    """The base model in fp32 with eager attention, and the peft adapter on it, unmerged (when given)."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(base), attn_implementation="eager", dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    return model.eval()


def merge_lora(base: str | os.PathLike, adapter: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """``base`` + ``adapter`` merged in fp32 into ``out_dir`` (weights, config and the base's tokenizer files)."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not empty (pass overwrite=True / --force)")
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise ExportError(f"{adapter} is not a peft adapter directory (no adapter_config.json)")
    model = load_model(base, adapter).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    # save_pretrained records the loaded class (AutoModel gives e.g. "Qwen3Model"); keep the base's
    # architectures, which the exporter's causal detection reads (§2.4).
    base_config = Path(base) / "config.json"
    if base_config.is_file():
        import json

        ours = json.loads((out / "config.json").read_text(encoding="utf-8"))
        theirs = json.loads(base_config.read_text(encoding="utf-8"))
        if "architectures" in theirs:
            ours["architectures"] = theirs["architectures"]
            (out / "config.json").write_text(json.dumps(ours, indent=2), encoding="utf-8")
    copied = 0
    for name in TOKENIZER_FILES:
        source = Path(base) / name
        if source.is_file():
            shutil.copyfile(source, out / name)
            copied += 1
    if not copied:
        raise ExportError(f"{base} has no tokenizer files to copy next to the merged weights")
    return out


def merged_parity(base, adapter, merged, texts: Sequence[str], layers: Sequence[int]) -> float:
    """Max |attention(merged) - attention(base + unmerged adapter)| over ``layers`` and ``texts``."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    reference, candidate = load_model(base, adapter), load_model(merged, None)
    worst = 0.0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")
            a = reference(**ids, output_attentions=True).attentions
            b = candidate(**ids, output_attentions=True).attentions
            for layer in layers:
                diff = (a[layer].mean(dim=1) - b[layer].mean(dim=1)).abs().max().item()
                worst = max(worst, float(diff) if np.isfinite(diff) else float("inf"))
    return worst
