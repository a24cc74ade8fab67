"""The floor plan holds: import-linter's contracts (pyproject.toml), benchmarks that use only public names, and a
README layout that names every package and nothing that is not there."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("hybrid", "web_tier", "app_tier")


def test_the_import_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout and "kept" in result.stdout


def private_names_used(source: str) -> list[str]:
    """``from <project module> import _name`` and ``<project module alias>._name`` in one file."""
    tree = ast.parse(source)
    modules: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PROJECT_PACKAGES:
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
            modules.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            modules.update(a.asname or a.name for a in node.names if a.name.split(".")[0] in PROJECT_PACKAGES)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in modules):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_private_names_are_found_by_the_check():
    sample = "from hybrid.tools.bench import _run\nimport web_tier.cache as cache\ncache._chunks([])\n"
    assert private_names_used(sample) == ["hybrid.tools.bench._run", "cache._chunks"]


def test_benchmarks_use_only_public_names():
    offenders = {path.name: names for path in sorted((ROOT / "benchmarks").glob("*.py"))
                 if (names := private_names_used(path.read_text()))}
    assert offenders == {}


def layout_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1]


def layout_paths() -> list[str]:
    """The paths of the layout block, with each indented entry joined to the folder above it."""
    paths, parents = [], {}
    for line in layout_block().splitlines():
        match = re.match(r"( *)(\S+/|\S+\.\w+)(\s|$)", line)
        if not match:
            continue
        depth = len(match.group(1)) // 2
        path = parents.get(depth - 1, "") + match.group(2)
        parents[depth] = path
        paths.append(path)
    return paths


def test_every_path_the_layout_names_exists():
    missing = [path for path in layout_paths() if not (ROOT / path).exists()]
    assert layout_paths() and missing == []


def test_the_layout_names_every_package():
    named = set(layout_paths())
    packages = {f"{init.parent.relative_to(ROOT)}/" for top in PROJECT_PACKAGES
                for init in (ROOT / top).rglob("__init__.py")}
    assert packages - named == set()
