import subprocess
import sys


def test_import_stays_light() -> None:
    code = (
        "import sys, redone_sdk, redone_sdk.cli;"
        "heavy = ('torch', 'transformers', 'trl', 'peft', 'kafka', 'redone_sdk.training', 'redone_sdk.adapters');"
        "heavy = [m for m in heavy if m in sys.modules];"
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_public_surface_is_explicit() -> None:
    import redone_sdk

    assert {"Moderator", "NoteQueryMatcher", "Note", "ModerationResult", "MatchResult", "Policy", "RedOneError"} <= set(
        redone_sdk.__all__
    )
    for name in redone_sdk.__all__:
        assert hasattr(redone_sdk, name), name
