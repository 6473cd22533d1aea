"""The README's model table in one run: each bundle beside a reference bundle and the peers, in one process.

For every `--bundle` and the `--reference`: name, version, parameters (manifest lineage), size of the shipped
files, default graph; bulk speed, `Moderator.load(path, precision=…, intra_op_threads=T).classify_batch(notes)`
on a fixed seeded sample of dev notes (benchmarks/sample.py: COLD 40 %, SWSR 30 %, Davidson 30 %), one warm-up
pass then the best of 3, for the default graph and the fp32 graph when the bundle has one; quality per dev set
through `redone_sdk.training.evaluate.evaluate_bundle` with its default options, as the pipeline's eval and
export stages call it (default graph, passes of 64 split over the usable cores), so they are the manifest's own.

The reference's default graph is timed first and again last; `× reference` divides by the mean of the two, and
their difference is reported as the drift of the machine over the run (ratios are the figure to compare).

Peers: char 1–3-gram TF-IDF + LR trained on the train parts of COLD, SWSR and Davidson
(benchmarks/peers/tfidf.py), the same trained on COLD + Davidson only and tested on swsr_dev (cross-set), and
BM25 for QueryCorr (benchmarks/peers/relevance.py); all scored by `harm_set_metrics` like the bundles.

`python -m redone_sdk.benchmarks.model_table --bundle runs/base/bundle --bundle runs/small/bundle
--reference redone_sdk/bundles/default --data-dir /work/shared/data --out benchmarks/results/model-table.md
--json benchmarks/results/model-table.json`
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import shlex
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from redone_sdk import Moderator
from redone_sdk.bundle import Bundle
from redone_sdk.inference.options import InferenceOptions
from redone_sdk.training.baselines import TfidfLogReg
from redone_sdk.training.datasets import HARM_LABELS, QUERYCORR_GRADES, Example, harm_examples
from redone_sdk.training.evaluate import evaluate_bundle, harm_set_metrics, per_category_rows

from .machine import describe_machine, load_average
from .peers import Bm25Peer, TfidfLogRegPeer
from .peers.tfidf import HARM_SOURCES
from .quality import dev_sets
from .report import table
from .sample import speed_sample

__all__ = [
    "CROSS_SET_SOURCES",
    "HEADLINES",
    "SETS",
    "bundle_info",
    "speed_graphs",
    "shipped_mb",
    "headlines",
    "measure_notes_per_s",
    "cross_set_tfidf",
    "train_peers",
    "run",
    "render_markdown",
    "main",
]

SCHEMA = "redone-sdk-model-table/1"
PROG = "python -m redone_sdk.benchmarks.model_table"
SETS = ("cold_dev", "swsr_dev", "davidson_dev", "querycorr_dev")
HARM_SETS = SETS[:3]
CROSS_SET_SOURCES = ("cold", "davidson")  # no SWSR: its dev part is a set the model never saw
CROSS_SET_DEV = "swsr_dev"
# headline column -> (dev set, key of harm_set_metrics)
HEADLINES = {
    "sexism F1 (swsr)": ("swsr_dev", "category/f1/sexism"),
    "hate F1 (davidson)": ("davidson_dev", "f1/hate"),
}
REPEATS = 3
TFIDF, CROSS, BM25 = "tfidf-logreg", "tfidf-logreg cross-set", "bm25"

COLD_NOTE = (
    "COLD's gold labels here are `offensive` (`harm_examples` without topic labels). A bundle trained with "
    "`data.cold_topic_labels` answers `hate` / `sexism` on race / gender topics: right for cold_dev's macro-F1 "
    "(harmful vs safe), wrong for its category view (`offensive`)."
)

log = logging.getLogger("benchmarks.model_table")


# --- bundles -------------------------------------------------------------------------------------------------


def shipped_mb(bundle: Bundle) -> float:
    """MB of the files the manifest lists, and the manifest itself (what a user downloads)."""
    files = [bundle.path / "manifest.json", *(bundle.path / name for name in bundle.manifest.files)]
    return round(sum(f.stat().st_size for f in files) / 2**20, 2)


def speed_graphs(bundle: Bundle) -> list[str]:
    """The default graph, then fp32 when the bundle has it as another graph."""
    default = bundle.manifest.default_graph or sorted(bundle.manifest.graphs)[0]
    return [default, *(["fp32"] if "fp32" in bundle.manifest.graphs and default != "fp32" else [])]


def bundle_info(path: Path, role: str) -> dict[str, Any]:
    bundle = Bundle.load(path)
    manifest = bundle.manifest
    return {
        "role": role,
        "path": str(bundle.path),
        "name": manifest.name,
        "version": manifest.version,
        "parameters": manifest.lineage.parameters,
        "size_mb": shipped_mb(bundle),
        "default_graph": manifest.default_graph,
        "graphs": sorted(manifest.graphs),
        "speed_graphs": speed_graphs(bundle),
    }


def measure_notes_per_s(path: Path, precision: str, texts: Sequence[str], threads: int) -> dict[str, Any]:
    """Bulk notes/s of one graph: a warm-up pass, then the best of `REPEATS` timed passes."""
    moderator = Moderator.load(path, precision=precision, intra_op_threads=threads)  # type: ignore[arg-type]
    notes = list(texts)
    moderator.classify_batch(notes)
    rates = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        moderator.classify_batch(notes)
        rates.append(len(notes) / (time.perf_counter() - started))
    del moderator
    gc.collect()  # the ONNX Runtime session (and its thread pool) goes before the next graph's
    time.sleep(0.2)
    return {"notes_per_s": round(max(rates), 1), "repeats_notes_per_s": [round(r, 1) for r in rates]}


def _speed(entry: dict[str, Any], texts: Sequence[str], threads: int) -> dict[str, dict[str, Any]]:
    out = {}
    for precision in entry["speed_graphs"]:
        log.info("speed: %s %s graph", entry["label"], precision)
        out[precision] = measure_notes_per_s(Path(entry["path"]), precision, texts, threads)
    return out


def _quality(entry: dict[str, Any], sets: dict[str, list[Example]]) -> dict[str, dict[str, float]]:
    """`evaluate_bundle` called as the pipeline's eval and export stages call it (its default options), so the
    figures are the manifest's own on this machine: the int8 graph quantizes activations per pass, and the
    default splits the passes by the usable cores (workers)."""
    log.info("quality: %s", entry["label"])
    return evaluate_bundle(Path(entry["path"]), sets)


# --- peers ---------------------------------------------------------------------------------------------------


def cross_set_tfidf(data_dir: Path) -> tuple[TfidfLogReg, dict[str, Any]]:
    """TF-IDF + LR on the train parts of `CROSS_SET_SOURCES` only; the record counts what it was fitted on."""
    examples = [e for source in CROSS_SET_SOURCES for e in harm_examples(data_dir, source, "train")]
    model = TfidfLogReg().fit([e.record["text"] for e in examples], [e.label for e in examples])
    training = {
        "implementation": "redone_sdk.training.baselines.TfidfLogReg",
        "sources": list(CROSS_SET_SOURCES),
        "examples": len(examples),
        "examples_by_source": dict(sorted(Counter(e.source for e in examples).items())),
        "tested_on": [CROSS_SET_DEV],
    }
    return model, training


def _harm_metrics(model: Any, sets: dict[str, list[Example]], names: Sequence[str]) -> dict[str, dict[str, float]]:
    out = {}
    for name in names:
        examples = sets[name]
        predicted = model.predict([e.record["text"] for e in examples])
        out[name] = harm_set_metrics(name, [e.label for e in examples], predicted, HARM_LABELS)
    return out


def _relevance_metrics(peer: Bm25Peer, examples: Sequence[Example]) -> dict[str, float]:
    predicted = peer.predict([(e.record["query"], e.record["note"]) for e in examples])
    return harm_set_metrics("querycorr_dev", [e.label for e in examples], predicted, QUERYCORR_GRADES)


def train_peers(data_dir: Path, sets: dict[str, list[Example]]) -> dict[str, dict[str, Any]]:
    """{peer: {trained_on, training, quality: {set: metrics}}} for TF-IDF, its cross-set twin and BM25."""
    log.info("peers: training TF-IDF (all harm train parts), TF-IDF (without SWSR) and BM25")
    tfidf = TfidfLogRegPeer().fit_on_bundle_data(data_dir)
    cross, cross_training = cross_set_tfidf(data_dir)
    bm25 = Bm25Peer().fit_on_querycorr(data_dir)
    return {
        TFIDF: {
            "trained_on": "+".join(HARM_SOURCES),
            "training": {**tfidf.training, "sources": list(HARM_SOURCES)},
            "quality": _harm_metrics(tfidf, sets, HARM_SETS),
        },
        CROSS: {
            "trained_on": "+".join(CROSS_SET_SOURCES),
            "training": cross_training,
            "quality": _harm_metrics(cross, sets, [CROSS_SET_DEV]),
        },
        BM25: {
            "trained_on": "querycorr train",
            "training": bm25.training,
            "quality": {"querycorr_dev": _relevance_metrics(bm25, sets["querycorr_dev"])},
        },
    }


# --- the run -------------------------------------------------------------------------------------------------


def _labelled(paths: Sequence[Path], reference: Path) -> list[dict[str, Any]]:
    entries = [bundle_info(p, "bundle") for p in paths] + [bundle_info(reference, "reference")]
    seen: Counter[str] = Counter()
    for entry in entries:
        label = f"{entry['name']} {entry['version']}" + (" (reference)" if entry["role"] == "reference" else "")
        seen[label] += 1
        entry["label"] = label if seen[label] == 1 else f"{label} #{seen[label]}"
    return entries


def _reference_speed(ref: dict[str, Any], start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """The reference's default-graph row becomes the mean of its first and last timing; returns the drift."""
    graph = ref["speed_graphs"][0]
    first, last = start[graph]["notes_per_s"], end["notes_per_s"]
    mean = round((first + last) / 2, 1)
    ref["speed"] = {**start, graph: {"notes_per_s": mean, "start": start[graph], "end": end}}
    drift = round(last / first - 1, 4)
    return {
        "graph": graph,
        "start_notes_per_s": first,
        "end_notes_per_s": last,
        "mean_notes_per_s": mean,
        "drift": drift,
    }


