"""The ``keyatten-lite`` command line (entry point ``keyatten_lite.cli:main``)."""

from keyatten_lite.cli.main import detect_language, main

__all__ = ["detect_language", "main"]
