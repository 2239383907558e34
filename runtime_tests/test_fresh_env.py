"""A user's install: plain `pip install` of the package (no extras) in a new virtual environment,
packed default bundles installed with `keyatten-lite models install`, keywords from the CLI.

torch and transformers must not be installed at all there. The keywords must equal those of the same
CLI in the current environment. Needs the built default bundles (skipped otherwise) and the package
registry; takes about a minute (wheel build, venv, pip install from the registry or pip's cache).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

TEXTS = {
    "en": "Graph neural networks learn node representations by passing messages along the edges of a graph.",
    "zh": "自然语言处理是人工智能的重要方向，深度学习模型在文本理解任务中取得了显著进展。",
}


def _run(cmd: list, *, env: dict | None = None, cwd: Path | None = None, timeout: int = 600, check: bool = True):
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(str(c) for c in cmd)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
        )
    return proc


def _copy_working_tree(target: Path) -> Path:
    """The files a checkout holds (tracked and untracked-not-ignored), without .venv, builds, caches."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
        ).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(
            REPO,
            target,
            ignore=shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".ci-home"),
        )
        return target
    for rel in filter(None, listed):
        source = REPO / rel
        if source.is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / rel)
    return target


def _clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def test_plain_pip_install_runs_packed_bundles_without_torch(tmp_path, en_bundle, zh_bundle):
    timings: dict[str, float] = {}
    start = last = time.monotonic()

    def lap(step: str) -> None:
        nonlocal last
        now = time.monotonic()
        timings[step] = round(now - last, 1)
        last = now

    # A wheel of the working tree, built as pip builds it for any user (isolated build env).
    src = _copy_working_tree(tmp_path / "src")
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, src], env=_clean_env(), cwd=tmp_path)
    (wheel,) = wheels.glob("keyatten_lite-*.whl")
    lap("wheel")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], env=_clean_env(), cwd=tmp_path)
    python, cli = venv / "bin" / "python", venv / "bin" / "keyatten-lite"
    _run([python, "-m", "pip", "install", "-q", wheel], env=_clean_env(), cwd=tmp_path)
    lap("venv + pip install")

    for heavy in ("torch", "transformers"):
        shown = _run([python, "-m", "pip", "show", heavy], env=_clean_env(), cwd=tmp_path, check=False)
        assert shown.returncode != 0, f"{heavy} must not be installed by a plain `pip install keyatten-lite`"
    probe = _run(
        [python, "-c", "import importlib.util as u; print([m for m in ('torch', 'transformers') if u.find_spec(m)])"],
        env=_clean_env(),
        cwd=tmp_path,
    )
    assert probe.stdout.strip() == "[]"
    wired = _run([python, "-c", "import keyatten_lite.model.pack"], env=_clean_env(), cwd=tmp_path, check=False)
    assert wired.returncode == 0, (
        "keyatten_lite.model is not in the wheel: add it to [tool.setuptools] packages in pyproject.toml\n"
        + wired.stderr[-1500:]
    )

    # Packs of the built default bundles, made with the current environment's CLI: English gzip,
    # Chinese plain tar (gzip of the 0.46 GB graph alone takes ~45 s on two cores).
    packs = {"en": tmp_path / "en.tar.gz", "zh": tmp_path / "zh.tar"}
    for lang, bundle in (("en", en_bundle), ("zh", zh_bundle)):
        _run([sys.executable, "-m", "keyatten_lite.cli", "models", "pack", bundle, "-o", packs[lang]], cwd=REPO)
    lap("pack")

    home = tmp_path / "home"
    fresh = _clean_env(KEYATTEN_LITE_HOME=str(home))
    for lang in ("en", "zh"):
        _run([cli, "models", "install", packs[lang]], env=fresh, cwd=tmp_path)
    assert sorted(p.name for p in (home / "bundles").iterdir()) == sorted([en_bundle.name, zh_bundle.name])
    lap("install")

    for lang, text in TEXTS.items():
        got = json.loads(_run([cli, "extract", text, "--lang", lang, "--json"], env=fresh, cwd=tmp_path).stdout)
        expected = json.loads(
            _run([sys.executable, "-m", "keyatten_lite.cli", "extract", text, "--lang", lang, "--json"], cwd=REPO).stdout
        )
        assert got == expected and got, (lang, got, expected)
    lap("extract")

    du = _run(["du", "-sk", venv], check=False).stdout.split()
    size_mb = int(du[0]) / 1024 if du else float("nan")
    total = round(time.monotonic() - start, 1)
    print(f"\nfresh venv: {size_mb:.0f} MB; steps (s): {timings}; total {total} s")
