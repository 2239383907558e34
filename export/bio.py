"""Train a BIO boundary tagger on a frozen encoder and export it as a BIO bundle (build time).

Model (keyatten 0.3.1 §7.1): the recipe's encoder, frozen; ``Linear(hidden, 3)`` emissions over the
last hidden state (tags B=0, I=1, O=2); a linear-chain CRF (start, end, transitions from -> to) with
no hard constraints. Only the head and the CRF are trained: the last hidden states of the training
documents are computed once (max_length 512, one window; on onnxruntime from a scratch export of the
backbone, or on torch) and cached in memory, then Adam runs a few epochs on one torch thread.

Labels: the gold keywords found in the text (case-insensitive; whitespace inside a keyword matches any
whitespace run; an ASCII letter or digit at a keyword's edge must not continue a word), every
occurrence, longer keywords first, no overlaps; the tokens overlapping a span get B then I; specials
and padding get O (0.3.1 decodes with [CLS]/[SEP] inside the sequence).

Export: one graph, inputs ``input_ids``/``attention_mask``, outputs ``attentions``
[n_layers, B, S, S] (head-mean attention of every layer, as in the attention bundles) and
``emissions`` [B, S, 3]; the CRF scores go to bundle.json under ``"bio"`` as plain JSON, with the
training record. No pickle: the head weights go from training straight into the traced graph.

    python -m keyatten_lite_export.bio train --recipe bio-minilm-en          # figures only
    python -m keyatten_lite_export.bio build --recipe bio-minilm-en [--home H] [--force]

torch and transformers are imported inside functions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from keyatten_lite.extractors.bio_tagger import BIO_KIND
from keyatten_lite.scoring.bio_decode import TAG_B, TAG_I, TAG_O, TAGS, bio_tags_to_spans, dedup_lower, spans_to_text

from . import ExportError, ParityError
from . import manifest as manifest_mod
from . import verify

__all__ = [
    "EMISSIONS_OUTPUT",
    "keyword_pattern",
    "keyword_char_spans",
    "token_labels",
    "gold_present",
    "span_prf",
    "load_training_split",
    "crf_log_likelihood",
    "crf_viterbi",
    "BIOHead",
    "encode_documents",
    "train_head",
    "train_bio",
    "export_bio_bundle",
    "build_bio_bundle",
    "main",
]

EMISSIONS_OUTPUT = "emissions"
REPO_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
_WORD_EDGE = "A-Za-z0-9"

# ---------------------------------------------------------------------------------------------
# Labels (pure)


def keyword_pattern(keyword: str) -> re.Pattern[str] | None:
    """Case-insensitive pattern of a keyword; whitespace matches any run; ASCII word edges respected."""
    parts = keyword.split()
    if not parts:
        return None
    body = r"\s+".join(re.escape(part) for part in parts)
    stripped = " ".join(parts)
    if re.match(f"[{_WORD_EDGE}]", stripped[0]):
        body = f"(?<![{_WORD_EDGE}])" + body
    if re.match(f"[{_WORD_EDGE}]", stripped[-1]):
        body += f"(?![{_WORD_EDGE}])"
    return re.compile(body, re.IGNORECASE)


def keyword_char_spans(text: str, keywords: Sequence[str]) -> list[tuple[int, int]]:
    """Non-overlapping character spans of the keywords in ``text``, longer keywords placed first."""
    found = []
    for keyword in dict.fromkeys(k for k in keywords if isinstance(k, str)):
        pattern = keyword_pattern(keyword)
        if pattern is not None:
            found.extend((m.start(), m.end()) for m in pattern.finditer(text) if m.end() > m.start())
    found.sort(key=lambda span: (-(span[1] - span[0]), span[0]))
    taken: list[tuple[int, int]] = []
    for start, end in found:
        if all(end <= a or start >= b for a, b in taken):
            taken.append((start, end))
    return sorted(taken)


def token_labels(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """B/I/O per token: the tokens overlapping a character span get B then I; empty-offset tokens O."""
    labels = np.full(len(offsets), TAG_O, dtype=np.int64)
    for start, end in spans:
        inside = [
            i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start
        ]
        for rank, i in enumerate(inside):
            labels[i] = TAG_B if rank == 0 else TAG_I
    return labels


def _span_key(text: str) -> str:
    return " ".join(text.lower().split())


def gold_present(text: str, keywords: Sequence[str]) -> list[str]:
    """Normalised keys of the gold keywords that occur in ``text`` (the recall denominator)."""
    keys = []
    for keyword in keywords:
        pattern = keyword_pattern(keyword) if isinstance(keyword, str) else None
        if pattern is not None and pattern.search(text):
            keys.append(_span_key(keyword))
    return list(dict.fromkeys(keys))


def span_prf(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict:
    """Micro span-level precision, recall and F1 (exact match after lower-casing and whitespace folding)."""
    hits = n_pred = n_gold = 0
    for pred_spans, gold_keys in zip(predicted, gold):
        pred_keys = set(_span_key(s) for s in pred_spans)
        gold_set = set(gold_keys)
        hits += len(pred_keys & gold_set)
        n_pred += len(pred_keys)
        n_gold += len(gold_set)
    precision = hits / n_pred if n_pred else 0.0
    recall = hits / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "hits": hits,
        "predicted": n_pred,
        "gold_present": n_gold,
        "docs": len(gold),
    }


# ---------------------------------------------------------------------------------------------
# Data


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The evaluation data folder: ``explicit``, $KEYATTEN_LITE_DATA, or the repo's ../shared/data."""
    path = Path(explicit or os.environ.get("KEYATTEN_LITE_DATA") or REPO_DATA_DIR)
    if not path.is_dir():
        raise ExportError(
            f"BIO training data folder {path} not found; pass --data DIR or set KEYATTEN_LITE_DATA "
            "to the folder holding zh/csl_dev.jsonl and en/inspec.jsonl"
        )
    return path


