"""Outputs of a run: `<name>.json` (everything), `<name>.md` (the tables), and a summary on stdout."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["failed_sections", "write_reports", "render_markdown", "print_summary", "table"]


def failed_sections(value: Any, path: str = "") -> list[str]:
    """The path of every `error` key anywhere in a results tree (a section that failed records one, not raises)."""
    if isinstance(value, dict):
        found = [path] if "error" in value else []
        return found + [e for k, v in value.items() for e in failed_sections(v, f"{path}/{k}")]
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in failed_sections(v, f"{path}[{i}]")]
    return []


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "—"
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(value: Any) -> str | None:
    return f"{100 * value:.1f} %" if isinstance(value, int | float) else None


def _row_models(results: dict[str, Any]) -> dict[str, str]:
    """Which model each speed row measured: the speed bundle (or its tiny stand-in), the shipped bundle, a peer."""
    speed, bundles = results.get("speed", {}), results.get("bundles", {})
    full = bundles.get("speed (--bundle-full)", {})
    full_label = "tiny stand-in" if full.get("stand_in") else "bundle-full"
    out = {}
    for name, contender in speed.get("contenders", {}).items():
        if contender.get("kind") == "peer":
            out[name] = "peer"
        elif contender.get("bundle") and contender["bundle"] != full.get("path"):
            out[name] = "shipped (--bundle)"
        else:
            out[name] = full_label
    return out


def _speed_rows(speed: dict[str, Any], models: dict[str, str] | None = None) -> list[list[Any]]:
    rows = []
    for name, modes in speed.get("results", {}).items():
        ratio = speed.get("ratio_vs_reference", {}).get(name, {})
        b1, bt, bulk = modes["batch1"], modes["batched"], modes["bulk"]
        rows.append(
            [
                name,
                (models or {}).get(name),
                b1["notes_per_s"],
                b1.get("latency_ms", {}).get("p50"),
                b1.get("latency_ms", {}).get("p99"),
                bt["notes_per_s"],
                bt.get("latency_ms", {}).get("p50"),
                bt.get("latency_ms", {}).get("p99"),
                bulk["notes_per_s"],
                _ratio_cell(ratio),
                bulk.get("useful_gflops"),
                _pct(bulk.get("share_of_fp32_ceiling")),
                _pct(bulk.get("share_of_own_ceiling")),
            ]
        )
    return rows


def _ratio_cell(ratio: dict[str, Any]) -> str | None:
    """`b1× / batched× / bulk×`, or None (shown —) for a row with no same-model eager baseline."""
    if all(ratio.get(mode) is None for mode in ("batch1", "batched", "bulk")):
        return None
    return f"{ratio.get('batch1')}× / {ratio.get('batched')}× / {ratio.get('bulk')}×"


SPEED_HEADERS = [
    "system",
    "model",
    "batch-1 notes/s",
    "p50 ms",
    "p99 ms",
    "batched notes/s",
    "p50 ms",
    "p99 ms",
    "bulk notes/s",
    "× eager fp32 (b1 / batched / bulk)",
    "useful GFLOP/s (bulk)",
    "of fp32 ceiling",
    "of own-precision ceiling",
]


def _quality_sections(quality: dict[str, Any]) -> list[str]:
    out = []
    for set_name, data in quality.get("datasets", {}).items():
        space = data["space"]
        headers = ["system", "accuracy", "macro-F1", *(f"P/R {label}" for label in space)]
        rows = []
        for system, row in data["systems"].items():
            if row["status"] != "ok":
                rows.append([system, "n/a", "n/a", f"n/a: {row['reason']}", *([""] * (len(space) - 1))])
                continue
            m = row["metrics"]
            rows.append(
                [
                    system,
                    m["accuracy"],
                    m["macro_f1"],
                    *(f"{m[f'precision/{label}']:.3f} / {m[f'recall/{label}']:.3f}" for label in space),
                ]
            )
        title = f"### {set_name} — {data['language']}, {data['n']} records"
        out.append(f"{title}\n\n{data['what']}\n\n{table(headers, rows)}")
    return out


def _mem_rows(memory: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, m in memory.get("moderator", {}).items():
        if "error" in m:
            rows.append([name, m["error"], None, None, None, None])
            continue
        rows.append(
            [
                name,
                m["after_import_mb"],
                m["loaded_mb"],
                m["model_mb"],
                m["peak_while_classifying_mb"],
                m["notes"],
            ]
        )
    return rows


MEMORY_HEADERS = [
    "configuration",
    "RSS after import MB",
    "RSS loaded MB",
    "model MB",
    "peak while classifying MB",
    "notes",
]


DISK_HEADERS = ["bundle", "path", "total", "int8 graph", "fp32 graph", "checkpoint", "generation graph", "tokenizer"]


def _disk_rows(disk: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            role,
            d["path"],
            d["total_mb"],
            d.get("graph_int8_mb"),
            d.get("graph_fp32_mb"),
            d.get("checkpoint_mb"),
            d.get("generation_graph_mb"),
            d.get("tokenizer_mb"),
        ]
        for role, d in disk.items()
    ]


def _profile_sections(profile: dict[str, Any]) -> list[str]:
    out = []
    waste = profile.get("padding_waste")
    if waste:
        out.append(
            "Padding waste (share of computed token positions that are padding): "
            + ", ".join(f"{k} {_pct(v)}" for k, v in waste.items())
        )
    for name, modes in profile.get("stages", {}).items():
        if "error" in modes:
            out.append(f"Stages of {name}: {modes['error']}")
            continue
        stages = list(next(iter(modes.values()))["share"])
        rows = [
            [
                mode,
                data["ms_per_1000_notes"]["sum_of_stages"],
                data["ms_per_1000_notes"]["classify_batch_itself"],
                *(_pct(data["share"][s]) for s in stages),
            ]
            for mode, data in modes.items()
        ]
        out.append(
            f"Stages of `classify_batch`, {name}, one pass at a time (ms per 1,000 notes, share of the call):\n\n"
            + table(["mode", "stages ms/1k notes", "classify_batch ms/1k", *stages], rows)
        )
    variants = profile.get("onnxruntime_variants_int8")
    if isinstance(variants, dict) and "one_pass" in variants:
        rows = [
            [
                name,
                v["bulk_graph_notes_per_s"],
                v["bulk_vs_one_pass"],
                v["batch1_graph_ms_per_note"],
                v["batch1_vs_one_pass"],
            ]
            for name, v in variants.items()
        ]
        out.append(
            "ONNX Runtime int8 session variants (graph time only, same padded batches; `one_pass`: one pass at a "
            "time on the benchmark's threads; `parallel_passes`: the SDK's default, one-thread passes side by "
            "side):\n\n" + table(["variant", "bulk notes/s", "× one_pass", "batch-1 ms/note", "× one_pass"], rows)
        )
    batching = profile.get("batching_int8_graph_notes_per_s")
    if isinstance(batching, dict) and "error" not in batching:
        columns = list(batching)
        plans = list(next(iter(batching.values())))
        out.append(
            "Other ways to batch the same notes (int8 graph, graph time only, notes/s):\n\n"
            + table(["batching", *columns], [[plan, *(batching[c][plan] for c in columns)] for plan in plans])
        )
    two = profile.get("two_sessions_int8")
    if isinstance(two, dict) and "error" not in two:
        out.append(
            "Two ONNX Runtime sessions in one process taking turns (int8 graph, graph notes/s): "
            + ", ".join(f"{k} {v}" for k, v in two.items())
            + "."
        )
    optimized = profile.get("optimized_graph_int8")
    if isinstance(optimized, dict) and "ORT_ENABLE_ALL" in optimized:
        out.append(
            "int8 graph as ONNX Runtime runs it: "
            + "; ".join(
                f"{level}: {v['nodes']} nodes ({', '.join(f'{op} {n}' for op, n in list(v['ops'].items())[:8])})"
                for level, v in optimized.items()
            )
        )
    for precision, prof in profile.get("onnxruntime_operator_profile", {}).items():
        if "share_by_operator" in prof:
            out.append(
                f"ONNX Runtime {precision} kernel time by operator ({prof['kernel_ms']} ms): "
                + ", ".join(f"{op} {_pct(s)}" for op, s in prof["share_by_operator"].items())
            )
    for dtype, prof in profile.get("torch_operator_profile", {}).items():
        if "share_by_operator" in prof:
            out.append(
                f"PyTorch {dtype} self-CPU time by aten op ({prof['aten_self_cpu_ms']} ms): "
                + ", ".join(f"{op} {_pct(s)}" for op, s in prof["share_by_operator"].items())
            )
    tok = profile.get("tokenizer")
    if tok:
        out.append(
            f"Tokenization: encode_batch {tok['encode_batch_us_per_note']} µs/note, one call per note "
            f"{tok['one_call_per_note_us_per_note']} µs/note "
            f"(TOKENIZERS_PARALLELISM {tok['TOKENIZERS_PARALLELISM']})."
        )
    return out


def render_markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
    parts = [
        f"# redone-sdk benchmarks ({r['mode']})",
        f"Command: `{r['command']}`  \nStarted {r['started_at']}, took {r['duration_s']} s.",
        f"Machine: {m['cpu_model']}, {m['usable_cores']} usable cores ({m['physical_cores']} physical), "
        f"{', '.join(m['cpu_flags'])}; {m['os']}; Python {m['python']}; numpy BLAS {m['numpy_blas']}.  \n"
        f"Libraries: {libs}.  \nLoad average (1/5/15 min) at start {r.get('load_average_start')}, "
        f"at end {r.get('load_average_end')} — the machine is shared, so compare ratios within this run.",
    ]
    parts.append(
        "Bundles measured:\n\n"
        + "\n".join(
            f"- {role}: `{b['path']}` ({b['name']} {b['version']}, {b['parameters']} parameters; graphs {b['graphs']}"
            f"{', checkpoint' if b['checkpoint'] else ''})"
            + (f" — {b['chosen_because']}" if "chosen_because" in b else "")
            for role, b in r["bundles"].items()
        )
        + f"\n\nData: `{r['settings']['data_dir']}` — {r['settings'].get('data_source', '--data-dir')}"
    )
    stand_in = _stand_in_note(r)
    ceilings = r.get("ceilings_before")
    if isinstance(ceilings, dict) and "fp32_numpy" in ceilings:
        after = r.get("ceilings_after") or {}
        rows = [
            [kind, ceilings.get(kind, {}).get("gflops_best"), after.get(kind, {}).get("gflops_best")]
            for kind in ("fp32_numpy", "bf16_torch", "int8_onnxruntime")
        ]
        parts.append(
            "GEMM ceilings (2048², best of 5, GFLOP/s), measured before and after the speed section; shares use "
            "the better of the two:\n\n" + table(["GEMM", "before", "after"], rows)
        )
    speed = r.get("speed")
    if isinstance(speed, dict) and "results" in speed:
        s = speed["sample"]
        parts.append("## Speed")
        parts.append(
            f"{s['notes']} dev notes ({s['sources']}; prompt tokens mean {s['prompt_tokens']['mean']}, "
            f"p90 {s['prompt_tokens']['p90']:.1f}, max {s['prompt_tokens']['max']:.0f}), "
            f"batch size {speed['batch_size']}, "
            f"{speed['threads']} threads, {speed['rounds']} interleaved round(s); batch-1 over the first "
            f"{next(iter(speed['results'].values()))['batch1']['notes']} notes. Useful work "
            f"{speed['useful_gflop_per_note'] * 1e3:.2f} MFLOP per note (see Method: the last layer counted for "
            "the last real token only, which is all the label head reads; running it for every position, as graphs "
            f"before bundle 0.2.1 did, is {_full_forward_mflop(speed)} MFLOP, "
            f"{_pct(speed.get('last_layer_avoidable_share'))} of it unread)."
        )
        if stand_in:
            parts.append(stand_in)
        parts.append(table(SPEED_HEADERS, _speed_rows(speed, _row_models(r))))
        if speed.get("unavailable"):
            parts.append("Not measured: " + "; ".join(f"{k}: {v}" for k, v in speed["unavailable"].items()))
        agree = speed.get("agreement_with_reference")
        if agree:
            parts.append(
                "Agreement with eager fp32 on the sample: "
                + "; ".join(
                    f"{k} top label {_pct(v['top_label_agreement'])}, max |Δp| {v['max_abs_prob_diff']}"
                    for k, v in agree.items()
                )
            )
    elif speed:
        parts.append(f"## Speed\n\nfailed: {speed}")
    if r.get("targets"):
        parts.append(
            "### Targets (issue 6)\n\n"
            + (f"{stand_in}\n\n" if stand_in else "")
            + table(
                ["target", "mode", "value", "met"],
                [[t["target"], t["mode"], t["value"], "yes" if t["met"] else "**no**"] for t in r["targets"]],
            )
        )
    profile = r.get("profile")
    if isinstance(profile, dict) and "error" not in profile:
        parts.append("## Where the time goes")
        if stand_in:
            parts.append(stand_in)
        parts += _profile_sections(profile)
    elif profile:
        parts.append(f"## Where the time goes\n\nfailed: {profile}")
    quality = r.get("quality")
    if isinstance(quality, dict) and "datasets" in quality:
        parts.append("## Quality")
        check = quality["checked_against_evaluate_bundle"]
        capped = f"capped at {quality['capped_at']} records each" if quality["capped_at"] else "in full"
        parts.append(
            f"Dev sets {capped}. "
            f"Graphs: {quality['systems_files']}. Same label spaces as `evaluate_bundle` (checked: max difference "
            f"{check['max_abs_difference']} on the first {check['records_per_set']} records of each set). "
            f"int8 vs fp32 top-label agreement: {quality['int8_vs_fp32_top_label_agreement']}."
        )
        parts += _quality_sections(quality)
        peers = r.get("peers", {})
        parts.append(
            "Peers:\n\n"
            + "\n".join(
                f"- **{name}**: " + "; ".join(f"{k} {v}" for k, v in info.items()) for name, info in peers.items()
            )
        )
    elif quality:
        parts.append(f"## Quality\n\nfailed: {quality}")
    memory = r.get("memory")
    if isinstance(memory, dict) and "moderator" in memory:
        parts.append("## Memory")
        parts.append(table(MEMORY_HEADERS, _mem_rows(memory)))
        parts.append("On disk (MB):\n\n" + table(DISK_HEADERS, _disk_rows(memory["disk"])))
        for role, sizes in memory["disk"].items():
            for key, weights in sizes.items():
                if key.endswith("_weights") and "initializer_mb_by_dtype" in weights:
                    parts.append(
                        f"{role} {key.removesuffix('_weights')}: initializers {weights['initializer_mb_by_dtype']} MB; "
                        f"largest {weights['largest']['name']} {weights['largest']['shape']} "
                        f"({weights['largest']['mb']} MB)."
                    )
    parts.append("## Method\n\n" + "\n\n".join(f"**{k}.** {v}" for k, v in r.get("method", {}).items()))
    return "\n\n".join(parts) + "\n"


def write_reports(results: dict[str, Any], out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(results), encoding="utf-8")
    return [json_path, md_path]


def print_summary(results: dict[str, Any], out: IO[str]) -> None:
    speed = results.get("speed")
    if isinstance(speed, dict) and "results" in speed:
        note = _stand_in_note(results)
        if note:
            print(note, file=out)
        print(table(SPEED_HEADERS, _speed_rows(speed, _row_models(results))), file=out)
    for t in results.get("targets", []):
        print(f"target {t['target']} [{t['mode']}]: {t['value']} -> {'met' if t['met'] else 'NOT met'}", file=out)
    quality = results.get("quality")
    if isinstance(quality, dict) and "datasets" in quality:
        systems = list(next(iter(quality["datasets"].values()))["systems"])
        rows = [
            [
                name,
                *(
                    d["systems"][s]["metrics"]["macro_f1"] if d["systems"][s]["status"] == "ok" else "n/a"
                    for s in systems
                ),
            ]
            for name, d in quality["datasets"].items()
        ]
        print("\nmacro-F1\n" + table(["dev set", *systems], rows), file=out)
    memory = results.get("memory")
    if isinstance(memory, dict) and "moderator" in memory:
        print("\nmemory\n" + table(MEMORY_HEADERS, _mem_rows(memory)), file=out)


def _stand_in_note(results: dict[str, Any]) -> str | None:
    """The warning over every figure of a tiny stand-in bundle-full (a fresh clone's `--quick`)."""
    full = results.get("bundles", {}).get("speed (--bundle-full)", {})
    if not full.get("stand_in"):
        return None
    return (
        f"**Stand-in model.** No pipeline run's bundle-full was found, so the rows marked *tiny stand-in* measure "
        f"the tiny preset ({full.get('name')}, {full.get('parameters')} parameters) trained on the fly: their "
        "ratios and targets compare backends of that tiny model, not the default model's. The row marked "
        "*shipped (--bundle)* is the shipped model itself, with no eager baseline in this run (no ratio). "
        "Pass --bundle-full for the default model's figures."
    )


def _full_forward_mflop(speed: dict[str, Any]) -> str:
    share = speed.get("last_layer_avoidable_share")
    if not isinstance(share, int | float) or share >= 1:
        return "n/a"
    return f"{speed['useful_gflop_per_note'] * 1e3 / (1 - share):.2f}"
