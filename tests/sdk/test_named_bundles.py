"""Shipped bundles load by their manifest name (`Moderator.load("redone-small")`); a folder of that name wins."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from redone_sdk import Moderator
from redone_sdk.bundle import Bundle, default_bundle_path, shipped_bundles
from redone_sdk.errors import BundleNotFoundError


def test_every_shipped_bundle_loads_by_name_and_the_default_is_one_of_them() -> None:
    shipped = shipped_bundles()
    assert shipped, "the package ships no bundle"
    for name, path in shipped.items():
        bundle = Bundle.load(name)
        assert bundle.name == name and bundle.path == path.resolve()
    assert Bundle.load().name in shipped
    assert shipped[Bundle.load().name].resolve() == default_bundle_path().resolve()


def test_moderator_loads_a_shipped_bundle_by_name() -> None:
    name = next(iter(shipped_bundles()))
    assert Moderator.load(name).bundle.name == name


def test_an_unknown_name_lists_the_shipped_bundles() -> None:
    with pytest.raises(BundleNotFoundError, match=r"no bundle of that name ships with the SDK: \[") as caught:
        Bundle.load("no-such-bundle")
    for name in shipped_bundles():
        assert name in str(caught.value)


def test_a_folder_of_that_name_wins_over_the_shipped_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = next(iter(shipped_bundles()))
    shutil.copytree(shipped_bundles()[name], tmp_path / name)
    monkeypatch.chdir(tmp_path)
    assert Bundle.load(name).path == (tmp_path / name).resolve()