def _numeric_id(doc: Mapping[str, Any]) -> int:
    digits = re.findall(r"\d+", str(doc.get("id", "")))
    if not digits:
        raise ExportError(f"document id {doc.get('id')!r} has no number; cannot order by numeric id")
    return int(digits[-1])


def load_training_split(spec: Mapping[str, Any], root: Path) -> tuple[list[dict], list[dict], dict]:
    """(train docs, dev docs, record) from a recipe's ``training`` block.

    ``order``: "file" or "numeric-id"; the first ``exclude_first`` documents (a test set) are never
    used; the last ``dev_docs`` of the rest are the dev split; ``max_train_docs`` caps the rest.
    """
    path = root / spec["dataset"]
    if not path.is_file():
        raise ExportError(f"BIO training set {path} is missing; check the data folder")
    with open(path, encoding="utf-8") as handle:
        docs = [json.loads(line) for line in handle if line.strip()]
    if spec.get("order", "file") == "numeric-id":
        docs.sort(key=_numeric_id)
    excluded = int(spec.get("exclude_first", 0))
    usable = docs[excluded:]
    n_dev = int(spec.get("dev_docs", 100))
    if len(usable) <= n_dev:
        raise ExportError(f"{path} has {len(usable)} usable documents, not more than dev_docs={n_dev}")
    train, dev = usable[:-n_dev], usable[-n_dev:]
    if spec.get("max_train_docs"):
        train = train[: int(spec["max_train_docs"])]
    record = {
        "dataset": spec["dataset"],
        "dataset_sha256": manifest_mod.sha256_file(path),
        "order": spec.get("order", "file"),
        "excluded_first": excluded,
        "excluded_ids": [docs[0]["id"], docs[excluded - 1]["id"]] if excluded else [],
        "train_docs": len(train),
        "train_ids": [train[0]["id"], train[-1]["id"]],
        "dev_docs": len(dev),
        "dev_ids": [dev[0]["id"], dev[-1]["id"]],
    }
    return train, dev, record


# ---------------------------------------------------------------------------------------------
# CRF (torch; batch first, right-padded masks)


def crf_log_likelihood(emissions, tags, mask, start, end, transitions):
    """Log-likelihood of ``tags`` [B, T] under the CRF, per sequence [B] (mask[:, 0] must be 1)."""
    import torch

    mask = mask.to(torch.bool)
    batch, length, _ = emissions.shape
    rows = torch.arange(batch)
    weights = mask.to(emissions.dtype)
    # Numerator, vectorised over positions: start + emissions + transitions + end of the gold path.
    emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)
    moved = transitions[tags[:, :-1], tags[:, 1:]]
    last = mask.sum(dim=1) - 1
    score = start[tags[:, 0]] + (emitted * weights).sum(1) + (moved * weights[:, 1:]).sum(1) + end[tags[rows, last]]
    # Partition function: the forward algorithm (a loop over positions).
    alpha = start.unsqueeze(0) + emissions[:, 0]
    for t in range(1, length):
        nxt = torch.logsumexp(alpha.unsqueeze(2) + transitions.unsqueeze(0) + emissions[:, t].unsqueeze(1), dim=1)
        alpha = torch.where(mask[:, t].unsqueeze(1), nxt, alpha)
    log_partition = torch.logsumexp(alpha + end.unsqueeze(0), dim=1)
    return score - log_partition


