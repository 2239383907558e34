"""IDF state, file format and TF-IDF values (spec §5)."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.state.idf import FILE_HEADER, IdfState, document_keys, tfidf_word_values
from keyatten_lite.text.normalize import normalize_phrase


def _spec_idf(n_docs: int, df: int) -> float:
    n = max(n_docs, 1)
    return math.log((n + 1) / (df + 1)) + 1


def test_document_keys_are_the_set_of_valid_normalised_words():
    words = ["Graph", "graphs", "the", "networks", "x"]
    assert document_keys(words, ["eng"] * 5, "en") == {normalize_phrase("graph"), normalize_phrase("networks")}
    assert document_keys(["模型", "的", "模型", "做"], ["n", "uj", "n", "v"], "zh") == {"模型"}


def test_lookup_follows_the_smooth_idf_formula():
    state = IdfState()
    state.fit_keys([{"a", "b"}, {"a"}, {"c"}])
    assert state.doc_count == 3
    assert state.document_frequency == {"a": 2, "b": 1, "c": 1}
    assert state.lookup() == pytest.approx({"a": _spec_idf(3, 2), "b": _spec_idf(3, 1), "c": _spec_idf(3, 1)})
    assert IdfState().lookup() == {}


def test_fit_resets_and_update_accumulates():
    state = IdfState()
    state.update_keys([{"a"}])  # a first update works like a fit
    first = dict(state.lookup())
    state.update_keys([{"b"}])
    assert state.doc_count == 2 and state.lookup() != first  # cache invalidated on change
    state.fit_keys([{"c"}])
    assert state.doc_count == 1 and state.document_frequency == {"c": 1}


def test_fingerprint_is_the_spec_hash_and_tracks_changes():
    state = IdfState()
    state.fit_keys([{"模型", "graph"}, {"graph"}])
    payload = {str(k): round(float(v), 12) for k, v in state.lookup().items()}
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert state.fingerprint() == hashlib.sha256(text.encode("utf-8")).hexdigest()
    before = state.fingerprint()
    state.add_document_keys({"new"})
    assert state.fingerprint() != before
    assert IdfState.from_lookup(state.lookup()).fingerprint() == state.fingerprint()


def test_tfidf_word_values():
    words = ["Graph", "graph", "the", "network", "unknown"]
    tags = ["eng"] * 5
    lookup = {"graph": 2.0, normalize_phrase("network"): 1.5}
    values = tfidf_word_values(words, tags, "en", lookup)
    assert values.dtype == np.float32
    # tf = raw count of the key among valid words; a word missing from the lookup gets 0 (§5.3).
    np.testing.assert_allclose(values, [4.0, 4.0, 0.0, 1.5, 0.0])
    with_default = tfidf_word_values(words, tags, "en", lookup, default_idf=3.0)
    np.testing.assert_allclose(with_default, [4.0, 4.0, 0.0, 1.5, 3.0])
    counts = {"graph": 1}
    np.testing.assert_allclose(tfidf_word_values(words, tags, "en", lookup, counts=counts), [2.0, 2.0, 0, 0, 0])


def test_from_lookup_cannot_be_updated_merged_or_saved(tmp_path):
    fixed = IdfState.from_lookup({"a": 1.5})
    assert fixed.lookup() == {"a": 1.5} and not fixed.has_counts
    for action in (lambda: fixed.update_keys([{"b"}]), lambda: fixed.merge(IdfState()),
                   lambda: IdfState().merge(fixed), lambda: fixed.save(tmp_path / "x.tsv")):
        with pytest.raises(InvalidArgumentError, match="no document counts"):
            action()
    with pytest.raises(InvalidArgumentError):
        IdfState.from_lookup({"a": "high"})


def test_save_writes_the_documented_format(tmp_path):
    state = IdfState()
    state.fit_keys([{"b", "tab\there", "a"}, {"a", "back\\slash", "new\nline"}])
    path = tmp_path / "idf.tsv"
    state.save(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == FILE_HEADER
    assert lines[1] == "#documents\t2"
    assert lines[2:] == ["a\t2", "b\t1", "back\\\\slash\t1", "new\\nline\t1", "tab\\there\t1", ""]
    assert IdfState.load(path) == state
    assert [p.name for p in tmp_path.iterdir()] == ["idf.tsv"]  # no temp file left behind


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ("# other header\n#documents\t1\n", 1),
        (f"{FILE_HEADER}\n#docs\t1\n", 2),
        (f"{FILE_HEADER}\n#documents\t-1\n", 2),
        (f"{FILE_HEADER}\n#documents\t2\na\t1\nb 1\n", 4),
        (f"{FILE_HEADER}\n#documents\t2\na\t1\na\t2\n", 4),
        (f"{FILE_HEADER}\n#documents\t2\na\t3\n", 3),
        (f"{FILE_HEADER}\n#documents\t2\na\t0\n", 3),
        (f"{FILE_HEADER}\n#documents\t2\na\t1.5\n", 3),
        (f"{FILE_HEADER}\n#documents\t2\nbad\\q\t1\n", 3),
        (f"{FILE_HEADER}\n#documents\t2\na\t1", 3),
    ],
)
def test_load_rejects_malformed_files_with_line_numbers(tmp_path, content, line):
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match=rf"bad\.tsv:{line}:"):
        IdfState.load(path)


def test_load_missing_and_non_utf8(tmp_path):
    with pytest.raises(InvalidArgumentError, match="not found"):
        IdfState.load(tmp_path / "none.tsv")
    path = tmp_path / "latin.tsv"
    path.write_bytes(f"{FILE_HEADER}\n#documents\t1\n".encode() + b"caf\xe9\t1\n")
    with pytest.raises(InvalidArgumentError, match=":3:"):
        IdfState.load(path)


# ------------------------------------------------------------------ properties
_KEY_SETS = st.lists(st.sets(st.text(st.characters(), max_size=6), max_size=5), max_size=8)


@settings(max_examples=150, deadline=None)
@given(_KEY_SETS)
def test_save_load_round_trip(tmp_path_factory, key_sets):
    state = IdfState()
    state.fit_keys(key_sets)
    path = tmp_path_factory.mktemp("idf") / "state.tsv"
    state.save(path)
    loaded = IdfState.load(path)
    assert loaded == state
    assert loaded.lookup() == state.lookup()
    assert loaded.fingerprint() == state.fingerprint()


@settings(max_examples=150, deadline=None)
@given(_KEY_SETS, _KEY_SETS)
def test_merge_equals_fitting_the_concatenation(first, second):
    a, b, both = IdfState(), IdfState(), IdfState()
    a.fit_keys(first)
    b.fit_keys(second)
    both.fit_keys(first + second)
    merged = a.merge(b)
    assert merged == both
    assert merged.lookup() == both.lookup()
    assert a.doc_count == len(first)  # merge returns a new state
