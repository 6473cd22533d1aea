"""`redone replay decisions`: how often an old and a new bundle agree with the review console's reviewers on the
notes a `redone train feedback` folder held out of training, per category, with a paired test.

Each note is scored by both bundles and labelled by a policy (`--policy`, the one the service queued the notes
with; default: each bundle's own), as the console shows the model's label. Agreement = the bundle's label
is the reviewers' majority label. The two bundles are compared on the same notes: McNemar's exact test on the
notes where exactly one of them agrees (a two-sided binomial test, scipy), and a paired bootstrap interval of the
difference in agreement. Reads only the feedback folder's files; never the database.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redone_sdk.errors import RedOneError

__all__ = ["SPLITS", "Comparison", "add_command", "compare", "read_rows"]

SPLITS = {"holdout": ("holdout.jsonl",), "train": ("sft.jsonl",), "all": ("holdout.jsonl", "sft.jsonl")}


class DecisionsInputError(RedOneError):
    """The feedback folder is missing, incomplete or holds no notes of the split asked for."""


@dataclass
class Tally:
    """Notes of one category (or all): how many, and how many each bundle agrees on."""

    notes: int = 0
    old: int = 0
    new: int = 0

    def rates(self) -> tuple[float | None, float | None]:
        return (self.old / self.notes, self.new / self.notes) if self.notes else (None, None)


@dataclass
class Comparison:
    """Old vs new bundle on one split of a feedback folder."""

    split: str
    old_bundle: str
    new_bundle: str
    total: Tally = field(default_factory=Tally)
    by_category: dict[str, Tally] = field(default_factory=dict)
    only_old: int = 0  # notes where only the old bundle agrees
    only_new: int = 0
    mcnemar_p: float = 1.0
    difference_interval: tuple[float, float] = (0.0, 0.0)
    confidence: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        def tally(t: Tally) -> dict[str, Any]:
            old, new = t.rates()
            return {"notes": t.notes, "old_agreed": t.old, "new_agreed": t.new, "old_rate": old, "new_rate": new}

        return {
            "split": self.split,
            "old_bundle": self.old_bundle,
            "new_bundle": self.new_bundle,
            "total": tally(self.total),
            "by_category": {k: tally(v) for k, v in sorted(self.by_category.items())},
            "only_old_agrees": self.only_old,
            "only_new_agrees": self.only_new,
            "mcnemar_exact_p": self.mcnemar_p,
            "difference_interval": list(self.difference_interval),
            "confidence": self.confidence,
        }

    def table(self) -> str:
        """A Markdown table: agreement per reviewers' category and overall, then the paired test."""
        lines = [
            f"Agreement with the reviewers on the {self.split} notes (old: {self.old_bundle}, new: {self.new_bundle})",
            "",
            "| category | notes | old agrees | new agrees | old rate | new rate |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        rows = [*sorted(self.by_category.items()), ("all", self.total)]
        for name, t in rows:
            old, new = t.rates()
            lines.append(f"| {name} | {t.notes} | {t.old} | {t.new} | {_rate(old)} | {_rate(new)} |")
        low, high = self.difference_interval
        lines += [
            "",
            f"Only the old agrees: {self.only_old}; only the new: {self.only_new}; McNemar exact p = "
            f"{self.mcnemar_p:.4g}; new - old agreement {self.confidence:.0%} paired-bootstrap interval "
            f"[{low:+.3f}, {high:+.3f}]",
        ]
        return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def read_rows(folder: str | Path, split: str) -> list[dict[str, Any]]:
    """The notes of a split: note id, text and the reviewers' label (`label`)."""
    folder = Path(folder)
    if not (folder / "manifest.json").is_file():
        raise DecisionsInputError(f"{folder} is not a feedback folder (no manifest.json); run `redone train feedback`")
    rows: list[dict[str, Any]] = []
    for name in SPLITS[split]:
        path = folder / name
        if not path.is_file():
            raise DecisionsInputError(f"{path} is missing")
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                text = row.get("text", row.get("fields", {}).get("text"))
                rows.append({"note_id": row["note_id"], "text": text, "label": row["label"]})
    if not rows:
        raise DecisionsInputError(f"{folder} holds no {split} notes (was it exported with --holdout 0?)")
    return rows


def compare(
    rows: list[dict[str, Any]],
    old_labels: list[str],
    new_labels: list[str],
    *,
    split: str = "holdout",
    old_bundle: str = "old",
    new_bundle: str = "new",
    bootstrap: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Tally agreement of both bundles' labels with the reviewers' and test the paired difference."""
    import numpy as np
    from scipy.stats import binomtest

    result = Comparison(split, old_bundle, new_bundle, confidence=confidence)
    old_ok = np.array([o == r["label"] for o, r in zip(old_labels, rows, strict=True)], dtype=float)
    new_ok = np.array([n == r["label"] for n, r in zip(new_labels, rows, strict=True)], dtype=float)
    for row, old, new in zip(rows, old_ok, new_ok, strict=True):
        for tally in (result.total, result.by_category.setdefault(row["label"], Tally())):
            tally.notes += 1
            tally.old += int(old)
            tally.new += int(new)
    result.only_old = int(((old_ok == 1) & (new_ok == 0)).sum())
    result.only_new = int(((old_ok == 0) & (new_ok == 1)).sum())
    discordant = result.only_old + result.only_new
    result.mcnemar_p = float(binomtest(result.only_new, discordant, 0.5).pvalue) if discordant else 1.0
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(rows), size=(bootstrap, len(rows)))
        differences = (new_ok[picks] - old_ok[picks]).mean(axis=1)
        tail = (1 - confidence) / 2
        result.difference_interval = (float(np.quantile(differences, tail)), float(np.quantile(differences, 1 - tail)))
    else:
        point = float((new_ok - old_ok).mean())
        result.difference_interval = (point, point)
    return result


def _labels(bundle: str, texts: list[str], args: argparse.Namespace) -> list[str]:
    from redone_sdk.inference.options import options_from_args
    from redone_sdk.moderator import Moderator

    moderator = Moderator.load(bundle, policy=args.policy, options=options_from_args(args))
    return [result.label for result in moderator.classify_batch(texts)]


def _run(args: argparse.Namespace) -> int:
    if not 0 < args.confidence < 1:
        raise DecisionsInputError(f"--confidence must be in (0, 1), got {args.confidence}")
    rows = read_rows(args.feedback, args.split)
    texts = [row["text"] for row in rows]
    result = compare(
        rows,
        _labels(args.old, texts, args),
        _labels(args.new, texts, args),
        split=args.split,
        old_bundle=args.old,
        new_bundle=args.new,
        bootstrap=args.bootstrap,
        confidence=args.confidence,
        seed=args.seed,
    )
    print(result.table())
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add `decisions` to `redone replay`'s commands."""
    from redone_sdk.inference.options import add_inference_args

    parser = commands.add_parser(
        "decisions",
        help="Agreement of an old and a new bundle with the review console's reviewers on held-out decisions.",
        description="Score the notes of a `redone train feedback` folder (default: its hold-out part, never "
        "trained on) with both bundles; print agreement with the reviewers per category, McNemar's exact test "
        "and a paired-bootstrap interval of the difference.",
    )
    parser.add_argument("--feedback", required=True, help="Folder written by `redone train feedback`.")
    parser.add_argument("--old", required=True, help="The bundle before the feedback round (folder or name).")
    parser.add_argument("--new", required=True, help="The bundle after it.")
    parser.add_argument(
        "--split", choices=sorted(SPLITS), default="holdout", help="Notes to compare on (train: those trained on)."
    )
    parser.add_argument(
        "--policy",
        default=None,
        help="Policy file whose labels are compared (the one the service queued the notes with; default: each "
        "bundle's own policy).",
    )
    parser.add_argument("--bootstrap", type=int, default=2000, help="Paired bootstrap replicates (0: no interval).")
    parser.add_argument("--confidence", type=float, default=0.95, help="Interval level.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the bootstrap.")
    parser.add_argument("--json", default=None, help="Also write the figures to this JSON file.")
    add_inference_args(parser, batch_size_default=32)
    parser.set_defaults(replay_handler=_run)
