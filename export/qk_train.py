"""The QK-LoRA extractor's adapter (keyatten 0.3.1 §9): train it, and build its bundle.

0.3.1 scores each token by the last token's query against that token's key at one layer and says its
adapter is trained contrastively on the Q/K projections; it ships no training code. Here (build time:
torch, transformers, peft):

1. Candidates per training document are the runtime's own (:func:`keyatten_lite.extractors.qk_lora
   .word_candidate_spans`, word mode); a candidate is positive when it equals a gold keyword (lower
   case, whitespace removed).
2. LoRA (rank ``rank``) on the query and key projections of the read layer only ("auto":
   floor(0.75 L), §9.2), so the hidden states entering that layer are fixed: they are computed once
   per document with the frozen lower layers, and each step costs two small matrix products.
3. Loss (listwise): cross-entropy between softmax(score / temperature) over the candidates and the
   uniform distribution over the positives. score = ``candidate_token_weights @ softplus(token
   scores)``: the runtime's character mean of the best covering token's score (tokens do not overlap
   for the default tokenizers) with its floor at 0 made smooth. On the English dev set (Inspec dev 300,
   F1@10, zero-shot .135), without the floor training drifts to scores the runtime's floor flattens
   (temperature 1, lr 3e-4: .173 after one epoch, .128 after three); a hard floor gives tokens below
   zero no gradient. With softplus, at the recipes' settings (temperature 1, lr 3e-4, 3 epochs):
   English .180, Chinese (CSL dev 800-999, zero-shot .126) .198; temperature 0.1 made English worse
   than zero-shot.
4. The adapter is merged in fp32 and exported as a QK bundle (:func:`.qk.export_qk_bundle`, parity of
   the graph against base + the unmerged adapter).

Recipes (``models/qk-*.json``, kind ``qk``) name the backbone recipe, the training documents and the
settings; the adapter is shipped in ``models/adapters/<name>/`` and retrained and compared
(:func:`.csa.compare_with_shipped`: weights, else the training trajectory) when the data is present,
as for the CSA rerankers.

    python -m keyatten_lite_export train-qk qk-e5-small-zh -o DIR   # adapter + train_log.json
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import ExportError
from .csa import (
    adapter_for_build,
    positive_labels,
    save_trained_adapter,
    shipped_adapter_dir,
    trained_recipe_source,
)

__all__ = [
    "QK_TRAINING_KEYS",
    "build_qk_bundle",
    "candidate_token_weights",
    "qk_recipe_source",
    "train_qk_adapter",
]

QK_TRAINING_KEYS = ("documents", "epochs", "lr", "rank", "temperature", "seed", "torch_threads")


def qk_recipe_source(recipe: Mapping[str, Any]) -> dict:
    """The QK recipe with its backbone recipe's source fields (what ``sources.prepare`` reads)."""
    return trained_recipe_source(recipe, "qk", QK_TRAINING_KEYS)


def candidate_token_weights(
    offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]], prefix_chars: int, text_chars: int
) -> np.ndarray:
    """``[candidates, tokens]``: the share of each candidate span's characters that each token covers.

    With non-overlapping token offsets, ``weights @ max(token_scores, 0)`` is the runtime's candidate
    score (:func:`keyatten_lite.extractors.qk_lora.char_span_means` of ``char_scores_from_tokens``):
    tokens in the prefix or with empty offsets cover nothing; where tokens overlap, the later one owns
    the character.
    """
    owner = np.full(text_chars, -1, dtype=np.int64)
    for index, (start, end) in enumerate(offsets):
        if end <= start or start < prefix_chars:
            continue
        begin, stop = max(0, start - prefix_chars), min(text_chars, end - prefix_chars)
        if stop > begin:
            owner[begin:stop] = index
    weights = np.zeros((len(spans), len(offsets)), dtype=np.float32)
    for row, (start, end) in enumerate(spans):
        if end <= start:
            continue
        covered = owner[start:end]
        covered = covered[covered >= 0]
        np.add.at(weights[row], covered, np.float32(1.0 / (end - start)))
    return weights


def _read_layer_site(model, layer: int):
    from .qk import decoder_layers, qk_layer_modules

    layers = decoder_layers(model)
    site = qk_layer_modules(layers[layer]) if layers is not None and 0 <= layer < len(layers) else None
    if site is None:
        raise ExportError(f"layer {layer} of {type(model).__name__} has no query/key projections")
    return site


