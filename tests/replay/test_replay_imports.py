"""`redone_sdk.replay` works with the [replay] extra alone: it imports the core SDK, never training or adapters."""

import json
import subprocess
import sys

FORBIDDEN = ("redone_sdk.training", "redone_sdk.adapters", "torch", "transformers")

_PROBE = """
import importlib, json, pkgutil, sys
import redone_sdk.replay as replay
found = pkgutil.walk_packages(replay.__path__, "redone_sdk.replay.")
names = sorted(m.name for m in found if not m.name.endswith("__main__"))  # __main__ runs the CLI
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "loaded": sorted(sys.modules)}))
"""


def test_replay_imports_nothing_from_training_or_adapters() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], check=True, capture_output=True, text=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert "redone_sdk.replay.exposure" in found["modules"] and "redone_sdk.replay.synth" in found["modules"]
    loaded = [m for m in found["loaded"] if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert loaded == [], f"importing redone_sdk.replay loads {loaded}"


def test_no_replay_module_imports_training_or_adapters_even_lazily() -> None:
    """Imports inside functions count too (synth once read the shared data through the training package)."""
    import ast
    from pathlib import Path

    import redone_sdk.replay

    bad = []
    for path in sorted(Path(redone_sdk.replay.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            bad += [
                f"{path.name}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] in FORBIDDEN or n.startswith(FORBIDDEN)
            ]
    assert bad == []
