"""No optimizer or core state name is typed by hand outside ``valley_core`` (issue 27).

Every string constant in ``backends/``, ``valley_cli/`` and ``proofs_check/`` is checked against the names in
``valley_core.REGISTRY`` (name, display name, class name) and the core's state types (``AdamState`` and
``AdamState.second``). Allowed: docstrings, ``__all__``, comments, and class definitions ``X = f("X", ...)``.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import valley_core as vc
import valley_core.transforms

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("backends", "valley_cli", "proofs_check")


def _state_names() -> set:
    names = set()
    for module in pkgutil.iter_modules(valley_core.transforms.__path__, "valley_core.transforms."):
        for value in vars(importlib.import_module(module.name)).values():
            if isinstance(value, type) and issubclass(value, tuple) and hasattr(value, "_fields"):
                names |= {value.__name__, *(f"{value.__name__}.{field}" for field in value._fields)}
    return names


NAMES = {n for i in vc.REGISTRY.values() for n in (i.name, i.display_name, i.class_name)} | _state_names()


def _allowed(tree: ast.AST) -> set:
    """The ids of the string constants that may hold a name: docstrings, ``__all__``, ``X = f("X", ...)``."""
    allowed = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                allowed.add(id(body[0].value))
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = [
                t.id for t in getattr(node, "targets", [getattr(node, "target", None)]) if isinstance(t, ast.Name)
            ]
            if "__all__" in targets:
                allowed |= {id(c) for c in ast.walk(node.value)} if node.value else set()
            call = node.value
            if (
                len(targets) == 1
                and isinstance(call, ast.Call)
                and call.args
                and isinstance(call.args[0], ast.Constant)
            ):
                if call.args[0].value == targets[0]:
                    allowed.add(id(call.args[0]))
    return allowed


def names_typed_by_hand(source: str) -> list:
    """``(line, name)`` of every string constant of ``source`` that is a core name and not allowed."""
    tree = ast.parse(source)
    allowed = _allowed(tree)
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in NAMES and id(node) not in allowed
    )


def test_the_names_come_from_the_core():
    assert {"alto", "ALTO", "Adam+CM", "AdamCM", "SGD", "EState.carry", "AdamState.second", "AdamState"} <= NAMES


def test_the_rule_finds_names_and_allows_definitions():
    source = '"""ALTO."""\n__all__ = ["ALTO"]\nALTO = optimizer_class("ALTO", f)\nx = {"Lamb": 1, "EState.carry": 2}\n'
    assert names_typed_by_hand(source) == [(4, "EState.carry"), (4, "Lamb")]


def test_no_name_is_typed_by_hand_outside_the_core():
    files = [path for folder in FOLDERS for path in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 30
    found = [
        f"{path.relative_to(ROOT)}:{line}: {name!r}"
        for path in files
        for line, name in names_typed_by_hand(path.read_text(encoding="utf-8"))
    ]
    assert not found, "names typed by hand (use valley_core.REGISTRY / the state types):\n" + "\n".join(found)


def test_docstring_links_to_the_algorithm_page_resolve():
    """Every ``docs/algorithm.md#anchor`` in the adapters names a heading of that page (GitHub's anchors)."""
    headings = re.findall(r"^#+ (.+)$", (ROOT / "docs" / "algorithm.md").read_text(encoding="utf-8"), re.M)
    anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
    links = {
        m
        for path in (ROOT / "backends").rglob("*.py")
        for m in re.findall(r"algorithm\.md#([\w\-]+)", path.read_text())
    }
    assert links, "no link to docs/algorithm.md found"
    assert links <= anchors, sorted(links - anchors)
