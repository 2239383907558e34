"""keyatten 0.3.1's stages (``profile="compat"``, and the fallback of the default profile).

Word mode (§4.6): segment → 0.3.1 candidates → tokenise the pre-split words (with the instruction prefix)
→ one truncated pass → word scores → optional IDF product → each candidate's mean → rank.
Token-span mode (§4.7): the same candidates, the raw text tokenised with offsets, each candidate the mean
of the token scores inside its character span.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from keyatten_lite.model.align import MAX_BATCH_CELLS, EncodedBatch, crop_attention, length_sorted_batches, pad_encodings
from keyatten_lite.pipeline.inputs import Input
from keyatten_lite.pipeline.stages import Idf, Stages
from keyatten_lite.scoring import attention
from keyatten_lite.state.idf import tfidf_word_values
from keyatten_lite.text.candidates import (
    Candidate,
    build_candidates_with_keys,
    candidate_mean_scores,
    rank_candidates,
    valid_word_mask,
)
from keyatten_lite.text.segment import locate_word_offsets


@dataclass
class Document:
    """A segmented document, ready for the model: words include the instruction prefix, if any."""

    words: list[str]  # document words only
    tags: list[str]
    prefix_words: list[str]
    prefix_tags: list[str]
    candidates: list[Candidate]
    keys: list[str]  # normalised key of each candidate
    text: str | None = None  # the raw text (None for token-list input)
    token_counts: Mapping[str, float] | None = None  # from a cache entry: saves recounting

    @property
    def model_words(self) -> list[str]:
        return self.prefix_words + self.words

    @property
    def model_tags(self) -> list[str]:
        return self.prefix_tags + self.tags


# ---------------------------------------------------------------------------------------------- prepare
def segment_input(res, inp: Input) -> tuple[list[str], list[str]]:
    if inp.text is not None:
        return res.segment_clean(inp.text)
    return list(inp.tokens), list(inp.tags)


def make_document(res, words, tags, text: str | None, *, with_prefix: bool = True) -> Document:
    """A segmented document with its candidates (and the instruction prefix for the word path)."""
    # The word path prepends the instruction prefix as words (§2.7); the token path and IDF counting
    # never need it, and asking would open the bundle just to learn if it is causal.
    want_prefix = with_prefix and bool(words) and res.settings.word_mode
    prefix_words, prefix_tags = res.prefix_words() if want_prefix else ([], [])
    candidates, keys = build_candidates_with_keys(words, tags, res.settings.language)
    return Document(list(words), list(tags), list(prefix_words), list(prefix_tags), candidates, keys, text)


def prepare_input(res, inp: Input, *, with_prefix: bool = True) -> Document:
    words, tags = segment_input(res, inp)
    return make_document(res, words, tags, inp.text, with_prefix=with_prefix)


def prepare(res, inputs: Sequence[Input]) -> list[Document]:
    return [prepare_input(res, inp) for inp in inputs]


def rank(res, doc: Document, read, candidate_scores: np.ndarray, top_k: int) -> list[tuple[str, float]]:
    if not doc.candidates:
        return []
    return rank_candidates(
        [c.text for c in doc.candidates],
        doc.keys,
        candidate_scores,
        top_k,
        dedup_nested=res.settings.dedup_for(top_k),
        tie_break=res.settings.tie_break,
    )


# ---------------------------------------------------------------------------------------------- word mode
def read_words(res, docs: Sequence[Document], bases: Sequence[str] | None, batch_size: int) -> list[dict[str, np.ndarray]]:
    """Raw word scores (document words only) of each base method in ``bases`` (None: all six, from the
    same forward pass) for each document, run in length-sorted batches."""
    names = tuple(attention.BASE_METHODS if bases is None else bases)
    out: list[dict[str, np.ndarray] | None] = [None] * len(docs)
    todo = [i for i, d in enumerate(docs) if d.words]
    for i, d in enumerate(docs):
        if not d.words:
            out[i] = {name: np.zeros(0, dtype=np.float32) for name in names}
    if not todo:
        return out  # type: ignore[return-value]
    bundle = res.bundle
    positions, weights = res.read_layers()
    causal = res.is_causal
    pad_id = bundle.pad_token_id if bundle.pad_token_id is not None else 0
    # Encoded once: the lengths group the batches, and each group is padded from these encodings.
    encodings = res.tokenizer.encode_batch([docs[i].model_words for i in todo], is_pretokenized=True)
    lengths = [len(e.ids) for e in encodings]
    for group in length_sorted_batches(lengths, batch_size, MAX_BATCH_CELLS):
        doc_idx = [todo[g] for g in group]
        batch = pad_encodings([encodings[g] for g in group], pad_id=pad_id, padding_side=bundle.padding_side)
        attentions = bundle.run_attention(batch.input_ids, batch.attention_mask)
        for b, i in enumerate(doc_idx):
            out[i] = _doc_word_scores(res, attentions, batch, b, docs[i], positions, weights, names, causal)
    return out  # type: ignore[return-value]


def _doc_word_scores(
    res,
    attentions: np.ndarray,
    batch: EncodedBatch,
    b: int,
    doc: Document,
    positions: list[int],
    weights: list[float],
    methods: Sequence[str],
    causal: bool,
) -> dict[str, np.ndarray]:
    layers = crop_attention(attentions, batch, b)
    keep = batch.token_slice(b)
    word_ids = batch.word_ids[b, keep]
    if causal:
        valid = valid_word_mask(doc.model_words, doc.model_tags, res.settings.language)
        content = attention.causal_word_content_mask(word_ids, valid)
    else:
        content = attention.encoder_word_content_mask(word_ids)
    n_words = len(doc.model_words)
    per_layer = []
    for p in positions:
        A = np.ascontiguousarray(layers[p], dtype=np.float32)
        token_scores = attention.token_method_scores(A, causal=causal, content_mask=content, methods=methods)
        per_layer.append({m: attention.word_scores_from_tokens(token_scores[m], word_ids, n_words) for m in methods})
    fused = per_layer[0] if len(per_layer) == 1 else attention.fuse_layers(per_layer, weights)
    skip = len(doc.prefix_words)
    return {m: np.asarray(fused[m], dtype=np.float32)[skip:] for m in methods}


def score_words(res, doc: Document, word_scores: dict[str, np.ndarray], method: str, idf: Idf | None) -> np.ndarray:
    """Word mode: optional IDF product on the word scores, then each candidate's mean (§4.6)."""
    values = word_scores[attention.base_method(method)[0]]
    if idf is not None and doc.candidates:
        tfidf = tfidf_word_values(doc.words, doc.tags, res.settings.language, idf.lookup, counts=doc.token_counts)
        values = attention.idf_hybrid(values, tfidf)
    return candidate_mean_scores(values, doc.candidates)


