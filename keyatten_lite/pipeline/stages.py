"""The shape every way through the pipeline shares: prepare → read → score → rank.

* ``prepare(res, inputs)``: the text side, no model: segmentation, words, candidates (one object per
  input, in order).
* ``read(res, docs, bases, batch_size)``: the graph, once for all requested methods: per document the
  token or word scores of each base method (None where the document needs no model).
* ``score(res, doc, read, method, idf)``: one method's candidate scores (float array, one per candidate).
* ``rank(res, doc, read, scores, top_k)``: the best ``top_k`` ``(phrase, score)`` pairs.

``run_stages`` runs them for several methods at once, so methods share the forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keyatten_lite.scoring.attention import base_method

Ranked = list[tuple[str, float]]


@dataclass(frozen=True)
class Idf:
    """The IDF a call uses: the lookup, and the state it came from when it is an ``IdfState``."""

    lookup: Mapping[str, float]
    state: Any = None  # IdfState or None (a plain mapping knows no document count)


@dataclass(frozen=True)
class Stages:
    name: str
    prepare: Callable[..., list]
    read: Callable[..., list]
    score: Callable[..., Any]
    rank: Callable[..., Ranked]
    # base method of a method name: None for methods that need no attention (BIO alone)
    base_of: Callable[[str], str | None] = lambda method: base_method(method)[0]


def run_stages(
    stages: Stages,
    res,
    inputs: Sequence[Any],
    methods: Sequence[str],
    top_k: int,
    idf: Idf | None,
    batch_size: int,
) -> dict[str, list[Ranked]]:
    """``{method: ranked keywords per input}``; one ``read`` serves every method."""
    docs = stages.prepare(res, list(inputs))
    bases = [b for b in dict.fromkeys(stages.base_of(m) for m in methods) if b is not None]
    reads = stages.read(res, docs, bases, batch_size)
    out: dict[str, list[Ranked]] = {}
    for method in methods:
        ranked: list[Ranked] = []
        for doc, read in zip(docs, reads):
            if read is None:
                ranked.append([])
                continue
            uses_idf = base_method(method)[1] if stages.base_of(method) is not None else False
            scores = stages.score(res, doc, read, method, idf if uses_idf else None)
            ranked.append(stages.rank(res, doc, read, scores, top_k))
        out[method] = ranked
    return out
