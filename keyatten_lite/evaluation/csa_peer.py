"""CandidateSegmentAttentionExtractor as an eval system (``lite-csa``, built in baselines.py).

``lite-csa[:<bundle>[:<order>[:<seeds>[:<words>[:<bio>]]]]]``: ``bundle`` defaults to the default bundle
of the evaluated language (zero-shot until a trained reranker bundle exists), ``order`` is ``random``
(default) or ``bio``, ``seeds`` the number of shuffles (seeds 42, 43, ...; default 1), ``words`` the
default extractor's keywords added as candidates (default 0), ``bio`` the BIO candidates (default 30).
"""

from __future__ import annotations

from typing import Sequence

from keyatten_lite.errors import InvalidArgumentError

SPEC = "lite-csa[:<bundle>[:<order>[:<seeds>[:<words>[:<bio>]]]]]"


def parse_csa_spec(spec: str, rest: str) -> tuple[str | None, str, int, int, int]:
    """(bundle or None, order, seeds, word candidates, BIO candidates) of a ``lite-csa`` spec;
    InvalidArgumentError if malformed."""
    parts = rest.split(":") if rest else []
    bundle = parts[0] if parts and parts[0] else None
    order = parts[1] if len(parts) > 1 and parts[1] else "random"
    try:
        n_seeds = int(parts[2]) if len(parts) > 2 else 1
        words = int(parts[3]) if len(parts) > 3 and parts[3] else 0
        bio = int(parts[4]) if len(parts) > 4 else 30
    except ValueError:
        raise InvalidArgumentError(f"{spec}: seeds, words and bio must be ints") from None
    if (order not in ("random", "bio") or not 1 <= n_seeds <= 64 or not 0 <= words <= 100 or not 2 <= bio <= 100
            or len(parts) > 5):
        raise InvalidArgumentError(f"{spec}: expected {SPEC} with order random|bio, 1-64 seeds, 0-100 words, 2-100 bio")
    return bundle, order, n_seeds, words, bio


def csa_predict(texts: Sequence[str], language: str, bundle: str | None, order: str, n_seeds: int,
                words: int, bio: int, top_n: int, threads: int | None) -> list[list[str]]:
    from keyatten_lite.extractors.segment_attention import CandidateSegmentAttentionExtractor

    extractor = CandidateSegmentAttentionExtractor(
        bundle, language=language, candidate_order=order, random_seeds=[42 + i for i in range(n_seeds)],
        intra_op_threads=threads, word_candidates=words, max_candidates=bio,
    )
    return extractor.extract_keywords_batch(list(texts), top_k=top_n)
