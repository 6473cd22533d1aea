"""A bundle is trusted whole (issue #20 points 4-6): the digest over the manifest and every file, pins, Ed25519
signatures, no links, no unlisted ONNX external data, verified bytes used, strict and bounded JSON.

Hostile bundles are copies of the shipped one in tmp_path; `external_data.onnx` (tests/fixtures/onnx) is a tiny
graph with the scoring interface whose weights are ONNX external data.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from redone_sdk import (
    Bundle,
    BundleFormatError,
    BundleIntegrityError,
    InvalidInputError,
    Moderator,
    NoteQueryMatcher,
    Policy,
    PolicyError,
)
from redone_sdk.bundle import MANIFEST_FILE, pins
from redone_sdk.bundle.onnx_refs import external_data_locations
from redone_sdk.bundle.trust import MAX_MANIFEST_BYTES, MAX_POLICY_BYTES, MAX_TOKENIZER_BYTES, SIGNATURE_FILE
from redone_sdk.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "onnx"
NOTE = "河南人都是骗子"  # blocked by the shipped bundle (issue #20: a manifest edit turned it into allow)


@pytest.fixture
def bundle_copy(default_bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(default_bundle, target)
    return target


def _manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))


def _edit_manifest(path: Path, change: Callable[[dict], None]) -> None:
    manifest = _manifest(path)
    change(manifest)
    (path / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _rehash(path: Path, *names: str) -> None:
    """List `names` in the manifest with their current SHA-256 (what an attacker editing both would do)."""

    def update(manifest: dict) -> None:
        for name in names:
            manifest["files"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()

    _edit_manifest(path, update)


def _expected_digest(path: Path) -> str:
    """The digest as docs/bundles.md defines it, computed here from the bytes on disk."""
    names = ["manifest.json", *_manifest(path)["files"]]
    listing = "".join(f"{hashlib.sha256((path / name).read_bytes()).hexdigest()}  {name}\n" for name in sorted(names))
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def _swap_safe_and_offensive(manifest: dict) -> None:
    """The issue's edit: `safe` reads the offensive logit and `offensive` the safe one."""
    safe, offensive = manifest["tasks"]["moderation"]["labels"][:2]
    for key in ("column", "token_id"):
        safe[key], offensive[key] = offensive[key], safe[key]


# --- point 4: one digest, pins, signatures ------------------------------------------------------------------------


def test_digest_covers_the_manifest_and_every_file(default_bundle: Path, bundle_copy: Path) -> None:
    bundle = Bundle.load(default_bundle)
    assert bundle.digest == _expected_digest(default_bundle)
    assert Bundle.load(bundle_copy).digest == bundle.digest  # a faithful copy has the same digest
    _edit_manifest(bundle_copy, lambda m: m.update(description="edited"))  # same files, another manifest
    assert Bundle.load(bundle_copy).digest == _expected_digest(bundle_copy) != bundle.digest


