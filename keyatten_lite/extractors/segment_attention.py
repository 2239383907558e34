"""Candidate-segment attention (keyatten 0.3.1 §8, CandidateSegmentAttentionExtractor) on onnxruntime.

The document is followed by a list of its BIO candidates in one prompt; a candidate's score is the
attention its tokens receive, at one layer, from every position of the prompt (head mean, summed over
the query rows, averaged over the candidate's tokens). With ``candidate_order="random"`` the list is
shuffled once per seed (Python's ``random.Random(seed).shuffle``, as 0.3.1) and the scores are averaged
over the passes in which the candidate survived truncation, which evens out the position bias of
causal attention.

Pipeline, as pure functions: :func:`build_segment_text` (prompt and candidate character spans) →
tokenise with offsets → :func:`candidate_token_spans` → one forward pass →
:func:`received_scores` → :func:`combine_passes` → (default profile) :func:`fuse_rankings`. I/O (the bundle's graph, the BIO tagger) stays in
:class:`CandidateSegmentAttentionExtractor`. A LoRA-tuned model reaches the runtime merged and exported
as an ordinary attention bundle (``keyatten-lite-export merge-lora``, then ``encoder``), so the
runtime has no adapter logic.

Differences from 0.3.1 (the ``profile="compat"`` path keeps its behaviour):

* English works too (0.3.1 refused it), with an English prompt frame.
* Ranking: the default profile fuses the reranker's order with the two rankings the candidates come
  from (the BIO tagger's confidence order and the default extractor's keyword order) by reciprocal
  rank, ``sum 1 / (FUSION_K + rank)`` over the three lists. The three err differently, so together they
  beat each alone (CSL dev 800-999, F1@10: reranker .195, default extractor .196, BIO .167, fused .222;
  the best fusion without the reranker .210). ``rank_fusion=False`` and compat rank by the reranker alone, as 0.3.1.
* ``extract_keywords_batch`` runs every (document, seed) prompt through padded, length-sorted batches.
* Truncation: 0.3.1 cuts the prompt at ``max_length`` tokens from the end, so a long document loses its
  whole candidate list and returns ``[]`` (§8.3). The default profile shortens the *document* instead,
  so that the candidate section fits; compat keeps the plain cut.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from keyatten_lite.errors import InvalidArgumentError

__all__ = [
    "CandidateSegmentAttentionExtractor",
    "DEFAULT_INSTRUCTIONS",
    "PROMPT_FRAMES",
    "SegmentPrompt",
    "build_segment_text",
    "CandidatePool",
    "candidate_token_spans",
    "check_rerank_top_k",
    "combine_passes",
    "fuse_rankings",
    "received_scores",
    "resolve_auto_layer",
    "resolve_layer_argument",
    "shuffled_orders",
]

DEFAULT_INSTRUCTIONS = {
    "zh": "为这篇文章选择最重要的关键词。",  # 0.3.1's default instruction
    "en": "Choose the most important keywords of this article.",
}
# (before the document, before the candidates, the unnumbered candidate marker): 0.3.1's for Chinese.
# Random orders averaged by a trained reranker bundle in the default profile (seeds candidate_seed, +1, +2).
TRAINED_SEEDS = 3
# Reciprocal-rank fusion (default profile): the usual constant of 60 flattens a list of ~35 candidates;
# 10 keeps the top ranks apart (F1@10 at equal weights, CSL dev 800-999 / Inspec dev 300: k 5 .220/.301,
# 10 .222/.300, 20 .225/.296, 60 .207/.261; the best mean of the two at 10).
FUSION_K = 10
# How deep the default extractor's keyword order is read for the fusion when no words join the
# candidates (otherwise: its top ``word_candidates``, the list the candidates come from). CSL dev 800-999:
# its top 15 against its top 50 change the fused F1@10 by .0007.
FUSION_DEFAULT_DEPTH = 15
# Chinese clean candidates: longer aligned spans are run-ons, not keywords (1.6 % of CSL dev 800-999 gold
# keywords exceed 10 characters; fused dev F1@10 with the cap at 10 / 12 / 16 / none: .236 / .236 / .234 / .234).
MAX_CLEAN_SPAN_CHARS = 10
PROMPT_FRAMES = {
    "zh": ("\n\n文章：\n", "\n\n候选：\n", "<候选>\n"),
    "en": ("\n\nArticle:\n", "\n\nCandidates:\n", "<candidate>\n"),
}


@dataclass(frozen=True)
class CandidatePool:
    """A document's candidates (BIO first, then the default extractor's keywords the tagger missed) and
    the two rankings they come from, best first: BIO confidence order, the default extractor's order."""

    candidates: tuple[str, ...]
    bio_ranking: tuple[str, ...]
    default_ranking: tuple[str, ...]


