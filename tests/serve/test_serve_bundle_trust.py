"""`redone serve --bundle-digest`: a bundle that is not the pinned one stops the service at start (exit 2)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from redone_sdk import Bundle
from redone_sdk.serve.cli import EXIT_USAGE, main


def test_a_bundle_digest_mismatch_stops_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # run() configures logging; undo it after
    monkeypatch.setattr(root, "level", root.level)
    db = f"sqlite:///{tmp_path / 'keys.db'}"
    with caplog.at_level(logging.ERROR):
        assert main(["--db", db, "--port", "0", "--bundle-digest", "0" * 64]) == EXIT_USAGE
    actual = Bundle.load().digest
    assert f"has digest {actual}, expected {'0' * 64}" in caplog.text
