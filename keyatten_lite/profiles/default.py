"""The ``default`` profile's constants: every tuned number, per bundle, and the read layers.

The stages themselves are in ``keyatten_lite.pipeline.default``; what differs from the 0.3.1-compatible
path, each difference chosen on dev data (docs/results/quality.md):

* English candidates come from words located in the raw text (character offsets); a candidate never
  crosses punctuation or a stop word. Chinese candidates are jieba's, as in 0.3.1.
* The model reads the raw text (one tokenisation with offsets, no pre-split words: no extra ``▁``
  pieces for SentencePiece models), and words are aligned to tokens by character overlap.
* Long documents are read whole, in overlapping windows of at most ``max_length`` tokens; each token's
  score is the mean over the windows that contain it. Memory per forward pass stays bounded.
* Token scores are averaged over the read layers chosen per bundle (one pass returns every layer).
* A candidate is scored on all its occurrences, with IDF (a default for unseen words instead of 0),
  its first position, its frequency and its length, combined log-linearly; nested candidates can be
  suppressed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from keyatten_lite.errors import InvalidArgumentError

__all__ = ["BUNDLE_CONFIGS", "DefaultProfileConfig", "LANGUAGE_FALLBACK", "SAME_TUNING", "config_for", "layer_table", "tuned_layers"]

LAYERS_FILE = Path(__file__).with_name("default_profile_layers.json")


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class DefaultProfileConfig:
    """Every tuned constant of the default profile (values per bundle in ``BUNDLE_CONFIGS``).

    The candidate score is ``A · I^idf_power · (1 + first_word / position_scale)^-position_power ·
    n_words^length_power``
    where ``A = mean occurrence attention · occurrences^frequency_power`` and ``I`` the mean IDF of the
    candidate's words (1 without IDF).
    """

    layers: tuple[int, ...] | None = None  # absolute layers to average; None: default_profile_layers.json
    token_to_word: str = "mean"  # how a word's overlapping token scores combine: mean | max | sum
    max_ngram: int = 4
    punctuation_boundaries: bool = True  # English: candidates never cross punctuation
    # English: ... nor a lowercase word followed by a capitalised one (a run-in title, "platform Web")
    case_boundaries: bool = False
    frequency_power: float = 1.0
    idf_power: float = 1.0
    position_power: float = 0.0
    # Words of text per unit of position. With a scale of a few hundred words the prior barely moves a
    # 150-word abstract and ranks a full paper's title/abstract/introduction terms above its body's.
    position_scale: float = 1.0
    length_power: float = 0.0
    # Document-adaptive priors (issue 14): with R the share of the document's multi-word candidates that
    # occur more than once and D = ln(document words / 100), the powers used are
    #   length:    clip(length_power + length_power_repeat * R + length_power_size * D, 0, 2)
    #   frequency: clip(frequency_power + frequency_power_size * D, 0, 1.5)
    #   position scale: position_scale * exp(position_scale_size * D)
    # so a short text or a news story (multi-word phrases rarely repeat) leans to short candidates and a
    # paper whose phrases recur to long ones. All zero: fixed powers.
    #   and, with N the share of the document's words that are capitalised inside a sentence (names:
    #   news and headlines; see text.phrases.capitalised_share),
    #   length += length_power_names * N * G, frequency += frequency_power_names * N * G
    #   with G = exp(-words / names_words) (1 without names_words): long papers carry capitalised
    #   headings, captions and references, not the names of a news story.
    length_power_repeat: float = 0.0
    length_power_size: float = 0.0
    frequency_power_size: float = 0.0
    position_scale_size: float = 0.0
    length_power_names: float = 0.0
    frequency_power_names: float = 0.0
    names_words: float | None = None
    # English: added to the log score of a candidate that only ever occurs as a piece of a longer
    # capitalised run ("Steinfeld" of "Hailee Steinfeld"); 0: no change
    name_fragment_penalty: float = 0.0
    # English: "lexicon" treats words that the shipped lexicon knows only as verbs, adverbs, pronouns
    # or determiners as non-candidate words (a candidate never starts, ends with or spans one).
    pos_filter: str = "none"
    # ... only in documents of at most this many words (None: all). On full papers the filter cost
    # SemEval-2010 dev .003 F1@10 / .016 F1@15, while it gains on short texts, news and abstracts.
    pos_filter_max_words: int | None = None
    # Chinese: extra jieba tag prefixes whose words may be candidate words (the compatible path keeps
    # n/eng/v): "l" (fixed expressions such as 自然语言), "j" (abbreviations) join the compounds.
    zh_extra_tags: tuple[str, ...] = ()
    nested: str = "none"  # none | substring (drop keys inside/around a taken key) | contained
    unseen_idf: str = "df0"  # df0: ln(N+1)+1 (an IdfState knows N) | max: the largest seen IDF | zero: as 0.3.1
    end_filter: str = "none"  # en: none | ly-ed (no candidate ending in -ly/-ed words); zh: none | no-v
    window: int | None = None  # tokens per pass incl. specials; None: the bundle's max_length
    stride_fraction: float = 0.75  # step between windows as a fraction of the window's content tokens
    windows_per_batch: int = 16  # at most; batches are also bounded by align.MAX_BATCH_CELLS

    def __post_init__(self) -> None:
        if self.token_to_word not in ("mean", "max", "sum"):
            raise InvalidArgumentError(f"token_to_word must be mean, max or sum, got {self.token_to_word!r}")
        if self.nested not in ("none", "substring", "contained"):
            raise InvalidArgumentError(f"nested must be none, substring or contained, got {self.nested!r}")
        if self.unseen_idf not in ("df0", "max", "zero"):
            raise InvalidArgumentError(f"unseen_idf must be df0, max or zero, got {self.unseen_idf!r}")
        if self.end_filter not in ("none", "ly-ed", "no-v"):
            raise InvalidArgumentError(f"end_filter must be none, ly-ed or no-v, got {self.end_filter!r}")
        if self.pos_filter not in ("none", "lexicon"):
            raise InvalidArgumentError(f"pos_filter must be none or lexicon, got {self.pos_filter!r}")
        if self.max_ngram < 1:
            raise InvalidArgumentError(f"max_ngram must be >= 1, got {self.max_ngram}")
        if not 0.0 < self.stride_fraction <= 1.0:
            raise InvalidArgumentError(f"stride_fraction must lie in (0, 1], got {self.stride_fraction}")
        if self.window is not None and self.window < 8:
            raise InvalidArgumentError(f"window must be >= 8 tokens, got {self.window}")
        if not self.position_scale > 0:
            raise InvalidArgumentError(f"position_scale must be > 0, got {self.position_scale}")
        if self.windows_per_batch < 1:
            raise InvalidArgumentError("windows_per_batch must be >= 1")


# Chosen on the dev sets (docs/results/quality.md). Layers live in default_profile_layers.json.
BUNDLE_CONFIGS: dict[str, DefaultProfileConfig] = {
    # English: the constants tuned on abstracts and papers, with the lexicon filter (issue 14: a
    # candidate never starts, ends with or spans a word the lexicon knows only as a verb, adverb,
    # pronoun or determiner) and case boundaries. Length and repeat priors gain on short texts and
    # news but lose .016-.020 F1@10 on abstracts and papers, so they stay off; the share of
    # capitalised words (names) is what separates news from abstracts: it shortens and repeats.
    "minilm-l6-en": DefaultProfileConfig(
        token_to_word="max", frequency_power=0.5, idf_power=1.0, length_power=1.0,
        position_power=0.5, position_scale=400.0, nested="contained", end_filter="ly-ed", pos_filter="lexicon",
        pos_filter_max_words=2000, case_boundaries=True,
        length_power_names=-5.0, frequency_power_names=6.0, names_words=3000.0, name_fragment_penalty=2.0,
    ),
    "e5-small-multi": DefaultProfileConfig(
        token_to_word="mean", frequency_power=1.0, idf_power=1.0, length_power=0.2,
        nested="none", end_filter="none", zh_extra_tags=("l", "j"),
    ),
}
LANGUAGE_FALLBACK: dict[str, str] = {"en": "minilm-l6-en", "zh": "e5-small-multi"}
# A trimmed-vocabulary bundle computes the same numbers as its full one on the text it serves, so it
# shares the full bundle's tuning (constants and layers).
SAME_TUNING: dict[str, str] = {"e5-small-zh": "e5-small-multi"}


def layer_table(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """``{bundle name: {"layers": [...], "method_layers": {...}}}`` from the layers file (empty if missing)."""
    target = Path(path) if path is not None else LAYERS_FILE
    if not target.is_file():
        return {}
    data = json.loads(target.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def tuned_layers(bundle_name: str, method: str | None = None) -> tuple[int, ...] | None:
    """The read layers tuned for ``bundle_name`` (and base ``method`` when it has its own), or None."""
    entry = layer_table().get(SAME_TUNING.get(bundle_name, bundle_name))
    if not entry:
        return None
    per_method = entry.get("method_layers") or {}
    layers = per_method.get(method) if method is not None else None
    layers = layers or entry.get("layers")
    return tuple(int(x) for x in layers) if layers else None


def config_for(bundle_name: str, language: str, method: str | None = None) -> DefaultProfileConfig:
    """The tuned config of a bundle (falling back to the default bundle of ``language``), with the
    layers tuned for base ``method`` filled in."""
    bundle_name = SAME_TUNING.get(bundle_name, bundle_name)
    name = bundle_name if bundle_name in BUNDLE_CONFIGS else LANGUAGE_FALLBACK.get(language, "minilm-l6-en")
    config = BUNDLE_CONFIGS[name]
    if config.layers is None:
        layers = tuned_layers(bundle_name, method)
        if layers:
            config = replace(config, layers=layers)
    return config
