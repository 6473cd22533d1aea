"""`redone train recalibrate` (training/recalibrate.py): a finished bundle's label offsets and policy refitted on dev
from its own scores into a new bundle; graphs copied byte for byte, the source left as it was."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from redone_sdk import Bundle, Moderator
from redone_sdk.bundle import sha256_file
from redone_sdk.labeled_data import harm_examples
from redone_sdk.training.cli import main
from redone_sdk.training.recalibrate import recalibrate_bundle


def _dev_sets(data_dir: Path) -> dict[str, list]:
    """The harm dev sets as the base preset labels them (COLD topics on)."""
    return {f"{s}_dev": harm_examples(data_dir, s, "dev", cold_topics=True) for s in ("cold", "swsr", "davidson")}


@pytest.fixture(scope="module")
def recalibrated(default_bundle: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("recalibrate")
    argv = [
        "train", "recalibrate", "--output-dir", str(root / "run"), "--data-data-dir", str(data_dir),
        "--data-cold-topic-labels", "--bundle", str(default_bundle), "--out", str(root / "bundle"),
        "--bundle-version", "9.9.9-test",
    ]  # fmt: skip
    before = {name: sha256_file(default_bundle / name) for name in ("manifest.json", "policy.json")}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    assert before == {name: sha256_file(default_bundle / name) for name in before}  # the source is untouched
    return root / "bundle", json.loads(printed.getvalue())


def test_recalibrated_bundle_loads_with_its_offsets_policy_and_figures(
    recalibrated: tuple[Path, dict], default_bundle: Path
) -> None:
    out, printed = recalibrated
    bundle, source = Bundle.load(out), Bundle.load(default_bundle)
    manifest = bundle.manifest
    assert manifest.version == "9.9.9-test" and "redone train recalibrate" in manifest.description
    for name, graph in manifest.graphs.items():  # the graphs are the source's, byte for byte
        assert manifest.files[graph.file] == source.manifest.files[source.manifest.graphs[name].file]
    assert manifest.tasks["matching"] == source.manifest.tasks["matching"]
    task = manifest.tasks["moderation"]
    assert task.temperature == source.manifest.tasks["moderation"].temperature
    fit = manifest.metrics["label_offsets/moderation"]
    fitted = {k[len("offset/") :]: v for k, v in fit.items() if k.startswith("offset/") and v}
    assert task.label_offsets == (fitted if fit["kept"] else {})  # kept only with an out-of-sample gain
    assert fit["kept"] == float(bool(fitted) and fit["cross_fitted/mean_macro_f1"] > fit["before/mean_macro_f1"])
    assert fit["after/mean_macro_f1"] >= fit["before/mean_macro_f1"]
    assert {"cold_dev", "swsr_dev", "davidson_dev"} <= {k.split("/")[1] for k in fit if k.startswith("cross_fitted/")}
    # the policy file is the one the dev figures describe, and the SDK uses it
    policy = json.loads((out / "policy.json").read_text())
    figures = manifest.metrics["policy/dev"]
    for category, rule in policy["rules"].items():
        if f"review/{category}" in figures:
            assert rule["review"] == figures[f"review/{category}"]
    assert figures["n"] == 114 + 80 + 81  # the fixture's COLD, SWSR and Davidson dev rows
    # re-measured with the offsets: the dev metric of the int8 graph is what evaluate_bundle reads now
    davidson = manifest.metrics["int8/davidson_dev"]
    assert davidson["macro_f1"] == pytest.approx(fit["after/davidson_dev/macro_f1"], abs=0.02)
    result = Moderator.load(out).classify({"note_id": "n", "content": "women should stay in the kitchen"})
    assert result.model.version == "9.9.9-test" and set(result.scores) == {"offensive", "hate", "sexism"}
    assert printed == {"bundle": str(out), "version": "9.9.9-test", "label_offsets": {"moderation": task.label_offsets}}


def test_refitting_a_recalibrated_bundle_finds_the_same_offsets(
    recalibrated: tuple[Path, dict], data_dir: Path, tmp_path: Path
) -> None:
    """The current offsets are taken off the scores before the fit: a second pass starts where the first did."""
    out, _ = recalibrated
    sets = _dev_sets(data_dir)
    again = recalibrate_bundle(out, tmp_path / "again", sets)
    first = Bundle.load(out).manifest
    assert again.manifest.tasks["moderation"].label_offsets == first.tasks["moderation"].label_offsets
    assert (tmp_path / "again" / "policy.json").read_text() == (out / "policy.json").read_text()
    assert again.manifest.version == first.version  # no --bundle-version: the bundle's own


def test_a_set_the_bundle_never_trained_on_stays_out_of_the_offsets(
    recalibrated: tuple[Path, dict], data_dir: Path, tmp_path: Path
) -> None:
    """The cross-set check: a bundle whose lineage names only COLD and Davidson gets offsets fitted without SWSR."""
    out, _ = recalibrated
    cross = tmp_path / "cross"
    shutil.copytree(out, cross)
    manifest = json.loads((cross / "manifest.json").read_text())
    manifest["lineage"]["training_config"]["data"]["harm_sources"] = ["cold", "davidson"]
    (cross / "manifest.json").write_text(json.dumps(manifest))
    sets = _dev_sets(data_dir)
    bundle = recalibrate_bundle(cross, tmp_path / "cross-out", sets)
    fit = bundle.manifest.metrics["label_offsets/moderation"]
    assert "before/cold_dev/macro_f1" in fit and not any("swsr_dev" in key for key in fit)
    assert bundle.manifest.metrics["policy/dev"]["n"] == 114 + 80 + 81  # the policy still sees every set
    assert "int8/swsr_dev" in bundle.manifest.metrics


def test_the_cli_refuses_dev_labels_the_bundle_was_not_trained_with(
    default_bundle: Path, data_dir: Path, tmp_path: Path
) -> None:
    argv = ["train", "recalibrate", "--output-dir", str(tmp_path / "run"), "--data-data-dir", str(data_dir)]
    argv += ["--bundle", str(default_bundle), "--out", str(tmp_path / "bundle")]  # defaults: no COLD topic labels
    with pytest.raises(SystemExit, match=r"trained with data\.cold_topic_labels True"):
        main(argv)
    assert not (tmp_path / "bundle").exists()


def test_a_signature_of_the_source_is_not_carried_over(
    recalibrated: tuple[Path, dict], data_dir: Path, tmp_path: Path
) -> None:
    out, _ = recalibrated
    signed = tmp_path / "signed"
    shutil.copytree(out, signed)
    (signed / "bundle.sig").write_bytes(b"\x00" * 64)  # whatever it held, it signed the source's digest
    sets = {"davidson_dev": harm_examples(data_dir, "davidson", "dev")}
    bundle = recalibrate_bundle(signed, tmp_path / "new", sets)
    assert not (tmp_path / "new" / "bundle.sig").exists() and "bundle.sig" not in bundle.manifest.files


def test_refuses_to_write_over_its_source_or_without_a_moderation_set(recalibrated: tuple[Path, dict]) -> None:
    out, _ = recalibrated
    with pytest.raises(ValueError, match="is the bundle itself"):
        recalibrate_bundle(out, out, {})
    with pytest.raises(ValueError, match="no dev examples of the task 'moderation'"):
        recalibrate_bundle(out, out.parent / "other", {})
