"""Label offsets (training/label_offsets.py): fitted on dev sets in their own label spaces, scored exactly as the
evaluation scores them, with the reference label held at 0, ties to no shift, and a cross-fitted figure."""

from __future__ import annotations

import numpy as np
import pytest

from redone_sdk.bundle.manifest import LabelSpec, TaskSpec
from redone_sdk.training.evaluate import harm_set_metrics
from redone_sdk.training.label_offsets import OFFSET_GRID, fit_label_offsets, moderation_decisions

LABELS = ["safe", "offensive", "hate", "sexism"]


def _set(rng: np.random.Generator, gold: list[str], margin: float, bias: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Logits that favour the gold label by `margin` over Gaussian noise, plus a shift common to every row."""
    logits = rng.normal(size=(len(gold), len(LABELS)))
    logits[np.arange(len(gold)), [LABELS.index(g) for g in gold]] += margin
    return logits + bias, gold


def _sets(rng: np.random.Generator, bias: np.ndarray, margin: float = 1.5) -> dict[str, tuple[np.ndarray, list[str]]]:
    return {
        "cold_dev": _set(rng, ["safe"] * 300 + ["offensive"] * 150 + ["hate"] * 100 + ["sexism"] * 50, margin, bias),
        "swsr_dev": _set(rng, ["safe"] * 200 + ["sexism"] * 100, margin, bias),
        "davidson_dev": _set(rng, ["safe"] * 100 + ["offensive"] * 300 + ["hate"] * 40, margin, bias),
    }


def test_a_shifted_prior_is_taken_back_and_every_set_gains() -> None:
    bias = np.array([0.0, 1.0, 0.0, 0.5])  # the model leans to offensive and sexism
    fit = fit_label_offsets(_sets(np.random.default_rng(0), bias), LABELS, reference="safe")
    assert fit.offsets["safe"] == 0.0
    assert fit.offsets["offensive"] < -0.25 and fit.offsets["sexism"] < 0  # pulled back, toward -bias
    assert fit.offsets["offensive"] < fit.offsets["hate"]
    for set_name in ("cold_dev", "swsr_dev", "davidson_dev"):
        assert fit.after[set_name]["macro_f1"] >= fit.before[set_name]["macro_f1"] - 0.01
    figures = fit.figures()
    assert figures["after/mean_macro_f1"] > figures["before/mean_macro_f1"] + 0.01
    # on a fresh draw of the same model, offsets fitted elsewhere still help: the cross-fitted figure
    assert figures["cross_fitted/mean_macro_f1"] > figures["before/mean_macro_f1"]
    assert figures["repeats"] == 2.0 and set(fit.spec()) <= {"offensive", "hate", "sexism"}


def test_without_a_shift_to_correct_no_offset_is_chosen() -> None:
    fit = fit_label_offsets(_sets(np.random.default_rng(1), np.zeros(4), margin=12.0), LABELS, reference="safe")
    assert fit.spec() == {}  # every offset on the grid scores the same: the tie goes to none
    assert fit.after == fit.before and fit.before["cold_dev"]["macro_f1"] == 1.0


def test_fitted_figures_are_the_evaluations_figures() -> None:
    """A sexism answer on Davidson (outside its space) is wrong, COLD's categories merge into harmful: exactly as
    `harm_set_metrics` scores a bundle."""
    rng = np.random.default_rng(2)
    sets = _sets(rng, np.array([0.0, 0.3, -0.2, 0.8]), margin=0.8)
    fit = fit_label_offsets(sets, LABELS, reference="safe", grid=(-0.5, 0.0, 0.5), repeats=1)
    shift = np.array([fit.offsets[label] for label in LABELS])
    for set_name, (logits, gold) in sets.items():
        for view, offsets in (("before", np.zeros(4)), ("after", shift)):
            predicted = [LABELS[i] for i in (logits + offsets).argmax(axis=1)]
            expected = harm_set_metrics(set_name, gold, predicted, LABELS)
            figures = getattr(fit, view)[set_name]
            assert figures["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-12)
            for key, value in figures.items():
                if key.startswith("f1/"):
                    assert value == pytest.approx(expected[key], abs=1e-12)
    assert set(fit.offsets.values()) <= {-0.5, 0.0, 0.5}


def test_bad_inputs_are_refused_with_the_reason() -> None:
    logits, gold = np.zeros((3, 4)), ["safe", "hate", "offensive"]
    with pytest.raises(ValueError, match="reference label 'neutral'"):
        fit_label_offsets({"davidson_dev": (logits, gold)}, LABELS, reference="neutral")
    with pytest.raises(ValueError, match=r"must be \[n > 0, 4\]"):
        fit_label_offsets({"davidson_dev": (logits[:, :3], gold)}, LABELS, reference="safe")
    with pytest.raises(ValueError, match="finite"):
        fit_label_offsets({"davidson_dev": (np.full((3, 4), np.nan), gold)}, LABELS, reference="safe")
    with pytest.raises(ValueError, match=r"gold labels \['spam'\]"):
        fit_label_offsets({"davidson_dev": (logits, ["safe", "spam", "hate"])}, LABELS, reference="safe")
    with pytest.raises(ValueError, match="outside its label space"):
        fit_label_offsets({"davidson_dev": (logits, ["safe", "sexism", "hate"])}, LABELS, reference="safe")
    with pytest.raises(ValueError, match="no dev sets"):
        fit_label_offsets({}, LABELS, reference="safe")
    assert OFFSET_GRID[0] == -1.0 and OFFSET_GRID[-1] == 1.0 and 0.0 in OFFSET_GRID


def _task(kind: str = "moderation") -> TaskSpec:
    labels = [LabelSpec(name=n, token=f"<{n}>", token_id=4 + i, column=i) for i, n in enumerate(LABELS)]
    return TaskSpec(
        kind=kind, template="{text}", fields=("text",), truncate_field="text", max_length=64,
        labels=tuple(labels), safe_label="safe",
    )  # fmt: skip


def test_the_policy_is_set_from_the_shifted_probabilities() -> None:
    sets = _sets(np.random.default_rng(3), np.array([0.0, 1.0, 0.0, 0.5]))
    offsets, fit, policy, figures = moderation_decisions(sets, _task(), seed=0)
    assert fit is not None and fit.pays() and offsets == fit.spec() and offsets
    assert fit.figures()["kept"] == 1.0
    plain_offsets, plain_fit, plain_policy, plain_figures = moderation_decisions(sets, _task(), fit_offsets=False)
    assert plain_offsets == {} and plain_fit is None
    assert figures["n"] == plain_figures["n"] == 1340
    # the offsets lower p(offensive) on every note, so its best review threshold moves down or its F1 changes
    assert (policy.rule_for("offensive"), figures["review_f1/offensive"]) != (
        plain_policy.rule_for("offensive"),
        plain_figures["review_f1/offensive"],
    )
    # a set left out of the offsets (the cross-set check's) still counts for the policy
    _, held_fit, _, held_figures = moderation_decisions(sets, _task(), offset_sets={"cold_dev", "davidson_dev"})
    assert held_fit is not None and set(held_fit.before) == {"cold_dev", "davidson_dev"}
    assert held_figures["n"] == 1340
    none = moderation_decisions(sets, _task(), offset_sets=set())
    assert none[0] == {} and none[1] is None
    with pytest.raises(ValueError, match="moderation task only"):
        moderation_decisions(sets, _task().model_copy(update={"kind": "matching"}))


def test_offsets_that_gain_only_in_sample_are_not_kept() -> None:
    """Unbiased logits on small sets: the grid finds an in-sample gain on noise, which the cross-fitted figure does
    not confirm, so the decisions keep no offsets (and record the fit as not kept)."""
    for seed in range(40):
        rng = np.random.default_rng(seed)
        sets = {
            "cold_dev": _set(rng, ["safe"] * 30 + ["offensive"] * 20 + ["hate"] * 10, 0.8, np.zeros(4)),
            "davidson_dev": _set(rng, ["safe"] * 20 + ["offensive"] * 30 + ["hate"] * 10, 0.8, np.zeros(4)),
        }
        fit = fit_label_offsets(sets, LABELS, reference="safe", seed=0)
        figures = fit.figures()
        if fit.spec() and figures["cross_fitted/mean_macro_f1"] <= figures["before/mean_macro_f1"]:
            break
    else:
        pytest.fail("no draw with an in-sample-only gain")
    assert figures["after/mean_macro_f1"] > figures["before/mean_macro_f1"]  # the in-sample gain is there
    assert not fit.pays() and figures["kept"] == 0.0
    offsets, decided_fit, _, _ = moderation_decisions(sets, _task(), seed=0)
    assert offsets == {} and decided_fit is not None and decided_fit.spec() == fit.spec()
