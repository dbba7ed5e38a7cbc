"""The import contract: every import between the package's folders runs one way.

Layers from the bottom up (a folder may import only folders listed below it; `providers`
and `tasks` are independent leaves): {providers, tasks}, caches, engine, optimize, problems,
sweep, cli. The root modules `errors` and `checks` import nothing of the package and sit
below all of them. `testing/` (loopback fakes) may use providers only. The package's
`__init__` re-exports the public API and may import anything but `cli`. Checked from the
source's own import statements, so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Root modules that import nothing of the package: every layer may use them.
BASE = {"errors", "checks"}

# folder -> folders it may import (besides itself and BASE)
ALLOWED: dict[str, set[str]] = {
    "providers": set(),
    "tasks": set(),
    "caches": {"providers"},
    "engine": {"providers", "tasks", "caches"},
    "optimize": {"providers", "tasks", "caches", "engine"},
    "problems": {"providers", "tasks", "caches", "engine", "optimize"},
    "sweep": {"providers", "tasks", "caches", "engine", "optimize", "problems"},
    "cluster": {"providers", "tasks", "caches", "engine", "optimize", "problems", "sweep"},
    "cli": {
        "providers",
        "tasks",
        "caches",
        "engine",
        "optimize",
        "problems",
        "sweep",
        "cluster",
    },
    "testing": {"providers"},
}


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "opro" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """Absolute `opro.*` module names that `path` imports, with line numbers."""
    rel = path.relative_to(root).with_suffix("")
    here = ["opro", *rel.parts]
    package = here[:-1]  # `from . import x` in a/b.py and in a/__init__.py both mean `opro.a`
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # `from opro import cli` names a folder in the alias, not in the module
            if name == "opro":
                found += [(node.lineno, f"opro.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "opro"]


def _sources() -> list[Path]:
    return sorted(
        p
        for folder in ALLOWED
        for p in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in p.parts
    )


def test_every_folder_is_in_the_contract() -> None:
    folders = {
        p.parent.name
        for p in ROOT.glob("*/__init__.py")
        if p.parent.name not in {"tests", "benchmarks"}
    }
    assert folders <= set(ALLOWED), f"add {sorted(folders - set(ALLOWED))} to ALLOWED"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_one_way(path: Path) -> None:
    folder = path.relative_to(ROOT).parts[0]
    bad = []
    for line, name in _imports(path):
        target = _package_of(name)
        if target is None or target in {folder, *BASE}:
            continue
        if target not in ALLOWED[folder]:
            bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_root_package_does_not_import_the_cli() -> None:
    names = [name for _, name in _imports(ROOT / "__init__.py")]
    assert not [n for n in names if _package_of(n) == "cli"]


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The contract can fail: a lazy upward import inside a function is caught."""
    probe = tmp_path / "tasks" / "probe.py"
    probe.parent.mkdir()
    probe.write_text("def f() -> None:\n    from ..engine import model\n", encoding="utf-8")
    names = [name for _, name in _imports(probe, tmp_path)]
    assert names == ["opro.engine"]
    assert _package_of(names[0]) not in ALLOWED["tasks"]
