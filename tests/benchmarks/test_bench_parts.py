"""The benchmark's small pure pieces: FLOP counting, padding waste, grade cuts, label spaces, CLI plug-in."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

# `benchmarks/` is installed as `redone_sdk.benchmarks` (pyproject.toml, package-dir)
from redone_sdk.benchmarks.breakdown import padding_waste
from redone_sdk.benchmarks.flops import ModelShape, forward_flops, full_forward_flops, last_layer_avoidable
from redone_sdk.benchmarks.peers.relevance import GRADES, GradeCuts
from redone_sdk.benchmarks.quality import metrics_for


def test_flops_count_linear_attention_and_head() -> None:
    shape = ModelShape(hidden=4, layers=1, heads=2, kv_heads=1, head_dim=2, intermediate=8, labels=3, source="t")
    # per token: q 2*4*4 + k,v 2*(2*4*2) + o 2*4*4 = 96; MLP 3*2*4*8 = 192 -> 288
    assert shape.per_token_linear() == 288
    # one prompt of 3 tokens: 288*3 + attention 2*heads*head_dim*n(n+1) = 2*2*2*12 = 96, + head 2*4*3 = 24
    assert full_forward_flops(shape, [3]) == 288 * 3 + 96 + 24
    assert full_forward_flops(shape, [3, 3]) == 2 * full_forward_flops(shape, [3])
    # useful work: the (last) layer's k,v for 3 tokens 2*(2*4*2)*3 = 96, q/o/MLP for the last one 288 - 32 = 256,
    # one attention row over 3 positions 2*2*(2*2)*3 = 48, the head 24
    assert forward_flops(shape, [3]) == 96 + 256 + 48 + 24
    assert forward_flops(shape, [1]) == full_forward_flops(shape, [1])  # one token: nothing to skip
    assert last_layer_avoidable(shape, [3]) == pytest.approx(1 - 424 / 984)


def test_flops_of_a_bert_prefix_lm_count_its_two_matrix_mlp_both_way_attention_and_head_transform() -> None:
    shape = ModelShape(
        hidden=4,
        layers=1,
        heads=2,
        kv_heads=2,
        head_dim=2,
        intermediate=8,
        labels=3,
        source="t",
        mlp_matrices=2,
        bidirectional=True,
        head_transform=True,
    )
    # per token: q, k, v, o 4 * 2*4*4 = 128; MLP 2 * 2*4*8 = 128 -> 256
    assert shape.per_token_linear() == 256
    # 3 tokens both ways: attention 2*heads*head_dim * 2n^2 = 8 * 18 = 144; head 2*4*3 + transform 2*4*4 = 56
    assert full_forward_flops(shape, [3]) == 256 * 3 + 144 + 56
    # one layer, the last: k, v for 3 tokens (2 * 2*4*4 * 3 = 192), q/o/MLP once (256 - 64), a row over 3 (48)
    assert forward_flops(shape, [3]) == 192 + 192 + 48 + 56


def test_flops_leave_out_a_cached_prefix_but_not_attention_over_it() -> None:
    shape = ModelShape(hidden=4, layers=2, heads=2, kv_heads=1, head_dim=2, intermediate=8, labels=3, source="t")
    # 5 tokens, 2 cached: layer 0 computes 3 tokens (288*3) whose attention spans positions 3..5 of 5
    # (2*2*2*(5*6 - 2*3) = 192); the last layer k,v for 3 tokens (32*3), q/o/MLP once (256), one row over 5
    # positions (4*4*5 = 80); the head 24
    assert forward_flops(shape, [5], cached_prefix=2) == (864 + 192) + (96 + 256 + 80) + 24
    assert forward_flops(shape, [5], cached_prefix=0) == (1440 + 240) + (160 + 256 + 80) + 24
    assert forward_flops(shape, [2], cached_prefix=5) == forward_flops(shape, [2], cached_prefix=1)  # last stays


def test_padding_waste_is_zero_for_sorted_equal_lengths_and_positive_when_mixed() -> None:
    assert padding_waste([5, 5, 5, 5], 2)["bulk_length_buckets"] == 0.0
    waste = padding_waste([1, 9, 1, 9], 2)
    assert waste["bulk_length_buckets"] == 0.0
    assert waste["batched_arrival_order"] == pytest.approx(1 - 20 / 36, abs=1e-4)


def test_grade_cuts_recover_separable_grades() -> None:
    scores = np.array([0.0, 0.1, 1.0, 1.1, 2.0, 2.1, 3.0, 3.1, 4.0, 4.1])
    gold = [g for g in GRADES for _ in range(2)]
    cuts = GradeCuts()
    assert cuts.fit(scores, gold) == pytest.approx(1.0)
    assert cuts.grades(scores) == gold
    assert list(cuts.cuts) == sorted(cuts.cuts)


def test_label_spaces_match_the_pipeline() -> None:
    # COLD/SWSR are harmful-vs-safe: `hate` predicted for an offensive note counts as right
    assert metrics_for("cold_dev", ["offensive", "safe"], ["hate", "safe"], [])["accuracy"] == 1.0
    # Davidson keeps its three classes
    assert metrics_for("davidson_dev", ["offensive", "hate"], ["hate", "hate"], [])["accuracy"] == 0.5
    assert metrics_for("davidson_dev:binary", ["offensive", "hate"], ["hate", "hate"], [])["accuracy"] == 1.0


def test_register_adds_bench_to_a_cli() -> None:
    from redone_sdk.benchmarks.cli import register, run

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "--quick", "--sections", "quality"])
    assert args.handler is run and args.quick and args.sections == "quality"


def test_redone_cli_runs_the_benchmarks_as_bench() -> None:
    """`redone bench` is the installed `redone_sdk.benchmarks` package, plugged in through its entry point."""
    from redone_sdk.benchmarks.cli import run
    from redone_sdk.cli import build_parser

    args = build_parser().parse_args(["bench", "--quick", "--sections", "quality,memory"])
    assert args.handler is run and args.quick and args.sections == "quality,memory"
