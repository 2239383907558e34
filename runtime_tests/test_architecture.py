"""The layout the architecture document describes: no import cycle, the runtime apart from the
measurement harness and the CLI, no module reaching into another's private names, modules short
enough to read (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"keyatten_lite": REPO / "keyatten_lite", "keyatten_lite_export": REPO / "export"}
MAX_RUNTIME_LINES = 600


def module_name(package: str, root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def modules(package: str) -> dict[str, Path]:
    root = PACKAGES[package]
    return {module_name(package, root, p): p for p in sorted(root.rglob("*.py"))}


def imports_of(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, imported names) of every import in the file, nested ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, [alias.name for alias in node.names]))
    return found


def graph(package: str) -> dict[str, set[str]]:
    mods = modules(package)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for target, names in imports_of(name, path):
            # "from pkg import a, b" depends on every submodule named (and on pkg itself when a name
            # is not a submodule); "from pkg.mod import x" depends on pkg.mod.
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in mods]
            if len(submodules) < len(names) or not names:
                submodules.append(target)
            edges[name].update(m for m in submodules if m in mods and m != name)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycle(package):
    # Every import counts, the ones inside functions too: a lazy import is still a dependency.
    assert cycles(graph(package)) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_runtime_never_imports_the_harness_or_the_cli():
    edges = graph("keyatten_lite")
    runtime = [m for m in edges if not m.startswith(("keyatten_lite.evaluation", "keyatten_lite.cli"))]
    for m in runtime:
        bad = sorted(t for t in edges[m] if t.startswith(("keyatten_lite.evaluation", "keyatten_lite.cli")))
        assert not bad, f"{m} imports {bad}"


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_module_imports_another_modules_private_names(package):
    offenders = []
    for name, path in modules(package).items():
        for target, names in imports_of(name, path):
            if target.split(".")[0] not in PACKAGES:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                offenders.append(f"{name}: from {target} import {', '.join(private)}")
    assert offenders == []


def test_runtime_modules_are_short_enough_to_read():
    long = {
        name: n
        for name, path in modules("keyatten_lite").items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_RUNTIME_LINES
    }
    assert long == {}
