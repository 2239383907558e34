"""`keyatten-lite serve`: an HTTP keyword-extraction service with micro-batching (docs/serve.md).

    pip install 'keyatten-lite[serve]'
    keyatten-lite serve --port 8000
    curl -s localhost:8000/extract -d '{"text": "Graph neural networks learn from graph data."}'

This module needs nothing beyond the standard library; Starlette and uvicorn are imported only by
:func:`create_app` (``keyatten_lite.serve.app``) and the ``serve`` command, so that
``import keyatten_lite`` and ``keyatten-lite --help`` work without the ``serve`` extra.
"""

from __future__ import annotations

from keyatten_lite.serve.config import LANGUAGES, PROFILES, ServeConfig, detect_language

__all__ = ["ServeConfig", "create_app", "detect_language", "LANGUAGES", "PROFILES"]


def __getattr__(name: str):
    if name == "create_app":  # Starlette is imported only here
        from keyatten_lite.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'keyatten_lite.serve' has no attribute {name!r}")
