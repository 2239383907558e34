"""CandidateSegmentAttentionExtractor as an eval system (``lite-csa``, built in baselines.py).

``lite-csa[:<bundle>[:<order>[:<seeds>[:<words>[:<bio>[:<ranking>[:<spans>]]]]]]]``: ``bundle`` defaults to what
``CandidateSegmentAttentionExtractor`` picks for the evaluated language (the trained reranker bundle when it
is built, else the default bundle zero-shot), ``order`` is ``random`` or ``bio``, ``seeds`` the number of
shuffles (seeds 42, 43, ...), ``words`` the default extractor's keywords added as candidates, ``bio`` the BIO
candidates, ``ranking`` ``fused`` (the reranker's order fused with the tagger's and the default
extractor's, the default profile) or ``reranker`` (the reranker's order alone, as 0.3.1), ``spans`` ``clean``
(the tagger's malformed spans left out and Chinese spans put on word boundaries, the default profile's choice
for Chinese)
or ``raw`` (as the tagger gives them: 0.3.1, and the default for English). A part left empty keeps the extractor's default (with a trained bundle: the candidates it was
trained on and 3 seeds; zero-shot: 30 BIO candidates, no words, 1 seed).
"""

from __future__ import annotations

from typing import Sequence

from keyatten_lite.errors import InvalidArgumentError

SPEC = "lite-csa[:<bundle>[:<order>[:<seeds>[:<words>[:<bio>[:<ranking>[:<spans>]]]]]]]"


def parse_csa_spec(
    spec: str, rest: str
) -> tuple[str | None, str | None, int | None, int | None, int | None, bool | None, bool | None]:
    """(bundle, order, seeds, word candidates, BIO candidates, rank fusion, clean spans) of a ``lite-csa`` spec, None where the
    spec leaves the extractor's default; InvalidArgumentError if malformed."""
    parts = rest.split(":") if rest else []
    part = lambda i: parts[i] if len(parts) > i and parts[i] else None  # noqa: E731
    bundle, order = part(0), part(1)
    try:
        n_seeds, words, bio = (int(part(i)) if part(i) is not None else None for i in (2, 3, 4))
    except ValueError:
        raise InvalidArgumentError(f"{spec}: seeds, words and bio must be ints") from None
    within = lambda value, low, high: value is None or low <= value <= high  # noqa: E731
    if (order not in (None, "random", "bio") or not within(n_seeds, 1, 64) or not within(words, 0, 100)
            or not within(bio, 2, 100) or part(5) not in (None, "fused", "reranker")
            or part(6) not in (None, "clean", "raw") or len(parts) > 7):
        raise InvalidArgumentError(
            f"{spec}: expected {SPEC} with order random|bio, 1-64 seeds, 0-100 words, 2-100 bio, ranking fused|reranker, "
            "spans clean|raw")
    fusion = None if part(5) is None else part(5) == "fused"
    clean = None if part(6) is None else part(6) == "clean"
    return bundle, order, n_seeds, words, bio, fusion, clean


def csa_predict(texts: Sequence[str], language: str, bundle: str | None, order: str | None, n_seeds: int | None,
                words: int | None, bio: int | None, top_n: int, threads: int | None,
                fusion: bool | None = None, clean: bool | None = None) -> list[list[str]]:
    from keyatten_lite.extractors.segment_attention import CandidateSegmentAttentionExtractor

    extractor = CandidateSegmentAttentionExtractor(
        bundle, language=language, candidate_order=order,
        random_seeds=[42 + i for i in range(n_seeds)] if n_seeds is not None else None,
        intra_op_threads=threads, word_candidates=words, max_candidates=bio, rank_fusion=fusion,
        clean_candidates=clean,
    )
    return extractor.extract_keywords_batch(list(texts), top_k=top_n)