def test_results_and_redone_bundle_show_the_digest(default_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    digest = _expected_digest(default_bundle)
    moderator = Moderator.load()
    result = moderator.classify(NOTE)
    assert result.model.digest == digest and result.model.name == moderator.bundle.name
    assert json.loads(result.model_dump_json())["model"]["digest"] == digest
    assert main(["bundle", str(default_bundle)]) == 0
    assert f"digest {digest}" in capsys.readouterr().out


def test_a_swapped_label_is_refused_by_the_pinned_digest(default_bundle: Path, bundle_copy: Path) -> None:
    pinned = Bundle.load(default_bundle).digest
    _edit_manifest(bundle_copy, _swap_safe_and_offensive)
    assert Moderator.load(bundle_copy).classify(NOTE).action == "allow"  # the attack, unpinned
    actual = _expected_digest(bundle_copy)
    with pytest.raises(BundleIntegrityError, match=f"has digest {actual}, expected {pinned}"):
        Moderator.load(bundle_copy, digest=pinned)
    with pytest.raises(BundleIntegrityError, match=f"expected {pinned}"):
        NoteQueryMatcher.load(bundle_copy, digest=pinned)
    shutil.rmtree(bundle_copy)
    shutil.copytree(default_bundle, bundle_copy)
    assert Moderator.load(bundle_copy, digest=f"sha256:{pinned.upper()}").classify(NOTE).action == "block"
    with pytest.raises(InvalidInputError, match="64 hex digits"):
        Moderator.load(bundle_copy, digest="abc")


def test_cli_pins_the_digest(
    default_bundle: Path, bundle_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pinned = Bundle.load(default_bundle).digest
    notes = tmp_path / "notes.jsonl"
    notes.write_text(json.dumps(NOTE, ensure_ascii=False) + "\n", encoding="utf-8")
    assert main(["moderate", str(notes), "--bundle", str(bundle_copy), "--bundle-digest", pinned]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "block"
    _edit_manifest(bundle_copy, _swap_safe_and_offensive)
    for command in (["moderate", str(notes)], ["bundle"]):
        args = [*command, "--bundle", str(bundle_copy)] if command[0] != "bundle" else [*command, str(bundle_copy)]
        assert main([*args, "--bundle-digest", pinned]) == 2
        captured = capsys.readouterr()
        assert f"expected {pinned}" in captured.err and captured.out == ""


def test_pins_match_the_shipped_bundles() -> None:
    """A shipped bundle replaced without its pin fails here (and refuses to load)."""
    stale = pins.stale_pins()
    assert not stale, f"redone_sdk/bundle/pins.json is stale; run `{pins.UPDATE_COMMAND}`: {stale}"
    assert pins.main([]) == 0


def test_a_shipped_bundle_must_match_its_pin(default_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Bundle.load(default_bundle).digest
    monkeypatch.setattr(
        pins, "load_pins", lambda: {default_bundle.name: {"name": "x", "version": "0", "digest": "0" * 64}}
    )
    for load in (lambda: Moderator.load(), lambda: Bundle.load(default_bundle), lambda: NoteQueryMatcher.load()):
        with pytest.raises(BundleIntegrityError, match=rf"has digest {real}.*python -m redone_sdk\.bundle\.pins"):
            load()
    monkeypatch.setattr(pins, "load_pins", lambda: {})
    with pytest.raises(BundleIntegrityError, match="pins no digest"):
        Bundle.load()


def _keys(tmp_path: Path, name: str) -> tuple[Path, Path]:
    private, public = tmp_path / f"{name}.pem", tmp_path / f"{name}.pub.pem"
    assert main(["bundle", "keygen", "--key", str(private), "--public-key", str(public)]) == 0
    return private, public


def test_signed_bundle_verifies_with_its_key_only(bundle_copy: Path, tmp_path: Path) -> None:
    private, public = _keys(tmp_path, "team")
    _, other = _keys(tmp_path, "other")
    with pytest.raises(BundleIntegrityError, match="not signed"):
        Moderator.load(bundle_copy, public_key=public)
    before = Bundle.load(bundle_copy).digest
    assert main(["bundle", "sign", str(bundle_copy), "--key", str(private)]) == 0
    assert (bundle_copy / SIGNATURE_FILE).is_file()
    assert Bundle.load(bundle_copy).digest == before  # the signature is not part of what it signs
    moderator = Moderator.load(bundle_copy, public_key=public)
    assert moderator.classify(NOTE).action == "block"
    assert main(["bundle", str(bundle_copy), "--bundle-public-key", str(public)]) == 0
    with pytest.raises(BundleIntegrityError, match="does not verify"):
        Moderator.load(bundle_copy, public_key=other)
    assert main(["bundle", str(bundle_copy), "--bundle-public-key", str(other)]) == 2


def test_a_signed_bundle_edited_afterwards_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    private, public = _keys(tmp_path, "team")
    Bundle.load(bundle_copy).sign(private)
    _edit_manifest(bundle_copy, _swap_safe_and_offensive)
    with pytest.raises(BundleIntegrityError, match="it was made for digest"):
        Moderator.load(bundle_copy, public_key=public)
    with pytest.raises(BundleIntegrityError, match="does not verify"):
        NoteQueryMatcher.load(bundle_copy, public_key=public.read_text())


def test_a_forged_signature_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    private, public = _keys(tmp_path, "team")
    Bundle.load(bundle_copy).sign(private)
    body = json.loads((bundle_copy / SIGNATURE_FILE).read_text())
    raw = bytearray(base64.b64decode(body["signature"]))
    raw[0] ^= 1
    body["signature"] = base64.b64encode(bytes(raw)).decode()
    (bundle_copy / SIGNATURE_FILE).write_text(json.dumps(body))
    with pytest.raises(BundleIntegrityError, match="does not verify"):
        Bundle.load(bundle_copy, public_key=public)
    (bundle_copy / SIGNATURE_FILE).write_text("[" * 100_000)
    with pytest.raises(BundleIntegrityError, match="signature"):
        Bundle.load(bundle_copy, public_key=public)


def test_reserved_names_cannot_be_listed(bundle_copy: Path) -> None:
    (bundle_copy / SIGNATURE_FILE).write_text("{}")
    _rehash(bundle_copy, SIGNATURE_FILE)
    with pytest.raises(BundleFormatError, match=r"bundle\.sig"):
        Bundle.load(bundle_copy)


# --- point 5: links, external data, verified bytes ---------------------------------------------------------------


def test_a_linked_file_is_refused_even_when_identical(bundle_copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.json"
    shutil.move(bundle_copy / "tokenizer.json", outside)
    os.symlink(outside, bundle_copy / "tokenizer.json")
    with pytest.raises(BundleIntegrityError, match=r"tokenizer\.json is a symbolic link"):
        Bundle.load(bundle_copy)


def test_a_linked_folder_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("listed through a linked folder")
    os.symlink(elsewhere, bundle_copy / "sub", target_is_directory=True)
    _rehash(bundle_copy, "sub/notes.txt")
    with pytest.raises(BundleIntegrityError, match="sub is a symbolic link"):
        Moderator.load(bundle_copy)


def test_an_unlisted_link_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path, bundle_copy / "cache")
    with pytest.raises(BundleIntegrityError, match="cache is a symbolic link"):
        Bundle.load(bundle_copy)


def _external_data_bundle(bundle_copy: Path, *, list_weights: bool) -> None:
    shutil.copyfile(FIXTURES / "external_data.onnx", bundle_copy / "scoring.int8.onnx")
    shutil.copyfile(FIXTURES / "external_data.bin", bundle_copy / "external_data.bin")
    _rehash(bundle_copy, "scoring.int8.onnx", *(["external_data.bin"] if list_weights else []))


def test_the_external_data_fixture_is_seen() -> None:
    assert external_data_locations((FIXTURES / "external_data.onnx").read_bytes()) == ["external_data.bin"]
    assert (
        external_data_locations(
            (FIXTURES.parents[1].parent / "redone_sdk/bundles/default/scoring.int8.onnx").read_bytes()
        )
        == []
    )


def test_unlisted_external_data_is_refused(bundle_copy: Path) -> None:
    _external_data_bundle(bundle_copy, list_weights=False)
    with pytest.raises(BundleIntegrityError, match=r"external data from 'external_data\.bin'.*not list"):
        Moderator.load(bundle_copy)


def test_external_data_outside_the_bundle_is_refused(bundle_copy: Path) -> None:
    data = (FIXTURES / "external_data.onnx").read_bytes()
    for location in (b"../external_.bin", b"/tmp/external.bin"):
        forged = data.replace(b"external_data.bin", location.ljust(len(b"external_data.bin"), b"x"))
        (bundle_copy / "scoring.int8.onnx").write_bytes(forged)
        _rehash(bundle_copy, "scoring.int8.onnx")
        with pytest.raises(BundleIntegrityError, match="external data from"):
            Bundle.load(bundle_copy)


def test_listed_external_data_loads(bundle_copy: Path) -> None:
    _external_data_bundle(bundle_copy, list_weights=True)
    result = Moderator.load(bundle_copy).classify(NOTE)
    assert set(result.scores) == {"offensive", "hate", "sexism"}
    assert all(0.0 <= s <= 1.0 for s in result.scores.values())


def test_tokenizer_and_policy_changed_after_verification_are_not_used(bundle_copy: Path) -> None:
    bundle = Bundle.load(bundle_copy)
    (bundle_copy / "tokenizer.json").write_text("{}")  # unreadable as a tokenizer
    (bundle_copy / "policy.json").write_text('{"name": "evil", "default": {"review": 1.0}}')
    moderator = Moderator(bundle)
    assert moderator.policy.name == "dev-calibrated"
    assert moderator.classify(NOTE).action == "block"


# --- point 6: strict numbers, bounded JSON ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, "0.5", None, [0.5]])
def test_policy_thresholds_must_be_numbers(value: object, tmp_path: Path, bundle_copy: Path) -> None:
    text = json.dumps({"name": "p", "default": {"review": value, "block": 0.9}})
    with pytest.raises(PolicyError, match=r"default\.review"):
        Policy.from_json(text)
    with pytest.raises(PolicyError, match=r"default\.review"):
        Policy.from_dict(json.loads(text))
    (tmp_path / "p.json").write_text(text)
    with pytest.raises(PolicyError, match=r"default\.review"):
        Policy.load(tmp_path / "p.json")
    (bundle_copy / "policy.json").write_text(text)
    _rehash(bundle_copy, "policy.json")
    with pytest.raises(PolicyError, match=r"default\.review"):
        Moderator.load(bundle_copy)
    assert Policy.from_json(json.dumps({"default": {"review": 1, "block": 1}})).default.review == 1.0  # ints: fine


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("tasks", "moderation", "max_length"), "128"),
        (("tasks", "moderation", "max_length"), 128.0),
        (("tasks", "moderation", "temperature"), "1.06"),
        (("tasks", "moderation", "labels", 1, "token_id"), "5"),
        (("tokenizer", "pad_token_id"), False),
        (("tasks", "moderation", "max_length"), 10**9),
    ],
)
def test_manifest_numbers_are_strict_and_bounded(bundle_copy: Path, where: tuple, value: object) -> None:
    def change(manifest: dict) -> None:
        target = manifest
        for key in where[:-1]:
            target = target[key]
        target[where[-1]] = value

    _edit_manifest(bundle_copy, change)
    with pytest.raises(BundleFormatError, match=str(where[-1])):
        Bundle.load(bundle_copy)


def test_max_length_bound_is_documented(bundle_copy: Path) -> None:
    _edit_manifest(bundle_copy, lambda m: m["tasks"]["moderation"].update(max_length=8193))
    with pytest.raises(BundleFormatError, match="8192"):
        Bundle.load(bundle_copy)


def test_a_deeply_nested_manifest_or_policy_is_a_format_error(bundle_copy: Path, tmp_path: Path) -> None:
    deep = "[" * 200_000 + "]" * 200_000
    (bundle_copy / MANIFEST_FILE).write_text('{"format_version": 1, "lineage": ' + deep + "}")
    with pytest.raises(BundleFormatError, match="nested more than"):
        Bundle.load(bundle_copy)
    (tmp_path / "deep.json").write_text('{"rules": ' + deep + "}")
    with pytest.raises(PolicyError, match="nested more than"):
        Policy.load(tmp_path / "deep.json")
    with pytest.raises(PolicyError, match="nested more than"):
        Policy.from_json(deep)


def test_a_deeply_nested_bundle_policy_is_refused(default_bundle: Path, bundle_copy: Path) -> None:
    (bundle_copy / "policy.json").write_text('{"rules": ' + "[" * 200_000 + "]" * 200_000 + "}")
    _rehash(bundle_copy, "policy.json")
    with pytest.raises(PolicyError, match="nested more than"):
        Moderator.load(bundle_copy)


def test_oversized_json_files_are_refused_before_parsing(bundle_copy: Path, tmp_path: Path) -> None:
    tokenizer = bundle_copy / "tokenizer.json"
    with tokenizer.open("r+b") as handle:  # sparse: no 32 MB written, the size alone refuses it
        handle.truncate(MAX_TOKENIZER_BYTES + 1)
    with pytest.raises(BundleFormatError, match=r"tokenizer\.json has 33,554,433 bytes"):
        Bundle.load(bundle_copy)
    manifest = bundle_copy / MANIFEST_FILE
    manifest.write_bytes(manifest.read_bytes() + b" " * MAX_MANIFEST_BYTES)  # still valid JSON
    with pytest.raises(BundleFormatError, match="at most 4,194,304"):
        Bundle.load(bundle_copy)
    policy = tmp_path / "big.json"
    policy.write_text('{"default": {"review": 0.5}}' + " " * MAX_POLICY_BYTES)
    with pytest.raises(PolicyError, match="at most 1,048,576"):
        Policy.load(policy)


# --- needs redone_sdk/inference/onnx_backend.py to take `verified=` (the SDK's engine passes it when it can) ------


def test_graph_changed_after_verification_is_not_used(bundle_copy: Path) -> None:
    bundle = Bundle.load(bundle_copy)
    expected = Moderator(bundle).classify(NOTE)
    graph = bundle_copy / "scoring.int8.onnx"
    graph.write_bytes(b"not an ONNX model")  # what ONNX Runtime would read from disk now
    os.utime(graph, ns=(1, 1))  # another file to the scorer cache, as a later edit would be
    assert Moderator(bundle).classify(NOTE) == expected


def test_external_data_changed_after_verification_is_not_used(bundle_copy: Path) -> None:
    _external_data_bundle(bundle_copy, list_weights=True)
    bundle = Bundle.load(bundle_copy)
    (bundle_copy / "external_data.bin").write_bytes(b"\xff" * 36)  # NaN weights
    os.utime(bundle_copy / "scoring.int8.onnx", ns=(1, 1))
    scores = Moderator(bundle).classify(NOTE).scores
    assert all(0.0 <= s <= 1.0 for s in scores.values()), scores
