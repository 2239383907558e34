"""Bad input on the command line, as a new user meets it: a one-line error naming the file (and the
line) and a non-zero exit, never a traceback; ``--on-error skip`` writes every good record; a run that
stops keeps what it extracted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO
from keyatten_lite.cli import main


def run_cli(*argv, stdin: bytes | None = None):
    proc = subprocess.run(
        [sys.executable, "-m", "keyatten_lite.cli", *argv], input=stdin, capture_output=True, cwd=REPO, timeout=300
    )
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def lines(*records) -> bytes:
    out = b""
    for r in records:
        out += (r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode("utf-8")) + b"\n"
    return out


GOOD = [{"id": f"d{i}", "text": f"Graph neural networks learn representations of graph data, part {i}."} for i in range(3)]


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    assert "Traceback" not in err, err
    message = [l for l in err.splitlines() if l.startswith("keyatten-lite: error:")]
    assert len(message) == 1, err
    for needle in needles:
        assert needle in message[0], (needle, message[0])


def test_missing_input_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    for argv in (["extract", "-i", str(missing)], ["idf", "fit", str(missing), "-o", str(tmp_path / "idf.tsv")],
                 ["eval", str(missing), "-s", "tfidf", "-o", str(tmp_path / "r.json")]):
        code, _, err = run_cli(*argv)
        assert_one_line_error(code, err, str(missing))


def test_output_folder_that_does_not_exist(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(lines(*GOOD))
    out = tmp_path / "no" / "such" / "out.jsonl"
    code, _, err = run_cli("extract", "-i", str(src), "-o", str(out))
    assert_one_line_error(code, err, str(out), "does not exist")
    code, _, err = run_cli("idf", "fit", str(src), "-o", str(out))
    assert_one_line_error(code, err, "does not exist")


def test_bytes_that_are_not_utf8_stop_at_the_line_and_keep_what_was_done(en_bundle, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(lines(GOOD[0], GOOD[1], b'{"id": "bad", "text": "caf\xe9"}', GOOD[2]))
    out = tmp_path / "out.jsonl"
    code, _, err = run_cli("extract", "-i", str(src), "-o", str(out), "--lang", "en")
    assert_one_line_error(code, err, str(src), "line 3", "UTF-8")
    kept = [json.loads(l)["id"] for l in out.read_text(encoding="utf-8").splitlines()]
    assert kept == ["d0", "d1"]  # everything before the bad line was extracted and written
    code, _, err = run_cli("idf", "fit", str(src), "-o", str(tmp_path / "idf.tsv"))
    assert_one_line_error(code, err, "line 3", "UTF-8")


def test_skip_writes_every_good_record_and_reports_the_bad_lines(en_bundle, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(lines(GOOD[0], b"{not json", GOOD[1], b'{"id": "x", "text": 3}', b"\xff\xfe", GOOD[2]))
    out = tmp_path / "out.jsonl"
    code, _, err = run_cli("extract", "-i", str(src), "-o", str(out), "--lang", "en", "--on-error", "skip")
    assert code == 0, err
    rows = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["d0", "d1", "d2"]
    assert all(r["keywords"] for r in rows)
    assert "skipped 3 bad lines" in err and "line 2" in err and "line 4" in err and "line 5" in err
    code, _, err = run_cli("idf", "fit", str(src), "-o", str(tmp_path / "idf.tsv"), "--on-error", "skip")
    assert code == 0 and "3 documents" in err


def test_a_bad_language_is_a_bad_line(en_bundle, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(lines(GOOD[0], {"id": "fr", "lang": "fr", "text": "Bonjour"}, GOOD[1]))
    code, _, err = run_cli("extract", "-i", str(src), "-o", str(tmp_path / "o.jsonl"))
    assert_one_line_error(code, err, "line 2", "lang")


def test_default_ids_are_line_positions_even_when_lines_are_skipped(en_bundle, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_bytes(lines({"text": "Graph neural networks."}, b"[1, 2]", {"text": "Attention ranks phrases."}))
    assert main(["extract", "-i", str(src), "--on-error", "skip", "--lang", "en"]) == 0
    ids = [json.loads(l)["id"] for l in capsys.readouterr().out.splitlines()]
    assert ids == [0, 2]


def test_eval_names_the_bad_line(tmp_path):
    src = tmp_path / "gold.jsonl"
    src.write_bytes(b'{"id": "1", "lang": "en", "text": "a", "keywords": ["a"]}\n\xc3\x28\n')
    code, _, err = run_cli("eval", str(src), "-s", "tfidf", "-o", str(tmp_path / "r.json"))
    assert_one_line_error(code, err, str(src), "line 2", "UTF-8")


@pytest.mark.parametrize("flag", ["--on-error"])
def test_on_error_rejects_other_values(flag, capsys):
    with pytest.raises(SystemExit):
        main(["extract", "-i", "x.jsonl", flag, "ignore"])


def test_progress_bar_only_on_a_terminal(monkeypatch, capsys):
    from keyatten_lite.cli.records import Progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    quiet = Progress(10, "extract")
    quiet.advance(5)
    quiet.close()
    assert not quiet.active and capsys.readouterr().err == ""
    pytest.importorskip("tqdm")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = Progress(10, "extract")
    assert bar.active
    bar.advance(10)
    bar.close()
    err = capsys.readouterr().err
    assert "extract" in err and "/10" in err  # tqdm drew its bar on stderr


def test_file_runs_batch_by_the_shared_rule(tmp_path, monkeypatch, capsys):
    """The one-process CLI cuts its extract calls exactly as ``file_run_chunks`` says (the Ray engine
    plans its chunks with the same function, so both give the same bits)."""
    from keyatten_lite.cli import extract
    from keyatten_lite.pipeline.inputs import file_run_chunks

    calls = []

    class FakeExtractor:
        def __init__(self, lang):
            self.lang = lang

        def extract_keywords_batch(self, texts, **kwargs):
            calls.append((self.lang, list(texts)))
            return [[(t, 1.0)] for t in texts]

    monkeypatch.setattr(extract, "BLOCK_RECORDS", 4)
    monkeypatch.setattr(extract.Extractors, "__call__", lambda self, lang: FakeExtractor(lang))
    langs = ["en", "zh", "en", "en", "zh", "zh", "zh", "en", "en", "zh", "en"]
    src = tmp_path / "in.jsonl"
    src.write_bytes(lines(*[{"id": i, "lang": l, "text": f"t{i}"} for i, l in enumerate(langs)]))
    assert main(["extract", "-i", str(src), "--batch-size", "1", "-o", str(tmp_path / "o.jsonl")]) == 0
    rank = {}
    ranks = []
    for l in langs:
        ranks.append(rank.get(l, 0))
        rank[l] = ranks[-1] + 1
    expected = []
    for lang, start, end in file_run_chunks(langs, step=4, block=4):  # --batch-size 1: 4 documents a call
        expected.append((lang, [f"t{i}" for i, l in enumerate(langs) if l == lang and start <= ranks[i] < end]))
    assert calls == expected
    rows = [json.loads(l) for l in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == list(range(len(langs)))  # written in input order


def test_file_run_chunks_cover_every_record_once():
    from keyatten_lite.pipeline.inputs import file_run_chunks

    langs = ["zh"] * 1500 + ["en"] * 700 + ["zh"] * 30
    chunks = file_run_chunks(langs, step=64)
    covered = {"zh": [], "en": []}
    for lang, start, end in chunks:
        assert 0 < end - start <= 64
        covered[lang].extend(range(start, end))
    assert covered["zh"] == list(range(1530)) and covered["en"] == list(range(700))
    # a block boundary (1024) cuts the zh run: 1024 = 16 × 64, then the rest of the first 1500 zh
    assert ("zh", 960, 1024) in chunks and ("zh", 1024, 1088) in chunks
