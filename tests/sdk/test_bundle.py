import json
import shutil
from pathlib import Path

import pytest

from redone_sdk import Bundle, BundleFormatError, BundleIntegrityError, BundleNotFoundError, Moderator
from redone_sdk.bundle import MANIFEST_FILE


@pytest.fixture
def bundle_copy(default_bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(default_bundle, target)
    return target


def _edit_manifest(path: Path, change) -> None:
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    change(manifest)
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_loads_and_exposes_metadata(default_bundle: Path) -> None:
    bundle = Bundle.load(default_bundle)
    written = json.loads((default_bundle / MANIFEST_FILE).read_text())
    assert (bundle.name, bundle.version) == (written["name"], written["version"])
    assert bundle.path == default_bundle.resolve()
    assert set(bundle.manifest.tasks) == {"moderation", "matching"}
    assert bundle.manifest.files["tokenizer.json"]
    assert set(bundle.manifest.graphs) == {"int8"} and bundle.manifest.checkpoint is None
    moderator = Moderator.load()  # no path: the shipped bundle
    assert moderator.bundle.path == bundle.path and moderator.bundle.version == bundle.version


def test_manifest_is_sorted_json(default_bundle: Path) -> None:
    text = (default_bundle / MANIFEST_FILE).read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_tampered_graph_is_refused_naming_the_file(bundle_copy: Path) -> None:
    graph = bundle_copy / "scoring.int8.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=r"scoring\.int8\.onnx has SHA-256"):
        Moderator.load(bundle_copy)


def test_tampered_policy_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "policy.json").write_text('{"name": "evil", "default": {"review": 1.0}}')
    with pytest.raises(BundleIntegrityError, match=r"policy\.json"):
        Bundle.load(bundle_copy)


def test_missing_file_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "tokenizer.json").unlink()
    with pytest.raises(BundleIntegrityError, match=r"missing tokenizer\.json"):
        Bundle.load(bundle_copy)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleNotFoundError, match="does not exist"):
        Bundle.load(tmp_path / "nowhere")
    with pytest.raises(BundleNotFoundError, match=r"no manifest\.json"):
        Bundle.load(tmp_path)


def test_manifest_not_json(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST_FILE).write_text("{")
    with pytest.raises(BundleFormatError, match="not valid JSON"):
        Bundle.load(bundle_copy)


def test_unknown_format_version(bundle_copy: Path) -> None:
    _edit_manifest(bundle_copy, lambda m: m.update(format_version=99))
    with pytest.raises(BundleFormatError, match="format_version 99"):
        Bundle.load(bundle_copy)


def test_file_outside_bundle_is_refused(bundle_copy: Path) -> None:
    def escape(manifest: dict) -> None:
        manifest["files"]["../outside.txt"] = "0" * 64

    _edit_manifest(bundle_copy, escape)
    with pytest.raises(BundleFormatError, match="relative paths inside the bundle"):
        Bundle.load(bundle_copy)


def test_unchecksummed_graph_is_refused(bundle_copy: Path) -> None:
    _edit_manifest(bundle_copy, lambda m: m["files"].pop("scoring.int8.onnx"))
    with pytest.raises(BundleFormatError, match="no checksum"):
        Bundle.load(bundle_copy)


def test_label_columns_must_match_graph(bundle_copy: Path) -> None:
    def shift(manifest: dict) -> None:
        manifest["tasks"]["moderation"]["labels"][0]["token_id"] += 1

    _edit_manifest(bundle_copy, shift)
    with pytest.raises(BundleFormatError, match="does not match column"):
        Bundle.load(bundle_copy)


def test_shipped_bundle_holds_no_pickles(default_bundle: Path) -> None:
    """The shipped bundle's files; tests/training/test_trained_bundle.py checks a full bundle (checkpoint too)."""
    import numpy as np

    suffixes = {p.suffix for p in default_bundle.rglob("*") if p.is_file()}
    # .npz: the prompt-prefix cache, plain numeric arrays (read with allow_pickle=False)
    assert suffixes <= {".json", ".onnx", ".npz"}, suffixes
    for archive in default_bundle.rglob("*.npz"):
        with np.load(archive, allow_pickle=False) as arrays:
            assert arrays.files and all(arrays[name].dtype.kind in "fi" for name in arrays.files)
