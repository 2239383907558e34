"""Sampled keyword parity with keyatten 0.3.1 (torch backend) on real documents, all twelve methods.

The full comparison (200 documents per language) is `python -m keyatten_lite_export.parity`; this
samples it so that CI re-measures parity on every change.
"""

from __future__ import annotations

import pytest

from conftest import data_dir, read_jsonl

pytest.importorskip("torch")
pytest.importorskip("keyatten")

from keyatten_lite_export.parity import ALL_METHODS, run, same_up_to_ties, tie_groups  # noqa: E402

SAMPLE = 16


def test_tie_groups_and_set_comparison():
    ours = [("a", 0.9), ("b", 0.5), ("c", 0.5), ("d", 0.5), ("e", 0.1)]
    assert tie_groups(ours, 1e-6) == [{"a"}, {"b", "c", "d"}, {"e"}]
    assert same_up_to_ties(ours, ["a", "d", "b"], 3, 1e-6)
    assert same_up_to_ties(ours, ["a", "c", "d", "b", "e"], 5, 1e-6)
    assert not same_up_to_ties(ours, ["a", "e", "b"], 3, 1e-6)
    assert not same_up_to_ties(ours, ["b", "a", "c"], 3, 1e-6)
    assert not same_up_to_ties(ours, ["a", "b"], 3, 1e-6)  # 0.3.1 returned fewer keywords
    assert not same_up_to_ties(ours, ["a", "b", "b"], 3, 1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("lang, bundle_fixture", [("en", "en_bundle"), ("zh", "zh_bundle")])
def test_keywords_match_keyatten_031(lang, bundle_fixture, request):
    request.getfixturevalue(bundle_fixture)
    read_jsonl("en/inspec.jsonl" if lang == "en" else "zh/csl_dev.jsonl", limit=1)  # skips without data
    report = run(lang, SAMPLE, data_dir(), methods=ALL_METHODS, threads=2, speed=False)
    failures = {m: r["differing"] for m, r in report["methods"].items() if r["agree"] < SAMPLE}
    assert not failures, f"documents whose top-10 differs from keyatten 0.3.1: {failures}"
