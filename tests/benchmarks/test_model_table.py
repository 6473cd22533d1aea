"""benchmarks/model_table.py on the fixture data, with the shipped bundle as both a --bundle and the --reference:
the table's rows, speed figures present and positive (no timing assertions), quality equal to `evaluate_bundle`'s,
peers' figures recomputed here, and a cross-set TF-IDF that never saw SWSR."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from redone_sdk.benchmarks.model_table import CROSS_SET_SOURCES, HEADLINES, SETS, main
from redone_sdk.benchmarks.quality import dev_sets
from redone_sdk.bundle import Bundle
from redone_sdk.training.baselines import TfidfLogReg
from redone_sdk.training.datasets import HARM_LABELS, harm_examples
from redone_sdk.training.evaluate import evaluate_bundle, harm_set_metrics

DEV_CAP = 200  # the fixture's sets are smaller (all of them are kept); keeps a run on the full data small
HEADER = (
    "| bundle | parameters | size MB | default graph | notes/s (int8) | × reference | cold_dev | swsr_dev | "
    "davidson_dev | querycorr_dev | sexism F1 (swsr) | hate F1 (davidson) |"
)


@pytest.fixture(scope="module")
def table_run(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path, default_bundle: Path
) -> tuple[str, str, dict[str, Any]]:
    """(stdout, the --out file, the --json figures) of one run."""
    out = tmp_path_factory.mktemp("model-table")
    argv = ["--bundle", str(default_bundle), "--reference", str(default_bundle), "--data-dir", str(data_dir)]
    argv += ["--out", str(out / "t.md"), "--json", str(out / "t.json"), "--speed-notes", "64", "--threads", "1"]
    argv += ["--dev-cap", str(DEV_CAP), "--quiet"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    report = json.loads((out / "t.json").read_text(encoding="utf-8"))
    return stdout.getvalue(), (out / "t.md").read_text(encoding="utf-8"), report


def _main_table(markdown: str) -> list[list[str]]:
    lines = markdown.splitlines()
    start = lines.index(HEADER)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_markdown_has_one_row_per_bundle(table_run: tuple[str, str, dict[str, Any]]) -> None:
    printed, written, report = table_run
    assert printed == written
    rows = _main_table(written)
    shipped = Bundle.load()
    label = f"{shipped.name} {shipped.version}"
    assert [r[0] for r in rows] == [label, f"{label} (reference)"]
    assert [e["role"] for e in report["bundles"]] == ["bundle", "reference"]
    for row in rows:
        assert row[1] == f"{shipped.manifest.lineage.parameters / 1e6:.2f} M" and row[3] == "int8" and float(row[2]) > 0
        assert float(row[4].replace(",", "")) > 0 and float(row[5]) > 0
    assert rows[1][5] == "1.00"  # the reference over the mean of its own two timings
    assert "## Peers" in written and "## Per category (F1)" in written
    flags = " ".join(report["machine"]["cpu_flags"]) or "no AVX2"  # what the int8 kernels' speed turns on
    assert f"({flags})" in next(line for line in written.splitlines() if line.startswith("- Machine:"))
    assert report["command"].startswith("python -m redone_sdk.benchmarks.model_table --bundle ")


def test_speed_figures_are_positive(table_run: tuple[str, str, dict[str, Any]]) -> None:
    _, _, report = table_run
    assert report["speed_sample"]["notes"] == 64
    for entry in report["bundles"]:
        assert entry["speed_graphs"] == ["int8"]  # the shipped bundle has no fp32 graph
        row = entry["speed"]["int8"]
        assert row["notes_per_s"] > 0 and row["ratio_vs_reference"] > 0
    drift = report["reference_drift"]
    reference = report["bundles"][-1]["speed"]["int8"]
    assert drift["start_notes_per_s"] > 0 and drift["end_notes_per_s"] > 0
    assert reference["start"]["notes_per_s"] == drift["start_notes_per_s"]
    assert reference["end"]["notes_per_s"] == drift["end_notes_per_s"]
    assert len(reference["start"]["repeats_notes_per_s"]) == len(reference["end"]["repeats_notes_per_s"]) == 3


def test_quality_equals_evaluate_bundle(
    table_run: tuple[str, str, dict[str, Any]], data_dir: Path, default_bundle: Path
) -> None:
    _, markdown, report = table_run
    sets = dev_sets(data_dir, DEV_CAP)
    official = evaluate_bundle(default_bundle, sets)
    assert set(official) == set(SETS)
    assert report["dev_sets"] == {k: len(v) for k, v in sets.items()}
    for entry in report["bundles"]:
        assert set(entry["quality"]) == set(official)
        for set_name, metrics in official.items():
            assert entry["quality"][set_name] == pytest.approx(metrics)
        for column, (set_name, key) in HEADLINES.items():
            assert entry["headlines"][column] == pytest.approx(official[set_name][key])
    cells = _main_table(markdown)[0][6:]
    expected = [official[s]["macro_f1"] for s in SETS] + [official[s][k] for s, k in HEADLINES.values()]
    assert cells == [f"{v:.3f}" for v in expected]


def test_peers_and_deltas(table_run: tuple[str, str, dict[str, Any]], data_dir: Path) -> None:
    _, _, report = table_run
    peers = report["peers"]
    tfidf = peers["tfidf-logreg"]
    assert tfidf["training"]["sources"] == ["cold", "swsr", "davidson"]
    for entry in report["bundles"]:
        for set_name in ("cold_dev", "swsr_dev", "davidson_dev"):
            delta = 100 * (entry["quality"][set_name]["macro_f1"] - tfidf["quality"][set_name]["macro_f1"])
            assert entry["delta_points"][set_name] == pytest.approx(round(delta, 2))
        bm25 = peers["bm25"]["quality"]["querycorr_dev"]["macro_f1"]
        delta = 100 * (entry["quality"]["querycorr_dev"]["macro_f1"] - bm25)
        assert entry["delta_points"]["querycorr_dev"] == pytest.approx(round(delta, 2))


def test_cross_set_tfidf_never_saw_swsr(table_run: tuple[str, str, dict[str, Any]], data_dir: Path) -> None:
    _, markdown, report = table_run
    cross = report["peers"]["tfidf-logreg cross-set"]
    training = cross["training"]
    assert "swsr" not in training["sources"] and "swsr" not in training["examples_by_source"]
    train = [e for s in CROSS_SET_SOURCES for e in harm_examples(data_dir, s, "train")]
    assert training["examples_by_source"] == {s: sum(e.source == s for e in train) for s in sorted(CROSS_SET_SOURCES)}
    assert set(cross["quality"]) == {"swsr_dev"}
    # its figure is that of a model fitted here on COLD + Davidson train only
    dev = dev_sets(data_dir, DEV_CAP)["swsr_dev"]
    model = TfidfLogReg().fit([e.record["text"] for e in train], [e.label for e in train])
    predicted = model.predict([e.record["text"] for e in dev])
    expected = harm_set_metrics("swsr_dev", [e.label for e in dev], predicted, HARM_LABELS)
    assert cross["quality"]["swsr_dev"] == pytest.approx(expected)
    assert "| tfidf-logreg cross-set | cold+davidson |" in markdown


def test_speed_graphs_add_fp32_when_the_bundle_has_it() -> None:
    from types import SimpleNamespace

    from redone_sdk.benchmarks.model_table import speed_graphs

    def bundle(default: str | None, graphs: list[str]) -> Any:
        return SimpleNamespace(manifest=SimpleNamespace(default_graph=default, graphs=dict.fromkeys(graphs)))

    assert speed_graphs(bundle("int8", ["int8"])) == ["int8"]
    assert speed_graphs(bundle("int8", ["fp32", "int8"])) == ["int8", "fp32"]
    assert speed_graphs(bundle("fp32", ["fp32", "int8"])) == ["fp32"]
    assert speed_graphs(bundle(None, ["fp32"])) == ["fp32"]
