"""CandidateSegmentAttentionExtractor as an eval system (``lite-csa``, built in baselines.py).

``lite-csa[:<bundle>[:<order>[:<seeds>]]]``: ``bundle`` defaults to the default bundle of the evaluated
language (zero-shot until a trained reranker bundle exists), ``order`` is ``random`` (default) or
``bio``, ``seeds`` the number of shuffles (seeds 42, 43, ...; default 1).
"""

from __future__ import annotations

from typing import Sequence

from keyatten_lite.errors import InvalidArgumentError

SPEC = "lite-csa[:<bundle>[:<order>[:<seeds>]]]"


def parse_csa_spec(spec: str, rest: str) -> tuple[str | None, str, int]:
    """(bundle or None, order, number of seeds) of a ``lite-csa`` spec; InvalidArgumentError if malformed."""
    parts = rest.split(":") if rest else []
    bundle = parts[0] if parts and parts[0] else None
    order = parts[1] if len(parts) > 1 else "random"
    try:
        n_seeds = int(parts[2]) if len(parts) > 2 else 1
    except ValueError:
        raise InvalidArgumentError(f"{spec}: seeds must be an int") from None
    if order not in ("random", "bio") or not 1 <= n_seeds <= 64 or len(parts) > 3:
        raise InvalidArgumentError(f"{spec}: expected {SPEC} with order random|bio and 1-64 seeds")
    return bundle, order, n_seeds


def csa_predict(texts: Sequence[str], language: str, bundle: str | None, order: str, n_seeds: int,
                top_n: int, threads: int | None) -> list[list[str]]:
    from keyatten_lite.extractors.segment_attention import CandidateSegmentAttentionExtractor

    extractor = CandidateSegmentAttentionExtractor(
        bundle, language=language, candidate_order=order, random_seeds=[42 + i for i in range(n_seeds)],
        intra_op_threads=threads,
    )
    return extractor.extract_keywords_batch(list(texts), top_k=top_n)