def _add_ratios(entries: list[dict[str, Any]], base: float) -> None:
    for entry in entries:
        for row in entry["speed"].values():
            row["ratio_vs_reference"] = round(row["notes_per_s"] / base, 3)


def _deltas(entry: dict[str, Any], peers: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Points of macro-F1 of the bundle over TF-IDF (harm sets) and BM25 (QueryCorr)."""
    out: dict[str, float | None] = {}
    for name in SETS:
        peer = peers[BM25 if name == "querycorr_dev" else TFIDF]["quality"].get(name)
        mine = entry["quality"].get(name)
        out[name] = round(100 * (mine["macro_f1"] - peer["macro_f1"]), 2) if mine and peer else None
    return out


def headlines(quality: dict[str, dict[str, float]]) -> dict[str, float | None]:
    return {column: quality.get(name, {}).get(key) for column, (name, key) in HEADLINES.items()}


def run(
    bundles: Sequence[Path],
    reference: Path,
    data_dir: Path,
    *,
    speed_notes: int = 2000,
    threads: int = 2,
    dev_cap: int = 0,
    command: str = PROG,
) -> dict[str, Any]:
    """Every figure of the table, as a JSON-ready dict."""
    started = time.perf_counter()
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "date": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "command": command,
        "machine": describe_machine(),
        "load_average": {"start": load_average()},
        "settings": {"data_dir": str(data_dir), "speed_notes": speed_notes, "threads": threads, "dev_cap": dev_cap},
    }
    entries = _labelled(bundles, reference)
    ref = entries[-1]
    sample = speed_sample(data_dir, speed_notes)
    report["speed_sample"] = {**sample.describe(), "repeats": REPEATS, "batch_size": InferenceOptions().batch_size}
    start = _speed(ref, sample.texts, threads)
    for entry in entries[:-1]:
        entry["speed"] = _speed(entry, sample.texts, threads)
    log.info("speed: %s again (drift)", ref["label"])
    end = measure_notes_per_s(Path(ref["path"]), ref["speed_graphs"][0], sample.texts, threads)
    report["reference_drift"] = _reference_speed(ref, start, end)
    _add_ratios(entries, report["reference_drift"]["mean_notes_per_s"])
    sets = dev_sets(data_dir, dev_cap)
    report["dev_sets"] = {name: len(examples) for name, examples in sets.items()}
    peers = train_peers(data_dir, sets)
    for entry in entries:
        entry["quality"] = _quality(entry, sets)
        entry["headlines"] = headlines(entry["quality"])
        entry["delta_points"] = _deltas(entry, peers)
    for peer in peers.values():
        peer["headlines"] = headlines(peer["quality"])
    report["bundles"] = entries
    report["peers"] = peers
    report["load_average"]["end"] = load_average()
    report["duration_s"] = round(time.perf_counter() - started, 1)
    return report


# --- markdown ------------------------------------------------------------------------------------------------


def _f1(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f}"


def _ratio(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def _signed(value: float | None) -> str | None:
    return None if value is None else f"{value:+.1f}"


def _int8_speed(entry: dict[str, Any]) -> tuple[str, str | None]:
    """(notes/s, × reference) of the int8 graph, else of the default graph, named."""
    graph = "int8" if "int8" in entry["speed"] else entry["speed_graphs"][0]
    row = entry["speed"][graph]
    tag = "" if graph == "int8" else f" ({graph})"
    return f"{row['notes_per_s']:,.1f}{tag}", _ratio(row["ratio_vs_reference"])


def _quality_cells(quality: dict[str, dict[str, float]]) -> list[str | None]:
    cells = [_f1(quality[name]["macro_f1"]) if name in quality else None for name in SETS]
    return cells + [_f1(v) for v in headlines(quality).values()]


def _bundle_rows(entries: Sequence[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for e in entries:
        params = None if e["parameters"] is None else f"{e['parameters'] / 1e6:.2f} M"
        rows.append(
            [e["label"], params, e["size_mb"], e["default_graph"], *_int8_speed(e), *_quality_cells(e["quality"])]
        )
    return rows


def _speed_rows(entries: Sequence[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for e in entries:
        for graph, row in e["speed"].items():
            passes = row.get("start", row)["repeats_notes_per_s"] + row.get("end", {}).get("repeats_notes_per_s", [])
            rows.append([e["label"], graph, row["notes_per_s"], _ratio(row["ratio_vs_reference"]), passes])
    return rows


def _category_rows(systems: dict[str, dict[str, dict[str, float]]]) -> list[list[Any]]:
    """One row per (set, view, category) of any system; one F1 column per system."""
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for system, metrics in systems.items():
        for set_name, view, label, _p, _r, f1, support in per_category_rows(metrics):
            row = merged.setdefault((set_name, view, label), {"support": support})
            row[system] = f1
    return [[*key, row["support"], *(_f1(row.get(s)) for s in systems)] for key, row in merged.items()]


def _intro(report: dict[str, Any]) -> list[str]:
    machine, drift, sample = report["machine"], report["reference_drift"], report["speed_sample"]
    load = report["load_average"]
    sources = ", ".join(f"{k} {v}" for k, v in sample["sources"].items())
    sets = ", ".join(f"{k} {v}" for k, v in report["dev_sets"].items())
    return [
        "# Model table",
        "",
        f"- Date: {report['date']}",
        # the int8 kernels run on what these say (AVX512-VNNI or AVX2 alone): figures from two VMs are not one series
        f"- Machine: {machine['cpu_model']} ({' '.join(machine.get('cpu_flags') or ['no AVX2'])}), "
        f"{machine['usable_cores']} usable of {machine['logical_cores']} logical cores, "
        f"onnxruntime {machine['libraries'].get('onnxruntime')}; load average {load['start']} → "
        f"{load.get('end')}",
        f"- Command: `{report['command']}`",
        f"- Speed: {sample['notes']} dev notes ({sources}; seed {sample['seed']}), "
        f"`Moderator.load(path, precision=…, intra_op_threads={report['settings']['threads']}).classify_batch(notes)` "
        f"(passes of {sample['batch_size']}), a warm-up pass then the best of {sample['repeats']}. × reference: "
        f"over the mean of the reference's {drift['graph']} graph timed first and last "
        f"({drift['start_notes_per_s']:,.1f} → {drift['end_notes_per_s']:,.1f} notes/s, "
        f"drift {100 * drift['drift']:+.1f} %).",
        "- Quality: macro-F1 of `evaluate_bundle(bundle, dev_sets)` as the pipeline calls it (default graph, passes "
        "of 64 over the usable cores): COLD and SWSR harmful vs safe, "
        "Davidson safe / offensive / hate, QueryCorr its five grades. Sexism F1: swsr_dev's category view; hate F1: "
        f"davidson_dev. Dev sets: {sets}.",
        "",
    ]


def render_markdown(report: dict[str, Any]) -> str:
    entries, peers = report["bundles"], report["peers"]
    head = ["bundle", "parameters", "size MB", "default graph", "notes/s (int8)", "× reference", *SETS, *HEADLINES]
    lines = [*_intro(report), table(head, _bundle_rows(entries)), "", "## Speed per graph", ""]
    lines += [table(["bundle", "graph", "notes/s", "× reference", "timed passes (notes/s)"], _speed_rows(entries))]
    lines += ["", "## Peers", ""]
    peer_rows = [[name, p["trained_on"], *_quality_cells(p["quality"])] for name, p in peers.items()]
    lines += [table(["system", "trained on", *SETS, *HEADLINES], peer_rows), ""]
    lines += [f"`{CROSS}` never saw SWSR: its {CROSS_SET_DEV} figure is cross-set; every bundle trained on SWSR.", ""]
    lines += ["## Δ vs peers (points of macro-F1; querycorr_dev vs BM25, the others vs TF-IDF)", ""]
    delta_rows = [[e["label"], *(_signed(e["delta_points"][s]) for s in SETS)] for e in entries]
    lines += [table(["bundle", *SETS], delta_rows), "", "## Per category (F1)", ""]
    systems = {e["label"]: e["quality"] for e in entries} | {n: peers[n]["quality"] for n in (TFIDF, CROSS)}
    lines += [table(["set", "view", "category", "support", *systems], _category_rows(systems)), ""]
    lines += [COLD_NOTE]
    return "\n".join(lines) + "\n"


# --- command line --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bundle", type=Path, action="append", required=True, help="A bundle to table (repeat).")
    parser.add_argument("--reference", type=Path, default=None, help="Reference bundle (default: the shipped one).")
    parser.add_argument("--data-dir", type=Path, default=None, help="Shared data (default: $REDONE_DATA_DIR).")
    parser.add_argument("--out", type=Path, default=None, help="Write the Markdown here (it is printed anyway).")
    parser.add_argument("--json", type=Path, default=None, help="Write every figure to this JSON file.")
    parser.add_argument("--speed-notes", type=int, default=2000, help="Dev notes timed per graph (default 2000).")
    parser.add_argument("--threads", type=int, default=2, help="Intra-op threads of the speed runs (default 2).")
    parser.add_argument("--dev-cap", type=int, default=0, help="Score a seeded sample of at most this many per set.")
    parser.add_argument("--quiet", action="store_true", help="No progress log on stderr.")
    return parser


def _write(path: Path | None, text: str) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the table, print the Markdown, and write --out / --json."""
    from redone_sdk.bundle import default_bundle_path
    from redone_sdk.training.datasets import default_data_dir

    args = _parser().parse_args(argv)
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    report = run(
        args.bundle,
        args.reference or default_bundle_path(),
        args.data_dir or default_data_dir(),
        speed_notes=args.speed_notes,
        threads=args.threads,
        dev_cap=args.dev_cap,
        command=" ".join([PROG, *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
    )
    markdown = render_markdown(report)
    sys.stdout.write(markdown)
    _write(args.out, markdown)
    _write(args.json, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