WORDS = Stages("compat_words", prepare=prepare, read=read_words, score=score_words, rank=rank)


# ---------------------------------------------------------------------------------------------- token-span mode
_ALL_NON_WORD = re.compile(r"[\W_]+")


def kept_text_tokens(model_text: str, offsets: np.ndarray, prefix_chars: int) -> np.ndarray:
    """Tokens the token path scores: real text after the prefix, not whitespace or punctuation only (§3.2)."""
    kept = np.zeros(len(offsets), dtype=bool)
    for t, (start, end) in enumerate(offsets.tolist()):
        if end > start and start >= prefix_chars:
            piece = model_text[start:end].strip()
            kept[t] = bool(piece) and _ALL_NON_WORD.fullmatch(piece) is None
    return kept


@dataclass
class SpanRead:
    """Token scores of one document on the token path, per base method, with their text offsets."""

    token_scores: dict[str, np.ndarray]
    token_offsets: np.ndarray  # [T, 2] into the document text
    word_spans: np.ndarray  # [W, 2]


def read_spans(res, docs: Sequence[Document], bases: Sequence[str], batch_size: int) -> list[SpanRead | None]:
    """Token scores of documents with candidates, from their raw text (with the causal Chinese prefix)."""
    out: list[SpanRead | None] = [None] * len(docs)
    todo = [i for i, d in enumerate(docs) if d.candidates]
    if not todo:
        return out
    bundle = res.bundle
    positions, weights = res.read_layers()
    causal = res.is_causal
    prefix = res.token_prefix()
    prefix_chars = len(prefix) + 1 if prefix else 0
    model_texts = {i: (prefix + "\n" + docs[i].text) if prefix else docs[i].text for i in todo}
    pad_id = bundle.pad_token_id if bundle.pad_token_id is not None else 0
    encodings = res.tokenizer.encode_batch([model_texts[i] for i in todo])
    lengths = [len(e.ids) for e in encodings]
    for group in length_sorted_batches(lengths, batch_size, MAX_BATCH_CELLS):
        doc_idx = [todo[g] for g in group]
        group_encodings = [encodings[g] for g in group]
        batch = pad_encodings(group_encodings, pad_id=pad_id, padding_side=bundle.padding_side)
        offsets = [np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2) for e in group_encodings]
        attentions = bundle.run_attention(batch.input_ids, batch.attention_mask)
        for b, i in enumerate(doc_idx):
            doc = docs[i]
            kept = kept_text_tokens(model_texts[i], offsets[b], prefix_chars)
            layers = crop_attention(attentions, batch, b)
            per_layer = []
            for p in positions:
                A = np.ascontiguousarray(layers[p], dtype=np.float32)
                scores = attention.token_method_scores(A, causal=causal, content_mask=kept, methods=bases)
                per_layer.append({m: scores[m][kept] for m in bases})
            fused = per_layer[0] if len(per_layer) == 1 else attention.fuse_layers(per_layer, weights)
            word_spans = np.asarray(locate_word_offsets(doc.text, doc.words), dtype=np.int64).reshape(-1, 2)
            out[i] = SpanRead(
                {m: np.asarray(fused[m], dtype=np.float32) for m in bases}, offsets[b][kept] - prefix_chars, word_spans
            )
    return out


def score_spans(res, doc: Document, read: SpanRead, method: str, idf: Idf | None) -> np.ndarray:
    """Candidate scores from token scores over each candidate's character span (§4.7)."""
    token_scores = read.token_scores[attention.base_method(method)[0]]
    if idf is not None:
        tfidf = tfidf_word_values(doc.words, doc.tags, res.settings.language, idf.lookup)
        token_tfidf = attention.project_word_values_to_tokens(read.word_spans, read.token_offsets, tfidf)
        token_scores = attention.idf_hybrid(token_scores, token_tfidf)
    spans = np.array(
        [(read.word_spans[c.word_start][0], read.word_spans[c.word_end - 1][1]) for c in doc.candidates],
        dtype=np.int64,
    )
    return attention.span_mean_scores(read.token_offsets, token_scores, spans)


SPANS = Stages("compat_spans", prepare=prepare, read=read_spans, score=score_spans, rank=rank)
