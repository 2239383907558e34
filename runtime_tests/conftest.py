"""Shared fixtures: where the evaluation data lives and which default bundles are built."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("KEYATTEN_LITE_DATA", REPO.parent / "shared" / "data"))


def read_jsonl(relative: str, limit: int | None = None) -> list[dict]:
    path = data_dir() / relative
    if not path.exists():
        pytest.skip(f"evaluation data not found at {path} (set KEYATTEN_LITE_DATA)")
    docs = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                docs.append(json.loads(line))
                if limit is not None and len(docs) >= limit:
                    break
    return docs


def default_bundle_path(name: str) -> Path:
    """Path of a built default bundle, or skip the test with the command that builds it."""
    from keyatten_lite.model.registry import bundles_dir

    path = bundles_dir() / name
    if not (path / "bundle.json").exists():
        pytest.skip(f"default bundle {name!r} is not built in {path.parent} (run `keyatten-lite models build`)")
    return path


@pytest.fixture(scope="session")
def en_bundle() -> Path:
    return default_bundle_path("minilm-l6-en")


@pytest.fixture(scope="session")
def zh_bundle() -> Path:
    return default_bundle_path("e5-small-zh")
