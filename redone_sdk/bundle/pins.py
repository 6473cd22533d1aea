"""Pinned digests of the bundles shipped in the package: `redone_sdk/bundle/pins.json`.

A shipped bundle (loaded by name, by default or by its path in the package) must have the digest pinned here, so
an installation whose bundle files or manifest were changed refuses to load. Whoever replaces a shipped bundle
rewrites the pins from the bundles on disk, and commits `pins.json` with the bundle:

    python -m redone_sdk.bundle.pins --update     # rewrite pins.json from redone_sdk/bundles/*
    python -m redone_sdk.bundle.pins              # check: exit 1 and say what differs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redone_sdk.bundle.trust import MAX_POLICY_BYTES, load_json, read_regular_file
from redone_sdk.errors import BundleError, BundleIntegrityError

if TYPE_CHECKING:
    from redone_sdk.bundle.loader import Bundle

__all__ = ["PINS_FILE", "UPDATE_COMMAND", "check_pin", "current_pins", "load_pins", "main", "stale_pins"]

PINS_FILE = Path(__file__).resolve().with_name("pins.json")
UPDATE_COMMAND = "python -m redone_sdk.bundle.pins --update"


def load_pins(path: Path = PINS_FILE) -> dict[str, dict[str, str]]:
    """{shipped bundle folder: {"name", "version", "digest"}} as pinned; empty when the file is missing."""
    try:
        data = read_regular_file(path, limit=MAX_POLICY_BYTES, what="pins", error=BundleIntegrityError)
    except FileNotFoundError:
        return {}
    body = load_json(data, what=f"pins {path}", error=BundleIntegrityError, limit=4)
    pins = body.get("bundles") if isinstance(body, dict) else None
    if not isinstance(pins, dict):
        raise BundleIntegrityError(f"pins {path} has no `bundles` object")
    return pins


def check_pin(bundle: Bundle) -> None:
    """Refuse a shipped bundle whose digest is not the one pinned for its folder."""
    folder = bundle.path.name
    pin = load_pins().get(folder)
    actual = bundle.digest
    if pin is None or pin.get("digest") != actual:
        pinned = "no digest" if pin is None else f"digest {pin.get('digest')} ({pin.get('name')} {pin.get('version')})"
        raise BundleIntegrityError(
            f"shipped bundle {folder!r} ({bundle.name} {bundle.version}) has digest {actual}, but "
            f"redone_sdk/bundle/pins.json pins {pinned}: if the bundle was replaced on purpose, run `{UPDATE_COMMAND}` "
            "and commit pins.json with it; otherwise the installation was modified — reinstall redone-sdk"
        )


def current_pins() -> dict[str, dict[str, str]]:
    """Pins computed from the shipped bundles on disk, each verified (every file's SHA-256) first."""
    from redone_sdk.bundle.loader import Bundle, package_bundles_dir

    pins: dict[str, dict[str, str]] = {}
    for manifest in sorted(package_bundles_dir().glob("*/manifest.json")):
        bundle = Bundle._read(manifest.parent)
        pins[manifest.parent.name] = {"name": bundle.name, "version": bundle.version, "digest": bundle.digest}
    return pins


def stale_pins() -> list[str]:
    """What differs between pins.json and the shipped bundles on disk, one line each; empty when they agree."""
    pinned, actual = load_pins(), current_pins()
    lines = []
    for folder in sorted(set(pinned) | set(actual)):
        if folder not in actual:
            lines.append(f"{folder}: pinned, but no such bundle ships")
        elif folder not in pinned:
            lines.append(f"{folder}: {actual[folder]['name']} {actual[folder]['version']} ships without a pin")
        elif pinned[folder] != actual[folder]:
            lines.append(
                f"{folder}: pinned {pinned[folder].get('name')} {pinned[folder].get('version')} "
                f"{pinned[folder].get('digest')}, on disk {actual[folder]['name']} {actual[folder]['version']} "
                f"{actual[folder]['digest']}"
            )
    return lines


def write_pins(pins: dict[str, Any], path: Path = PINS_FILE) -> None:
    body = {"comment": f"digests of redone_sdk/bundles/*; rewrite with `{UPDATE_COMMAND}`", "bundles": pins}
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m redone_sdk.bundle.pins",
        description="Check (default) or rewrite the pinned digests of the bundles shipped in the package.",
    )
    parser.add_argument("--update", action="store_true", help="Rewrite pins.json from the bundles on disk.")
    args = parser.parse_args(argv)
    try:
        if args.update:
            pins = current_pins()
            write_pins(pins)
            for folder, pin in pins.items():
                print(f"{folder}: {pin['name']} {pin['version']} {pin['digest']}")
            print(f"wrote {PINS_FILE}")
            return 0
        stale = stale_pins()
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in stale:
        print(line, file=sys.stderr)
    if stale:
        print(f"pins.json does not match the shipped bundles: run `{UPDATE_COMMAND}`", file=sys.stderr)
        return 1
    print("pins.json matches the shipped bundles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
