"""The DPO stage on the BERT prefix-LM (training/prefix_lm_dpo.py): the loss against a hand computation, then at
tiny scale (a 1-layer cut of bge-small-zh-v1.5, the base preset shrunk as in test_prefix_lm_pipeline.py) a round
on mined + reviewer pairs, measured against the SFT model it starts from, exported, calibrated and loaded by
the SDK.

`registry`: the jar is fetched from Maven Central once into the project's cache.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from redone_sdk.training.config import PRESETS_DIR, PipelineConfig

REPEAT = 2


DPO_ROUND = {
    "dpo__enabled": True,
    "dpo__mine_examples": 40,
    "dpo__max_pairs": 12,
    "dpo__batch_size": 8,
    "dpo__max_steps": 8,
    "dpo__learning_rate": 1e-4,
    "dpo__feedback_repeat": REPEAT,
}


@pytest.fixture(scope="session")
def dpo_config(cut_base_config):
    """Factory: the cut-down base preset (tests/training/conftest.py) with a small DPO round on."""
    return lambda out, **overrides: cut_base_config(out, **{**DPO_ROUND, **overrides})


# --- the loss -------------------------------------------------------------------------------------------------


def test_preference_loss_is_the_dpo_loss_at_the_answer_token() -> None:
    import torch

    from redone_sdk.training.prefix_lm_dpo import preference_loss

    logits = [[2.0, 0.5, -1.0, 0.0], [0.0, 1.0, 3.0, -2.0]]
    ref_logits = [[1.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]]
    chosen, rejected, beta, w = [1, 2], [0, 3], 0.5, 0.3

    def log_softmax(row: list[float]) -> list[float]:
        z = math.log(sum(math.exp(v) for v in row))
        return [v - z for v in row]

    expected_margins, dpo, nll = [], 0.0, 0.0
    for row, ref_row, c, r in zip(logits, ref_logits, chosen, rejected, strict=True):
        pi, ref = log_softmax(row), log_softmax(ref_row)
        margin = beta * ((pi[c] - ref[c]) - (pi[r] - ref[r]))
        expected_margins.append(margin)
        dpo += -math.log(1 / (1 + math.exp(-margin))) / 2
        nll += -pi[c] / 2
    logp = torch.log_softmax(torch.tensor(logits), dim=-1)
    ref_logp = torch.log_softmax(torch.tensor(ref_logits), dim=-1)
    args = (logp, torch.tensor(chosen), torch.tensor(rejected), ref_logp[[0, 1], chosen], ref_logp[[0, 1], rejected])
    loss, margins = preference_loss(*args, beta=beta)
    assert margins.tolist() == pytest.approx(expected_margins, rel=1e-5)
    assert float(loss) == pytest.approx(dpo, rel=1e-5)
    with_nll, _ = preference_loss(*args, beta=beta, sft_weight=w)
    assert float(with_nll) == pytest.approx(dpo + w * nll, rel=1e-5)
    # the policy equal to the reference: every margin 0, the loss log 2
    same, margins = preference_loss(logp, *args[1:3], logp[[0, 1], chosen], logp[[0, 1], rejected], beta=beta)
    assert float(same) == pytest.approx(math.log(2)) and margins.abs().max() == 0
    # the gradient lowers the rejected label's log-probability and raises the chosen one's
    leaf = torch.tensor(logits, requires_grad=True)
    loss, _ = preference_loss(torch.log_softmax(leaf, dim=-1), *args[1:], beta=beta)
    loss.backward()
    assert leaf.grad is not None
    assert all(leaf.grad[i, c] < 0 < leaf.grad[i, r] for i, (c, r) in enumerate(zip(chosen, rejected, strict=True)))


# --- a round at tiny scale ------------------------------------------------------------------------------------


def _feedback_folder(run: Path, folder: Path) -> tuple[Path, int]:
    """A `redone train feedback` folder as the console's export writes it: reviewer pairs on notes of the run's
    moderation data (chosen = the dataset label, rejected = another category), plus two pairs naming labels the
    moderation task lacks. Returns the folder and the number of usable pairs."""
    rows = [json.loads(line) for line in (run / "data" / "train" / "moderation.jsonl").read_text().splitlines()]
    notes = sorted({r["fields"]["text"]: r["label"] for r in rows}.items())
    random.Random(3).shuffle(notes)
    pairs = [
        {"note_id": f"n{i}", "task": "moderation", "text": text, "chosen": label,
         "rejected": "offensive" if label == "safe" else "safe", "bundle_version": "0.0.1"}
        for i, (text, label) in enumerate(notes[:8])
    ]  # fmt: skip
    usable = len(pairs)
    pairs.append({**pairs[0], "note_id": "spam", "chosen": "spam"})
    pairs.append({**pairs[1], "note_id": "violence", "rejected": "violence"})
    folder.mkdir(parents=True)
    data = "".join(json.dumps(p, ensure_ascii=False, sort_keys=True) + "\n" for p in pairs).encode()
    (folder / "dpo.jsonl").write_bytes(data)
    manifest = {"task": "moderation", "sha256": {"dpo.jsonl": hashlib.sha256(data).hexdigest()}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder, usable


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory: pytest.TempPathFactory, dpo_config) -> tuple[Path, int]:
    """data, init and SFT of the cut-down base preset; a DPO round on mined + reviewer pairs; export (no eval)."""
    from redone_sdk.training.pipeline import run_all, run_stage

    root = tmp_path_factory.mktemp("prefix-lm-dpo")
    out = root / "run"
    run_all(dpo_config(out), skip=("dpo", "eval", "export"))
    feedback, usable = _feedback_folder(out, root / "feedback")
    config = dpo_config(out, dpo__feedback=str(feedback))
    run_stage("dpo", config)
    run_stage("export", config)
    return out, usable


def _pair_logprobs(model_dir: Path, config: PipelineConfig, rows: list[dict]) -> np.ndarray:
    """[n, 2] log-probabilities of each written pair's chosen and rejected label under a checkpoint."""
    from redone_sdk.training.prefix_lm_dpo import PreferencePair, pair_logprobs
    from redone_sdk.training.prefix_lm_sft import encode_rows, load_prefix_lm, task_specs

    model, tokenizer = load_prefix_lm(model_dir)
    specs = task_specs(tokenizer, config)
    items = encode_rows(
        tokenizer, specs, [{"task": r["task"], "fields": r["fields"], "label": r["chosen"]} for r in rows]
    )
    pairs = [
        PreferencePair(item.ids, item.task, item.target, specs[item.task].label_names.index(row["rejected"]), "")
        for item, row in zip(items, rows, strict=True)
    ]
    return pair_logprobs(model, pairs, specs)


