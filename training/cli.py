"""`redone train …`: the pipeline's command line (also `python -m redone_sdk.training`)."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from redone_sdk.training.config import add_config_arguments, config_from_args

__all__ = ["register", "main"]


def _run_all(args: argparse.Namespace) -> int:
    from redone_sdk.training.pipeline import run_all

    bundle = run_all(config_from_args(args))
    if args.install_to:
        target = Path(args.install_to)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(bundle, target)
        print(f"bundle copied to {target}")
    print(bundle)
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from redone_sdk.training.evaluate import evaluate_bundle
    from redone_sdk.training.pipeline import load_data

    _, dev = load_data(config_from_args(args))
    metrics = evaluate_bundle(Path(args.bundle), dev, precision=args.precision, backend=args.backend)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train` with its own subcommands to the `redone` CLI."""
    train = subparsers.add_parser("train", help="Train, evaluate and export model bundles (needs the [train] extra).")
    steps = train.add_subparsers(dest="step", required=True, metavar="STEP")
    run_all = steps.add_parser("all", help="Tokenizer, model, fine-tuning, export, evaluation, bundle.")
    add_config_arguments(run_all)
    run_all.add_argument("--install-to", default=None, help="Also copy the finished bundle to this folder.")
    run_all.set_defaults(handler=_run_all)
    evaluate = steps.add_parser("eval", help="Dev-set metrics of an existing bundle.")
    add_config_arguments(evaluate)
    evaluate.add_argument("--bundle", required=True, help="Bundle directory.")
    evaluate.add_argument("--precision", choices=["fp32", "int8"], default=None)
    evaluate.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto")
    evaluate.set_defaults(handler=_run_eval)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m redone_sdk.training")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
