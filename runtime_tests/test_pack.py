"""keyatten_lite.model.pack: deterministic bundle archives and a safe, atomic install.

Fast tests run on a tiny bundle fabricated here (hand-encoded ONNX protobufs that open_bundle can
read; no onnx package needed); one test packs and installs the real default English bundle.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from keyatten_lite.model.bundle import open_bundle
from keyatten_lite.errors import BundleError, ChecksumError, InvalidArgumentError
from keyatten_lite.cli import models as cli_models
from keyatten_lite.model import install
from keyatten_lite.model.archive import PackChecksumError, PackError
from keyatten_lite.model.install import install_pack
from keyatten_lite.model.pack import pack_bundle, pack_language
from keyatten_lite.model.registry import list_installed

NAME = "tiny-en"


# --------------------------------------------------------------------------------------- fixtures


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _value_info(name: str, elem_type: int, dims: list) -> bytes:
    shape = b"".join(
        _len_field(1, _int_field(1, d) if isinstance(d, int) else _len_field(2, d.encode())) for d in dims
    )
    tensor = _int_field(1, elem_type) + _len_field(2, shape)
    return _len_field(1, name.encode()) + _len_field(2, _len_field(1, tensor))


def _tiny_onnx(tag: str, layers: int = 2) -> bytes:
    """A ModelProto with only the graph's name, inputs and outputs: enough for open_bundle's checks."""
    graph = _len_field(2, tag.encode())
    graph += _len_field(11, _value_info("input_ids", 7, ["batch", "seq"]))
    graph += _len_field(11, _value_info("attention_mask", 7, ["batch", "seq"]))
    graph += _len_field(12, _value_info("attentions", 1, [layers, "batch", "seq", "seq"]))
    return _int_field(1, 8) + _len_field(7, graph)


def _entry(data: bytes) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def make_bundle(root: Path, name: str = NAME, *, int8: bool = True, extra: dict[str, bytes] | None = None) -> Path:
    """A format-1 bundle directory with a real files table (sha256 + size of each file)."""
    path = root / name
    path.mkdir(parents=True)
    payloads = {
        "model.onnx": _tiny_onnx("fp32 " + name),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "WordLevel"}}).encode(),
    }
    if int8:
        payloads["model.int8.onnx"] = _tiny_onnx("int8 " + name)
    payloads.update(extra or {})
    for file_name, data in payloads.items():
        (path / file_name).write_bytes(data)
    manifest = {
        "format": "keyatten-lite-bundle",
        "format_version": 1,
        "name": name,
        "architecture": "encoder",
        "num_layers": 2,
        "exported_layers": [0, 1],
        "default_layer": 1,
        "recommended_layer": None,
        "graph": {
            "inputs": [
                {"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]},
                {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "seq"]},
            ],
            "outputs": [{"name": "attentions", "dtype": "float32", "shape": [2, "batch", "seq", "seq"]}],
            "opset": 17,
        },
        "special_tokens": {"cls": 1, "sep": 2, "bos": None, "eos": None, "pad": 0, "unk": 3},
        "pad_token_id": 0,
        "padding_side": "right",
        "max_length": 32,
        "tokenizer": {"file": "tokenizer.json", "padding": None, "truncation": None},
        "parity": {"fp32": {"max_abs_diff": 1e-7, "tolerance": 1e-4}},
        "files": {file_name: _entry(data) for file_name, data in sorted(payloads.items())},
    }
    (path / "bundle.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return path


@pytest.fixture
def bundle(tmp_path) -> Path:
    return make_bundle(tmp_path / "src")


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


def _members(archive: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(archive) as tar:
        out = []
        for member in tar.getmembers():
            data = tar.extractfile(member).read() if member.isreg() else None
            out.append((member, data))
        return out


def _write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], *, compress: bool = True) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info = _copy_info(info)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    raw = buffer.getvalue()
    path.write_bytes(gzip.compress(raw, mtime=0) if compress else raw)
    return path


def _copy_info(info: tarfile.TarInfo) -> tarfile.TarInfo:
    new = tarfile.TarInfo(info.name)
    for attr in ("type", "mode", "mtime", "uid", "gid", "uname", "gname", "linkname", "size", "devmajor", "devminor"):
        setattr(new, attr, getattr(info, attr))
    return new


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def _pack_record(members) -> dict:
    for info, data in members:
        if info.name.endswith("/PACK.json"):
            return json.loads(data)
    raise AssertionError("no PACK.json")


def _replace(members, name: str, data: bytes | None):
    """Members with ``name``'s data replaced (None drops it)."""
    out = []
    for info, old in members:
        if info.name == name:
            if data is None:
                continue
            out.append((info, data))
        else:
            out.append((info, old))
    return out