def train_qk_adapter(
    recipe: Mapping[str, Any],
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    docs: Sequence[Mapping[str, Any]],
    say: Callable[[str], None] = lambda message: None,
) -> dict:
    """Train the recipe's adapter on ``docs`` from the encoder in ``model_dir``; the peft adapter goes to
    ``out_dir`` (adapter_config.json, adapter_model.safetensors) with ``train_log.json``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer
    from transformers import AutoModel

    from keyatten_lite.extractors.qk_lora import DEFAULT_MAX_LENGTH, word_candidate_spans
    from keyatten_lite.extractors.segment_attention import resolve_auto_layer
    from keyatten_lite.pipeline.resources import DEFAULT_ZH_CAUSAL_INSTRUCTION_PREFIX

    settings = recipe["training"]
    language = recipe["language"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(int(settings["seed"]))
    torch.set_num_threads(int(settings["torch_threads"]))
    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager", dtype=torch.float32).eval()
    if not hasattr(model, "encoder"):
        raise ExportError(f"{recipe['name']}: QK training supports encoders (BERT-like); {type(model).__name__} is not one")
    n_layers = model.config.num_hidden_layers
    layer = resolve_auto_layer(n_layers, list(range(n_layers)))
    model.encoder.layer = model.encoder.layer[: layer + 1]  # nothing above the read layer matters
    model.config.num_hidden_layers = layer + 1
    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=min(DEFAULT_MAX_LENGTH, int(recipe.get("max_length") or DEFAULT_MAX_LENGTH)))
    prefix = DEFAULT_ZH_CAUSAL_INSTRUCTION_PREFIX if language == "zh" else ""

    # The hidden states entering the read layer: fixed, since only that layer's q/k are tuned.
    started = time.perf_counter()
    examples: list[tuple[Any, Any, Any]] = []
    recalls: list[float] = []
    for doc in docs:
        text = str(doc.get("text") or "")
        gold = doc.get("keywords") or []
        candidates, _, spans = word_candidate_spans(text, language) if text.strip() else ([], [], [])
        labels = positive_labels(candidates, gold)
        wanted = {"".join(str(k).lower().split()) for k in gold}
        if wanted:
            recalls.append(len({"".join(c.lower().split()) for c in candidates} & wanted) / len(wanted))
        if len(candidates) < 2 or not any(labels):
            continue
        encoding = tokenizer.encode(prefix + text)
        weights = candidate_token_weights(encoding.offsets, spans, len(prefix), len(text))
        ids = torch.tensor([encoding.ids])
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states[layer][0]
        examples.append((hidden, torch.from_numpy(weights), torch.tensor(labels, dtype=torch.float32)))
    log: dict[str, Any] = {
        "documents": len(docs),
        "docs_with_a_positive": len(examples),
        # The ceiling the extractor works under: the share of gold keywords among the word candidates.
        "candidate_recall_of_gold": float(np.mean(recalls)) if recalls else 0.0,
        "feature_seconds": round(time.perf_counter() - started, 1),
    }
    say(f"{recipe['name']}: {len(examples)} of {len(docs)} documents have a positive candidate; "
        f"candidate recall of gold {log['candidate_recall_of_gold']:.3f}")
    if not examples:
        raise ExportError(f"{recipe['name']}: no training document has a gold keyword among its candidates")

    rank = int(settings["rank"])
    targets = [f"encoder.layer.{layer}.attention.self.{m}" for m in ("query", "key")]
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets))
    site = _read_layer_site(peft_model.base_model.model, layer)
    head_dim = site["head_dim"]
    scale = 1.0 / math.sqrt(head_dim)

    def token_scores(hidden):
        """The runtime's ``qk_token_scores`` (encoders: no GQA, no norm, no RoPE), the last token's query."""
        query = site["q"](hidden[-1:]).view(-1, head_dim)  # [H, D]
        keys = site["k"](hidden).view(hidden.shape[0], -1, head_dim)  # [S, H, D]
        return (keys * query[None]).sum(-1).mean(-1) * scale  # [S]

    optimizer = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=float(settings["lr"]))
    temperature = float(settings["temperature"])
    rng = random.Random(int(settings["seed"]))
    losses: list[float] = []
    started = time.perf_counter()
    peft_model.train()
    for epoch in range(int(settings["epochs"])):
        order = list(range(len(examples)))
        rng.shuffle(order)
        for i in order:
            hidden, weights, labels = examples[i]
            scores = weights @ torch.nn.functional.softplus(token_scores(hidden))
            loss = -((labels / labels.sum()) * torch.log_softmax(scores / temperature, dim=0)).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        say(f"{recipe['name']}: epoch {epoch} mean loss {np.mean(losses[-len(order):]):.4f} "
            f"({time.perf_counter() - started:.0f} s)")
    log.update({
        "read_layer": layer,
        "steps": len(losses),
        "train_seconds": round(time.perf_counter() - started, 1),
        "loss_first_100": float(np.mean(losses[:100])),
        "loss_last_100": float(np.mean(losses[-100:])),
    })
    return save_trained_adapter(peft_model, out, recipe["backbone"], log)


def build_qk_bundle(
    recipe: Mapping[str, Any],
    home: str | os.PathLike | None = None,
    *,
    force: bool = False,
    data: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train (with the data) or take the shipped adapter, merge it, export ``<home>/bundles/<name>``."""
    from . import manifest as manifest_mod
    from .qk import export_qk_bundle
    from .recipe_build import build_recipe

    say = log or (lambda message: None)
    full = qk_recipe_source(recipe)
    name = full["name"]
    shipped = shipped_adapter_dir(name)
    if (shipped / "adapter_model.safetensors").is_file():  # a new shipped adapter means a rebuild
        full["shipped_adapter_sha256"] = manifest_mod.sha256_file(shipped / "adapter_model.safetensors")

    def export(info: dict, target: Path, kwargs: dict) -> dict:
        work = Path(tempfile.mkdtemp(prefix=f".qk-{name}-", dir=target.parent))
        try:
            adapter, origin = adapter_for_build(
                name, full, data, work,
                lambda docs, out: train_qk_adapter(full, info["model_dir"], out, docs=docs, say=say), say,
            )
            extra = dict(kwargs["extra_manifest"])
            extra["qk"] = {"adapter": "merged in fp32 (peft merge_and_unload)", "trained": origin, "backbone": full["backbone"]}
            manifest = export_qk_bundle(
                info["model_dir"], target, adapter=adapter, name=name, layer="auto",
                max_length=kwargs.get("max_length"), overwrite=True, extra_manifest=extra,
            )
            fp32 = manifest["parity"]["fp32"]
            say(f"{name}: built, layer {manifest['qk']['layer']}, fp32 parity {fp32['max_abs_diff']:.2e}, "
                f"vs the unmerged adapter {fp32['reference']['max_abs_diff']:.2e} ({target})")
            return {"adapter": origin, "parity": manifest["parity"]}
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return build_recipe(full, home, export, force=force, say=say, preparing="the backbone")
