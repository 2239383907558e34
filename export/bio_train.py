"""The BIO head and its training (build time): CRF, features of the frozen encoder, Adam.

Model (keyatten 0.3.1 §7.1): the recipe's encoder, frozen; ``Linear(hidden, 3)`` emissions over the
last hidden state (tags B=0, I=1, O=2); a linear-chain CRF (start, end, transitions from -> to) with
no hard constraints. Only the head and the CRF are trained: the last hidden states of the training
documents are computed once (max_length 512, one window; on onnxruntime from a scratch export of the
backbone, or on torch) and cached in memory, then Adam runs a few epochs on one torch thread.

torch and transformers are imported inside functions.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from keyatten_lite.scoring.bio_decode import TAG_O, TAGS, bio_tags_to_spans, dedup_lower, spans_to_text

from . import ExportError, core, verify
from .bio_data import data_dir, gold_present, keyword_char_spans, load_training_split, span_prf, token_labels
from .encoder import load_encoder

__all__ = [
    "EMISSIONS_OUTPUT",
    "crf_log_likelihood",
    "crf_viterbi",
    "BIOHead",
    "EncodedDoc",
    "torch_hidden_states",
    "onnx_hidden_states",
    "encode_documents",
    "train_head",
    "train_bio",
]

EMISSIONS_OUTPUT = "emissions"

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
    origin: dict = field(default_factory=dict)  # where it came from: "trained here" / "shipped head" (bio.head)

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

    zero_types = core.zero_token_types(model)

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        kwargs = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
        if zero_types:
            kwargs["token_type_ids"] = torch.zeros_like(kwargs["input_ids"])
        with torch.inference_mode():
            return model(**kwargs).last_hidden_state.numpy()

    return run


def onnx_hidden_states(model, work_dir: Path, threads: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The same function on onnxruntime: the backbone is exported once (a few seconds) to a scratch
    graph that returns the last hidden state; onnxruntime then encodes the training documents about
    twice as fast as torch eager on 2 cores (docs/bio.md)."""
    import torch

    class HiddenStates(core.attention_module_class()):
        """The backbone's last hidden state [B, S, H] (the core wrapper's inputs, no attentions)."""

        def forward(self, input_ids, attention_mask):
            return self.model(**self.model_inputs(input_ids, attention_mask), return_dict=True).last_hidden_state

    path = Path(work_dir) / "features.onnx"
    ids = torch.ones((2, 16), dtype=torch.int64)
    mask = torch.ones((2, 16), dtype=torch.int64)
    mask[1, 8:] = 0
    core.export_onnx(HiddenStates(model, []).eval(), path, output_axes={"hidden": {0: "batch", 1: "seq"}}, sample=(ids, mask))
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
        head.training["_dev_encoded"] = encoded_dev  # for the comparison with the shipped head; not written
        return head
    finally:
        torch.set_num_threads(previous_threads)