def _with_pack(members, record: dict, folder: str = NAME):
    return _replace(members, f"{folder}/PACK.json", (json.dumps(record) + "\n").encode())


def assert_nothing_installed(home: Path, name: str = NAME) -> None:
    root = home / "bundles"
    assert not (root / name).exists(), "a failed install must leave nothing under the final name"
    leftovers = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    assert [p for p in leftovers if p.startswith(".")] == [], f"temporary directories left behind: {leftovers}"


# --------------------------------------------------------------------------------------- packing


def test_packing_is_deterministic(bundle, tmp_path):
    first = pack_bundle(bundle, tmp_path / "a.tar.gz")
    for path in bundle.iterdir():  # new mtimes must not change the bytes
        os.utime(path, (1_700_000_000, 1_700_000_000))
    second = pack_bundle(bundle, tmp_path / "b.tar.gz")
    a, b = (tmp_path / "a.tar.gz").read_bytes(), (tmp_path / "b.tar.gz").read_bytes()
    assert a == b and first["sha256"] == second["sha256"] == hashlib.sha256(a).hexdigest()
    assert first["bytes"] == len(a)
    # gzip header: no mtime, no file name (FLG byte has no FNAME bit)
    assert a[:2] == b"\x1f\x8b" and a[3] & 0x08 == 0 and a[4:8] == b"\0\0\0\0"
    plain1 = pack_bundle(bundle, tmp_path / "a.tar")
    plain2 = pack_bundle(bundle, tmp_path / "b.tar")
    assert plain1["sha256"] == plain2["sha256"] and plain1["compress"] is None
    assert gzip.decompress(a) == (tmp_path / "a.tar").read_bytes()

    members = _members(tmp_path / "a.tar")
    names = [m.name for m, _ in members]
    assert names == [NAME] + sorted(names[1:])
    assert names[1:] == [f"{NAME}/PACK.json", f"{NAME}/bundle.json", f"{NAME}/model.onnx", f"{NAME}/tokenizer.json"]
    for member, _ in members:
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (0, 0, 0, "", "")
        assert member.mode == (0o755 if member.isdir() else 0o644)
    record = _pack_record(members)
    assert record["variants"] == ["fp32"] and record["bundles"] == [NAME]
    assert set(record["files"]) == {"bundle.json", "model.onnx", "tokenizer.json"}
    assert set(record["omitted"]) == {"model.int8.onnx"}
    assert first["files"][f"{NAME}/model.onnx"] == _entry((bundle / "model.onnx").read_bytes())


def test_compression_by_suffix_and_argument(bundle, tmp_path):
    assert pack_bundle(bundle, tmp_path / "x.tgz")["compress"] == "gzip"
    assert (tmp_path / "x.tgz").read_bytes()[:2] == b"\x1f\x8b"
    assert pack_bundle(bundle, tmp_path / "x.tar")["compress"] is None
    assert (tmp_path / "x.tar").read_bytes()[257:262] == b"ustar"
    assert pack_bundle(bundle, tmp_path / "x.bundle", compress=None)["compress"] is None
    assert pack_bundle(bundle, tmp_path / "y.bundle")["compress"] == "gzip"
    with pytest.raises(InvalidArgumentError, match="suffix"):
        pack_bundle(bundle, tmp_path / "z.tar.gz", compress=None)
    with pytest.raises(InvalidArgumentError):
        pack_bundle(bundle, tmp_path / "z.tar", compress="bz2")
    assert not list(tmp_path.glob(".z.*")), "a refused pack leaves no temporary file"


