"""Profiles as values: which reader, which candidate rules, which scoring and which constants.

A :class:`Profile` names, for each candidate mode, the stages a document goes through
(``keyatten_lite.pipeline.stages``), and carries the constants those stages read. Two ship:

* ``DEFAULT`` (``profile="default"``, what users get): word mode reads the raw text in windows,
  candidates stay inside punctuation, a candidate is scored on all its occurrences with IDF, position,
  frequency and length (constants per bundle in ``profiles/default.py``); BIO mode with 0.3.1's bugs
  fixed.
* ``COMPAT`` (``profile="compat"``): keyatten 0.3.1's results, identical where 0.3.1 is right.

Both fall back to 0.3.1's word stages where the raw-text reader does not apply: token-list input,
explicit ``layer_weights`` and decoder (causal) bundles. ``token_span`` mode is 0.3.1's in both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from keyatten_lite.errors import InvalidArgumentError

if TYPE_CHECKING:
    from keyatten_lite.profiles.default import DefaultProfileConfig

__all__ = ["COMPAT", "DEFAULT", "PROFILES", "Profile", "get_profile"]


@dataclass(frozen=True)
class Profile:
    """Which stages each candidate mode runs, and the constants they read."""

    name: str
    word: str  # stages of raw-text word mode on encoder bundles: "raw_text" | "compat_words"
    token_span: str  # "compat_spans"
    bio: str  # "bio_fixed" | "bio_compat"
    # Constants of the raw-text stages; None: the tuned values of the bundle (profiles/default.py).
    constants: "DefaultProfileConfig | None" = None

    def with_constants(self, constants: "DefaultProfileConfig", name: str | None = None) -> "Profile":
        """This profile with other constants (for tuning on dev data)."""
        return replace(self, constants=constants, name=name or self.name)


DEFAULT = Profile("default", word="raw_text", token_span="compat_spans", bio="bio_fixed")
COMPAT = Profile("compat", word="compat_words", token_span="compat_spans", bio="bio_compat")
PROFILES = ("default", "compat")


def get_profile(value: Any) -> Profile:
    """``"default"`` / ``"compat"`` (or a :class:`Profile`) as a profile value."""
    if isinstance(value, Profile):
        return value
    if value == "default":
        return DEFAULT
    if value == "compat":
        return COMPAT
    raise InvalidArgumentError(f"profile must be one of {PROFILES}, got {value!r}")