@pytest.mark.registry
def test_a_dpo_round_raises_the_chosen_labels_and_the_sdk_loads_its_bundle(
    dpo_run: tuple[Path, int], dpo_config
) -> None:
    from redone_sdk import Moderator

    out, usable = dpo_run
    config = dpo_config(out)
    done = json.loads((out / "dpo" / "DONE.json").read_text())
    stats = done["mined"]
    assert stats["feedback/pairs"] == usable and stats["feedback/skipped"] == 2
    assert stats["feedback/skipped_unknown_label"] == 2
    mined = sum(v for k, v in stats.items() if k.endswith("/wrong"))
    assert 0 < stats.get("moderation/checked", 0) + stats.get("matching/checked", 0) <= 40
    rows = [json.loads(line) for line in (out / "dpo" / "pairs.jsonl").read_text().splitlines()]
    assert sum(r["source"] == "feedback" for r in rows) == usable * REPEAT
    assert sum(r["source"] == "mined" for r in rows) == min(mined, 12) > 0
    assert done["pairs"] == len(rows) and done["steps"] == 8
    assert done["first_loss"] == pytest.approx(math.log(2), abs=1e-3)  # dropout off: the policy starts as the reference

    # measured here, from the checkpoints: the SFT model (the reference) against the stage's model
    before = _pair_logprobs(out / "sft" / "model", config, rows)
    after = _pair_logprobs(out / "dpo" / "model", config, rows)
    gain = after[:, 0] - before[:, 0]
    widened = (after[:, 0] - after[:, 1]) > (before[:, 0] - before[:, 1])
    chosen_before, chosen_after = np.exp(before[:, 0]).mean(), np.exp(after[:, 0]).mean()
    print(f"\nchosen log-prob gain {gain.mean():.4f}, chosen prob {chosen_before:.4f} -> {chosen_after:.4f}, ", end="")
    print(f"gap widened on {widened.mean():.2f} of {len(rows)} pairs")
    assert gain.mean() > 0
    for source in ("mined", "feedback"):
        picked = [r["source"] == source for r in rows]
        assert gain[picked].mean() > 0, source
    assert widened.mean() > 0.5
    assert done["measured"]["chosen_logp_gain"] == pytest.approx(float(gain.mean()), abs=1e-4)

    # the round's bundle: calibrated on dev, the round in its lineage, loaded and scoring in the SDK
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["lineage"]["training_config"]["dpo"]["enabled"] is True
    assert manifest["lineage"]["training_config"]["dpo"]["feedback"].endswith("feedback")
    temperature = manifest["tasks"]["moderation"]["temperature"]
    assert temperature > 0 and temperature != 1.0
    result = Moderator.load(out / "bundle").classify({"note_id": "n1", "content": "女人就该待在家里做饭"})
    assert set(result.scores) == {"offensive", "hate", "sexism"} and 0 < sum(result.scores.values()) < 1


