"""One pipeline per extractor: pick the stages the profile names for the call, resolve the IDF, run
them (through the cache when it is on).

Which stages (``Profile`` fields, ``keyatten_lite/profiles/__init__.py``):

* ``candidate_scoring="bio"``: the bio stages, 0.3.1's §4.8 or its fixed form (``profile.bio``);
* ``"token_span"``: 0.3.1's token-span stages (``profile.token_span``);
* ``"word"``: ``profile.word`` (the default profile's raw-text stages) for raw-text input on encoder
  bundles without explicit ``layer_weights``; 0.3.1's word stages otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.pipeline import bio, cached, compat, default
from keyatten_lite.pipeline.inputs import normalise_input, raw_reading_text
from keyatten_lite.pipeline.stages import Idf, Stages, run_stages
from keyatten_lite.state.idf import IdfState

STAGES: dict[str, Stages] = {
    "raw_text": default.RAW_TEXT,
    "compat_words": compat.WORDS,
    "compat_spans": compat.SPANS,
    "bio_fixed": bio.STAGES,
    "bio_compat": bio.STAGES,
}
Ranked = list[tuple[str, float]]


class Pipeline:
    def __init__(self, resources, cache=None) -> None:
        self.res = resources
        self.cache = cache

    @property
    def settings(self):
        return self.res.settings

    # ------------------------------------------------------------------ which stages
    def reads_raw_text(self, texts: Sequence[Any]) -> bool:
        """Word mode on the profile's raw-text stages: raw str input, no explicit layer weights, and an
        encoder bundle (token lists, layer weights and decoder bundles keep 0.3.1's pipeline)."""
        s = self.settings
        if STAGES[s.profile.word] is not default.RAW_TEXT or not s.word_mode or s.layer_weights is not None:
            return False
        if not all(isinstance(t, str) for t in texts):
            return False
        if all(not t.strip() for t in texts):
            return True  # all blank: answered without opening the bundle
        return not self.res.is_causal

    def stages_for(self, texts: Sequence[Any]) -> Stages:
        s = self.settings
        if s.candidate_scoring == "bio":
            return STAGES[s.profile.bio]
        if s.candidate_scoring == "token_span":
            return STAGES[s.profile.token_span]
        return default.RAW_TEXT if self.reads_raw_text(texts) else compat.WORDS

    # ------------------------------------------------------------------ IDF
    def idf_for(self, idf_argument, fitted: IdfState | None) -> Idf:
        """The IDF a call uses: ``idf_lookup`` when given (an IdfState or a mapping), else the fitted state."""
        if idf_argument is not None:
            if isinstance(idf_argument, IdfState):
                return Idf(idf_argument.lookup(), idf_argument)
            if isinstance(idf_argument, Mapping):
                return Idf(idf_argument, None)
            raise InvalidArgumentError(
                f"idf_lookup must be a mapping of keys to IDF values or an IdfState, got {type(idf_argument).__name__}"
            )
        if fitted is None:
            raise InvalidArgumentError(
                "an _idf method needs IDF statistics: call fit_idf/update_idf/load_idf first or pass idf_lookup"
            )
        return Idf(fitted.lookup(), fitted)

    def document_keys(self, texts: Sequence[Any], tags_batch: Sequence[Any]) -> list[set[str]]:
        """Per document, the keys whose IDF the call's stages look up (what ``fit_idf`` counts)."""
        from keyatten_lite.state.idf import document_keys

        s = self.settings
        res = self.res
        if s.candidate_scoring == "bio" and s.profile.bio == "bio_fixed" and all(isinstance(t, str) for t in texts):
            return [bio.document_keys(res, t) for t in texts]
        if self.reads_raw_text(texts):
            # Count the words the raw-text stages read, so every key they look up can be found.
            return [default.document_keys(res, res.clean(t)) for t in texts]
        key_sets = []
        for text, tags in zip(texts, tags_batch):
            doc = compat.prepare_input(res, normalise_input(text, tags, s.language, s.max_chars), with_prefix=False)
            key_sets.append(document_keys(doc.words, doc.tags, s.language))
        return key_sets

    # ------------------------------------------------------------------ run
    def extract(
        self,
        texts: Sequence[Any],
        tags_batch: Sequence[Any],
        methods: Sequence[str],
        top_k: int,
        idf_argument,
        fitted: IdfState | None,
        batch_size: int,
        *,
        use_cache: bool = True,
    ) -> dict[str, list[Ranked]]:
        """``{method: ranked (phrase, score) lists}``. Methods share one forward pass; the cache, when
        on, is used per method (it keys every answer on its method)."""
        s = self.settings
        parts = {m: bio.check_method(m, s.candidate_scoring) for m in methods}
        uses_idf = any(u for _, u in parts.values())
        idf = self.idf_for(idf_argument, fitted) if uses_idf else None  # fail before any forward pass
        stages = self.stages_for(texts)
        if stages is not compat.WORDS and s.candidate_scoring != "bio" and not all(isinstance(t, str) for t in texts):
            raise InvalidArgumentError(f"candidate_scoring={s.candidate_scoring!r} needs raw str input, not token lists")
        if stages is bio.STAGES:
            if not all(isinstance(t, str) for t in texts):
                raise InvalidArgumentError("candidate_scoring='bio' needs raw str input, not token lists")
            return run_stages(stages, self.res, texts, methods, top_k, idf, batch_size)
        cache = self.cache if use_cache else None
        idf_fp = cached.idf_fingerprint(idf_argument, fitted) if (cache is not None and uses_idf) else None
        if stages is default.RAW_TEXT:
            reading = [raw_reading_text(t, s.max_chars) for t in texts]
            if cache is not None:
                return {
                    m: cached.run_raw_text_cached(self.res, cache, reading, m, parts[m][1], idf_fp, idf, top_k, batch_size)
                    for m in methods
                }
            live = [i for i, t in enumerate(reading) if t.strip()]
            out = {m: [[] for _ in texts] for m in methods}
            if live:
                computed = run_stages(stages, self.res, [reading[i] for i in live], methods, top_k, idf, batch_size)
                for m in methods:
                    for i, ranked in zip(live, computed[m]):
                        out[m][i] = ranked
            return out
        inputs = [normalise_input(t, tags, s.language, s.max_chars) for t, tags in zip(texts, tags_batch)]
        if cache is not None:
            return {
                m: cached.run_compat_cached(self.res, cache, inputs, m, parts[m][1], idf_fp, idf, top_k, batch_size)
                for m in methods
            }
        return run_stages(stages, self.res, inputs, methods, top_k, idf, batch_size)