def crf_viterbi(emissions, mask, start, end, transitions) -> list[list[int]]:
    """Best tag path of each sequence (its valid length), torch ``max`` tie-breaking."""
    import torch

    mask = mask.to(torch.bool)
    batch, length, _ = emissions.shape
    score = start.unsqueeze(0) + emissions[:, 0]
    history = []
    for t in range(1, length):
        candidates = score.unsqueeze(2) + transitions.unsqueeze(0) + emissions[:, t].unsqueeze(1)
        best, index = candidates.max(dim=1)
        history.append(index)
        score = torch.where(mask[:, t].unsqueeze(1), best, score)
    score = score + end.unsqueeze(0)
    lengths = mask.sum(dim=1).tolist()
    paths = []
    for row in range(batch):
        best_tag = int(score[row].argmax())
        path = [best_tag]
        for index in reversed(history[: int(lengths[row]) - 1]):
            best_tag = int(index[row, best_tag])
            path.append(best_tag)
        path.reverse()
        paths.append(path)
    return paths


@dataclass
class BIOHead:
    """Trained head: emissions = hidden @ weight.T + bias; CRF scores. All float32 numpy."""

    weight: np.ndarray  # [3, hidden]
    bias: np.ndarray  # [3]
    start: np.ndarray  # [3]
    end: np.ndarray  # [3]
    transitions: np.ndarray  # [3, 3] from -> to
    training: dict = field(default_factory=dict)

    def crf_json(self) -> dict:
        """The manifest's ``bio`` entry (float32 values written exactly as Python floats)."""
        return {
            "tags": list(TAGS),
            "start": [float(x) for x in self.start],
            "end": [float(x) for x in self.end],
            "transitions": [[float(x) for x in row] for row in self.transitions],
            "emissions_output": EMISSIONS_OUTPUT,
            "training": self.training,
        }


# ---------------------------------------------------------------------------------------------
# Features and training


@dataclass
class EncodedDoc:
    hidden: np.ndarray  # float32 [n, H]
    offsets: list[tuple[int, int]]
    labels: np.ndarray  # int64 [n]
    text: str
    gold: list[str]


def torch_hidden_states(model) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``(input_ids, attention_mask) -> last hidden state [B, S, H]`` with the torch model."""
    import torch

    accepts_types = getattr(model.config, "type_vocab_size", 0)

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        kwargs = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
        if accepts_types:
            kwargs["token_type_ids"] = torch.zeros_like(kwargs["input_ids"])
        with torch.inference_mode():
            return model(**kwargs).last_hidden_state.numpy()

    return run


def onnx_hidden_states(model, work_dir: Path, threads: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The same function on onnxruntime: the backbone is exported once (a few seconds) to a scratch
    graph that returns the last hidden state; onnxruntime then encodes the training documents about
    twice as fast as torch eager on 2 cores (docs/bio.md)."""
    import inspect

    import torch

    from .encoder import INPUT_NAMES, OPSET, _quiet_transformers

    type_vocab = getattr(model.config, "type_vocab_size", 0) or 0
    zero_types = bool(type_vocab > 0 and "token_type_ids" in inspect.signature(model.forward).parameters)

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if zero_types:
                kwargs["token_type_ids"] = torch.zeros_like(input_ids)
            return self.model(**kwargs, return_dict=True).last_hidden_state

    path = Path(work_dir) / "features.onnx"
    ids = torch.ones((2, 16), dtype=torch.int64)
    mask = torch.ones((2, 16), dtype=torch.int64)
    mask[1, 8:] = 0
    axes = {0: "batch", 1: "seq"}
    with _quiet_transformers(), torch.no_grad():
        torch.onnx.export(
            Hidden().eval(), (ids, mask), str(path), dynamo=False, opset_version=OPSET,
            input_names=list(INPUT_NAMES), output_names=["hidden"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes}, do_constant_folding=True,
        )
    session = verify.onnx_session(path, threads=threads)

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (hidden,) = session.run(["hidden"], {"input_ids": input_ids, "attention_mask": attention_mask})
        return np.asarray(hidden, dtype=np.float32)

    return run


