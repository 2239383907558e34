"""registry.py (home directory, default names, listing) and the torch-free parts of bundle.py / cli_models.py."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from keyatten_lite.cli import models as cli_models
from keyatten_lite.model import registry
from keyatten_lite.model.bundle import open_bundle, resolve_bundle_path
from keyatten_lite.errors import BundleError, BundleNotFoundError, InvalidArgumentError, KeyAttenLiteError


def _fake_manifest(name: str, layers=(0, 1), num_layers: int = 2, int8: bool = True) -> dict:
    files = {
        "model.onnx": {"sha256": "0" * 64, "bytes": 3},
        "tokenizer.json": {"sha256": "1" * 64, "bytes": 2},
    }
    if int8:
        files["model.int8.onnx"] = {"sha256": "2" * 64, "bytes": 1}
    return {
        "format": "keyatten-lite-bundle",
        "format_version": 1,
        "name": name,
        "num_layers": num_layers,
        "exported_layers": list(layers),
        "parity": {"fp32": {"max_abs_diff": 3e-8, "tolerance": 1e-4}},
        "files": files,
    }


def _write_bundle_dir(root: Path, name: str, manifest: dict | None, payload: bytes = b"abc") -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes(payload)
    if manifest is not None:
        (path / "bundle.json").write_text(json.dumps(manifest), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------- home dir


def test_home_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(tmp_path / "kl"))
    assert registry.home_dir() == tmp_path / "kl"
    assert registry.bundles_dir() == tmp_path / "kl" / "bundles"


def test_home_dir_default_and_blank_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KEYATTEN_LITE_HOME", "  ")
    assert registry.home_dir() == tmp_path / ".cache" / "keyatten-lite"
    monkeypatch.delenv("KEYATTEN_LITE_HOME")
    assert registry.home_dir() == tmp_path / ".cache" / "keyatten-lite"


def test_bundles_dir_explicit_home(tmp_path):
    assert registry.bundles_dir(tmp_path) == tmp_path / "bundles"


# --------------------------------------------------------------------------------------- defaults


@pytest.mark.parametrize(
    "language, expected",
    [("en", "minilm-l6-en"), ("EN_us", "minilm-l6-en"), ("zh", "e5-small-zh"), ("zh-CN", "e5-small-zh")],
)
def test_default_bundle_for(language, expected):
    assert registry.default_bundle_for(language) == expected
    assert expected in registry.DEFAULT_BUNDLES


@pytest.mark.parametrize("language", ["fr", "", None, 3])
def test_default_bundle_for_rejects(language):
    with pytest.raises(InvalidArgumentError):
        registry.default_bundle_for(language)


def test_default_bundles_cover_both_languages():
    assert {info["language"] for info in registry.DEFAULT_BUNDLES.values()} == {"en", "zh"}


# --------------------------------------------------------------------------------------- listing


def test_list_installed_empty_when_no_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(tmp_path / "nothing"))
    assert registry.list_installed() == []


def test_list_installed_reports_bundles_and_damage(monkeypatch, tmp_path):
    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(tmp_path))
    root = tmp_path / "bundles"
    _write_bundle_dir(root, "good", _fake_manifest("good", layers=(1,), num_layers=3, int8=False))
    _write_bundle_dir(root, "both", _fake_manifest("both"))
    broken = _write_bundle_dir(root, "broken", None)
    (broken / "bundle.json").write_text("{not json", encoding="utf-8")
    _write_bundle_dir(root, "bare", None)
    _write_bundle_dir(root, ".good.tmp-123", _fake_manifest("good"))  # half-built export: hidden
    (root / "stray-file").write_text("x")

    entries = {entry["name"]: entry for entry in registry.list_installed()}
    assert sorted(entries) == ["bare", "both", "broken", "good"]
    good = entries["good"]
    assert good["format_version"] == 1
    assert good["variants"] == ["fp32"]
    assert good["layers"] == [1]
    assert good["num_layers"] == 3
    assert good["parity"]["fp32"]["max_abs_diff"] == 3e-8
    assert good["size_bytes"] == 3 + len((root / "good" / "bundle.json").read_bytes())
    assert good["path"] == str(root / "good")
    assert good["error"] is None
    assert entries["both"]["variants"] == ["fp32", "int8"]
    assert "unreadable" in entries["broken"]["error"]
    assert entries["bare"]["error"] == "no bundle.json"


# --------------------------------------------------------------------------------------- resolving


def test_default_name_not_built_says_how_to_build(monkeypatch, tmp_path):
    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BundleNotFoundError) as info:
        open_bundle("minilm-l6-en")
    assert "keyatten-lite models build" in str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, BundleError)


def test_unknown_name_and_missing_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BundleNotFoundError, match="no bundle named 'nope'"):
        resolve_bundle_path("nope")
    with pytest.raises(BundleNotFoundError, match="does not exist"):
        resolve_bundle_path(tmp_path / "a" / "b")
    with pytest.raises(InvalidArgumentError):
        resolve_bundle_path("")


def test_name_resolves_into_bundles_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    installed = _write_bundle_dir(tmp_path / "bundles", "mine", _fake_manifest("mine"))
    assert resolve_bundle_path("mine") == installed


def test_directory_without_manifest_is_not_a_bundle(tmp_path):
    with pytest.raises(BundleNotFoundError, match="no bundle.json"):
        open_bundle(tmp_path)


def test_open_bundle_argument_checks(tmp_path):
    with pytest.raises(InvalidArgumentError):
        open_bundle(tmp_path, variant="fp16")
    with pytest.raises(InvalidArgumentError):
        open_bundle(tmp_path, intra_op_threads=0)


# --------------------------------------------------------------------------------------- cli_models


def _models_parser():
    parser = argparse.ArgumentParser(prog="keyatten-lite")
    cli_models.register(parser.add_subparsers(dest="command"))
    return parser


def test_models_list_prints_installed_and_missing(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(tmp_path))
    _write_bundle_dir(tmp_path / "bundles", "minilm-l6-en", _fake_manifest("minilm-l6-en"))
    args = _models_parser().parse_args(["models", "list"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.strip().startswith("minilm-l6-en"))
    assert "fp32+int8" in line and "all 2" in line and "3.0e-08" in line
    assert "not built: e5-small-zh" in out

    args = _models_parser().parse_args(["models", "list", "--json"])
    args.func(args)
    listed = json.loads(capsys.readouterr().out)
    assert [entry["name"] for entry in listed] == ["minilm-l6-en"]


def test_models_build_without_export_extras_names_the_install(monkeypatch):
    monkeypatch.setattr(cli_models, "_missing_export_modules", lambda: ["torch", "transformers"])
    args = _models_parser().parse_args(["models", "build", "--force", "--name", "minilm-l6-en"])
    assert args.force and args.name == ["minilm-l6-en"]
    with pytest.raises(KeyAttenLiteError) as info:
        args.func(args)
    assert "pip install torch==2.13.0" in str(info.value)
    assert "pip install -e .[export]" in str(info.value)


def test_runtime_modules_import_no_heavy_packages():
    code = (
        "import sys, keyatten_lite.model.bundle, keyatten_lite.model.registry, keyatten_lite.cli.models\n"
        "heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'tokenizers', 'onnx') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
