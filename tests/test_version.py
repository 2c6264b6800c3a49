"""One version, semantic, with a CHANGELOG entry (issue 26, item 14: two incompatible APIs reported 0.1.0)."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import valley_core

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_semantic_and_newer_than_the_first_layout() -> None:
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", valley_core.__version__)
    assert match, valley_core.__version__
    assert tuple(int(part) for part in match.groups()) >= (0, 2, 0)


def test_changelog_has_an_entry_for_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{valley_core.__version__}]" in changelog


def test_the_installed_distribution_reports_the_same_version() -> None:
    assert importlib.metadata.version("valley-optim") == valley_core.__version__
