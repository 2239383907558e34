"""Query-key scoring (keyatten 0.3.1 §9, QKLoRAExtractor) on onnxruntime.

Each token is scored by the scaled dot product between the query of the last valid token and that
token's key at one layer, averaged over query heads; characters take the best score of the tokens
covering them (floor 0); a word-mode candidate (§4.5) scores the mean over its characters.

Pipeline, as pure functions: tokenise ``prefix + text`` with offsets → one forward pass of a QK bundle
(``keyatten-lite-export qk``) → :func:`qk_token_scores` (with :func:`last_valid_index` and
:func:`repeat_kv_heads`) → :func:`char_scores_from_tokens` → :func:`char_span_means` →
:func:`rank_spans`. I/O (the bundle, the segmenter) stays in :class:`QKLoRAExtractor`. A LoRA adapter
is merged at export (``keyatten-lite-export qk BASE --adapter A``), so the runtime has no adapter logic.

Profiles:

* ``"compat"``: 0.3.1 exactly: the raw ``q_proj``/``k_proj`` outputs (for Qwen3: before q_norm/k_norm
  and before RoPE, so not what forms the attention logits), 0.3.1's word alignment (which can raise).
* ``"default"``: the queries and keys the attention really multiplies (``q_attn``/``k_attn``: after
  q_norm/k_norm and RoPE), and the alignment that never moves backwards and never raises.

Both: ``extract_keywords_batch`` runs padded, length-sorted batches (0.3.1 loops), with either padding
side (the query is the last *valid* token of each row).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.extractors.segment_attention import check_rerank_top_k, resolve_layer_argument

__all__ = [
    "QKLoRAExtractor",
    "char_scores_from_tokens",
    "last_valid_index",
    "qk_token_scores",
    "rank_spans",
    "repeat_kv_heads",
    "char_span_means",
    "word_candidate_spans",
]

PROFILE_OUTPUTS = {"compat": ("q_proj", "k_proj"), "default": ("q_attn", "k_attn")}
DEFAULT_MAX_LENGTH = 512  # 0.3.1's truncation (§9.3 step 1)


def repeat_kv_heads(keys: np.ndarray, num_heads: int) -> np.ndarray:
    """``[Hkv, S, D]`` -> ``[num_heads, S, D]``, each KV head repeated consecutively (GQA: query head
    ``h`` reads KV head ``h // (num_heads / Hkv)``)."""
    kv_heads = keys.shape[0]
    if kv_heads < 1 or num_heads % kv_heads:
        raise InvalidArgumentError(f"{num_heads} query heads cannot share {kv_heads} key/value heads")
    return np.repeat(keys, num_heads // kv_heads, axis=0)


def last_valid_index(attention_mask_row: np.ndarray) -> int:
    """Position of the last real token of a padded row (right or left padding)."""
    valid = np.flatnonzero(np.asarray(attention_mask_row))
    if not valid.size:
        raise InvalidArgumentError("the row has no valid token")
    return int(valid[-1])


def qk_token_scores(queries: np.ndarray, keys: np.ndarray, head_dim: int, query_index: int) -> np.ndarray:
    """Per token ``i``: mean over query heads of ``q_h(query_index) · k_h(i) / sqrt(head_dim)``.

    ``queries`` ``[S, Hq*D]``, ``keys`` ``[S, Hkv*D]`` (heads flattened in head order); returns ``[S]``.
    """
    q = np.asarray(queries, dtype=np.float32)
    k = np.asarray(keys, dtype=np.float32)
    seq = q.shape[0]
    q_heads = q.reshape(seq, -1, head_dim).transpose(1, 0, 2)  # [Hq, S, D]
    k_heads = repeat_kv_heads(k.reshape(seq, -1, head_dim).transpose(1, 0, 2), q_heads.shape[0])
    logits = np.einsum("hd,hsd->hs", q_heads[:, query_index], k_heads) / np.float32(math.sqrt(head_dim))
    return logits.mean(axis=0)


def char_scores_from_tokens(offsets: Sequence[tuple[int, int]], token_scores: Sequence[float], prefix_chars: int, text_chars: int) -> np.ndarray:
    """``[text_chars]``: each character's best covering token score, floor 0 (§9.3 steps 5-6).

    Tokens with empty offsets or starting inside the prefix are left out; the others are shifted by
    ``prefix_chars`` and clipped to the text. Uncovered characters score 0.
    """
    out = np.zeros(text_chars, dtype=np.float32)
    for (start, end), score in zip(offsets, token_scores):
        if end <= start or start < prefix_chars:
            continue
        begin, stop = max(0, start - prefix_chars), min(text_chars, end - prefix_chars)
        if stop > begin:
            np.maximum(out[begin:stop], np.float32(score), out=out[begin:stop])
    return out


def char_span_means(char_scores: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Mean character score over each ``[start, end)`` span (0 for an empty span)."""
    return np.array(
        [float(char_scores[s:e].mean()) if e > s else 0.0 for s, e in spans], dtype=np.float64
    )


def word_candidate_spans(text: str, language: str, *, compat: bool = False) -> tuple[list[str], list[int], list[tuple[int, int]]]:
    """Word-mode candidates (§4.5, no user dictionary): (texts, span starts, ``[start, end)`` spans).

    ``compat``: 0.3.1's word alignment (which can raise, §4.7). The QK trainer (export/qk_train.py)
    uses the same candidates as the runtime.
    """
    from keyatten_lite.text.candidates import build_candidates
    from keyatten_lite.text.segment import locate_word_offsets, segment_text

    words, tags = segment_text(text, language)
    candidates = build_candidates(words, tags, language)
    if not candidates:
        return [], [], []
    offsets = locate_word_offsets(text, words, compat=compat)
    spans = [(offsets[c.word_start][0], offsets[c.word_end - 1][1]) for c in candidates]
    return [c.text for c in candidates], [s for s, _ in spans], spans


def rank_spans(texts: Sequence[str], scores: Sequence[float], starts: Sequence[int], top_k: int) -> list[tuple[str, float]]:
    """Sorted by ``(-score, span start)``, stable (equal pairs keep candidate order); first ``top_k``."""
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], starts[i]))
    return [(texts[i], float(scores[i])) for i in order[:top_k]]


class QKLoRAExtractor:
    """Keywords = word-mode candidates scored by the last token's query against their keys.

    ``model``: a QK bundle (directory or installed name), exported with ``keyatten-lite-export qk
    MODEL [--adapter A]`` (zero-shot without an adapter); None: the language's trained bundle
    (``qk-e5-small-zh``, ``qk-minilm-en``, built by ``keyatten-lite models build``). ``language``: "zh" or "en".
    ``instruction_prefix``: text put before the document with no separator (default: 0.3.1's Chinese
    prefix for zh, "" for en). ``layer``: "auto" or the layer the bundle exported. ``profile``:
    "default" (the real attention q/k) or "compat" (0.3.1's raw projections).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        language: str = "zh",
        instruction_prefix: str | None = None,
        layer: str | int = "auto",
        profile: str = "default",
        max_length: int = DEFAULT_MAX_LENGTH,
        intra_op_threads: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        if language not in ("zh", "en"):
            raise InvalidArgumentError(f"language must be 'zh' or 'en', got {language!r}")
        if model is None:
            from keyatten_lite.model.registry import DEFAULT_QK_BUNDLES, default_qk_bundle_for

            model = default_qk_bundle_for(language)
            if model is None:
                wanted = [name for name, info in DEFAULT_QK_BUNDLES.items() if info["language"] == language]
                raise InvalidArgumentError(
                    f"model: no trained QK bundle for {language!r} is built ({', '.join(wanted)}); run "
                    "`keyatten-lite models build`, or pass a QK bundle exported with `keyatten-lite-export qk "
                    "MODEL [--adapter ADAPTER] -o OUT`"
                )
        if profile not in PROFILE_OUTPUTS:
            raise InvalidArgumentError(f"profile must be 'default' or 'compat', got {profile!r}")
        if instruction_prefix is not None and not isinstance(instruction_prefix, str):
            raise InvalidArgumentError(f"instruction_prefix must be a str or None, got {type(instruction_prefix).__name__}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise InvalidArgumentError(f"max_length must be an int >= 2, got {max_length!r}")
        from keyatten_lite.errors import BundleError
        from keyatten_lite.model.align import configured_tokenizer
        from keyatten_lite.model.bundle import open_bundle
        from keyatten_lite.pipeline.resources import DEFAULT_ZH_CAUSAL_INSTRUCTION_PREFIX

        self.bundle = open_bundle(
            model, intra_op_threads=intra_op_threads, providers=list(providers) if providers else None
        )
        if self.bundle.kind != "qk":
            raise BundleError(
                f"bundle {self.bundle.name!r} has kind {self.bundle.kind!r}; QKLoRAExtractor needs a QK bundle "
                "(`keyatten-lite-export qk MODEL -o OUT`)"
            )
        self.layer = resolve_layer_argument(layer, self.bundle)
        self.bundle.layer_position(self.layer)  # InvalidArgumentError for a bad or unexported layer
        self.language = language
        self.profile = profile
        self.instruction_prefix = (
            (DEFAULT_ZH_CAUSAL_INSTRUCTION_PREFIX if language == "zh" else "") if instruction_prefix is None else instruction_prefix
        )
        record = self.bundle.manifest["qk"]
        self.head_dim = int(record["head_dim"])
        self.max_length = min(max_length, self.bundle.max_length)
        self._outputs = list(PROFILE_OUTPUTS[profile])
        self._tokenizer = configured_tokenizer(self.bundle.tokenizer(), self.max_length)
        self._add_special = bool(self.bundle.manifest.get("add_special_tokens", True))

    # ------------------------------------------------------------------ candidates
    def _candidates(self, text: str) -> tuple[list[str], list[int], list[tuple[int, int]]]:
        return word_candidate_spans(text, self.language, compat=self.profile == "compat")

    # ------------------------------------------------------------------ scoring
    def _char_scores(self, texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
        from keyatten_lite.model.align import MAX_BATCH_CELLS, length_sorted_batches, pad_encodings

        prefix = self.instruction_prefix
        encodings = self._tokenizer.encode_batch([prefix + t for t in texts], add_special_tokens=self._add_special)
        pad_id = self.bundle.pad_token_id if self.bundle.pad_token_id is not None else 0
        out: list[np.ndarray] = [np.zeros(0, np.float32)] * len(texts)
        q_name, k_name = self._outputs
        for group in length_sorted_batches([len(e.ids) for e in encodings], batch_size, MAX_BATCH_CELLS):
            batch = pad_encodings([encodings[i] for i in group], pad_id=pad_id, padding_side=self.bundle.padding_side)
            result = self.bundle.run_outputs(batch.input_ids, batch.attention_mask, [q_name, k_name])
            for row, index in enumerate(group):
                keep = batch.token_slice(row)
                scores = qk_token_scores(
                    result[q_name][row], result[k_name][row], self.head_dim, last_valid_index(batch.attention_mask[row])
                )[keep]
                out[index] = char_scores_from_tokens(encodings[index].offsets, scores, len(prefix), len(texts[index]))
        return out

    def extract_keywords(self, text: str, top_k: int = 10, *, with_scores: bool = False):
        if not isinstance(text, str):
            raise InvalidArgumentError(f"text must be a str, got {type(text).__name__}")
        return self.extract_keywords_batch([text], top_k=top_k, with_scores=with_scores)[0]

    def extract_keywords_with_scores(self, text: str, top_k: int = 10) -> list[tuple[str, float]]:
        return self.extract_keywords(text, top_k=top_k, with_scores=True)

    def extract_keywords_batch(self, texts: Sequence[str], top_k: int = 10, *, with_scores: bool = False, batch_size: int = 8) -> list:
        """One ranked list per text; the texts with candidates run in padded, length-sorted batches."""
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise InvalidArgumentError("texts must be a sequence of strings")
        check_rerank_top_k(top_k)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
        for text in texts:
            if not isinstance(text, str):
                raise InvalidArgumentError(f"every text must be a str, got {type(text).__name__}")
        found = [self._candidates(t) if t.strip() else ([], [], []) for t in texts]
        todo = [i for i, (cands, _, _) in enumerate(found) if cands]
        chars = dict(zip(todo, self._char_scores([texts[i] for i in todo], batch_size))) if todo else {}
        out = []
        for i, (cands, starts, spans) in enumerate(found):
            ranked = rank_spans(cands, char_span_means(chars[i], spans).tolist(), starts, top_k) if cands else []
            out.append(ranked if with_scores else [c for c, _ in ranked])
        return out
