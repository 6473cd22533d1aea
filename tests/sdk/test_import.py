import importlib.util
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "transformers", "trl", "peft", "kafka", "redone_sdk.training", "redone_sdk.adapters")
# the core also leaves the replay extra (pyarrow, matplotlib) and the other optional parts alone
HEAVY_FOR_CORE = (*HEAVY, "pyarrow", "matplotlib", "redone_sdk.replay", "redone_sdk.benchmarks")


def _modules(package: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Every module of an installed package, found on disk (importing a package to walk it would import it)."""
    root = Path(importlib.util.find_spec(package).origin).parent  # type: ignore[union-attr,arg-type]
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__main__" or parts[0] in skip:
            continue
        names.append(".".join([package, *(parts[:-1] if parts[-1] == "__init__" else parts)]))
    return names


def _heavy_after_importing(modules: list[str], heavy: tuple[str, ...] = HEAVY) -> list[str]:
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in done.stdout.strip().split(",") if m]


def test_import_stays_light() -> None:
    """`import redone_sdk` and every module of the core (all but replay/) load no heavy dependency."""
    modules = _modules("redone_sdk", skip=("replay", "bundles"))
    assert "redone_sdk.cli" in modules and "redone_sdk.inference.torch_backend" in modules
    assert _heavy_after_importing(modules, HEAVY_FOR_CORE) == []


def test_public_surface_is_explicit() -> None:
    import redone_sdk

    assert {"Moderator", "NoteQueryMatcher", "Note", "ModerationResult", "MatchResult", "Policy", "RedOneError"} <= set(
        redone_sdk.__all__
    )
    for name in redone_sdk.__all__:
        assert hasattr(redone_sdk, name), name
