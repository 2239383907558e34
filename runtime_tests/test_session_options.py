"""Sessions from a graph optimised once (issue 13 items 3 and 4): the first session of a bundle graph
saves its optimised graph in <home>/optimized/, later ones load it with optimisation off. The outputs
must equal the plain session's on real inputs, and a damaged saved graph is made again, never used."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from keyatten_lite.model import session as session_module
from keyatten_lite.model.bundle import open_bundle

TEXTS = [
    "Separate accounts go mainstream. New entrants are shaking up the separate-account industry by supplying "
    "Web-based platforms that give advisers the tools to pick investment managers.",
    "A conflict between language and atomistic information: three well-known theses in contemporary "
    "philosophy of mind are examined.",
]


@pytest.fixture
def home(monkeypatch, tmp_path):
    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(session_module.OPTIMIZED_ENV, raising=False)
    return tmp_path / "home"


def _inputs(bundle):
    tokenizer = bundle.tokenizer()
    rows = [tokenizer.encode(text).ids[: bundle.max_length] for text in TEXTS]
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def _saved(home):
    root = home / "optimized"
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def _attention(bundle_path, variant):
    bundle = open_bundle(bundle_path, variant=variant)
    ids, mask = _inputs(bundle)
    return bundle, bundle.run_outputs(ids, mask)


@pytest.mark.parametrize("variant", ["int8", "fp32"])
def test_saved_graph_gives_the_plain_sessions_outputs(en_bundle, home, monkeypatch, variant):
    monkeypatch.setenv(session_module.OPTIMIZED_ENV, "0")
    _, plain = _attention(en_bundle, variant)
    assert _saved(home) == []
    monkeypatch.delenv(session_module.OPTIMIZED_ENV)
    _, first = _attention(en_bundle, variant)  # makes the saved graph, then runs from it
    (folder,) = _saved(home)
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "model.onnx.data", "record.json"}
    assert folder.name.startswith(f"minilm-l6-en-{variant}-") and session_module.cpu_key() in folder.name
    bundle, later = _attention(en_bundle, variant)  # loads the saved graph
    assert bundle.session()._model_path == str(folder / "model.onnx")
    for name in plain:
        np.testing.assert_allclose(first[name], plain[name], rtol=0, atol=1e-6)
        np.testing.assert_allclose(later[name], plain[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("damage", ["truncated data", "record", "garbage graph"])
def test_a_damaged_saved_graph_is_made_again(en_bundle, home, damage):
    _, reference = _attention(en_bundle, "int8")
    (folder,) = _saved(home)
    if damage == "truncated data":
        with open(folder / "model.onnx.data", "r+b") as handle:
            handle.truncate(1000)
    elif damage == "record":
        (folder / "record.json").write_text("{not json")
    else:
        stat = os.stat(folder / "model.onnx")
        (folder / "model.onnx").write_bytes(b"\x00" * stat.st_size)
        os.utime(folder / "model.onnx", ns=(stat.st_atime_ns, stat.st_mtime_ns))
        record = json.loads((folder / "record.json").read_text())
        record["files"]["model.onnx"]["inode"] = os.stat(folder / "model.onnx").st_ino
        (folder / "record.json").write_text(json.dumps(record))  # passes the stat check, fails to load
    _, again = _attention(en_bundle, "int8")
    (folder_again,) = _saved(home)
    assert session_module._valid(folder_again)
    for name in reference:
        np.testing.assert_allclose(again[name], reference[name], rtol=0, atol=1e-6)


def test_an_unwritable_home_falls_back_to_the_plain_session(en_bundle, monkeypatch, tmp_path):
    blocker = tmp_path / "home"
    blocker.write_text("a file where the home folder should be")
    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(blocker))
    _, outputs = _attention(en_bundle, "int8")
    assert outputs["attentions"].shape[1] == len(TEXTS)


def test_older_builds_of_the_same_graph_are_pruned(en_bundle, home):
    stale = home / "optimized" / "minilm-l6-en-int8-0000000000000000-ort0.0.0-all-000000000000"
    stale.mkdir(parents=True)
    other = home / "optimized" / "minilm-l6-en-fp32-0000000000000000-ort0.0.0-all-000000000000"
    other.mkdir()
    _attention(en_bundle, "int8")
    assert not stale.exists() and other.exists()


def test_session_key_fields():
    key = session_module.session_key("e5-small-multi", "fp32", "ab" * 32, "1.32.0-dev", "all")
    assert key == f"e5-small-multi-fp32-{'ab' * 8}-ort1.32.0_dev-all-{session_module.cpu_key()}"