@dataclass(frozen=True)
class SegmentPrompt:
    """The prompt text and, per candidate (in prompt order), its ``[start, end)`` character span."""

    text: str
    candidates: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    document_span: tuple[int, int]


def build_segment_text(
    instruction: str, document: str, candidates: Sequence[str], *, language: str = "zh", number_candidates: bool = False
) -> SegmentPrompt:
    """``instruction + frame + document + frame + one line per candidate`` (§8.2); the marker of each
    line is ``"[k] "`` (k from 1) with ``number_candidates``, else the frame's candidate marker."""
    before_doc, before_candidates, marker = PROMPT_FRAMES.get(language, PROMPT_FRAMES["en"])
    parts = [instruction, before_doc]
    doc_start = len(instruction) + len(before_doc)
    parts += [document, before_candidates]
    position = doc_start + len(document) + len(before_candidates)
    spans = []
    for k, candidate in enumerate(candidates, start=1):
        prefix = f"[{k}] " if number_candidates else marker
        position += len(prefix)
        spans.append((position, position + len(candidate)))
        parts += [prefix, candidate, "\n"]
        position += len(candidate) + 1
    text = "".join(parts)
    return SegmentPrompt(text, tuple(candidates), tuple(spans), (doc_start, doc_start + len(document)))


def candidate_token_spans(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[tuple[int, int] | None]:
    """Per character span, the tokens ``[first, last + 1)`` whose non-empty offsets overlap it, or None
    (a candidate cut off by truncation, or one no token covers)."""
    starts = np.array([s for s, _ in offsets], dtype=np.int64) if len(offsets) else np.zeros(0, np.int64)
    ends = np.array([e for _, e in offsets], dtype=np.int64) if len(offsets) else np.zeros(0, np.int64)
    usable = ends > starts
    out: list[tuple[int, int] | None] = []
    for begin, end in spans:
        hit = np.flatnonzero(usable & (starts < end) & (ends > begin))
        out.append((int(hit[0]), int(hit[-1]) + 1) if hit.size else None)
    return out


def received_scores(attention: np.ndarray, token_spans: Sequence[tuple[int, int] | None]) -> list[float | None]:
    """Mean over each span's tokens of the attention the token receives from every (valid) query row
    of ``attention`` [n, n] (queries × keys, head mean, one layer)."""
    received = np.asarray(attention, dtype=np.float64).sum(axis=0)
    return [None if span is None else float(received[span[0] : span[1]].mean()) for span in token_spans]


def shuffled_orders(candidates: Sequence[str], order: str, seeds: Sequence[int]) -> list[list[str]]:
    """One candidate list per seed: as given (``bio``) or shuffled by ``random.Random(seed)``."""
    lists = []
    for seed in seeds:
        copy = list(candidates)
        if order == "random":
            random.Random(int(seed)).shuffle(copy)
        lists.append(copy)
    return lists


def combine_passes(passes: Sequence[dict[str, float]], top_k: int) -> list[tuple[str, float]]:
    """Mean score over the passes in which each candidate was usable; ``(-score, text)`` order."""
    totals: dict[str, list[float]] = {}
    for scores in passes:
        for candidate, score in scores.items():
            totals.setdefault(candidate, []).append(score)
    ranked = sorted(((c, sum(v) / len(v)) for c, v in totals.items()), key=lambda item: (-item[1], item[0]))
    return ranked[:top_k]


def fuse_rankings(reranked: Sequence[tuple[str, float]], rankings: Sequence[Sequence[str]], top_k: int, *, k: float = FUSION_K) -> list[tuple[str, float]]:
    """Reciprocal-rank fusion of the reranked candidates (best first) with other rankings of them: a
    candidate's score is ``sum 1 / (k + rank)`` (rank from 0) over ``reranked`` and every ranking that
    holds it (compared lower case, whitespace removed); only reranked candidates are ranked;
    ``(-score, text)`` order."""
    positions: list[dict[str, int]] = []
    for ranking in rankings:
        first: dict[str, int] = {}
        for rank, text in enumerate(ranking):
            first.setdefault(_folded(text), rank)
        positions.append(first)
    fused = []
    for rank, (candidate, _) in enumerate(reranked):
        key = _folded(candidate)
        score = 1.0 / (k + rank) + sum(1.0 / (k + p[key]) for p in positions if key in p)
        fused.append((candidate, score))
    return sorted(fused, key=lambda item: (-item[1], item[0]))[:top_k]


def resolve_auto_layer(num_layers: int, exported_layers: Sequence[int]) -> int:
    """§9.2 ``"auto"``: the exported layer closest to ``min(L-1, max(0, floor(0.75 L)))``, the larger
    index on a tie."""
    target = min(num_layers - 1, max(0, (3 * num_layers) // 4))
    return min(exported_layers, key=lambda layer: (abs(layer - target), -layer))


def resolve_layer_argument(layer: str | int, bundle) -> int:
    """``"auto"`` (§9.2, :func:`resolve_auto_layer` over the bundle's layers), an index as a str, or
    the value as given (``bundle.layer_position`` then refuses what is not an exported layer index)."""
    if isinstance(layer, str) and layer.strip().lower() == "auto":
        return resolve_auto_layer(bundle.num_layers, bundle.exported_layers)
    if isinstance(layer, str):
        try:
            return int(layer.strip())
        except ValueError:
            raise InvalidArgumentError(f"layer must be 'auto' or a layer index, got {layer!r}") from None
    return layer


def check_rerank_top_k(top_k: Any) -> int:
    """The rerankers' ``top_k``: an int >= 0 (0 gives empty lists, as 0.3.1's slice)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise InvalidArgumentError(f"top_k must be an int >= 0, got {top_k!r}")
    return top_k


def _trained_candidates(bundle) -> dict | None:
    """The candidate settings a reranker bundle was trained with (``csa.candidates`` in bundle.json),
    None for an untrained bundle; a damaged record is refused, not guessed."""
    from keyatten_lite.errors import BundleError

    record = bundle.manifest.get("csa")
    if record is None:
        return None
    trained = record.get("candidates") if isinstance(record, dict) else None
    if not isinstance(trained, dict) or not all(
        isinstance(trained.get(key), int) and not isinstance(trained.get(key), bool) and trained[key] >= low
        for key, low in (("max_candidates", 2), ("word_candidates", 0))
    ):
        raise BundleError(f"{bundle.path}: bundle.json 'csa.candidates' must hold int max_candidates >= 2 and word_candidates >= 0")
    return trained


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"a seed must be an int, got {value!r}")
    return int(value)


def _seeds(values: Any) -> list[int] | None:
    """``random_seeds`` as a list of ints (None when empty); InvalidArgumentError for anything else."""
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InvalidArgumentError(f"random_seeds must be a sequence of ints, got {values!r}")
    return [_seed(v) for v in values] or None


def _folded(text: str) -> str:
    """Lower case, whitespace removed: two candidates that fold alike are one."""
    return "".join(text.lower().split())


def _dedup_candidates(spans: Sequence[Any], limit: int) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for item in spans:
        text = item[0] if isinstance(item, (tuple, list)) else item
        if isinstance(text, str) and text.strip() and text not in seen:
            seen.add(text)
            out.append(text)
        if len(out) >= limit:
            break
    return out


class CandidateSegmentAttentionExtractor:
    """Keywords = BIO candidates reranked by the attention they receive in a candidate-list prompt.

    ``model``: an attention bundle (name or directory; default: the language's default bundle, run
    zero-shot); a LoRA-tuned model is merged and exported to a bundle at build time. ``bio_model_path``:
    the BIO bundle that proposes candidates (default: the language's default BIO bundle). ``layer``:
    ``"auto"`` (§9.2) or a layer index the bundle exported. ``word_candidates``: the default
    extractor's top keywords added to the BIO candidates. ``rank_fusion`` (default profile: on): rank
    by :func:`fuse_rankings` of the reranker's, the tagger's and the default extractor's orders.
    ``clean_candidates`` (default profile: on for Chinese): leave out the tagger's malformed spans and,
    for Chinese, put the others on word boundaries (fragments widened, edge function words trimmed)
    and leave out lone characters and run-ons (:meth:`_well_formed`). The other arguments are 0.3.1's.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        bio_model_path: str | None = None,
        language: str = "zh",
        layer: str | int = "auto",
        max_length: int = 1024,
        max_candidates: int | None = None,
        bio_profile: str = "high_recall",
        candidate_order: str | None = None,
        candidate_seed: int = 42,
        random_seeds: Sequence[int] | None = None,
        instruction: str | None = None,
        number_candidates: bool = False,
        profile: str = "default",
        variant: str = "fp32",
        intra_op_threads: int | None = None,
        providers: Sequence[str] | None = None,
        adapter_path: str | None = None,
        word_candidates: int | None = None,
        rank_fusion: bool | None = None,
        clean_candidates: bool | None = None,
    ) -> None:
        if adapter_path is not None:
            raise InvalidArgumentError(
                "adapter_path: the runtime runs merged models; merge the adapter and export a bundle with "
                "`keyatten-lite-export merge-lora BASE ADAPTER -o MERGED` then `keyatten-lite-export encoder MERGED ...`"
            )
        if language not in DEFAULT_INSTRUCTIONS:
            raise InvalidArgumentError(f"language must be one of {sorted(DEFAULT_INSTRUCTIONS)}, got {language!r}")
        if profile not in ("default", "compat"):
            raise InvalidArgumentError(f"profile must be 'default' or 'compat', got {profile!r}")
        from keyatten_lite.model.bundle import open_bundle
        from keyatten_lite.model.registry import DEFAULT_BIO_BUNDLES, default_bundle_for, default_csa_bundle_for

        if model is None and profile == "default":
            model = default_csa_bundle_for(language) or default_bundle_for(language)
        self.bundle = open_bundle(
            model or default_bundle_for(language), variant=variant, intra_op_threads=intra_op_threads,
            providers=list(providers) if providers else None,
        )
        # A trained reranker bundle records the candidates it was trained on; with it, the default
        # profile also averages 3 random orders (CSL dev: F1@10 .196 against .184 with one).
        trained = _trained_candidates(self.bundle) if profile == "default" else None
        if max_candidates is None:
            max_candidates = int(trained["max_candidates"]) if trained else 30
        if word_candidates is None:
            word_candidates = int(trained["word_candidates"]) if trained else 0
        if candidate_order is None:
            candidate_order = "random"
        if random_seeds is None and trained:
            random_seeds = [candidate_seed + i for i in range(TRAINED_SEEDS)] if isinstance(candidate_seed, int) else None
        if candidate_order not in ("bio", "random"):
            raise InvalidArgumentError(f"candidate_order must be 'bio' or 'random', got {candidate_order!r}")
        if isinstance(max_candidates, bool) or not isinstance(max_candidates, int) or max_candidates < 2:
            raise InvalidArgumentError(f"max_candidates must be an int >= 2, got {max_candidates!r}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 8:
            raise InvalidArgumentError(f"max_length must be an int >= 8, got {max_length!r}")
        if isinstance(word_candidates, bool) or not isinstance(word_candidates, int) or word_candidates < 0:
            raise InvalidArgumentError(f"word_candidates must be an int >= 0, got {word_candidates!r}")
        if word_candidates and profile == "compat":
            raise InvalidArgumentError("word_candidates: 0.3.1 (profile='compat') lists BIO candidates only")
        if rank_fusion is None:
            rank_fusion = profile == "default"
        if not isinstance(rank_fusion, bool):
            raise InvalidArgumentError(f"rank_fusion must be a bool, got {rank_fusion!r}")
        if rank_fusion and profile == "compat":
            raise InvalidArgumentError("rank_fusion: 0.3.1 (profile='compat') ranks by the reranker alone")
        if clean_candidates is None:
            # Chosen on dev (F1@10, shipped rerankers): CSL dev .222 -> .228; Inspec dev .302 -> .300, so
            # English keeps the spans its reranker was trained on unless asked, or trained on clean spans.
            clean_candidates = profile == "default" and (language == "zh" or (trained or {}).get("clean_candidates") is True)
        if not isinstance(clean_candidates, bool):
            raise InvalidArgumentError(f"clean_candidates must be a bool, got {clean_candidates!r}")
        if clean_candidates and profile == "compat":
            raise InvalidArgumentError("clean_candidates: 0.3.1 (profile='compat') lists the tagger's spans as they come")
        self.rank_fusion = rank_fusion
        self.clean_candidates = clean_candidates
        self._segmenter = None
        self.language = language
        self.layer = resolve_layer_argument(layer, self.bundle)
        self._layer_position = self.bundle.layer_position(self.layer)
        self.bio_model_path = bio_model_path or next(
            name for name, info in DEFAULT_BIO_BUNDLES.items() if info["language"] == language
        )
        self._bio = None
        self._bio_args = {"intra_op_threads": intra_op_threads}
        self.max_length = min(int(max_length), self.bundle.max_length)
        self.max_candidates = max_candidates
        self.bio_profile = bio_profile
        self.candidate_order = candidate_order
        self.candidate_seed = _seed(candidate_seed)
        self.random_seeds = _seeds(random_seeds)
        self.instruction = DEFAULT_INSTRUCTIONS[language] if instruction is None else str(instruction)
        self.number_candidates = bool(number_candidates)
        self.profile = profile
        self.word_candidates = word_candidates
        self._words = None
        from keyatten_lite.model.align import configured_tokenizer

        self._tokenizer = configured_tokenizer(self.bundle.tokenizer(), self.max_length)
        self._add_special = bool(self.bundle.manifest.get("add_special_tokens", True))

    # ------------------------------------------------------------------ candidates
    def bio_tagger(self):
        if self._bio is None:
            from keyatten_lite.extractors.bio_tagger import BIOExtractor

            self._bio = BIOExtractor(self.bio_model_path, **self._bio_args)
        return self._bio

    def word_extractor(self):
        if self._words is None:
            from keyatten_lite.extractors.keyatten import KeyAttenExtractor

            self._words = KeyAttenExtractor(language=self.language, intra_op_threads=self._bio_args["intra_op_threads"])
        return self._words

    def candidates(self, text: str) -> list[str]:
        """The first ``max_candidates`` BIO candidates of ``text`` (profile order), then, with
        ``word_candidates``, the default extractor's top keywords the tagger did not propose (the
        tagger alone finds about 37 % of the gold keywords of Chinese abstracts: a ceiling for the rerank)."""
        return list(self.candidate_pool(text).candidates)

    def _well_formed(self, text: str, spans: Sequence[Any]) -> list[Any]:
        """``clean_candidates``: the tagger's spans without the malformed ones and, for Chinese, on word
        boundaries of jieba's dictionary segmentation (a fragment widened to the words it cuts, edge
        function words trimmed: :func:`keyatten_lite.text.spans.align_to_words`), without lone
        characters and phrases over ``MAX_CLEAN_SPAN_CHARS``; the order is kept (a span aligned onto
        an earlier one is left to the deduplication), so the next spans fill the freed places."""
        from keyatten_lite.text.spans import WordGrid, align_to_words, is_lone_ideograph, is_malformed

        grid = None
        if self.language == "zh":
            if self._segmenter is None:
                from keyatten_lite.text.segment import ChineseSegmenter

                self._segmenter = ChineseSegmenter()
            words = self._segmenter.dictionary_words(text)
            # A segmentation that does not cover the text cannot say where its words end: no alignment.
            grid = WordGrid.of(text, words, self._segmenter.dictionary_tags(words))
        kept = []
        for item in spans:
            span = item[0] if isinstance(item, (tuple, list)) else item
            if not isinstance(span, str) or is_malformed(span):
                continue
            if self.language == "zh":
                if grid is not None:
                    span = align_to_words(span, grid)
                if is_malformed(span) or is_lone_ideograph(span) or len(span.strip()) > MAX_CLEAN_SPAN_CHARS:
                    continue
                if isinstance(item, (tuple, list)):
                    item = (span, *item[1:])
                else:
                    item = span
            kept.append(item)
        return kept

    def candidate_pool(self, text: str) -> CandidatePool:
        """:meth:`candidates` with the BIO and default-extractor rankings the fusion reads."""
        spans = self.bio_tagger().extract_spans_profile(text, profile=self.bio_profile)
        if self.clean_candidates:
            spans = self._well_formed(text, spans)
        bio = _dedup_candidates(spans, self.max_candidates)
        # The default extractor's list is read once, at the depth the candidates need (the English default
        # fills a short list with nested phrases in score order, so a deeper list is not an extension).
        depth = self.word_candidates or (FUSION_DEFAULT_DEPTH if self.rank_fusion else 0)
        ranking = self.word_extractor().extract_keywords(text, top_k=depth) if depth else []
        found = list(bio)
        seen = {_folded(c) for c in found}
        for word in ranking[: self.word_candidates]:
            if _folded(word) not in seen:
                seen.add(_folded(word))
                found.append(word)
        return CandidatePool(tuple(found), tuple(bio), tuple(ranking))

    def seeds(self, random_seeds: Sequence[int] | None = None) -> list[int]:
        seeds = _seeds(random_seeds) or self.random_seeds
        if self.candidate_order == "random" and seeds:
            return seeds
        return [self.candidate_seed]

    # ------------------------------------------------------------------ prompts
    def _fits(self, document: str, candidates: Sequence[str]) -> bool:
        prompt = build_segment_text(self.instruction, document, candidates, language=self.language, number_candidates=self.number_candidates)
        return not self._tokenizer.encode(prompt.text, add_special_tokens=self._add_special).overflowing

    def _fit_document(self, document: str, candidates: Sequence[str]) -> str:
        """Default profile: the longest document prefix (on token boundaries) with which the whole
        prompt fits ``max_length`` tokens; "" when even the candidates alone do not fit."""
        if self._fits(document, candidates):
            return document
        ends = [end for _, end in self._tokenizer.encode(document, add_special_tokens=False).offsets]
        low, high = 0, len(ends)  # the prefix of ``low`` tokens fits (0 tokens: tested below), ``high`` does not
        if not self._fits("", candidates):
            return ""
        while high - low > 1:  # tokens of a prefix re-tokenise in context, so search rather than count
            middle = (low + high) // 2
            if self._fits(document[: ends[middle - 1]], candidates):
                low = middle
            else:
                high = middle
        return document[: ends[low - 1]] if low else ""

    def _prompts(self, candidates: Sequence[str], text: str, random_seeds) -> list[SegmentPrompt]:
        if len(candidates) < 2:
            return []
        prompts = []
        for ordered in shuffled_orders(candidates, self.candidate_order, self.seeds(random_seeds)):
            document = text if self.profile == "compat" else self._fit_document(text, ordered)
            prompts.append(
                build_segment_text(self.instruction, document, ordered, language=self.language, number_candidates=self.number_candidates)
            )
        return prompts

    # ------------------------------------------------------------------ scoring
    def _score_prompts(self, prompts: Sequence[SegmentPrompt], batch_size: int) -> list[dict[str, float]]:
        from keyatten_lite.model.align import MAX_BATCH_CELLS, length_sorted_batches, pad_encodings

        encodings = self._tokenizer.encode_batch([p.text for p in prompts], add_special_tokens=self._add_special)
        results: list[dict[str, float]] = [{} for _ in prompts]
        pad_id = self.bundle.pad_token_id if self.bundle.pad_token_id is not None else 0
        for group in length_sorted_batches([len(e.ids) for e in encodings], batch_size, MAX_BATCH_CELLS):
            batch = pad_encodings([encodings[i] for i in group], pad_id=pad_id, padding_side="right")
            attention = self.bundle.run_attention(batch.input_ids, batch.attention_mask)[self._layer_position]
            for row, index in enumerate(group):
                n = int(batch.lengths[row])
                spans = candidate_token_spans(encodings[index].offsets, prompts[index].spans)
                scores = received_scores(attention[row, :n, :n], spans)
                usable = [(c, s) for c, s in zip(prompts[index].candidates, scores) if s is not None]
                results[index] = dict(usable) if len(usable) >= 2 else {}
        return results

    def scored_passes(
        self, text: str, pool: CandidatePool | None = None, *, random_seeds: Sequence[int] | None = None, batch_size: int = 8,
    ) -> list[dict[str, float]]:
        """One dict per pass (per seed of :meth:`seeds`, in order): each usable candidate's received
        attention in that pass's prompt, what :meth:`extract_keywords_batch` averages
        (:func:`combine_passes`) before ranking or fusing. ``pool`` (default: :meth:`candidate_pool`)
        lets a caller score the same candidates under several settings; ``[]`` under two candidates."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"text must be a str, got {type(text).__name__}")
        if pool is None:
            pool = self.candidate_pool(text) if text.strip() else CandidatePool((), (), ())
        prompts = self._prompts(pool.candidates, text, random_seeds)
        return self._score_prompts(prompts, batch_size) if prompts else []

    def extract_keywords_with_scores(self, text: str, top_k: int = 10, *, random_seeds: Sequence[int] | None = None) -> list[tuple[str, float]]:
        return self.extract_keywords_batch([text], top_k=top_k, random_seeds=random_seeds, with_scores=True)[0]

    def extract_keywords(self, text: str, top_k: int = 10, *, random_seeds: Sequence[int] | None = None, with_scores: bool = False):
        return self.extract_keywords_batch([text], top_k=top_k, random_seeds=random_seeds, with_scores=with_scores)[0]

    def extract_keywords_batch(
        self, texts: Sequence[str], top_k: int = 10, *, random_seeds: Sequence[int] | None = None,
        with_scores: bool = False, batch_size: int = 8,
    ) -> list:
        """Every (document, seed) prompt in padded, length-sorted batches; one ranked list per text."""
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise InvalidArgumentError("texts must be a sequence of strings")
        check_rerank_top_k(top_k)
        for text in texts:
            if not isinstance(text, str):
                raise InvalidArgumentError(f"every text must be a str, got {type(text).__name__}")
        pools = [self.candidate_pool(text) if text.strip() else None for text in texts]
        per_text = [self._prompts(pool.candidates, text, random_seeds) if pool else [] for pool, text in zip(pools, texts)]
        flat = [p for prompts in per_text for p in prompts]
        scored = iter(self._score_prompts(flat, batch_size) if flat else [])
        out = []
        for pool, prompts in zip(pools, per_text):
            passes = [next(scored) for _ in prompts]
            if self.rank_fusion:
                reranked = combine_passes([p for p in passes if p], len(pool.candidates) if pool else 0)
                ranked = fuse_rankings(reranked, [pool.bio_ranking, pool.default_ranking], top_k) if pool else []
            else:
                ranked = combine_passes([p for p in passes if p], top_k)
            out.append(ranked if with_scores else [c for c, _ in ranked])
        return out
