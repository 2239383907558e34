"""The keyatten-lite command line on the default bundles."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from keyatten_lite.cli import detect_language, main


def test_language_detection():
    assert detect_language("自然语言处理是人工智能的重要方向") == "zh"
    assert detect_language("Graph neural networks") == "en"
    assert detect_language("OpenAI发布了GPT-4o多模态模型") == "zh"
    assert detect_language("") == "en"


def test_extract_text_prints_keywords(en_bundle, zh_bundle, capsys):
    assert main(["extract", "Graph neural networks learn from graph data.", "--json", "-k", "3"]) == 0
    pairs = json.loads(capsys.readouterr().out)
    assert 1 <= len(pairs) <= 3 and all(isinstance(s, float) for _, s in pairs)
    assert main(["extract", "自然语言处理是人工智能的重要方向"]) == 0
    out = capsys.readouterr().out.strip()
    keywords = out.split(", ")
    # Properties, not a pinned ranking: distinct substrings of the text, and the compound that jieba
    # cuts into 自然语言 + 处理 is a candidate of the default profile.
    assert 1 <= len(keywords) <= 10 and len(set(keywords)) == len(keywords)
    assert all(k and k in "自然语言处理是人工智能的重要方向" for k in keywords)
    assert "自然语言处理" in keywords and "人工智能" in keywords


def test_jsonl_in_jsonl_out(en_bundle, zh_bundle, tmp_path):
    src = tmp_path / "in.jsonl"
    records = [
        {"id": "a", "text": "Graph neural networks learn from graph data."},
        {"id": "b", "text": "自然语言处理是人工智能的重要方向"},
        {"id": "c", "text": ""},
    ]
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    dst = tmp_path / "out.jsonl"
    assert main(["extract", "-i", str(src), "-o", str(dst), "--top-k", "2"]) == 0
    rows = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert len(rows[0]["keywords"]) == 2 and rows[2]["keywords"] == []


def test_stdin_pipe(en_bundle):
    proc = subprocess.run(
        [sys.executable, "-m", "keyatten_lite.cli", "extract", "-i", "-", "-k", "1"],
        input=json.dumps({"id": 7, "text": "Attention weights rank candidate phrases."}) + "\n",
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["id"] == 7 and len(row["keywords"]) == 1


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n', encoding="utf-8")
    assert main(["extract", "-i", str(bad)]) == 2
    assert "text" in capsys.readouterr().err
    assert main(["extract", "x", "--top-k", "0"]) == 2


def test_idf_fit_writes_a_loadable_file(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "\n".join(json.dumps({"text": t}) for t in ["graph neural networks", "neural attention", "graph data"]),
        encoding="utf-8",
    )
    out = tmp_path / "idf.tsv"
    assert main(["idf", "fit", str(corpus), "-o", str(out), "--lang", "en"]) == 0
    from keyatten_lite.state.idf import IdfState

    state = IdfState.load(out)
    assert state.doc_count == 3
    from keyatten_lite.text.normalize import normalize_phrase

    assert state.document_frequency[normalize_phrase("graph")] == 2
