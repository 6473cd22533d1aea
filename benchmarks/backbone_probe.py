"""What the pretrained backbone buys (issue #16): bge-small-zh-v1.5 (BERT, converted from the pinned Maven jar by
`redone_sdk.training.pretrained`) fine-tuned as a plain classifier, against char 1–3-gram TF-IDF + logistic
regression (`redone_sdk.training.baselines.TfidfLogReg`) trained on the same examples in the same run.

Two checks per setting (N training examples, E epochs):

- `cross_set`: train on COLD + Davidson train parts (a seeded sample of N, stratified by source and label), test
  on SWSR dev, a set neither saw (its sexism counts as harmful, like `label_space("swsr_dev")`); COLD dev and
  Davidson dev of the same models are reported too.
- `in_domain`: train on N examples of COLD train, test on COLD dev.

Model: `BertForSequenceClassification` loaded from the converted checkpoint (the encoder's weights; the pooler
over `[CLS]` and the linear head are new), four labels (the harm taxonomy safe / offensive / hate / sexism), the
jar's WordPiece with a lower-casing normalizer (default: curly quotes and dashes folded to ASCII, NFKC, then
`BertNormalizer(lowercase=True)`, the `bge-folded` variant of benchmarks/results/tokenization.md), AdamW, linear
warm-up (10 %) and decay, fp32 on the CPU with `--threads` torch threads. Figures are
`redone_sdk.training.evaluate.harm_set_metrics` in each set's label space, as `redone train eval` and
benchmarks/quality.py score them. The shipped bundle's figures on the same dev parts are added for reference
(it was trained on all three train parts, so its SWSR figure is not a cross-set one).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from redone_sdk.labeled_data import Example

from redone_sdk.bundle import sha256_file

__all__ = [
    "CHECKS",
    "NORMALIZERS",
    "BertProbe",
    "build_tokenizer",
    "bundle_reference",
    "render_markdown",
    "run",
    "stratified_sample",
    "main",
]

SOURCE = "bge-small-zh-v1.5"
# check -> (train sources, dev sets scored, the set no training example came from or None)
CHECKS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str | None]] = {
    "cross_set": (("cold", "davidson"), ("swsr_dev", "cold_dev", "davidson_dev"), "swsr_dev"),
    "in_domain": (("cold",), ("cold_dev",), None),
}
NORMALIZERS = ("lower", "nfkc-lower", "folded")
EVAL_BATCH = 64
BATCH1_NOTES = 256  # notes timed one at a time (the first of COLD dev)


def _harm_labels() -> list[str]:
    from redone_sdk.labeled_data import HARM_LABELS

    return list(HARM_LABELS)


def stratified_sample(examples: Sequence[Example], n: int, seed: int) -> list[Example]:
    """A seeded sample of `n` examples with each (source, label) group's share kept (largest remainders); all of
    them, in their order, when `n` is 0 or not below their number."""
    if n <= 0 or n >= len(examples):
        return list(examples)
    groups: dict[tuple[str, str], list[Example]] = defaultdict(list)
    for example in examples:
        groups[(example.source, example.label)].append(example)
    keys = sorted(groups)
    exact = {k: n * len(groups[k]) / len(examples) for k in keys}
    counts = {k: math.floor(exact[k]) for k in keys}
    for k in sorted(keys, key=lambda k: (counts[k] - exact[k], k))[: n - sum(counts.values())]:
        counts[k] += 1
    rng = random.Random(seed)
    picked = [e for k in keys for e in rng.sample(groups[k], counts[k])]
    rng.shuffle(picked)
    return picked


def build_tokenizer(tokenizer_path: Path, normalizer: str, max_length: int) -> Tokenizer:
    """The jar's WordPiece with a lower-casing normalizer (benchmarks/tokenization.py's variants), truncating to
    `max_length` tokens including `[CLS]` and `[SEP]`."""
    from tokenizers import Tokenizer

    from redone_sdk.benchmarks.tokenization import lowercased, nfkc_lowercased, quotes_folded

    variants = {"lower": lowercased, "nfkc-lower": nfkc_lowercased, "folded": quotes_folded}
    if normalizer not in variants:
        raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
    tokenizer = variants[normalizer](Tokenizer.from_file(str(tokenizer_path)))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.no_padding()
    return tokenizer


def _length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Training batches of similar lengths (less padding): shuffle, sort each run of 50 batches' worth by length,
    cut it into batches, shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        run_ = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [run_[i : i + batch_size] for i in range(0, len(run_), batch_size)]
    rng.shuffle(batches)
    return batches


class BertProbe:
    """`BertForSequenceClassification` over the harm taxonomy from a converted checkpoint, trained and run by a
    plain torch loop (dynamic padding; training batches bucketed by length, evaluation batches sorted by it)."""

    def __init__(self, checkpoint: Path, tokenizer: Tokenizer, *, seed: int = 13) -> None:
        import torch
        from transformers import BertForSequenceClassification
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()  # the new pooler and head are checked below, not warned about
        self.labels = _harm_labels()
        self.tokenizer = tokenizer
        torch.manual_seed(seed)
        model, info = BertForSequenceClassification.from_pretrained(
            str(checkpoint),
            num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)),
            label2id={label: i for i, label in enumerate(self.labels)},
            local_files_only=True,
            use_safetensors=True,
            output_loading_info=True,
        )
        new = {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"}
        if set(info["missing_keys"]) - new or info["unexpected_keys"] or info["mismatched_keys"]:
            raise RuntimeError(f"{checkpoint} is not a converted BertModel checkpoint: {info}")
        self.model = model
        self.seed = seed
        self.config = {
            "layers": model.config.num_hidden_layers,
            "hidden": model.config.hidden_size,
            "vocab": model.config.vocab_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "new_parameters": sorted(info["missing_keys"]),
        }

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    @staticmethod
    def _tensors(rows: Sequence[Sequence[int]]) -> tuple[Any, Any]:
        import torch

        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids, mask

    def fit(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        epochs: int,
        lr: float,
        batch_size: int,
        log: Any = None,
    ) -> dict[str, Any]:
        import torch
        from transformers import get_linear_schedule_with_warmup

        started = time.perf_counter()
        encoded = self._encode(texts)
        targets = [self.labels.index(label) for label in labels]
        steps_per_epoch = math.ceil(len(encoded) / batch_size)
        total = steps_per_epoch * epochs
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01)
        schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * total), total)
        rng = random.Random(self.seed)
        losses: list[float] = []
        self.model.train()
        for epoch in range(epochs):
            for chunk in _length_batches([len(r) for r in encoded], batch_size, rng):
                ids, mask = self._tensors([encoded[i] for i in chunk])
                out = self.model(input_ids=ids, attention_mask=mask, labels=torch.tensor([targets[i] for i in chunk]))
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(float(out.loss.detach()))
                if log is not None and len(losses) % 25 == 0:
                    rate = len(losses) / (time.perf_counter() - started)
                    log(f"  epoch {epoch + 1} step {len(losses)}/{total}, loss {losses[-1]:.3f}, {rate:.2f} steps/s")
        self.model.eval()
        tail = losses[-max(1, len(losses) // 10) :]
        return {
            "examples": len(encoded),
            "epochs": epochs,
            "steps": len(losses),
            "batch_size": batch_size,
            "lr": lr,
            "tokens_mean": round(sum(len(r) for r in encoded) / max(1, len(encoded)), 1),
            "loss_first": round(losses[0], 4) if losses else None,
            "loss_last_tenth": round(sum(tail) / len(tail), 4) if losses else None,
            "seconds": round(time.perf_counter() - started, 1),
        }

    def predict(self, texts: Sequence[str], batch_size: int = EVAL_BATCH) -> list[str]:
        import torch

        encoded = self._encode(texts)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out: list[str] = [""] * len(encoded)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                ids, mask = self._tensors([encoded[i] for i in chunk])
                logits = self.model(input_ids=ids, attention_mask=mask).logits
                for i, top in zip(chunk, logits.argmax(dim=-1).tolist(), strict=True):
                    out[i] = self.labels[top]
        return out


def _dev_sets(data_dir: Path, names: Sequence[str], cap: int) -> dict[str, list[Example]]:
    from redone_sdk.labeled_data import harm_examples

    sets = {name: harm_examples(data_dir, name.removesuffix("_dev"), "dev") for name in names}
    if cap:
        rng = random.Random(7)
        sets = {k: (rng.sample(v, cap) if len(v) > cap else v) for k, v in sets.items()}
    return sets


def _scores(set_name: str, examples: Sequence[Example], predicted: Sequence[str]) -> dict[str, Any]:
    from redone_sdk.training.evaluate import harm_set_metrics, label_space

    labels = _harm_labels()
    metrics = harm_set_metrics(set_name, [e.label for e in examples], predicted, labels)
    space, _ = label_space(set_name, labels)
    return {"macro_f1": metrics["macro_f1"], "space": space, "n": len(examples), "metrics": metrics}


def bundle_reference(bundle_dir: Path, sets: dict[str, list[Example]]) -> dict[str, Any]:
    """The bundle's default graph on the dev parts, batched and scored as `evaluate_bundle` does
    (benchmarks/quality.py's `BundlePredictor`)."""
    from redone_sdk.benchmarks.quality import BundlePredictor

    predictor = BundlePredictor(bundle_dir, None)
    manifest = predictor.bundle.manifest
    out: dict[str, Any] = {
        "name": manifest.name,
        "version": manifest.version,
        "graph": predictor.precision,
        "manifest_sha256": sha256_file(bundle_dir / "manifest.json"),
        "graph_sha256": sha256_file(bundle_dir / predictor.file) if predictor.file else None,
        "trained_on": "train parts of cold, swsr and davidson (so swsr_dev is NOT a cross-set figure for it)",
        "sets": {},
    }
    for name, examples in sets.items():
        started = time.perf_counter()
        predicted, _ = predictor.predict(examples)
        row = _scores(name, examples, predicted)
        row["notes_per_s"] = round(len(examples) / (time.perf_counter() - started), 1)
        out["sets"][name] = row
    return out


def _one_check(
    name: str,
    data_dir: Path,
    dev: dict[str, list[Example]],
    checkpoint: Path,
    tokenizer: Tokenizer,
    *,
    train_examples: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    log: Any,
) -> dict[str, Any]:
    from redone_sdk.labeled_data import harm_examples
    from redone_sdk.training.baselines import TfidfLogReg

    sources, scored, held_out = CHECKS[name]
    pool = [e for source in sources for e in harm_examples(data_dir, source, "train")]
    train = stratified_sample(pool, train_examples, seed)
    texts, labels = [e.record["text"] for e in train], [e.label for e in train]
    log(f"{name}: {len(train)} of {len(pool)} examples from {'+'.join(sources)}")

    started = time.perf_counter()
    tfidf = TfidfLogReg().fit(texts, labels)
    tfidf_row: dict[str, Any] = {"seconds": round(time.perf_counter() - started, 1), "sets": {}}
    for set_name in scored:
        examples = dev[set_name]
        tfidf_row["sets"][set_name] = _scores(set_name, examples, tfidf.predict([e.record["text"] for e in examples]))

    probe = BertProbe(checkpoint, tokenizer, seed=seed)
    training = probe.fit(texts, labels, epochs=epochs, lr=lr, batch_size=batch_size, log=log)
    loss = f"{training['loss_first']} -> {training['loss_last_tenth']}"
    log(f"{name}: BERT trained in {training['seconds']} s, loss {loss}")
    bert_row: dict[str, Any] = {"model": probe.config, "training": training, "sets": {}}
    notes, seconds = 0, 0.0
    for set_name in scored:
        examples = dev[set_name]
        started = time.perf_counter()
        predicted = probe.predict([e.record["text"] for e in examples])
        seconds += time.perf_counter() - started
        notes += len(examples)
        bert_row["sets"][set_name] = _scores(set_name, examples, predicted)
    bert_row["notes_per_s_batch64"] = round(notes / seconds, 1) if seconds else None
    if name == "cross_set":
        head = [e.record["text"] for e in dev["cold_dev"][:BATCH1_NOTES]]
        started = time.perf_counter()
        for text in head:
            probe.predict([text], batch_size=1)
        bert_row["notes_per_s_batch1"] = round(len(head) / (time.perf_counter() - started), 1)
    delta = {s: round(bert_row["sets"][s]["macro_f1"] - tfidf_row["sets"][s]["macro_f1"], 4) for s in scored}
    log(
        f"{name}: macro-F1 BERT / TF-IDF "
        + ", ".join(
            f"{s} {bert_row['sets'][s]['macro_f1']:.3f} / {tfidf_row['sets'][s]['macro_f1']:.3f}" for s in scored
        )
    )
    return {
        "train_sources": list(sources),
        "held_out_set": held_out,
        "train_pool": len(pool),
        "train_examples": len(train),
        "train_labels": dict(sorted(Counter(f"{e.source}:{e.label}" for e in train).items())),
        "bert": bert_row,
        "tfidf": tfidf_row,
        "delta_macro_f1": delta,
    }


def run(
    data_dir: Path,
    checkpoint: Path,
    *,
    train_examples: int = 6000,
    epochs: int = 1,
    max_length: int = 128,
    lr: float = 5e-5,
    batch_size: int = 32,
    normalizer: str = "folded",
    threads: int = 2,
    seed: int = 13,
    checks: Sequence[str] = tuple(CHECKS),
    dev_cap: int = 0,
    bundle_dir: Path | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Both checks for one setting; `bundle_dir` adds that bundle's figures on the same dev parts."""
    import torch

    from redone_sdk.benchmarks.machine import describe_machine, load_average

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    load_before = load_average()
    torch.set_num_threads(threads)
    lineage_path = checkpoint / "PRETRAINED.json"
    lineage = json.loads(lineage_path.read_text(encoding="utf-8")) if lineage_path.is_file() else {}
    tokenizer = build_tokenizer(checkpoint / "tokenizer.json", normalizer, max_length)
    names = sorted({s for c in checks for s in CHECKS[c][1]})
    dev = _dev_sets(data_dir, names, dev_cap)
    setting = {
        "train_examples": train_examples,
        "epochs": epochs,
        "max_length": max_length,
        "lr": lr,
        "batch_size": batch_size,
        "normalizer": normalizer,
        "torch_threads": threads,
        "seed": seed,
        "dev_cap": dev_cap,
    }
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "data_dir": str(data_dir),
        "backbone": {
            "source": lineage.get("source", SOURCE),
            "maven": lineage.get("maven"),
            "jar_sha256": lineage.get("jar_sha256"),
            "num_layers": lineage.get("num_layers"),
            "tokenizer_sha256": sha256_file(checkpoint / "tokenizer.json"),
        },
        "dev_sets": {k: len(v) for k, v in dev.items()},
        "runs": [{"setting": setting, "checks": {}}],
        "machine": {k: v for k, v in describe_machine().items() if k != "cpu_flags"},
    }
    for name in checks:
        report["runs"][0]["checks"][name] = _one_check(
            name,
            data_dir,
            dev,
            checkpoint,
            tokenizer,
            train_examples=train_examples,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            log=log,
        )
    report["runs"][0]["load_average"] = {"before": load_before, "after_training": load_average()}
    if bundle_dir is not None:
        report["bundle"] = bundle_reference(bundle_dir, dev)
    return report


def _f(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:+.1f}"


def render_markdown(report: dict[str, Any]) -> str:
    """The figures as Markdown tables (macro-F1; deltas in points)."""
    lines = []
    for run_ in report["runs"]:
        s = run_["setting"]
        lines.append(
            f"**N = {s['train_examples']}, {s['epochs']} epoch(s)**, max_length {s['max_length']}, lr {s['lr']}, "
            f"batch {s['batch_size']}, normalizer `{s['normalizer']}`, {s['torch_threads']} torch threads, "
            f"seed {s['seed']}"
        )
        lines += ["", "| check | trained on (examples) | dev set | BERT | TF-IDF + LR | Δ (points) |"]
        lines.append("|---|---|---|---|---|---|")
        for name, check in run_["checks"].items():
            trained = f"{'+'.join(check['train_sources'])} ({check['train_examples']})"
            for set_name, delta in check["delta_macro_f1"].items():
                tag = " (cross-set)" if set_name == check["held_out_set"] else ""
                bert = check["bert"]["sets"][set_name]["macro_f1"]
                tfidf = check["tfidf"]["sets"][set_name]["macro_f1"]
                lines.append(f"| {name} | {trained} | {set_name}{tag} | {_f(bert)} | {_f(tfidf)} | {_signed(delta)} |")
        lines += ["", "| check | BERT train s | steps | loss first → last tenth | TF-IDF train s | notes/s b64 | b1 |"]
        lines.append("|---|---|---|---|---|---|---|")
        for name, check in run_["checks"].items():
            t = check["bert"]["training"]
            lines.append(
                f"| {name} | {t['seconds']} | {t['steps']} | {t['loss_first']} → {t['loss_last_tenth']} | "
                f"{check['tfidf']['seconds']} | {check['bert']['notes_per_s_batch64']} | "
                f"{check['bert'].get('notes_per_s_batch1', '—')} |"
            )
        lines.append("")
    bundle = report.get("bundle")
    if bundle:
        lines.append(
            f"Shipped bundle {bundle['name']} {bundle['version']} ({bundle['graph']} graph; trained on the train parts "
            "of all three sets, so its SWSR figure is **not** cross-set):"
        )
        lines += ["", "| dev set | macro-F1 |", "|---|---|"]
        lines += [f"| {k} | {_f(v['macro_f1'])} |" for k, v in bundle["sets"].items()]
        lines.append("")
    return "\n".join(lines) + "\n"


def _checkpoint(args: argparse.Namespace) -> Path:
    if args.checkpoint is not None:
        return args.checkpoint
    from redone_sdk.training.pretrained import cache_root, convert, fetch, get_source

    source = get_source(SOURCE)
    layers = args.num_layers or 4
    out = cache_root() / f"{source.name}-converted-{layers}"
    if not (out / "PRETRAINED.json").is_file():
        convert(source, out, num_layers=args.num_layers, fetched=fetch(source))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the probe, print the Markdown tables, and write the JSON when asked."""
    from redone_sdk.bundle import default_bundle_path
    from redone_sdk.labeled_data import default_data_dir

    parser = argparse.ArgumentParser(prog="python -m redone_sdk.benchmarks.backbone_probe", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=None, help="Shared data (default: $REDONE_DATA_DIR).")
    parser.add_argument("--train-examples", type=int, default=6000, help="N per check (0: all). Default 6000.")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=128, help="Tokens per note incl. [CLS]/[SEP].")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--normalizer", choices=NORMALIZERS, default="folded")
    parser.add_argument("--threads", type=int, default=2, help="torch threads.")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--checks", nargs="+", choices=tuple(CHECKS), default=list(CHECKS))
    parser.add_argument("--dev-cap", type=int, default=0, help="Score a seeded sample of at most this many per set.")
    parser.add_argument("--checkpoint", type=Path, default=None, help="A converted checkpoint (default: convert).")
    parser.add_argument("--num-layers", type=int, default=None, help="Keep the first k layers when converting.")
    parser.add_argument("--bundle", type=Path, default=None, help="Reference bundle (default: the shipped one).")
    parser.add_argument("--no-bundle", action="store_true", help="Leave the bundle's reference figures out.")
    parser.add_argument("--json", type=Path, default=None, help="Write every figure to this JSON file.")
    parser.add_argument(
        "--append", action="store_true", help="Add this setting's runs to the --json file's (same data and backbone)."
    )
    args = parser.parse_args(argv)
    previous = None
    if args.append and args.json and args.json.is_file():
        previous = json.loads(args.json.read_text(encoding="utf-8"))
    bundle_dir = None if args.no_bundle or (previous and "bundle" in previous) else args.bundle or default_bundle_path()
    report = run(
        args.data_dir or default_data_dir(),
        _checkpoint(args),
        train_examples=args.train_examples,
        epochs=args.epochs,
        max_length=args.max_length,
        lr=args.lr,
        batch_size=args.batch_size,
        normalizer=args.normalizer,
        threads=args.threads,
        seed=args.seed,
        checks=args.checks,
        dev_cap=args.dev_cap,
        bundle_dir=bundle_dir,
    )
    if previous is not None:
        for key in ("data_dir", "backbone", "dev_sets"):
            if previous.get(key) != report[key]:
                raise SystemExit(f"--append: {key} differs from {args.json}'s; write another file")
        report = {**previous, "runs": [*previous["runs"], *report["runs"]], "date": report["date"]}
    sys.stdout.write(render_markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