def test_variants(bundle, tmp_path):
    both = pack_bundle(bundle, tmp_path / "both.tar", variants=("fp32", "int8"))
    assert both["bundles"][0]["variants"] == ["fp32", "int8"] and not both["bundles"][0]["manifest_rewritten"]
    assert f"{NAME}/model.int8.onnx" in both["files"]
    same = pack_bundle(bundle, tmp_path / "both2.tar", variants=("default", "int8"))
    assert same["sha256"] == both["sha256"]
    only_int8 = pack_bundle(bundle, tmp_path / "int8.tar", variants=("int8",))
    assert only_int8["bundles"][0]["variants"] == ["int8"]
    assert f"{NAME}/model.int8.onnx" in only_int8["files"] and f"{NAME}/model.onnx" not in only_int8["files"]
    with pytest.raises(InvalidArgumentError, match="unknown variant"):
        pack_bundle(bundle, tmp_path / "bad.tar", variants=("fp16",))
    no_int8 = make_bundle(tmp_path / "other", "plain-en", int8=False)
    with pytest.raises(PackError, match="no int8 variant"):
        pack_bundle(no_int8, tmp_path / "x.tar", variants=("fp32", "int8"))


def test_other_listed_files_are_always_packed(tmp_path, home):
    crf = json.dumps({"tags": ["B", "I", "O"], "transitions": [[0, 0, 0]] * 3}).encode()
    src = make_bundle(tmp_path / "src", "bio-tiny", extra={"crf.json": crf})
    (src / "notes.txt").write_text("not listed in bundle.json: not packed")
    summary = pack_bundle(src, tmp_path / "bio.tar.gz")
    assert "bio-tiny/crf.json" in summary["files"] and "bio-tiny/notes.txt" not in summary["files"]
    (installed,) = install_pack(tmp_path / "bio.tar.gz", home=home)
    assert (installed / "crf.json").read_bytes() == crf
    assert open_bundle(installed).name == "bio-tiny"


