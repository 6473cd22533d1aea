"""Char TF-IDF + LR on every leave-one-out of the harm sets, under both COLD label styles: the bar of #16's
cross-set checks (train without a set, test on it).

    python -m benchmarks.tfidf_cross_set [--data-dir ../shared/data] [--out F.md] [--json F.json]

The pipeline trains on COLD's offensive comments labelled by topic (`data.cold_topic_labels`: gender -> sexism,
race -> hate); `benchmarks.peers.TfidfLogRegPeer` trains on COLD's own `offensive`. The two give the baseline
different strengths (the topic labels teach it sexism from COLD, which is what SWSR's cross-set check asks), so
both are fitted here and a model's cross-set figure is held to the higher of the two. Scored in the pipeline's
label spaces (`training.evaluate.harm_set_metrics`: COLD and SWSR harmful vs safe, Davidson its three classes).
Measured figures: benchmarks/results/tfidf-cross-set.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from redone_sdk.training.baselines import TfidfLogReg
from redone_sdk.training.datasets import harm_examples
from redone_sdk.training.evaluate import harm_set_metrics

__all__ = ["SOURCES", "tfidf_cross_set", "markdown"]

SOURCES = ("cold", "swsr", "davidson")


def tfidf_cross_set(data_dir: Path) -> dict[str, Any]:
    """{"rows": [{labels, trained_on, left_out, seconds, <set>_dev: macro-F1, ...}], "bars": {set: figure}}: one
    fit per label style and training set (all three, then each left out); `bars` is each set's cross-set bar,
    the higher of the two styles' figures on that set when it was left out."""
    dev = {s: harm_examples(data_dir, s, "dev") for s in SOURCES}
    rows = []
    for cold_topics in (False, True):
        train = {s: harm_examples(data_dir, s, "train", cold_topics=cold_topics) for s in SOURCES}
        for left_out in (None, *SOURCES):
            used = [s for s in SOURCES if s != left_out]
            examples = [e for s in used for e in train[s]]
            started = time.perf_counter()
            model = TfidfLogReg().fit([e.record["text"] for e in examples], [e.label for e in examples])
            row: dict[str, Any] = {
                "labels": "cold topic labels" if cold_topics else "cold offensive",
                "trained_on": "+".join(used),
                "left_out": left_out or "",
                "examples": len(examples),
            }
            for source, examples_dev in dev.items():
                predicted = model.predict([e.record["text"] for e in examples_dev])
                row[f"{source}_dev"] = round(
                    harm_set_metrics(f"{source}_dev", [e.label for e in examples_dev], predicted)["macro_f1"], 4
                )
            row["seconds"] = round(time.perf_counter() - started, 1)
            rows.append(row)
    bars = {s: max(r[f"{s}_dev"] for r in rows if r["left_out"] == s) for s in SOURCES}
    return {"rows": rows, "bars": bars}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| COLD labels | trained on | left out | examples | COLD dev | SWSR dev | Davidson dev |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        cells = [f"**{r[f'{s}_dev']:.3f}**" if s == r["left_out"] else f"{r[f'{s}_dev']:.3f}" for s in SOURCES]
        head = f"| {r['labels']} | {r['trained_on']} | {r['left_out'] or '—'} | {r['examples']}"
        lines.append(f"{head} | {' | '.join(cells)} |")
    bars = ", ".join(f"{s} {v:.3f}" for s, v in result["bars"].items())
    lines += ["", f"Cross-set bars (the higher style, **bold** above): {bars}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tfidf_cross_set", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, help="write the Markdown table here too")
    parser.add_argument("--json", type=Path, help="write the figures as sorted JSON here")
    args = parser.parse_args(argv)
    if not (args.data_dir / "cold").is_dir():
        parser.error(f"{args.data_dir} has no cold/: pass --data-dir (the shared labeled data)")
    result = tfidf_cross_set(args.data_dir)
    table = markdown(result)
    print(table, end="")
    if args.out:
        args.out.write_text(table, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
