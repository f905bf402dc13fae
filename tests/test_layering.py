"""Dependencies point one way (DESIGN.md, Layout): snemo/ imports nothing of the repository outside snemo/,
and datasets/ uses no private name of snemo. Read from the source with ast, every import (also the
lazy ones inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("datasets", "architectures", "capsule", "Generator", "my_generator")
SCRIPTS = tuple(sorted(path.stem for path in REPO.glob("*.py")))


def imports(path: Path):
    """(line, imported module, names) of every import statement of ``path``; relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.parent.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join([package] + ([module] if module else []))
            yield node.lineno, module, tuple(alias.name for alias in node.names)


def test_the_repository_has_the_scripts_and_packages_the_rule_names():
    assert {"number_of_tracks_classification", "plot_confusion", "counting", "display", "demo"} <= set(SCRIPTS)
    for name in PACKAGES[:2] + PACKAGES[3:]:
        assert (REPO / name).is_dir(), name
    assert list((REPO / "snemo").glob("*.py"))


@pytest.mark.parametrize("path", sorted((REPO / "snemo").glob("*.py")), ids=lambda p: p.name)
def test_snemo_imports_nothing_outside_snemo(path):
    forbidden = set(PACKAGES) | set(SCRIPTS)
    bad = [f"{path.name}:{line} imports {module}" for line, module, _ in imports(path)
           if module.split(".")[0] in forbidden]
    assert not bad, bad


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    (tmp_path / "snemo").mkdir()
    probe = tmp_path / "snemo" / "probe.py"
    probe.write_text("def f():\n    from datasets import views\n    import Generator.builtin\n"
                     "from . import cli\n")
    found = sorted(module for _, module, _ in imports(probe))
    assert found == ["Generator.builtin", "datasets", "snemo"]


@pytest.mark.parametrize("path", sorted((REPO / "datasets").glob("*.py")), ids=lambda p: p.name)
def test_datasets_use_no_private_name_of_snemo(path):
    bad = [f"{path.name}:{line} imports {name} from {module}" for line, module, names in imports(path)
           if module.split(".")[0] == "snemo" for name in names if name.startswith("_")]
    bad += [f"{path.name}: uses snemo private attribute {node.attr}" for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name) and node.value.id in {"snemo", "events", "geo", "geometry",
                                                                      "eventbatch"}]
    assert not bad, bad
