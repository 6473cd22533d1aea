"""One benchmark run: machine, peers, speed, profile, quality, memory — in that order, in one process
(memory in subprocesses) — then targets and the report."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

from redone_sdk.bundle import Bundle
from redone_sdk.inference.engine import open_backend
from redone_sdk.inference.options import InferenceOptions

from . import SCHEMA
from .breakdown import cached_prefix_length, padding_waste, prompt_token_counts, stage_breakdown
from .contenders import REFERENCE, Contender, load_sdk_contenders, peer_contender
from .flops import FLOPS_RULE, forward_flops, last_layer_avoidable, model_shape
from .machine import describe_machine, gemm_ceilings, load_average
from .memory import bundle_sizes, moderator_memory
from .peers import Bm25Peer, ProfanityCheckPeer, TfidfCosinePeer, TfidfLogRegPeer
from .peers.profanity import available as profanity_available
from .sample import speed_sample
from .settings import Settings
from .speed import MODES, add_ceiling_shares, agreement_with_reference, measure_speed
from .targets import check_targets

__all__ = ["run_benchmarks"]

log = logging.getLogger("benchmarks")


def _step(name: str, results: dict[str, Any], fn: Callable[[], Any]) -> Any:
    """Run one section; a failure is recorded in the output instead of losing the whole run."""
    started = time.perf_counter()
    log.info("%s …", name)
    try:
        value = fn()
    except Exception as exc:
        log.exception("%s failed", name)
        value = {"error": f"{type(exc).__name__}: {exc}"}
    results.setdefault("timings_s", {})[name] = round(time.perf_counter() - started, 1)
    return value


def _bundle_info(path: Any) -> dict[str, Any]:
    bundle = Bundle.load(path)
    manifest = bundle.manifest
    return {
        "path": str(bundle.path),
        "name": manifest.name,
        "version": manifest.version,
        "parameters": manifest.lineage.parameters,
        "graphs": {k: g.file for k, g in sorted(manifest.graphs.items())},
        "default_graph": manifest.default_graph,
        "checkpoint": manifest.checkpoint,
        "sha256": {name: digest[:16] for name, digest in sorted(manifest.files.items())},
    }


def run_benchmarks(settings: Settings) -> dict[str, Any]:
    started = time.perf_counter()
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "mode": settings.mode,
        "command": settings.command,
        "started_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "settings": settings.as_dict(),
        "machine": describe_machine(),
        "load_average_start": load_average(),
    }
    results["bundles"] = {
        "speed (--bundle-full)": {
            **_bundle_info(settings.bundle_full),
            "chosen_because": settings.bundle_full_source,
            "stand_in": settings.stand_in,
        },
        "quality and memory (--bundle)": {**_bundle_info(settings.bundle), "chosen_because": settings.bundle_source},
    }
    peers = _step("peers", results, lambda: _train_peers(settings))
    results["peers"] = peers.get("info", peers)
    if "speed" in settings.sections or "profile" in settings.sections:
        results["ceilings_before"] = _step("ceiling_before", results, lambda: gemm_ceilings(threads=settings.threads))
    if "speed" in settings.sections:
        results["speed"] = _step("speed", results, lambda: _speed(settings, peers))
    if "profile" in settings.sections:
        results["profile"] = _step("profile", results, lambda: _profile(settings))
    if "speed" in settings.sections or "profile" in settings.sections:
        results["ceilings_after"] = _step("ceiling_after", results, lambda: gemm_ceilings(threads=settings.threads))
    if isinstance(results.get("speed"), dict) and "results" in results["speed"]:
        add_ceiling_shares(results["speed"], results.get("ceilings_before", {}), results.get("ceilings_after", {}))
    if "quality" in settings.sections:
        results["quality"] = _step("quality", results, lambda: _quality(settings, peers))
    if "memory" in settings.sections:
        results["memory"] = _step("memory", results, lambda: _memory(settings))
    results["targets"] = check_targets(results)
    results["load_average_end"] = load_average()
    results["duration_s"] = round(time.perf_counter() - started, 1)
    results["method"] = _method_notes(settings)
    return results


def _train_peers(settings: Settings) -> dict[str, Any]:
    tfidf = TfidfLogRegPeer().fit_on_bundle_data(settings.data_dir, max_examples=settings.size("peer_train_cap"))
    relevance = [TfidfCosinePeer().fit_on_querycorr(settings.data_dir), Bm25Peer().fit_on_querycorr(settings.data_dir)]
    unavailable = {}
    profanity = None
    why = profanity_available()
    if why is None:
        profanity = ProfanityCheckPeer()
    else:
        unavailable[ProfanityCheckPeer.name] = why
    harm = [tfidf, *([profanity] if profanity else [])]
    info = {
        tfidf.name: tfidf.training,
        **{p.name: p.training for p in relevance},
        ProfanityCheckPeer.name: {"model": "pretrained (ships with the package)", "threshold": 0.5, "languages": "en"}
        if profanity
        else {"unavailable": unavailable[ProfanityCheckPeer.name]},
    }
    return {"harm": harm, "relevance": relevance, "unavailable": unavailable, "info": info}


def _speed(settings: Settings, peers: dict[str, Any]) -> dict[str, Any]:
    sample = speed_sample(settings.data_dir, settings.size("notes"))
    bundle = Bundle.load(settings.bundle_full)
    shape = model_shape(bundle)
    counts = dict(zip(sample.texts, prompt_token_counts(bundle, sample.texts), strict=True))
    prefix = cached_prefix_length(bundle)

    def flops_of(texts: list[str]) -> float:
        return forward_flops(shape, [counts[t] for t in texts], prefix)

    sdk, missing = load_sdk_contenders(
        settings.bundle_full,
        batch_size=settings.batch_size,
        threads=settings.threads,
        tuned_batch_size=settings.tuned_batch_size,
    )
    if settings.stand_in:  # the tiny model's rows carry the ratios; the shipped model's own speed is shown beside
        shipped, why_not = _shipped_contender(settings)
        sdk += shipped
        missing.update(why_not)
    contenders: list[Contender] = [*sdk, *(peer_contender(p) for p in peers.get("harm", []))]
    table = measure_speed(
        contenders,
        sample.texts,
        batch_size=settings.batch_size,
        batch1_notes=settings.size("batch1_notes"),
        rounds=settings.size("rounds"),
        flops_of=flops_of,
    )
    ratios = table["_ratios"]
    for name in ratios:
        if name.endswith(SHIPPED_SUFFIX):  # another model than the reference's: a ratio would compare models
            ratios[name] = dict.fromkeys(MODES)
    return {
        "sample": sample.describe(list(counts.values())),
        "batch_size": settings.batch_size,
        "threads": settings.threads,
        "rounds": settings.size("rounds"),
        "reference": REFERENCE,
        "modes": list(MODES),
        "contenders": {c.name: c.describe() for c in contenders},
        "unavailable": missing,
        "model_shape": shape.as_dict(),
        "useful_gflop_per_note": round(flops_of(sample.texts) / len(sample.texts) / 1e9, 5),
        "cached_prefix_tokens": prefix,
        "last_layer_avoidable_share": round(last_layer_avoidable(shape, list(counts.values())), 4),
        "results": {k: v for k, v in table.items() if not k.startswith("_")},
        "ratio_vs_reference": ratios,
        "agreement_with_reference": agreement_with_reference(sdk, sample.texts),
    }


SHIPPED_SUFFIX = " (shipped bundle)"


def _shipped_contender(settings: Settings) -> tuple[list[Contender], dict[str, str]]:
    """`onnx-int8 (shipped bundle)`: the --bundle model's default graph, timed beside the stand-in's rows, since
    that is the model users load; it has no eager baseline in this run, so no ratio."""
    from redone_sdk import Moderator

    bundle = Bundle.load(settings.bundle)
    precision = bundle.manifest.default_graph or "int8"
    name = f"onnx-{precision}{SHIPPED_SUFFIX}"
    kwargs = {"backend": "onnx", "precision": precision, "batch_size": settings.batch_size, "workers": settings.threads}
    started = time.perf_counter()
    try:
        moderator = Moderator.load(bundle, **kwargs)
    except Exception as exc:  # shown as unavailable, like the other backends
        return [], {name: f"{type(exc).__name__}: {exc}"}
    seconds = round(time.perf_counter() - started, 2)
    detail = {"bundle": str(bundle.path), "load_kwargs": kwargs, "load_seconds": seconds}
    file = str(bundle.path / bundle.manifest.graphs[precision].file)
    # its own kind: useful FLOPs, ceiling shares and agreement are counted for the stand-in's shape only
    return [Contender(name, "redone (shipped bundle)", moderator.classify_batch, [file], detail, moderator)], {}


def _profile(settings: Settings) -> dict[str, Any]:
    from .ort_tuning import (
        batching_choices,
        operator_profile,
        optimized_op_counts,
        padded_batches,
        session_variants,
        two_sessions,
    )
    from .torch_profile import torch_operator_profile, torch_threads

    sample = speed_sample(settings.data_dir, settings.size("notes"))
    bundle = Bundle.load(settings.bundle_full)
    texts = sample.texts[: settings.size("profile_notes")]
    from redone_sdk import Moderator

    lengths = prompt_token_counts(bundle, texts)
    out: dict[str, Any] = {"padding_waste": padding_waste(lengths, settings.batch_size)}
    stages = {}
    plans = {
        "onnx-int8": {"backend": "onnx", "precision": "int8"},
        "torch-eager-fp32": {"backend": "torch", "torch_dtype": "float32"},
    }
    for name, kwargs in plans.items():
        try:
            # one pass at a time (workers=1), so that each stage can be timed on its own
            options = InferenceOptions(
                batch_size=settings.batch_size, intra_op_threads=settings.threads, workers=1, **kwargs
            )
            backend = open_backend(bundle, options)
            # the Moderator must run on this very backend: a second ONNX Runtime session would bring its own
            # thread pool, whose spinning workers slow the first one down (see `two_sessions`)
            with mock.patch("redone_sdk.task_model.open_backend", lambda _b, _o, backend=backend: backend):
                moderator = Moderator(bundle, options=options)
        except Exception as exc:
            stages[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        stages[name] = stage_breakdown(
            bundle,
            moderator,
            backend,
            texts,
            batch_size=settings.batch_size,
            batch1_notes=settings.size("batch1_notes"),
            repeats=settings.size("profile_repeats"),
        )
    out["stages"] = stages

    from .breakdown import _encoder

    encoder, pad_id = _encoder(bundle)
    encoded = [e.ids for e in encoder.encode_batch([{"text": t} for t in texts])]
    bulk = padded_batches(encoded, pad_id, settings.batch_size)
    single = padded_batches(encoded[: settings.size("batch1_notes")], pad_id, 1)
    graphs = {p: bundle.path / g.file for p, g in bundle.manifest.graphs.items()}
    if "int8" in graphs:
        out["onnxruntime_variants_int8"] = session_variants(
            graphs["int8"], bulk, single, len(texts), threads=settings.threads, rounds=settings.size("ort_rounds")
        )
        out["optimized_graph_int8"] = optimized_op_counts(graphs["int8"])
        out["two_sessions_int8"] = two_sessions(
            graphs["int8"], bulk, len(texts), threads=settings.threads, rounds=settings.size("ort_rounds")
        )
        out["batching_int8_graph_notes_per_s"] = batching_choices(
            graphs["int8"],
            encoded,
            pad_id,
            batch_size=settings.batch_size,
            threads=settings.threads,
            rounds=settings.size("ort_rounds"),
        )
    out["onnxruntime_operator_profile"] = {
        p: operator_profile(g, bulk, threads=settings.threads) for p, g in sorted(graphs.items())
    }
    if bundle.manifest.checkpoint:
        out["torch_threads"] = torch_threads()
        out["torch_operator_profile"] = {}
        for dtype in ("float32", "bfloat16"):
            try:
                backend = open_backend(
                    bundle, InferenceOptions(backend="torch", torch_dtype=dtype, intra_op_threads=settings.threads)
                )
                out["torch_operator_profile"][dtype] = torch_operator_profile(backend, bulk)
            except Exception as exc:
                out["torch_operator_profile"][dtype] = {"error": f"{type(exc).__name__}: {exc}"}
    out["tokenizer"] = _tokenizer_note(encoder, texts)
    return out


def _tokenizer_note(encoder: Any, texts: list[str]) -> dict[str, Any]:
    """encode_batch (Rust, parallel) vs one encode per text: is tokenization worth batching?"""
    import os

    records = [{"text": t} for t in texts]
    start = time.perf_counter()
    encoder.encode_batch(records)
    batched = time.perf_counter() - start
    start = time.perf_counter()
    for r in records:
        encoder.encode_batch([r])
    single = time.perf_counter() - start
    return {
        "encode_batch_us_per_note": round(batched / len(texts) * 1e6, 1),
        "one_call_per_note_us_per_note": round(single / len(texts) * 1e6, 1),
        "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "(unset: enabled)"),
    }


def _quality(settings: Settings, peers: dict[str, Any]) -> dict[str, Any]:
    from .quality import BundlePredictor, check_against_evaluate_bundle, dev_sets, quality_table

    sets = dev_sets(settings.data_dir, cap=settings.size("quality_cap"))
    shipped = Bundle.load(settings.bundle)
    full = Bundle.load(settings.bundle_full)
    systems: dict[str, BundlePredictor] = {}
    files: dict[str, str] = {}
    default_precision = shipped.manifest.default_graph or "int8"
    candidates = [(settings.bundle, default_precision)]
    candidates += [(settings.bundle, p) for p in sorted(shipped.manifest.graphs)]
    if not settings.stand_in:  # the stand-in is another (tiny) model: its graphs would pass for the shipped one's
        candidates += [(settings.bundle_full, p) for p in ("int8", "fp32")]
    for path, precision in candidates:  # every graph of the shipped bundle, then what bundle-full adds
        name = f"redone-{precision}"
        if name in systems or precision not in Bundle.load(path).manifest.graphs:
            continue
        systems[name] = BundlePredictor(path, precision)
        files[name] = str(systems[name].bundle.path / (systems[name].file or ""))
    shipped_int8 = shipped.manifest.graphs.get("int8")
    full_int8 = full.manifest.graphs.get("int8")
    same_int8 = bool(
        shipped_int8 and full_int8 and shipped.manifest.files[shipped_int8.file] == full.manifest.files[full_int8.file]
    )
    harm, relevance = peers.get("harm", []), peers.get("relevance", [])
    table = quality_table(sets, systems, harm, relevance, peers.get("unavailable", {}))
    check = check_against_evaluate_bundle(settings.bundle, sets, default_precision)
    return {
        "capped_at": settings.size("quality_cap") or None,
        "systems_files": files,
        "bundle_full_int8_is_shipped_int8": same_int8,
        "checked_against_evaluate_bundle": check,
        "manifest_agreement": _manifest_agreement(shipped, table, settings.size("quality_cap")),
        "datasets": {k: v for k, v in table.items() if not k.startswith("_")},
        "int8_vs_fp32_top_label_agreement": table["_int8_vs_fp32_top_label_agreement"],
    }


def _manifest_agreement(bundle: Bundle, table: dict[str, Any], cap: int) -> dict[str, Any]:
    """The manifest's own dev metrics (written by the training pipeline on full dev sets) vs this run's."""
    if cap:
        return {"skipped": "dev sets are capped in this mode"}
    out = {}
    for key, values in bundle.manifest.metrics.items():
        if "/" not in key:
            continue
        precision, set_name = key.split("/", 1)
        row = table.get(set_name, {}).get("systems", {}).get(f"redone-{precision}")
        if row and row.get("status") == "ok" and "macro_f1" in values:
            out[key] = {"manifest_macro_f1": values["macro_f1"], "this_run": row["metrics"]["macro_f1"]}
    return out


def _memory(settings: Settings) -> dict[str, Any]:
    texts = speed_sample(settings.data_dir, settings.size("memory_notes"), seed=99).texts
    default = Bundle.load(settings.bundle).manifest.default_graph or "int8"
    runs = {f"default (shipped bundle, its default {default} graph, ONNX)": (settings.bundle, {})}
    full = Bundle.load(settings.bundle_full)
    if "fp32" in full.manifest.graphs and not settings.stand_in:
        runs["fp32 graph, ONNX (bundle-full)"] = (settings.bundle_full, {"precision": "fp32"})
    if settings.mode == "full" and full.manifest.checkpoint:
        runs["torch eager fp32 (bundle-full)"] = (settings.bundle_full, {"backend": "torch"})
    return {
        "moderator": {name: moderator_memory(path, texts, load) for name, (path, load) in runs.items()},
        "disk": {
            "bundle": bundle_sizes(settings.bundle),
            ("bundle_full (tiny stand-in)" if settings.stand_in else "bundle_full"): bundle_sizes(settings.bundle_full),
        },
    }


def _method_notes(settings: Settings) -> dict[str, str]:
    from .peers.relevance import CUTS_RULE
    from .speed import __doc__ as speed_doc

    return {
        "speed": (speed_doc or "").strip(),
        "useful_flops": FLOPS_RULE,
        "ceiling": "dense 2048² GEMM in this process, best of 5, measured before and after the speed section: fp32 "
        "numpy (OpenBLAS) — the reference of the issue's target —, bf16 torch (oneDNN/AMX) and int8 ONNX Runtime "
        "MatMulInteger. Each share divides the useful rate by the better of the two measurements of a ceiling: "
        "share_of_fp32_ceiling for every backend, share_of_own_ceiling by the ceiling of the backend's arithmetic "
        "(int8 graph → int8, bf16 → bf16, fp32 → fp32).",
        "relevance_peers": CUTS_RULE,
        "quality": "label spaces of redone_sdk.training.evaluate.evaluate_bundle; batch 64 like it",
        "memory": "fresh subprocess per configuration; see benchmarks/memory.py",
    }