def encode_documents(
    model, tokenizer_path: Path, docs: Sequence[Mapping[str, Any]], max_length: int, batch_size: int = 8,
    log: Callable[[str], None] | None = None, hidden_states: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> list[EncodedDoc]:
    """Last hidden states (one window of ``max_length``), offsets and labels of each document.

    ``hidden_states`` computes the features of a padded batch (default: the torch ``model``).
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    encodings = tokenizer.encode_batch([doc["text"] for doc in docs])
    pad_id = 0
    out: list[EncodedDoc | None] = [None] * len(docs)
    order = sorted(range(len(docs)), key=lambda i: len(encodings[i].ids))
    run = hidden_states or torch_hidden_states(model)
    started = time.perf_counter()
    for first in range(0, len(order), batch_size):
        chunk = order[first : first + batch_size]
        input_ids, attention_mask = verify.pad_batch([encodings[i].ids for i in chunk], pad_id)
        hidden = run(input_ids, attention_mask)
        for row, i in enumerate(chunk):
            n = len(encodings[i].ids)
            offsets = [(int(a), int(b)) for a, b in encodings[i].offsets]
            text = docs[i]["text"]
            keywords = list(docs[i].get("keywords") or [])
            out[i] = EncodedDoc(
                hidden=hidden[row, :n].astype(np.float32, copy=True),
                offsets=offsets,
                labels=token_labels(offsets, keyword_char_spans(text, keywords)),
                text=text,
                gold=gold_present(text, keywords),
            )
        if log and (first // batch_size) % 25 == 0:
            log(f"  encoded {first + len(chunk)}/{len(docs)} docs ({time.perf_counter() - started:.0f} s)")
    return out  # type: ignore[return-value]


def _pad_features(docs: Sequence[EncodedDoc]):
    import torch

    width = max(len(d.labels) for d in docs)
    hidden = torch.zeros((len(docs), width, docs[0].hidden.shape[1]), dtype=torch.float32)
    tags = torch.full((len(docs), width), TAG_O, dtype=torch.int64)
    mask = torch.zeros((len(docs), width), dtype=torch.bool)
    for row, doc in enumerate(docs):
        n = len(doc.labels)
        hidden[row, :n] = torch.from_numpy(doc.hidden)
        tags[row, :n] = torch.from_numpy(doc.labels)
        mask[row, :n] = True
    return hidden, tags, mask


def _decode_docs(docs: Sequence[EncodedDoc], head_params, batch_size: int = 32) -> list[list[str]]:
    """Viterbi spans of each document through the torch head (dedup as extract_spans)."""
    import torch

    linear, start, end, transitions = head_params
    spans_per_doc = []
    with torch.no_grad():
        for first in range(0, len(docs), batch_size):
            chunk = docs[first : first + batch_size]
            hidden, _, mask = _pad_features(chunk)
            paths = crf_viterbi(linear(hidden), mask, start, end, transitions)
            for doc, path in zip(chunk, paths):
                spans_per_doc.append(dedup_lower(spans_to_text(doc.text, doc.offsets, bio_tags_to_spans(path))))
    return spans_per_doc


def train_head(
    train_docs: Sequence[EncodedDoc],
    dev_docs: Sequence[EncodedDoc],
    *,
    seed: int = 0,
    epochs: int = 8,
    lr: float = 0.01,
    batch_size: int = 16,
    log: Callable[[str], None] | None = None,
) -> BIOHead:
    """Adam on Linear(hidden, 3) + CRF over cached features; loss = -log-likelihood / batch size."""
    import torch

    torch.manual_seed(seed)
    hidden_size = train_docs[0].hidden.shape[1]
    linear = torch.nn.Linear(hidden_size, len(TAGS))
    # pytorch-crf's initialisation: uniform(-0.1, 0.1).
    start = torch.nn.Parameter(torch.empty(len(TAGS)).uniform_(-0.1, 0.1))
    end = torch.nn.Parameter(torch.empty(len(TAGS)).uniform_(-0.1, 0.1))
    transitions = torch.nn.Parameter(torch.empty(len(TAGS), len(TAGS)).uniform_(-0.1, 0.1))
    params = list(linear.parameters()) + [start, end, transitions]
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    # Batches of similar lengths (the CRF loops over positions, so padding costs time), in a
    # seeded random order each epoch.
    by_length = sorted(range(len(train_docs)), key=lambda i: len(train_docs[i].labels))
    buckets = [by_length[i : i + batch_size] for i in range(0, len(by_length), batch_size)]
    history = []
    for epoch in range(epochs):
        total, batches = 0.0, 0
        for bucket in torch.randperm(len(buckets), generator=generator).tolist():
            chunk = [train_docs[i] for i in buckets[bucket]]
            hidden, tags, mask = _pad_features(chunk)
            loss = -crf_log_likelihood(linear(hidden), tags, mask, start, end, transitions).sum() / len(chunk)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
        history.append(round(total / max(batches, 1), 4))
        if log:
            log(f"  epoch {epoch + 1}/{epochs}: mean loss {history[-1]}")
    head_params = (linear, start.detach(), end.detach(), transitions.detach())
    dev = span_prf(_decode_docs(dev_docs, head_params), [d.gold for d in dev_docs])
    return BIOHead(
        weight=linear.weight.detach().numpy().astype(np.float32),
        bias=linear.bias.detach().numpy().astype(np.float32),
        start=start.detach().numpy().astype(np.float32),
        end=end.detach().numpy().astype(np.float32),
        transitions=transitions.detach().numpy().astype(np.float32),
        training={
            "seed": seed,
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "optimizer": "Adam",
            "loss_per_epoch": history,
            "batching": "length buckets, seeded random bucket order",
            "dev": dev,
        },
    )


def train_bio(
    model_dir: str | os.PathLike,
    recipe: Mapping[str, Any],
    *,
    data: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> BIOHead:
    """Load the backbone from ``model_dir``, cache features, train the head; ``head.training`` records it all."""
    import torch

    from .encoder import load_encoder

    say = log or (lambda message: None)
    spec = dict(recipe["training"])
    max_length = int(spec.get("max_length", 512))
    threads = int(spec.get("torch_threads", 2))
    # The head's steps are tiny ops over [batch, 3, 3] (the CRF loops over positions): with more than
    # one intra-op thread each op pays a thread hand-off, 3.5x slower here and far worse on a busy
    # machine (docs/bio.md), so training runs on one thread whatever the encoding uses.
    train_threads = int(spec.get("train_threads", 1))
    features = str(spec.get("features", "onnx"))
    if features not in ("onnx", "torch"):
        raise ExportError(f"recipe {recipe.get('name')!r}: training.features must be 'onnx' or 'torch', got {features!r}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        started = time.perf_counter()
        train_docs, dev_docs, split = load_training_split(spec, data_dir(data))
        model, _, _ = load_encoder(model_dir)
        say(
            f"encoding {len(train_docs)} train + {len(dev_docs)} dev docs (frozen backbone, max_length {max_length}, "
            f"{features})"
        )
        tokenizer_path = Path(model_dir) / "tokenizer.json"
        with tempfile.TemporaryDirectory(prefix="bio-features-") as scratch:
            run = onnx_hidden_states(model, Path(scratch), threads) if features == "onnx" else torch_hidden_states(model)
            encoded_train = encode_documents(model, tokenizer_path, train_docs, max_length, log=say, hidden_states=run)
            encoded_dev = encode_documents(model, tokenizer_path, dev_docs, max_length, log=say, hidden_states=run)
            del run
        del model
        encode_seconds = time.perf_counter() - started
        labelled = sum(int((d.labels != TAG_O).sum()) for d in encoded_train)
        say(f"training the head ({labelled} B/I train tokens, {train_threads} thread)")
        torch.set_num_threads(train_threads)
        t = time.perf_counter()
        head = train_head(
            encoded_train,
            encoded_dev,
            seed=int(spec.get("seed", 0)),
            epochs=int(spec.get("epochs", 8)),
            lr=float(spec.get("lr", 0.01)),
            batch_size=int(spec.get("batch_size", 16)),
            log=say,
        )
        head.training.update(
            {
                "split": split,
                "max_length": max_length,
                "backbone": recipe.get("backbone"),
                "frozen_backbone": True,
                "layer_index": -1,
                "labels": "gold keywords found in the text (case-insensitive, whitespace-flexible, ASCII word "
                "edges), all occurrences, longer first, no overlaps; specials and padding O",
                "metric": "span-level exact match (lower case, whitespace folded) against gold keywords present in the text",
                "train_labelled_tokens": labelled,
                "torch_threads": threads,
                "train_threads": train_threads,
                "features": features,
                "seconds": {"encode": round(encode_seconds, 1), "train": round(time.perf_counter() - t, 1)},
                "command": f"python -m keyatten_lite_export.bio build --recipe {recipe['name']}",
            }
        )
        dev = head.training["dev"]
        say(f"dev span P/R/F1 {dev['precision']:.3f}/{dev['recall']:.3f}/{dev['f1']:.3f} on {dev['docs']} docs")
        head.training["_dev_docs"] = [(d.text, d.gold) for d in encoded_dev]  # for the ONNX check; not written
        return head
    finally:
        torch.set_num_threads(previous_threads)


# ---------------------------------------------------------------------------------------------
# Export


def _make_graph_module(model, head: BIOHead, layers: Sequence[int]):
    import inspect

    import torch

    from .encoder import layer_count

    class BIOGraph(torch.nn.Module):
        """(head-mean attentions of ``layers`` [L, B, S, S], emissions [B, S, 3]) from one pass."""

        def __init__(self):
            super().__init__()
            self.model = model
            self.layers = [int(x) for x in layers]
            self.expected_count = layer_count(model.config)
            self.classifier = torch.nn.Linear(head.weight.shape[1], head.weight.shape[0])
            with torch.no_grad():
                self.classifier.weight.copy_(torch.from_numpy(head.weight))
                self.classifier.bias.copy_(torch.from_numpy(head.bias))
            type_vocab = getattr(model.config, "type_vocab_size", 0) or 0
            accepts_types = "token_type_ids" in inspect.signature(model.forward).parameters
            self.zero_token_types = bool(type_vocab > 0 and accepts_types)

        def forward(self, input_ids, attention_mask):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if self.zero_token_types:
                kwargs["token_type_ids"] = torch.zeros_like(input_ids)
            outputs = self.model(**kwargs, output_attentions=True, return_dict=True)
            attentions = outputs.attentions
            if attentions is None or len(attentions) != self.expected_count:
                raise ExportError("the model returned no attention maps; load it with attn_implementation='eager'")
            stacked = torch.stack([attentions[i].mean(dim=1) for i in self.layers], dim=0)
            return stacked, self.classifier(outputs.last_hidden_state)

    return BIOGraph().eval()


def _trace(graph_module, onnx_path: Path, sample_length: int = 16) -> float:
    import torch

    from .encoder import INPUT_NAMES, OPSET, OUTPUT_NAME, _quiet_transformers

    vocab = int(getattr(graph_module.model.config, "vocab_size", 100) or 100)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab, (2, sample_length), generator=generator, dtype=torch.int64)
    attention_mask = torch.ones((2, sample_length), dtype=torch.int64)
    attention_mask[1, sample_length // 2 :] = 0
    axes = {0: "batch", 1: "seq"}
    started = time.perf_counter()
    with _quiet_transformers(), torch.no_grad():
        torch.onnx.export(
            graph_module,
            (input_ids, attention_mask),
            str(onnx_path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME, EMISSIONS_OUTPUT],
            dynamic_axes={
                "input_ids": axes,
                "attention_mask": axes,
                OUTPUT_NAME: {1: "batch", 2: "seq", 3: "seq"},
                EMISSIONS_OUTPUT: {0: "batch", 1: "seq"},
            },
            do_constant_folding=True,
        )
    graph_module.eval()
    return time.perf_counter() - started


def _emission_parity(torch_runs, onnx_runs, batches, head: BIOHead, tolerance: float | None) -> dict:
    """Max |torch - ORT| emissions over valid tokens; numpy Viterbi paths of both, compared."""
    from keyatten_lite.scoring.bio_decode import viterbi_decode

    worst, paths_equal, sequences = 0.0, 0, 0
    for (ids, mask), ref, got in zip(batches, torch_runs, onnx_runs):
        for row, n_valid in enumerate(mask.sum(axis=1)):
            n = int(n_valid)
            diff = np.abs(ref[row, :n].astype(np.float64) - got[row, :n].astype(np.float64))
            worst = max(worst, float(diff.max()) if np.all(np.isfinite(diff)) else float("inf"))
            crf = (head.start, head.end, head.transitions)
            paths_equal += viterbi_decode(ref[row, :n], *crf) == viterbi_decode(got[row, :n], *crf)
            sequences += 1
    return {
        "max_abs_diff": worst,
        "tolerance": tolerance,
        "viterbi_paths_equal": f"{paths_equal}/{sequences}",
    }


def export_bio_bundle(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    head: BIOHead,
    *,
    name: str,
    int8: bool = False,
    max_length: int | None = None,
    source_info: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    extra_manifest: Mapping[str, Any] | None = None,
    probe_texts: Sequence[str] | None = None,
    check_texts: Sequence[tuple[str, list[str]]] | None = None,
) -> dict:
    """Export backbone + head to a verified BIO bundle at ``out_dir``; returns the manifest.

    Raises ParityError (writing nothing) when ORT differs from torch above 1e-4 in attention or emissions.
    ``check_texts`` ((text, gold keys) pairs) are decoded through the finished bundle with
    :class:`keyatten_lite.extractors.bio_tagger.BIOExtractor` and scored (recorded under ``bio.training.dev_onnx``).
    """
    import torch

    from . import encoder as enc

    started = time.perf_counter()
    if not isinstance(name, str) or not enc._NAME_PATTERN.match(name):
        raise ExportError(f"bundle name {name!r} must be letters, digits, '.', '_' or '-' (at most 100)")
    source = os.fspath(model_dir)
    out_dir = Path(out_dir).expanduser().absolute()
    enc._prepare_target(out_dir, overwrite)
    texts = list(probe_texts) if probe_texts is not None else list(verify.PROBE_TEXTS)

    work_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        timings: dict[str, float] = {}
        t = time.perf_counter()
        model, config, hf_tokenizer = enc.load_encoder(source)
        if enc.is_causal_config(config):
            raise ExportError(f"{source} is a causal model; BIO bundles need an encoder")
        num_layers = enc.layer_count(config)
        positions = enc.usable_positions(config)
        max_length = int(max_length or positions or 512)
        if positions is not None and max_length > positions:
            raise ExportError(f"max_length {max_length} exceeds the {positions} positions the model has")
        if head.weight.shape[1] != config.hidden_size:
            raise ExportError(f"head expects hidden size {head.weight.shape[1]}, the model has {config.hidden_size}")
        layers = list(range(num_layers))
        graph_module = _make_graph_module(model, head, layers)
        timings["load"] = time.perf_counter() - t

        onnx_path = work_dir / "model.onnx"
        timings["onnx_export"] = _trace(graph_module, onnx_path)
        tokenizer_path = work_dir / "tokenizer.json"
        enc._write_tokenizer(hf_tokenizer, tokenizer_path)

        t = time.perf_counter()
        pad_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0
        with enc._quiet_transformers():
            id_lists = enc._probe_id_lists(hf_tokenizer, tokenizer_path, texts + [verify.LONG_PROBE_TEXT], max_length)
        batches = verify.probe_batches(id_lists[:-1], id_lists[-1], pad_id)
        session = verify.onnx_session(onnx_path)

        torch_runs: list[tuple[np.ndarray, np.ndarray]] = []
        with torch.no_grad():
            for ids, mask in batches:
                att, em = graph_module(torch.from_numpy(ids), torch.from_numpy(mask))
                torch_runs.append((att.numpy().astype(np.float32), em.numpy().astype(np.float32)))
        onnx_runs = [
            tuple(np.asarray(x, dtype=np.float32) for x in session.run([enc.OUTPUT_NAME, EMISSIONS_OUTPUT], {"input_ids": ids, "attention_mask": mask}))
            for ids, mask in batches
        ]
        cached = {id(b[0]): i for i, b in enumerate(batches)}
        parity = {
            "fp32": verify.check_fp32_parity(
                lambda ids, mask: torch_runs[cached[id(ids)]][0],
                lambda ids, mask: onnx_runs[cached[id(ids)]][0],
                batches,
                probes=len(id_lists),
            )
        }
        emissions = _emission_parity(
            [r[1] for r in torch_runs], [r[1] for r in onnx_runs], batches, head, verify.FP32_TOLERANCE
        )
        parity["fp32"]["emissions"] = emissions
        if not emissions["max_abs_diff"] <= verify.FP32_TOLERANCE:
            raise ParityError(
                f"ONNX emissions differ from torch by {emissions['max_abs_diff']:.3g} (tolerance "
                f"{verify.FP32_TOLERANCE:g}); the bundle was not written"
            )
        timings["verify"] = time.perf_counter() - t

        file_names = ["model.onnx", "tokenizer.json"]
        if int8:
            t = time.perf_counter()
            import warnings

            from onnxruntime.quantization import QuantType, quantize_dynamic

            int8_path = work_dir / "model.int8.onnx"
            with warnings.catch_warnings(), enc._logging_disabled():
                warnings.simplefilter("ignore")
                quantize_dynamic(str(onnx_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True)
            int8_session = verify.onnx_session(int8_path)
            int8_runs = [
                tuple(np.asarray(x, dtype=np.float32) for x in int8_session.run([enc.OUTPUT_NAME, EMISSIONS_OUTPUT], {"input_ids": ids, "attention_mask": mask}))
                for ids, mask in batches
            ]
            chosen = (0, 2)
            parity["int8"] = verify.int8_agreement(
                [(onnx_runs[i][0], int8_runs[i][0], batches[i][0], batches[i][1]) for i in chosen],
                hf_tokenizer.all_special_ids,
            )
            # Recorded, not enforced: int8 emissions move enough to change Viterbi paths, which is why
            # BIOExtractor defaults to the fp32 graph.
            parity["int8"]["emissions"] = _emission_parity(
                [r[1] for r in onnx_runs], [r[1] for r in int8_runs], batches, head, None
            )
            del int8_session
            file_names.append("model.int8.onnx")
            timings["int8"] = time.perf_counter() - t
        del session

        unexpected = sorted(p.name for p in work_dir.iterdir() if p.name not in file_names)
        if unexpected:
            raise ExportError(f"the export produced unexpected files {unexpected}; format 1 bundles hold one graph file")

        graph = {
            "inputs": [{"name": n, "dtype": "int64", "shape": ["batch", "seq"]} for n in enc.INPUT_NAMES],
            "outputs": [
                {"name": enc.OUTPUT_NAME, "dtype": "float32", "shape": [num_layers, "batch", "seq", "seq"]},
                {"name": EMISSIONS_OUTPUT, "dtype": "float32", "shape": ["batch", "seq", len(TAGS)]},
            ],
            "opset": enc.OPSET,
            "exporter": manifest_mod.EXPORTER_LABEL,
        }
        training = {k: v for k, v in head.training.items() if not k.startswith("_")}
        bio = head.crf_json()
        bio["training"] = training
        extra: dict[str, Any] = {"kind": BIO_KIND, "export_seconds": None, "timings": {}}
        if extra_manifest:
            extra.update(extra_manifest)
        extra["bio"] = bio
        manifest = manifest_mod.build_manifest(
            name=name,
            source=enc._source_record(source, source_info),
            architecture="encoder",
            model_type=str(getattr(config, "model_type", "")),
            num_layers=num_layers,
            exported_layers=layers,
            graph=graph,
            special_tokens=manifest_mod.special_token_ids(hf_tokenizer),
            pad_token_id=hf_tokenizer.pad_token_id,
            padding_side="right",
            max_length=max_length,
            parity=parity,
            files=manifest_mod.files_table(work_dir, file_names),
            extra=extra,
        )
        manifest["timings"] = {key: round(value, 3) for key, value in timings.items()}
        manifest["export_seconds"] = round(time.perf_counter() - started, 3)
        manifest_mod.write_manifest(work_dir, manifest)

        from keyatten_lite.extractors.bio_tagger import BIOExtractor

        extractor = BIOExtractor(work_dir)  # the runtime must accept it (checksums, graph I/O, CRF)
        if check_texts:
            t = time.perf_counter()
            predicted = extractor.extract_spans_batch([text for text, _ in check_texts])
            dev_onnx = span_prf(predicted, [gold for _, gold in check_texts])
            dev_onnx["seconds"] = round(time.perf_counter() - t, 1)
            dev_onnx["decoder"] = "keyatten_lite.extractors.bio_tagger.BIOExtractor.extract_spans_batch (windowed, fp32)"
            manifest["bio"]["training"]["dev_onnx"] = dev_onnx
            manifest_mod.write_manifest(work_dir, manifest)
        del extractor
        os.chmod(work_dir, 0o755)
        enc._move_into_place(work_dir, out_dir)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    return manifest


# ---------------------------------------------------------------------------------------------
# Recipe build


def build_bio_bundle(
    recipe: Mapping[str, Any],
    home: str | os.PathLike | None = None,
    *,
    force: bool = False,
    data: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Prepare the backbone, train the head, export ``<home>/bundles/<name>``; one result dict.

    Skips (status "skipped") a bundle whose manifest records the same recipe hash and still opens.
    """
    from keyatten_lite.model.registry import bundles_dir

    from . import sources
    from .build import _up_to_date, recipe_hash

    if recipe.get("kind") != "bio":
        raise ExportError(f"recipe {recipe.get('name')!r} is not a BIO recipe (kind {recipe.get('kind')!r})")
    say = log or (lambda message: None)
    name = recipe["name"]
    root = bundles_dir(home)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    wanted_hash = recipe_hash(dict(recipe))
    if not force and _up_to_date(target, wanted_hash):
        say(f"{name}: up to date ({target})")
        return {"name": name, "path": str(target), "status": "skipped", "recipe_sha256": wanted_hash}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f".prepare-{name}-", dir=root) as work:
        say(f"{name}: preparing the backbone ({recipe.get('backbone')})")
        info = sources.prepare(dict(recipe), Path(work))
        say(f"{name}: training the BIO head")
        head = train_bio(info["model_dir"], recipe, data=data, log=say)
        say(f"{name}: exporting")
        manifest = export_bio_bundle(
            info["model_dir"],
            target,
            head,
            name=name,
            int8=bool(recipe.get("int8", False)),
            max_length=recipe.get("max_length"),
            source_info={key: value for key, value in info.items() if key != "model_dir"},
            overwrite=True,
            extra_manifest={
                "language": recipe.get("language"),
                "build": {"recipe": name, "recipe_sha256": wanted_hash},
            },
            check_texts=head.training.get("_dev_docs"),
        )
    seconds = round(time.perf_counter() - started, 1)
    training = manifest["bio"]["training"]
    say(
        f"{name}: built in {seconds:.0f} s; dev F1 {training['dev']['f1']:.3f} (torch), "
        f"{(training.get('dev_onnx') or {}).get('f1', float('nan')):.3f} (onnx); emissions parity "
        f"{manifest['parity']['fp32']['emissions']['max_abs_diff']:.2e} ({target})"
    )
    return {
        "name": name,
        "path": str(target),
        "status": "built",
        "recipe_sha256": wanted_hash,
        "build_seconds": seconds,
        "export_seconds": manifest["export_seconds"],
        "parity": manifest["parity"],
        "dev": training["dev"],
        "dev_onnx": training.get("dev_onnx"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keyatten_lite_export.bio", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("train", "build"):
        p = sub.add_parser(command)
        p.add_argument("--recipe", required=True, help="a BIO recipe name, e.g. bio-minilm-en")
        p.add_argument("--data", default=None, help="data folder (default $KEYATTEN_LITE_DATA or ../shared/data)")
        if command == "build":
            p.add_argument("--home", default=None)
            p.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)

    from . import sources

    recipe = sources.load_recipe(args.recipe)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.command == "build":
        result = build_bio_bundle(recipe, args.home, force=args.force, data=args.data, log=say)
        print(json.dumps(result, indent=2))
        return 0
    with tempfile.TemporaryDirectory(prefix=f"bio-train-{recipe['name']}-") as work:
        info = sources.prepare(recipe, Path(work))
        head = train_bio(info["model_dir"], recipe, data=args.data, log=say)
    print(json.dumps({k: v for k, v in head.training.items() if not k.startswith("_")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
