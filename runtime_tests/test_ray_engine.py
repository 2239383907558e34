"""`--engine ray`: Ray Data gives exactly the one-process CLI's records and IDF file.

One local Ray (2 CPUs, 200 MiB object store, no dashboard) serves the whole module. The reference is
`python -m keyatten_lite.cli extract/idf fit` run in a subprocess on the same 60 records (30 Inspec,
30 CSL dev, interleaved; some without "id", some with "lang"). Every Ray run uses --batch-size 2, so
the corpus is cut into 8 chunks of 8 documents (the CLI's 4 * batch_size), enough for an actor to be
killed with work still queued.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq
from conftest import read_jsonl

from keyatten_lite.distributed import ray_engine
from keyatten_lite.distributed.ray_engine import expand_inputs, ray_extract, ray_idf_fit

pytestmark = pytest.mark.slow

BATCH = 2
N_EACH = 30


def _home() -> Path:
    override = os.environ.get("KEYATTEN_LITE_HOME", "").strip()
    return Path(override).expanduser() if override else Path.home() / ".cache" / "keyatten-lite"


@pytest.fixture(scope="module", autouse=True)
def bundles():
    for name in ("minilm-l6-en", "e5-small-zh"):
        manifest = _home() / "bundles" / name / "bundle.json"
        if not manifest.exists():
            pytest.skip(f"default bundle {name!r} is not built ({manifest} missing; run `keyatten-lite models build`)")


@pytest.fixture(scope="module")
def ray_local(bundles):
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",  # never a cluster that `ray start` left on this machine
        num_cpus=2,
        object_store_memory=200 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=True,
        logging_level="warning",
    )
    yield ray
    ray.shutdown()


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)


def _write_parquet(path: Path, records: list[dict], row_group_size: int) -> None:
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=row_group_size)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, bundles):
    en = read_jsonl("en/inspec.jsonl", limit=N_EACH)
    zh = read_jsonl("zh/csl_dev.jsonl", limit=N_EACH)
    records = []
    for pair in zip(en, zh):
        for src in pair:
            rec = {"id": src["id"], "text": src["text"]}
            if len(records) % 3 == 0:
                rec["lang"] = src["lang"]
            if len(records) % 7 == 3:
                del rec["id"]  # the CLI gives these their record index
            records.append(rec)
    root = tmp_path_factory.mktemp("ray-corpus")
    _write_jsonl(root / "in.jsonl", records)
    # Columns must agree across Parquet files: give every row an id column (null = missing) and lang.
    rows = [{"id": r.get("id"), "text": r["text"], "lang": r.get("lang")} for r in records]
    # The same corpus as a file, a folder and a glob, in JSONL and Parquet.
    (root / "d1").mkdir()
    _write_jsonl(root / "d1" / "a.jsonl", records[:20])
    (root / "d2").mkdir()
    _write_parquet(root / "d2" / "b.parquet", rows[20:40], row_group_size=7)
    (root / "d2" / "_ignored.jsonl").write_text('{"text": "not part of the corpus"}\n')
    (root / "d3").mkdir()
    _write_parquet(root / "d3" / "c0.parquet", rows[40:50], row_group_size=4)
    _write_jsonl(root / "d3" / "c1.jsonl", records[50:])
    (root / "d3" / "notes.txt").write_text("not an input")
    mixed = [str(root / "d1" / "a.jsonl"), str(root / "d2"), str(root / "d3" / "*")]
    return {"root": root, "records": records, "jsonl": root / "in.jsonl", "mixed": mixed}


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "keyatten_lite.cli", *args], check=True, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def cli_lines(corpus) -> list[str]:
    out = corpus["root"] / "cli.jsonl"
    _cli("extract", "-i", str(corpus["jsonl"]), "-o", str(out), "--batch-size", str(BATCH))
    return out.read_text(encoding="utf-8").splitlines()


def _ray_lines(output_dir: Path) -> list[str]:
    lines = []
    for part in sorted(glob.glob(str(output_dir / "part-*.jsonl"))):
        lines.extend(Path(part).read_text(encoding="utf-8").splitlines())
    return lines


def _assert_same(ray_lines: list[str], cli_lines: list[str]) -> None:
    assert len(ray_lines) == len(cli_lines)
    assert set(ray_lines) == set(cli_lines)
    by_id = {json.loads(line)["id"]: line for line in ray_lines}
    assert len(by_id) == len(ray_lines), "an id is written twice"
    assert by_id == {json.loads(line)["id"]: line for line in cli_lines}


@pytest.fixture(scope="module")
def jsonl_run(ray_local, corpus):
    out = corpus["root"] / "ray-jsonl"
    summary = ray_extract([str(corpus["jsonl"])], out, batch_size=BATCH)
    return out, summary


def test_extract_jsonl_matches_cli(jsonl_run, cli_lines):
    out, summary = jsonl_run
    assert summary["records"] == 60 and summary["parts"] == 8 and summary["actors"] == 1
    assert summary["threads"] == 1  # 2 CPUs: one actor x one CPU, one CPU left for reads
    _assert_same(_ray_lines(out), cli_lines)
    assert json.loads((out / "_SUCCESS").read_text())["records"] == 60


def test_records_without_id_get_their_corpus_index(jsonl_run, corpus, cli_lines):
    out, _ = jsonl_run
    ids = {json.loads(line)["id"] for line in _ray_lines(out)}
    missing = [i for i, rec in enumerate(corpus["records"]) if "id" not in rec]
    assert missing and all(i in ids for i in missing)
    cli_ids = [json.loads(line)["id"] for line in cli_lines]
    assert [cli_ids[i] for i in missing] == missing


def test_extract_file_folder_and_glob_of_jsonl_and_parquet_matches_cli(ray_local, corpus, cli_lines):
    out = corpus["root"] / "ray-mixed"
    # Small shards: a.jsonl is cut into several byte ranges; the Parquet files have 3 + 3 row groups.
    summary = ray_extract(corpus["mixed"], out, batch_size=BATCH, shard_bytes=4000)
    assert summary["files"] == 4 and summary["shards"] > 8
    _assert_same(_ray_lines(out), cli_lines)


def test_killed_actor_still_gives_every_id_once(ray_local, corpus, cli_lines):
    out = corpus["root"] / "ray-killed"
    pids = corpus["root"] / "pids"
    result: dict = {}

    def run() -> None:
        try:
            result["summary"] = ray_extract([str(corpus["jsonl"])], out, batch_size=BATCH, _actor_pid_dir=str(pids))
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    killed = None
    deadline = time.monotonic() + 300
    while worker.is_alive() and time.monotonic() < deadline:
        written = glob.glob(str(out / "part-*.jsonl"))
        started = sorted(pids.glob("actor-*.pid")) if pids.exists() else []
        if killed is None and written and started:
            killed = int(started[0].read_text())
            parts_at_kill = len(written)
            os.kill(killed, signal.SIGKILL)  # the actor's own pid, as it wrote it
        time.sleep(0.05)
    worker.join(timeout=60)
    assert "error" not in result, result.get("error")
    assert killed is not None, "the run ended before an actor could be killed"
    assert parts_at_kill < 8, "the actor was killed after all chunks were written"
    restarted = {int(p.read_text()) for p in pids.glob("actor-*.pid")} - {killed}
    assert restarted, "Ray did not restart the killed actor"
    assert result["summary"]["records"] == 60
    lines = _ray_lines(out)
    counts = collections.Counter(json.dumps(json.loads(line)["id"]) for line in lines)
    assert set(counts.values()) == {1}
    _assert_same(lines, cli_lines)


def test_idf_fit_byte_identical(ray_local, corpus):
    root = corpus["root"]
    _cli("idf", "fit", str(corpus["jsonl"]), "-o", str(root / "cli-idf.tsv"))
    expected = (root / "cli-idf.tsv").read_bytes()
    state = ray_idf_fit([str(corpus["jsonl"])], root / "ray-idf.tsv", shard_bytes=5000)
    assert (root / "ray-idf.tsv").read_bytes() == expected
    assert state.doc_count == 60
    ray_idf_fit(corpus["mixed"], root / "ray-idf-mixed.tsv", shard_bytes=3000)
    assert (root / "ray-idf-mixed.tsv").read_bytes() == expected
    # --merge: an existing file's counts are added, as the CLI adds them.
    _cli("idf", "fit", str(corpus["jsonl"]), "--merge", str(root / "cli-idf.tsv"), "-o", str(root / "cli-merged.tsv"))
    ray_idf_fit(corpus["mixed"], root / "ray-merged.tsv", merge=[root / "cli-idf.tsv"])
    assert (root / "ray-merged.tsv").read_bytes() == (root / "cli-merged.tsv").read_bytes()


def test_bad_record_is_one_clear_error(ray_local, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n\n{"text": 5}\n', encoding="utf-8")
    from keyatten_lite.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=r"bad\.jsonl: line 3: expected an object with a string 'text' field"):
        ray_extract([str(bad)], tmp_path / "out")
    with pytest.raises(InvalidArgumentError, match="line 3"):
        ray_idf_fit([str(bad)], None)


def test_language_rule_is_the_clis(corpus):
    from keyatten_lite.cli import detect_language

    for rec in corpus["records"]:
        assert ray_engine.detect_language(rec["text"]) == detect_language(rec["text"])


def test_expand_inputs_order_and_errors(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.jsonl", "d/a.parquet", "d/sub/c.jsonl", "d/.hidden.jsonl", "d/notes.txt", "x.txt"):
        (tmp_path / name).write_text("")
    files = [os.path.relpath(p, tmp_path) for p in expand_inputs([tmp_path / "d", str(tmp_path / "x.txt")])]
    assert files == ["d/a.parquet", "d/b.jsonl", "d/sub/c.jsonl", "x.txt"]
    assert [os.path.basename(p) for p in expand_inputs(str(tmp_path / "d" / "*.jsonl"))] == ["b.jsonl"]
    from keyatten_lite.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="input not found"):
        expand_inputs([tmp_path / "nope.jsonl"])
    with pytest.raises(InvalidArgumentError, match="no .jsonl or .parquet files match"):
        expand_inputs(str(tmp_path / "*.parquet"))


def test_missing_ray_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ray_engine.RayNotInstalledError, match=r"pip install 'keyatten-lite\[ray\]'"):
        ray_engine._import_ray()
