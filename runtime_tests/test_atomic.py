"""Atomic writes: whole files only, and the permissions a plain write would give."""

from __future__ import annotations

import os
import stat

import pytest

from keyatten_lite.state.atomic import atomic_write_bytes


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_new_file_gets_umask_permissions_not_mkstemp_0600(tmp_path, umask_022):
    target = tmp_path / "idf.tsv"
    atomic_write_bytes(target, b"a\t1\n")
    assert target.read_bytes() == b"a\t1\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_replacing_keeps_the_existing_permissions(tmp_path, umask_022):
    target = tmp_path / "out.md"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o640


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
