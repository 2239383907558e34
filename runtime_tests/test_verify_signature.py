"""Checksums once per bundle (issue 13 item 3): open_bundle hashes a bundle's files the first time, records
their size, mtime and inode in <home>/verified/, and trusts that record afterwards; any change means a
full verification again, and `keyatten-lite models verify` always hashes."""

from __future__ import annotations

import json
import os

import pytest

import keyatten_lite.model.bundle as bundle_module
from keyatten_lite.cli.main import main as cli_main
from keyatten_lite.errors import ChecksumError
from keyatten_lite.model import verified
from keyatten_lite.model.bundle import open_bundle, verify_bundle

from test_pack import make_bundle  # noqa: E402  (tiny format-1 bundles, no onnx package needed)


@pytest.fixture
def home(monkeypatch, tmp_path):
    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(tmp_path / "home"))
    bundle_module._VERIFIED.clear()  # the in-process memo would hide what a fresh process does
    yield tmp_path / "home"
    bundle_module._VERIFIED.clear()


def _fresh_process() -> None:
    bundle_module._VERIFIED.clear()


def _records(home):
    return sorted((home / "verified").glob("*.json")) if (home / "verified").is_dir() else []


def _flip_byte(path, *, keep_mtime: bool) -> None:
    stat = os.stat(path)
    data = open(path, "rb").read()
    # In the tiny graphs, a byte of the graph's name (so open_bundle's graph I/O check still passes).
    offset = data.find(b"tiny") if b"tiny" in data else stat.st_size // 2
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x01]))
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    else:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def _count_hashes(monkeypatch) -> list:
    calls: list = []
    real = bundle_module.sha256_file

    def counting(path, *args, **kwargs):
        calls.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(bundle_module, "sha256_file", counting)
    return calls


def test_first_open_hashes_and_records_later_opens_trust_the_record(home, tmp_path, monkeypatch):
    path = make_bundle(tmp_path / "b")
    calls = _count_hashes(monkeypatch)
    open_bundle(path)
    assert sorted(calls) == ["model.int8.onnx", "model.onnx", "tokenizer.json"]
    (record_file,) = _records(home)
    record = json.loads(record_file.read_text())
    assert record["format"] == verified.RECORD_FORMAT and record["path"] == str(path.resolve())
    assert set(record["files"]) == {"model.onnx", "model.int8.onnx", "tokenizer.json"}
    stat = os.stat(path / "model.onnx")
    assert record["files"]["model.onnx"]["inode"] == stat.st_ino
    assert record["files"]["model.onnx"]["mtime_ns"] == stat.st_mtime_ns
    calls.clear()
    _fresh_process()
    open_bundle(path)
    assert calls == []  # trusted: nothing hashed
    open_bundle(path, variant="int8")
    assert calls == []


def test_a_corrupted_file_with_a_changed_mtime_is_caught(home, tmp_path):
    path = make_bundle(tmp_path / "b")
    open_bundle(path)
    _fresh_process()
    _flip_byte(path / "model.onnx", keep_mtime=False)
    with pytest.raises(ChecksumError, match="model.onnx"):
        open_bundle(path)