@pytest.mark.registry
def test_feedback_pairs_the_task_cannot_answer_are_counted_not_trained(dpo_run: tuple[Path, int], dpo_config) -> None:
    from redone_sdk.bundle.tokenizer import load_tokenizer
    from redone_sdk.training.prefix_lm_dpo import feedback_pairs
    from redone_sdk.training.prefix_lm_sft import task_specs

    out, _ = dpo_run
    tokenizer = load_tokenizer(out / "sft" / "model" / "tokenizer.json")
    specs = task_specs(tokenizer, dpo_config(out))
    rows = [
        {"task": "moderation", "text": "a", "chosen": "safe", "rejected": "hate"},
        {"task": "moderation", "text": "b", "chosen": "spam", "rejected": "safe"},
        {"task": "moderation", "text": "c", "chosen": "safe", "rejected": "safe"},
        {"task": "querycorr", "text": "d", "chosen": "2", "rejected": "0"},
    ]
    pairs, stats = feedback_pairs(tokenizer, specs, rows, 3)
    assert stats == {
        "feedback/pairs": 1,
        "feedback/skipped": 3,
        "feedback/skipped_unknown_label": 1,
        "feedback/skipped_other_task": 1,
        "feedback/skipped_same_label": 1,
    }
    names = specs["moderation"].label_names
    assert len(pairs) == 3 and {(names[p.chosen], names[p.rejected]) for p in pairs} == {("safe", "hate")}


def test_the_prefix_lm_dpo_refuses_chat_extra_pairs_in_one_line(
    tmp_path: Path, dpo_config, capsys: pytest.CaptureFixture[str]
) -> None:
    from redone_sdk.cli import main
    from redone_sdk.training.pipeline import run_stage
    from redone_sdk.training.prefix_lm_dpo import PreferenceConfigError

    config = dpo_config(tmp_path / "run", dpo__extra_pairs=str(tmp_path / "pairs.jsonl"))
    with pytest.raises(PreferenceConfigError, match=r"dpo\.feedback"):
        run_stage("dpo", config)
    argv = ["train", "dpo", "--config", str(PRESETS_DIR / "base.json"), "--output-dir", str(tmp_path / "run")]
    assert main([*argv, "--enabled", "--extra-pairs", str(tmp_path / "pairs.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("redone: error: dpo.extra_pairs") and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.registry
def test_the_anchor_term_keeps_the_checked_rows_gold_labels(dpo_run: tuple[Path, int], dpo_config) -> None:
    """The same round from the SFT checkpoint with and without `dpo.anchor_weight`: the anchored model keeps a
    lower cross-entropy on the gold labels of the rows mining checked (what the term adds to the loss)."""
    import dataclasses

    from redone_sdk.training.prefix_lm_dpo import label_logprobs, mine_pairs, pair_logprobs, train_preferences
    from redone_sdk.training.prefix_lm_sft import class_weights, load_prefix_lm, task_specs
    from redone_sdk.training.stages.data import distinct, training_mixture

    out, _ = dpo_run
    config = dpo_config(out)
    gold_nll = {}
    for weight in (0.0, 2.0):
        model, tokenizer = load_prefix_lm(out / "sft" / "model")
        specs = task_specs(tokenizer, config)
        cfg = dataclasses.replace(config.dpo, anchor_weight=weight, sft_average=0.0)
        pairs, _, checked = mine_pairs(model, tokenizer, specs, distinct(training_mixture(config)[0]), cfg, seed=14)
        assert pairs and len(checked) == 40
        reference = pair_logprobs(model, pairs, specs)
        weights = class_weights(checked, specs, config.sft.class_balance)
        train_preferences(model, pairs, reference, specs, cfg, seed=13, anchor=checked, anchor_class_weights=weights)
        rows = label_logprobs(model, checked, specs)
        gold_nll[weight] = float(np.mean([-row[item.target] for item, row in zip(checked, rows, strict=True)]))
    print(
        f"\ngold NLL of the checked rows after the round: plain DPO {gold_nll[0.0]:.4f}, anchored {gold_nll[2.0]:.4f}"
    )
    assert gold_nll[2.0] < gold_nll[0.0]