def test_pack_refuses_a_damaged_bundle(bundle, tmp_path):
    (bundle / "tokenizer.json").write_bytes(b'{"damaged": true}')
    with pytest.raises(PackChecksumError, match="damaged"):
        pack_bundle(bundle, tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()


def test_pack_by_name_under_home(tmp_path, home):
    make_bundle(home / "bundles")
    summary = pack_bundle(NAME, tmp_path / "x.tar", home=home)
    assert summary["bundles"][0]["name"] == NAME
    with pytest.raises(BundleError, match="no bundle named"):
        pack_bundle("missing-one", tmp_path / "y.tar", home=home)


# --------------------------------------------------------------------------------------- installing


def test_round_trip_default_variant(bundle, tmp_path, home):
    pack_bundle(bundle, tmp_path / "b.tar.gz")
    (installed,) = install_pack(tmp_path / "b.tar.gz", home=home)
    assert installed == home / "bundles" / NAME
    assert sorted(p.name for p in installed.iterdir()) == ["bundle.json", "model.onnx", "tokenizer.json"]
    for name in ("model.onnx", "tokenizer.json"):
        assert (installed / name).read_bytes() == (bundle / name).read_bytes()
    manifest = json.loads((installed / "bundle.json").read_text())
    original = json.loads((bundle / "bundle.json").read_text())
    assert manifest["packed_without"] == ["model.int8.onnx"]
    assert manifest["files"] == {k: v for k, v in original["files"].items() if k != "model.int8.onnx"}
    assert {k: v for k, v in manifest.items() if k not in ("files", "packed_without")} == {
        k: v for k, v in original.items() if k != "files"
    }
    # The fp32-only bundle opens; int8 gives the runtime's clear error.
    assert open_bundle(installed, variant="fp32").variant == "fp32"
    with pytest.raises(BundleError, match="no int8 variant"):
        open_bundle(installed, variant="int8")
    (entry,) = list_installed(home)
    assert entry["variants"] == ["fp32"] and entry["error"] is None
    assert [p.name for p in (home / "bundles").iterdir()] == [NAME]


def test_an_int8_only_pack_installs_and_runs_int8(bundle, tmp_path, home):
    """The edge install: only the default variant's graph travels, and it is what opens."""
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["default_variant"] = "int8"
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    summary = pack_bundle(bundle, tmp_path / "b.tar.gz")  # "default" = the manifest's default_variant
    assert summary["bundles"][0]["variants"] == ["int8"]
    (installed,) = install_pack(tmp_path / "b.tar.gz", home=home)
    assert sorted(p.name for p in installed.iterdir()) == ["bundle.json", "model.int8.onnx", "tokenizer.json"]
    assert open_bundle(installed, variant="int8").variant == "int8"
    with pytest.raises(BundleError, match="no fp32 variant.*variant='int8'"):
        open_bundle(installed, variant="fp32")
    from keyatten_lite.pipeline.settings import default_variant
    from keyatten_lite.profiles import get_profile

    assert default_variant(installed, get_profile("default"), "word") == "int8"
    # compat reads fp32 when the bundle has it; an int8-only install gives its clear error on open.
    assert default_variant(installed, get_profile("compat"), "word") == "fp32"


def test_why_the_manifest_is_trimmed(bundle, tmp_path):
    """open_bundle verifies every listed file: the original manifest without model.int8.onnx never opens."""
    copy = tmp_path / "copy" / NAME
    copy.mkdir(parents=True)
    for name in ("bundle.json", "model.onnx", "tokenizer.json"):
        (copy / name).write_bytes((bundle / name).read_bytes())
    with pytest.raises(BundleError, match="model.int8.onnx listed in bundle.json is missing"):
        open_bundle(copy, variant="fp32")


def test_round_trip_both_variants_is_exact(bundle, tmp_path, home):
    pack_bundle(bundle, tmp_path / "b.tar", variants=("fp32", "int8"))
    (installed,) = install_pack(tmp_path / "b.tar", home=home)
    assert sorted(p.name for p in installed.iterdir()) == sorted(p.name for p in bundle.iterdir())
    for path in bundle.iterdir():
        assert (installed / path.name).read_bytes() == path.read_bytes()
    assert open_bundle(installed, variant="int8").variant == "int8"


def test_format_is_detected_by_magic_not_name(bundle, tmp_path, home):
    pack_bundle(bundle, tmp_path / "b.tar.gz")
    pack_bundle(bundle, tmp_path / "b.tar")
    (tmp_path / "b.tar.gz").rename(tmp_path / "gzipped.tar")
    (tmp_path / "b.tar").rename(tmp_path / "plain.tgz")
    assert install_pack(tmp_path / "gzipped.tar", home=home) == [home / "bundles" / NAME]
    assert install_pack(tmp_path / "plain.tgz", home=tmp_path / "home2") == [tmp_path / "home2" / "bundles" / NAME]


def test_home_from_environment(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(tmp_path / "envhome"))
    pack_bundle(bundle, tmp_path / "b.tar.gz")
    assert install_pack(tmp_path / "b.tar.gz") == [tmp_path / "envhome" / "bundles" / NAME]


def test_existing_bundle_kept_when_identical_replaced_only_with_force(bundle, tmp_path, home, monkeypatch):
    pack_bundle(bundle, tmp_path / "b.tar.gz")
    (installed,) = install_pack(tmp_path / "b.tar.gz", home=home)
    stamp = (installed / "model.onnx").stat().st_mtime_ns
    assert install_pack(tmp_path / "b.tar.gz", home=home) == [installed]  # identical: no error, untouched
    assert (installed / "model.onnx").stat().st_mtime_ns == stamp

    pack_bundle(bundle, tmp_path / "both.tar.gz", variants=("fp32", "int8"))
    with pytest.raises(PackError, match="already installed.*force"):
        install_pack(tmp_path / "both.tar.gz", home=home)
    assert not (installed / "model.int8.onnx").exists()
    assert sorted(p.name for p in (home / "bundles").iterdir()) == [NAME]

    install_pack(tmp_path / "both.tar.gz", home=home, force=True)  # renameat2 exchange where available
    assert (installed / "model.int8.onnx").is_file()
    assert sorted(p.name for p in (home / "bundles").iterdir()) == [NAME]

    monkeypatch.setattr(install, "_exchange", lambda a, b: False)  # the two-rename fallback
    install_pack(tmp_path / "b.tar.gz", home=home, force=True)
    assert not (installed / "model.int8.onnx").exists()
    assert open_bundle(installed).variant == "fp32"
    assert sorted(p.name for p in (home / "bundles").iterdir()) == [NAME]


def test_failed_replacement_keeps_the_old_bundle(bundle, tmp_path, home, monkeypatch):
    pack_bundle(bundle, tmp_path / "b.tar.gz")
    pack_bundle(bundle, tmp_path / "both.tar.gz", variants=("fp32", "int8"))
    (installed,) = install_pack(tmp_path / "b.tar.gz", home=home)
    before = {p.name: p.read_bytes() for p in installed.iterdir()}
    monkeypatch.setattr(install, "_exchange", lambda a, b: False)
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new bundle taking the final name
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(install.os, "replace", failing_replace)
    with pytest.raises(PackError, match="cannot install"):
        install_pack(tmp_path / "both.tar.gz", home=home, force=True)
    monkeypatch.setattr(install.os, "replace", real_replace)
    assert {p.name: p.read_bytes() for p in installed.iterdir()} == before
    assert sorted(p.name for p in (home / "bundles").iterdir()) == [NAME]


def test_nothing_is_visible_under_the_final_name_before_verification(bundle, tmp_path, home, monkeypatch):
    pack_bundle(bundle, tmp_path / "b.tar.gz")
    seen = []
    real_verify = install._verify_bundle

    def spy(name, info, names, where):
        seen.append((name, (home / "bundles" / name).exists(), info["dir"].parent.name))
        return real_verify(name, info, names, where)

    monkeypatch.setattr(install, "_verify_bundle", spy)
    install_pack(tmp_path / "b.tar.gz", home=home)
    ((name, visible, staging),) = seen
    assert name == NAME and not visible and staging.startswith(".install-")
    assert sorted(p.name for p in (home / "bundles").iterdir()) == [NAME]


def test_language_pack_holds_several_bundles(tmp_path, home):
    build_home = tmp_path / "build"
    make_bundle(build_home / "bundles", "minilm-l6-en")
    make_bundle(build_home / "bundles", "bio-minilm-en", int8=False)
    summary = pack_language("en", tmp_path / "en.tar.gz", variants=("fp32", "int8"), include_bio=True, home=build_home)
    assert [b["name"] for b in summary["bundles"]] == ["bio-minilm-en", "minilm-l6-en"]
    assert [b["variants"] for b in summary["bundles"]] == [["fp32"], ["fp32", "int8"]]
    again = pack_language("en", tmp_path / "en2.tar.gz", variants=("fp32", "int8"), include_bio=True, home=build_home)
    assert again["sha256"] == summary["sha256"]
    paths = install_pack(tmp_path / "en.tar.gz", home=home)
    assert paths == [home / "bundles" / "bio-minilm-en", home / "bundles" / "minilm-l6-en"]
    assert open_bundle(paths[1], variant="int8").variant == "int8"
    assert open_bundle(paths[0]).name == "bio-minilm-en"
    alone = pack_language("en", tmp_path / "en-only.tar", home=build_home)
    assert [b["name"] for b in alone["bundles"]] == ["minilm-l6-en"]
    with pytest.raises(InvalidArgumentError):
        pack_language("fr", tmp_path / "fr.tar", home=build_home)


# --------------------------------------------------------------------------------------- refusals


@pytest.fixture
def good(bundle, tmp_path):
    """Members of a valid fp32+int8 pack, to mutate into malicious ones."""
    pack_bundle(bundle, tmp_path / "good.tar", variants=("fp32", "int8"))
    return _members(tmp_path / "good.tar")


def _dup(members, name):
    (extra,) = [(i, d) for i, d in members if i.name == name]
    return members + [extra]


def _second_bundle(members):
    """A second folder with its own (self-consistent) PACK.json, as if appended to the archive."""
    record = {
        "format": "keyatten-lite-pack",
        "format_version": 1,
        "bundle": "other",
        "bundles": ["other"],
        "variants": ["fp32"],
        "files": {"bundle.json": _entry(b"{}")},
    }
    return members + [_file("other/PACK.json", json.dumps(record).encode()), _file("other/bundle.json", b"{}")]


def _tampered_tokenizer(members):
    """tokenizer.json changed with PACK.json updated to match: only the manifest can catch it."""
    data = b'{"evil": 1}'
    record = _pack_record(members)
    record["files"]["tokenizer.json"] = _entry(data)
    return _with_pack(_replace(members, f"{NAME}/tokenizer.json", data), record)


def _manifest_lists_unpacked(members):
    record = _pack_record(members)
    del record["files"]["model.int8.onnx"]
    return _with_pack(_replace(members, f"{NAME}/model.int8.onnx", None), record)


def _flip(members, name):
    (data,) = [d for i, d in members if i.name == name]
    return _replace(members, name, data[:-1] + bytes([data[-1] ^ 1]))


def _grow(members, name):
    (data,) = [d for i, d in members if i.name == name]
    return _replace(members, name, data + b" ")


def _bad_pack_json(members, text: bytes):
    return _replace(members, f"{NAME}/PACK.json", text)


def _pack_field(members, key, value):
    record = _pack_record(members)
    record[key] = value
    return _with_pack(members, record)


def _device(name: str, kind: bytes):
    info, _ = _special(name, kind)
    info.devmajor, info.devminor = 1, 3
    return info, None


MALICIOUS = {
    "absolute path": (lambda m: m + [_file("/tmp/evil", b"x")], "absolute"),
    "dot-dot inside": (lambda m: m + [_file(f"{NAME}/../evil", b"x")], r"'\.\.'"),
    "dot-dot top": (lambda m: m + [_file("../evil", b"x")], r"'\.\.'"),
    "dot segment": (lambda m: m + [_file(f"./{NAME}/x", b"x")], r"'\.'"),
    "file at top level": (lambda m: m + [_file("evil.txt", b"x")], "outside any <name>/ folder"),
    "nested path": (lambda m: m + [_file(f"{NAME}/sub/evil", b"x")], "nested"),
    "nested directory": (lambda m: m + [_special(f"{NAME}/sub", tarfile.DIRTYPE)], "nested"),
    "symlink": (lambda m: _replace(m, f"{NAME}/tokenizer.json", None) + [_special(f"{NAME}/tokenizer.json", tarfile.SYMTYPE, "/etc/passwd")], "symbolic link"),
    "hard link": (lambda m: m + [_special(f"{NAME}/copy.onnx", tarfile.LNKTYPE, f"{NAME}/model.onnx")], "hard link"),
    "char device": (lambda m: m + [_device(f"{NAME}/null", tarfile.CHRTYPE)], "device or fifo"),
    "block device": (lambda m: m + [_device(f"{NAME}/sda", tarfile.BLKTYPE)], "device or fifo"),
    "fifo": (lambda m: m + [_special(f"{NAME}/pipe", tarfile.FIFOTYPE)], "device or fifo"),
    "duplicate file": (lambda m: _dup(m, f"{NAME}/tokenizer.json"), "more than once"),
    "duplicate PACK.json": (lambda m: _dup(m, f"{NAME}/PACK.json"), "more than once"),
    "unlisted file": (lambda m: m + [_file(f"{NAME}/extra.txt", b"x")], "not listed in tiny-en/PACK.json"),
    "unlisted before PACK.json": (lambda m: [m[0], _file(f"{NAME}/AAA.txt", b"x")] + m[1:], "not listed in tiny-en/PACK.json"),
    "listed but missing": (lambda m: _replace(m, f"{NAME}/tokenizer.json", None), "listed in tiny-en/PACK.json but missing"),
    "sha256 mismatch": (lambda m: _flip(m, f"{NAME}/model.onnx"), "sha256"),
    "size mismatch": (lambda m: _grow(m, f"{NAME}/tokenizer.json"), "bytes but PACK.json says"),
    "manifest mismatch": (_tampered_tokenizer, "sha256 and size in tiny-en/bundle.json"),
    "manifest lists an unpacked file": (_manifest_lists_unpacked, "would not open"),
    "second bundle": (_second_bundle, "more than one bundle"),
    "bundle name with space": (lambda m: m + [_file("bad name/PACK.json", b"{}")], "simple bundle name"),
    "hidden bundle name": (lambda m: m + [_file(".hidden/PACK.json", b"{}")], "simple bundle name"),
    "unsafe file name": (lambda m: m + [_file(f"{NAME}/a b;rm", b"x")], "unsafe file name"),
    "no PACK.json": (lambda m: _replace(m, f"{NAME}/PACK.json", None), "has no PACK.json"),
    "PACK.json not JSON": (lambda m: _bad_pack_json(m, b"{nope"), "not valid JSON"),
    "PACK.json wrong format": (lambda m: _pack_field(m, "format", "zip"), "expected 'keyatten-lite-pack'"),
    "PACK.json newer version": (lambda m: _pack_field(m, "format_version", 2), "format_version 2"),
    "PACK.json other bundle": (lambda m: _pack_field(m, "bundle", "other"), "not for its folder"),
    "PACK.json bad entry": (lambda m: _pack_field(m, "files", {"bundle.json": {"sha256": "x", "bytes": 1}}), "malformed entry"),
    "bundle.json not a bundle": (
        lambda m: _with_pack(
            _replace(m, f"{NAME}/bundle.json", b'{"format": "other"}'),
            {**_pack_record(m), "files": {**_pack_record(m)["files"], "bundle.json": _entry(b'{"format": "other"}')}},
        ),
        "not a keyatten-lite bundle",
    ),
}


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archives_are_refused(case, compress, good, tmp_path, home):
    mutate, message = MALICIOUS[case]
    archive = _write_tar(tmp_path / "evil.bin", mutate(list(good)), compress=compress)
    with pytest.raises(BundleError, match=message) as info:
        install_pack(archive, home=home)
    assert isinstance(info.value, PackError) or case == "bundle.json not a bundle"
    assert_nothing_installed(home)
    assert not (home / "bundles" / "other").exists() and not (tmp_path / "evil").exists()


def test_checksum_failures_are_checksum_errors(good, tmp_path, home):
    archive = _write_tar(tmp_path / "evil.tar.gz", _flip(list(good), f"{NAME}/model.onnx"))
    with pytest.raises(ChecksumError):
        install_pack(archive, home=home)
    assert_nothing_installed(home)


def test_a_valid_crafted_archive_installs(good, tmp_path, home):
    """The refusals above come from the mutations, not from how the test writes tars."""
    for compress in (True, False):
        archive = _write_tar(tmp_path / f"ok-{compress}.bin", list(good), compress=compress)
        assert install_pack(archive, home=home, force=True) == [home / "bundles" / NAME]


def _content_end(archive: Path) -> int:
    """Offset just past the last member's data (where the end-of-archive zero blocks start)."""
    with tarfile.open(archive) as tar:
        last = tar.getmembers()[-1]
        return last.offset_data + -(-last.size // 512) * 512


def test_truncated_archives_are_refused(bundle, tmp_path, home):
    pack_bundle(bundle, tmp_path / "b.tar.gz")
    pack_bundle(bundle, tmp_path / "b.tar")
    gz = (tmp_path / "b.tar.gz").read_bytes()
    plain = (tmp_path / "b.tar").read_bytes()
    end = _content_end(tmp_path / "b.tar")
    cuts = [(gz, n) for n in (10, len(gz) // 2, len(gz) - 9, len(gz) - 1)]
    # plain: inside the first header, inside a member's data, one of the two end-of-archive blocks left
    cuts += [(plain, n) for n in (100, 1024 + 300, end - 100, end + 512)]
    for data, n in cuts:
        (tmp_path / "cut.bin").write_bytes(data[:n])
        with pytest.raises(PackError, match="truncated|corrupt|not a tar|listed in"):
            install_pack(tmp_path / "cut.bin", home=home)
        assert_nothing_installed(home)
    # Without the record padding after the end marker the archive is complete: it installs.
    (tmp_path / "short.tar").write_bytes(plain[: end + 1024])
    assert install_pack(tmp_path / "short.tar", home=home) == [home / "bundles" / NAME]


def test_corrupt_gzip_is_refused(bundle, tmp_path, home):
    pack_bundle(bundle, tmp_path / "b.tar.gz")
    data = bytearray((tmp_path / "b.tar.gz").read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    (tmp_path / "bad.tar.gz").write_bytes(bytes(data))
    with pytest.raises(PackError):
        install_pack(tmp_path / "bad.tar.gz", home=home)
    assert_nothing_installed(home)
    data = bytearray((tmp_path / "b.tar.gz").read_bytes())
    data[-8] ^= 0xFF  # CRC of the gzip trailer
    (tmp_path / "crc.tar.gz").write_bytes(bytes(data))
    with pytest.raises(PackError, match="corrupt"):
        install_pack(tmp_path / "crc.tar.gz", home=home)
    assert_nothing_installed(home)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"just some text, not an archive" * 40, "not a tar"),
        (b"PK\x03\x04" + b"\0" * 600, "zip file"),
        (b"BZh91AY&SY" + b"\0" * 600, "bzip2 file"),
        (gzip.compress(b"not a tar inside gzip" * 100, mtime=0), "truncated or corrupt"),
    ],
)
def test_not_an_archive(tmp_path, home, content, message):
    (tmp_path / "x.tar.gz").write_bytes(content)
    with pytest.raises(PackError, match=message):
        install_pack(tmp_path / "x.tar.gz", home=home)
    assert_nothing_installed(home)
    with pytest.raises(PackError, match="does not exist"):
        install_pack(tmp_path / "missing.tar", home=home)


def test_decompression_bomb_is_refused(good, tmp_path, home):
    # 8 MiB of zeros compresses to a few KB; the limit counts decompressed bytes.
    bomb = list(good) + [_file(f"{NAME}/zeros.bin", b"\0" * (8 << 20))]
    archive = _write_tar(tmp_path / "bomb.tar.gz", bomb)
    assert archive.stat().st_size < 100_000
    with pytest.raises(PackError, match="more than 1048576 bytes"):
        install_pack(archive, home=home, max_bytes=1 << 20)
    assert_nothing_installed(home)
    # A header that only claims a huge size is refused before any data is read.
    info = tarfile.TarInfo(f"{NAME}/huge.bin")
    info.size = 1 << 40
    header = info.tobuf(format=tarfile.PAX_FORMAT)
    (tmp_path / "claim.tar").write_bytes(header + b"\0" * 4096)
    with pytest.raises(PackError, match="more than"):
        install_pack(tmp_path / "claim.tar", home=home)
    assert_nothing_installed(home)
    with pytest.raises(InvalidArgumentError):
        install_pack(archive, home=home, max_bytes=0)


def test_too_many_members(good, tmp_path, home, monkeypatch):
    monkeypatch.setattr(install, "MAX_MEMBERS", 3)
    archive = _write_tar(tmp_path / "many.tar", list(good), compress=False)
    with pytest.raises(PackError, match="more than 3 members"):
        install_pack(archive, home=home)
    assert_nothing_installed(home)


def test_final_name_taken_by_a_file(bundle, tmp_path, home):
    pack_bundle(bundle, tmp_path / "b.tar")
    (home / "bundles").mkdir(parents=True)
    (home / "bundles" / NAME).write_text("a file")
    with pytest.raises(PackError, match="not a bundle directory"):
        install_pack(tmp_path / "b.tar", home=home, force=True)
    assert (home / "bundles" / NAME).read_text() == "a file"


# --------------------------------------------------------------------------------------- command line


def test_cli_pack_and_install(bundle, tmp_path, home, monkeypatch, capsys):
    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(home))
    parser = argparse.ArgumentParser(prog="keyatten-lite")
    cli_models.register(parser.add_subparsers(dest="command"))

    def run(*argv):
        args = parser.parse_args(["models", *argv])
        return args.func(args)

    assert run("pack", str(bundle), "-o", str(tmp_path / "b.tar.gz"), "--variant", "fp32", "--variant", "int8") == 0
    assert "fp32+int8" in capsys.readouterr().out
    assert run("install", str(tmp_path / "b.tar.gz")) == 0
    assert f"{NAME}: installed" in capsys.readouterr().out
    assert open_bundle(NAME, variant="int8").variant == "int8"
    assert run("pack", NAME, "-o", str(tmp_path / "c.tar"), "--json") == 0
    assert json.loads(capsys.readouterr().out)["compress"] is None
    with pytest.raises(PackError, match="force"):
        run("install", str(tmp_path / "c.tar"))
    assert run("install", str(tmp_path / "c.tar"), "--force") == 0
    with pytest.raises(PackError, match="no int8 variant"):  # the installed copy is fp32 only
        run("pack", NAME, "-o", str(tmp_path / "d.tar"), "--variant", "int8")
    with pytest.raises(InvalidArgumentError, match="not both"):
        run("pack", NAME, "--language", "en", "-o", str(tmp_path / "d.tar"))
    with pytest.raises(InvalidArgumentError, match="NAME"):
        run("pack", "-o", str(tmp_path / "d.tar"))


# --------------------------------------------------------------------------------------- real bundle


def test_real_english_bundle_round_trip(en_bundle, tmp_path):
    from keyatten_lite import KeyAttenExtractor

    text = (
        "Graph neural networks learn node representations by passing messages along edges; "
        "attention-based keyword extraction ranks the words that receive the most attention."
    )
    summary = pack_bundle(en_bundle, tmp_path / "en.tar.gz")
    assert summary["bundles"][0]["variants"] == ["fp32"]
    (installed,) = install_pack(tmp_path / "en.tar.gz", home=tmp_path / "fresh")
    assert installed == tmp_path / "fresh" / "bundles" / en_bundle.name
    expected = KeyAttenExtractor(model=en_bundle, language="en").extract_keywords(text, with_scores=True)
    got = KeyAttenExtractor(model=installed, language="en").extract_keywords(text, with_scores=True)
    assert got == expected and len(got) > 0


def test_unwritable_home_is_a_clear_error(bundle, tmp_path):
    pack_bundle(bundle, tmp_path / "b.tar")
    (tmp_path / "file-home").write_text("not a directory")
    with pytest.raises(PackError, match="cannot create a staging directory"):
        install_pack(tmp_path / "b.tar", home=tmp_path / "file-home")
