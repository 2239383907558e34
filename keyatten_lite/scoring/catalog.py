"""The method catalog: which extractors and methods exist (keyatten 0.3.1 §1.6, as data)."""

from __future__ import annotations

import copy

from keyatten_lite.scoring.attention import BASE_METHODS, IDF_METHODS

ATTENTION_IDF_METHODS = IDF_METHODS

METHOD_CATEGORIES: dict[str, dict] = {
    "attention_series": {
        "label": "attention series",
        "description": "Zero-training keyword ranking from one forward pass of a transformer's attention.",
        "entrypoints": ["KeyAttenExtractor"],
        "methods": list(BASE_METHODS),
        "idf_methods": list(IDF_METHODS),
        "supports_idf": True,
    },
    "baselines": {
        "label": "baselines",
        "description": "Classic baselines, available in `keyatten-lite eval` (YAKE, TF-IDF, jieba).",
        "entrypoints": [],
        "methods": [],
        "idf_methods": [],
        "supports_idf": False,
    },
    "standalone_methods": {
        "label": "standalone methods",
        "description": "BIO span tagger (keyatten_lite.extractors.bio_tagger) and QK scorer (QKLoRAExtractor).",
        "entrypoints": ["BIOExtractor", "QKLoRAExtractor"],
        "methods": ["BIO", "QK"],
        "idf_methods": [],
        "supports_idf": False,
    },
    "main_method": {
        "label": "main method",
        "description": "BIO candidates ranked by attention (candidate_scoring='bio', CandidateSegmentAttentionExtractor).",
        "entrypoints": ["KeyAttenExtractor(candidate_scoring='bio')", "CandidateSegmentAttentionExtractor"],
        "methods": ["bio_attention_rerank"],
        "idf_methods": [],
        "supports_idf": True,
    },
}


def get_method_catalog() -> dict[str, dict]:
    """A copy of the catalog that callers may modify freely."""
    return copy.deepcopy(METHOD_CATEGORIES)
