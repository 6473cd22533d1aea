"""Where `redone_sdk.serve` sits (README, "Layout"): it imports the SDK's core only, and nothing outside it
imports the service (tests/test_layers.py does not know the serve part)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OTHER_PARTS = ("redone_sdk.training", "redone_sdk.adapters", "redone_sdk.benchmarks", "redone_sdk.replay")


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_serve_imports_only_the_core() -> None:
    sources = sorted((ROOT / "serve").glob("*.py"))
    assert len(sources) > 10
    wrong = [
        f"{path.name}: {name}"
        for path in sources
        for name in _imports(path)
        if name.startswith(OTHER_PARTS) or name.split(".")[0] in ("training", "adapters", "benchmarks")
    ]
    assert wrong == []


def test_the_core_and_adapters_do_not_import_serve() -> None:
    folders = ("redone_sdk", "adapters", "training")
    wrong = [
        f"{path.relative_to(ROOT)}: {name}"
        for folder in folders
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in _imports(path)
        if name.startswith("redone_sdk.serve") or name.split(".")[0] == "serve"
    ]
    assert wrong == []
