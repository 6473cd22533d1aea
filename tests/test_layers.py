"""Which part of the repository may import which (README, "Layout"), checked on the source with `ast`.

- core (`redone_sdk/` except `replay/`) imports none of training, adapters, benchmarks or replay;
- replay (`redone_sdk/replay/`) imports only the core;
- adapters (`adapters/`, installed as `redone_sdk.adapters`) import only the core;
- training (`training/`, installed as `redone_sdk.training`) imports only the core;
- benchmarks may import everything (not checked).

Every import counts, at module level or inside a function, including `importlib.import_module("...")` with a
literal name. Heavy dependencies may be imported by the core and replay only inside functions (or under
`if TYPE_CHECKING:`), never when the module is imported. The runtime side (nothing heavy in `sys.modules`
after importing the core) is tests/sdk/test_import.py.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# source folder -> installed package name (pyproject.toml, [tool.setuptools] package-dir)
SOURCES = {"redone_sdk": "redone_sdk", "training": "redone_sdk.training", "adapters": "redone_sdk.adapters"}

# installed package prefix -> part; the longest matching prefix wins. The bare folder names are what a source
# checkout would also let one import (`import training`), so they count as the same parts.
PARTS = {
    "redone_sdk": "core",
    "redone_sdk.replay": "replay",
    "redone_sdk.training": "training",
    "redone_sdk.adapters": "adapters",
    "redone_sdk.benchmarks": "benchmarks",
    "training": "training",
    "adapters": "adapters",
    "benchmarks": "benchmarks",
}

ALLOWED = {
    "core": {"core"},
    "replay": {"core", "replay"},
    "adapters": {"core", "adapters"},
    "training": {"core", "training"},
}

_MODEL_DEPS = {"torch", "transformers", "trl", "peft"}
_KAFKA_DEPS = {"kafka", "confluent_kafka"}
# third-party top-level modules a part must not import at module level
HEAVY_AT_MODULE_LEVEL = {
    "core": _MODEL_DEPS | _KAFKA_DEPS | {"pyarrow", "matplotlib"},
    "replay": _MODEL_DEPS | _KAFKA_DEPS,
}


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str  # the full name imported (for `from a import b`: `a.b` as well as `a`)
    module_level: bool  # runs when the file is imported (not in a function, not under TYPE_CHECKING)

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path}:{self.line}"


def module_name(path: Path, folder: Path, package: str) -> str:
    parts = list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def part_of(module: str) -> str | None:
    best = None
    for prefix in PARTS:
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best)):
            best = prefix
    return PARTS[best] if best else None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, module: str, source: str | None = None) -> Iterator[Import]:
    """Every import in a file, relative ones resolved against `module` (the file's installed name)."""
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, module_level: bool) -> Iterator[Import]:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            module_level = False
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from visit(child, False)
            for child in node.orelse:
                yield from visit(child, module_level)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name, module_level)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield Import(path, node.lineno, target, module_level)
            for alias in node.names:
                if alias.name != "*":
                    yield Import(path, node.lineno, f"{target}.{alias.name}", module_level)
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in {"import_module", "__import__"})
            )
        ):
            yield Import(path, node.lineno, node.args[0].value, module_level)
        for child in ast.iter_child_nodes(node):
            yield from visit(child, module_level)

    yield from visit(tree, True)


def source_files() -> Iterator[tuple[Path, str]]:
    for folder, package in SOURCES.items():
        root = ROOT / folder
        for path in sorted(root.rglob("*.py")):
            yield path, module_name(path, root, package)


def part_violations(path: Path, module: str, source: str | None = None) -> list[str]:
    own = part_of(module)
    if own not in ALLOWED:
        return []
    found: dict[tuple[int, str], str] = {}  # one report per line and part (`from a import b` names a and a.b)
    for imp in imports(path, module, source):
        target = part_of(imp.module)
        if target is not None and target not in ALLOWED[own]:
            found.setdefault((imp.line, target), f"{imp.where()}: {own} imports {imp.module} ({target})")
    return [found[key] for key in sorted(found)]


def heavy_violations(path: Path, module: str, source: str | None = None) -> list[str]:
    own = part_of(module)
    heavy = HEAVY_AT_MODULE_LEVEL.get(own or "")
    if not heavy:
        return []
    found = set()
    for imp in imports(path, module, source):
        top = imp.module.partition(".")[0]
        if imp.module_level and top in heavy:
            found.add(f"{imp.where()}: {own} imports {top} at module level")
    return sorted(found)


def all_violations(check) -> list[str]:  # type: ignore[no-untyped-def]
    return [v for path, module in source_files() for v in check(path, module)]


def test_sources_are_found() -> None:
    parts = {part_of(module) for _, module in source_files()}
    assert parts == {"core", "replay", "training", "adapters"}


def test_parts_import_only_what_they_may() -> None:
    violations = all_violations(part_violations)
    assert not violations, "imports across the layers (README, Layout):\n" + "\n".join(violations)


def test_core_and_replay_import_nothing_heavy_at_module_level() -> None:
    violations = all_violations(heavy_violations)
    assert not violations, "heavy imports at module level (move them into the function that needs them):\n" + (
        "\n".join(violations)
    )


# (file, installed module name) of a made-up file in each part, for the checks' own tests
CORE = ("redone_sdk/x.py", "redone_sdk.x")
REPLAY = ("redone_sdk/replay/x.py", "redone_sdk.replay.x")
TRAINING = ("training/x.py", "redone_sdk.training.x")
ADAPTERS = ("adapters/k/x.py", "redone_sdk.adapters.k.x")


@pytest.mark.parametrize(
    ("where", "source", "expected"),
    [
        (CORE, "import redone_sdk.training.cli\n", "core imports redone_sdk.training"),
        (CORE, "def f():\n    from redone_sdk import adapters\n", "(adapters)"),
        (CORE, "from redone_sdk.replay import io\n", "(replay)"),
        (CORE, "import importlib\nimportlib.import_module('benchmarks.run')\n", ":2:"),
        (REPLAY, "from ..training import datasets\n", "(training)"),
        (TRAINING, "from redone_sdk.adapters.kafka import app\n", "(adapters)"),
        (ADAPTERS, "from ...training import cli\n", "(training)"),
        (ADAPTERS, "import benchmarks\n", "(benchmarks)"),
        (REPLAY, "from redone_sdk.schemas import Note\nfrom . import io\n", None),
        (TRAINING, "from redone_sdk import Moderator\nfrom .stages import sft\n", None),
    ],
)
def test_part_check_flags_what_it_should(where: tuple[str, str], source: str, expected: str | None) -> None:
    found = part_violations(ROOT / where[0], where[1], source)
    assert len(found) == (0 if expected is None else 1), found
    assert expected is None or expected in found[0], found


@pytest.mark.parametrize(
    ("where", "source", "flagged"),
    [
        (CORE, "import torch\n", True),
        (CORE, "class A:\n    import transformers\n", True),
        (CORE, "try:\n    import pyarrow.parquet as pq\nexcept ImportError:\n    pq = None\n", True),
        (REPLAY, "from kafka import KafkaConsumer\n", True),
        (CORE, "def f():\n    import torch\n", False),
        (CORE, "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n", False),
        (REPLAY, "import pyarrow as pa\n", False),
        (TRAINING, "import torch\n", False),
    ],
)
def test_heavy_check_flags_what_it_should(where: tuple[str, str], source: str, flagged: bool) -> None:
    assert bool(heavy_violations(ROOT / where[0], where[1], source)) == flagged