def test_a_replaced_file_is_caught_through_its_inode(home, tmp_path):
    path = make_bundle(tmp_path / "b")
    open_bundle(path)
    _fresh_process()
    target = path / "tokenizer.json"
    stat = os.stat(target)
    data = bytearray(target.read_bytes())
    data[0] ^= 0x01
    (path / "new").write_bytes(bytes(data))
    os.utime(path / "new", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(path / "new", target)  # same size, same mtime, another inode
    with pytest.raises(ChecksumError, match="tokenizer.json"):
        open_bundle(path)


@pytest.mark.parametrize(
    "damage",
    ["wrong size", "garbage", "empty", "not an object", "bad types", "other path", "missing file entry"],
)
def test_a_damaged_or_foreign_record_is_ignored(home, tmp_path, monkeypatch, damage):
    path = make_bundle(tmp_path / "b")
    open_bundle(path)
    (record_file,) = _records(home)
    record = json.loads(record_file.read_text())
    if damage == "wrong size":
        record["files"]["model.onnx"]["bytes"] += 1
        text = json.dumps(record)
    elif damage == "garbage":
        text = "\x00{not json"
    elif damage == "empty":
        text = ""
    elif damage == "not an object":
        text = "[1, 2]"
    elif damage == "bad types":
        record["files"]["model.onnx"]["inode"] = "1"
        text = json.dumps(record)
    elif damage == "other path":
        record["path"] = str(tmp_path / "elsewhere")
        text = json.dumps(record)
    else:
        del record["files"]["model.int8.onnx"]
        text = json.dumps(record)
    record_file.write_text(text)
    # A change the record would have hidden (same size, mtime and inode) is caught, so the record was
    # not trusted: open_bundle hashed everything.
    _flip_byte(path / "model.onnx", keep_mtime=True)
    _fresh_process()
    calls = _count_hashes(monkeypatch)
    with pytest.raises(ChecksumError, match="model.onnx"):
        open_bundle(path)
    assert "model.onnx" in calls


def test_a_damaged_record_never_crashes_and_is_rewritten(home, tmp_path):
    path = make_bundle(tmp_path / "b")
    open_bundle(path)
    (record_file,) = _records(home)
    record_file.write_bytes(b"\xff\xfe garbage")
    _fresh_process()
    open_bundle(path)
    assert verified.load_record(record_file) is not None


def test_an_unwritable_home_only_costs_the_hashing(monkeypatch, tmp_path):
    blocker = tmp_path / "home"
    blocker.write_text("a file where the home folder should be")
    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(blocker))
    _fresh_process()
    path = make_bundle(tmp_path / "b")
    open_bundle(path)
    _fresh_process()
    open_bundle(path)


def test_verify_checksums_false_hashes_nothing_and_writes_no_record(home, tmp_path, monkeypatch):
    path = make_bundle(tmp_path / "b")
    calls = _count_hashes(monkeypatch)
    open_bundle(path, verify_checksums=False)
    assert calls == [] and _records(home) == []


def test_models_verify_refreshes_the_record(home, tmp_path, capsys):
    path = make_bundle(tmp_path / "b")
    open_bundle(path)
    (record_file,) = _records(home)
    record = json.loads(record_file.read_text())
    record["verified_at"] = 0
    record_file.write_text(json.dumps(record))
    assert cli_main(["models", "verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ok, 3 files" in out and str(record_file) in out
    refreshed = json.loads(record_file.read_text())
    assert refreshed["verified_at"] > 0
    assert verified.record_matches(refreshed, path, json.loads((path / "bundle.json").read_text()), record["manifest_sha256"])
    record_file.unlink()
    result = verify_bundle(path)
    assert result["files"] == 3 and result["record"] == str(record_file) and record_file.is_file()


def test_a_byte_flipped_with_mtime_restored_passes_open_but_not_models_verify(home, tmp_path, capsys):
    """The documented trade-off (docs/bundle-format.md): open_bundle trusts (size, mtime, inode)."""
    path = make_bundle(tmp_path / "b")
    open_bundle(path)
    _flip_byte(path / "model.onnx", keep_mtime=True)
    _fresh_process()
    open_bundle(path)  # not caught: the record still matches
    assert cli_main(["models", "verify", str(path)]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "model.onnx" in err and "does not match" in err
    assert _records(home) == []  # the record that vouched for the damaged file is gone
    _fresh_process()
    with pytest.raises(ChecksumError, match="model.onnx"):
        open_bundle(path)


def test_models_verify_without_names_checks_every_installed_bundle(home, capsys):
    make_bundle(home / "bundles", "one")
    make_bundle(home / "bundles", "two")
    assert cli_main(["models", "verify"]) == 0
    out = capsys.readouterr().out
    assert "one: ok" in out and "two: ok" in out
    assert len(_records(home)) == 2


def test_records_of_older_builds_and_vanished_directories_are_pruned(home, tmp_path):
    path = make_bundle(tmp_path / "b")
    open_bundle(path)
    (first,) = _records(home)
    stale = home / "verified" / ("tiny-en-" + "0" * 16 + ".json")
    stale.write_text(json.dumps({**json.loads(first.read_text()), "path": str(tmp_path / "vanished")}))
    (path / "bundle.json").write_text((path / "bundle.json").read_text() + " ")  # a rebuilt manifest
    _fresh_process()
    open_bundle(path)
    records = _records(home)
    assert len(records) == 1 and records[0] != first
    assert json.loads(records[0].read_text())["path"] == str(path.resolve())
