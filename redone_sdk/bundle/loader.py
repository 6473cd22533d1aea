"""Load a model bundle from disk: parse its manifest and verify every file's SHA-256 before use."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from redone_sdk.bundle.manifest import FORMAT_VERSION, MANIFEST_FILE, Manifest
from redone_sdk.bundle.tokenizer import load_tokenizer
from redone_sdk.errors import BundleFormatError, BundleIntegrityError, BundleNotFoundError
from redone_sdk.schemas import format_validation_error

__all__ = ["Bundle", "default_bundle_path", "sha256_file", "shipped_bundles"]

_CHUNK = 1 << 20
_CHECKPOINT_SUFFIXES = {".json", ".safetensors"}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def default_bundle_path() -> Path:
    """The bundle shipped inside the package (`redone_sdk/bundles/default`)."""
    return Path(str(resources.files("redone_sdk") / "bundles" / "default"))


def shipped_bundles() -> dict[str, Path]:
    """The bundles inside the package by their manifest name (`Bundle.load("redone-small")`), sorted."""
    found: dict[str, Path] = {}
    for manifest in sorted(default_bundle_path().parent.glob(f"*/{MANIFEST_FILE}")):
        try:
            name = json.loads(manifest.read_text(encoding="utf-8")).get("name")
        except (OSError, ValueError):
            continue  # a damaged copy is refused with its reason when it is loaded by path
        if isinstance(name, str) and name not in found:
            found[name] = manifest.parent
    return dict(sorted(found.items()))


def _bundle_root(path: str | Path | None) -> Path:
    """A bundle folder from a path, a shipped bundle's name, or None (the default bundle)."""
    if path is None:
        return default_bundle_path()
    root = Path(path)
    if isinstance(path, str) and not root.exists() and "/" not in path and "\\" not in path:
        shipped = shipped_bundles()
        if path in shipped:
            return shipped[path]
        raise BundleNotFoundError(
            f"no bundle directory {path!r}, and no bundle of that name ships with the SDK: {sorted(shipped)}"
        )
    return root


@dataclass(frozen=True)
class Bundle:
    """A verified model bundle: its directory and parsed manifest. Nothing in it is executed."""

    path: Path
    manifest: Manifest
    policy_file: Path | None = None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, template: Bundle | str | Path | None = None) -> Bundle:
        """A PyTorch-only bundle over a plain Hugging Face checkpoint directory (not yet exported).

        The checkpoint must hold `config.json`, safetensors weights and the `tokenizer.json` it was trained
        with; the tasks (prompts, answer tokens) and the policy come from `template` (default: the shipped
        bundle), with answer-token ids looked up again in the checkpoint's tokenizer.
        """
        root = Path(checkpoint).resolve()
        if not (root / "config.json").is_file():
            raise BundleNotFoundError(f"{root} is neither a bundle (manifest.json) nor a checkpoint (config.json)")
        if not list(root.glob("*.safetensors")):
            raise BundleFormatError(f"checkpoint {root} has no .safetensors weights (pickled weights are not loaded)")
        if not (root / "tokenizer.json").is_file():
            raise BundleFormatError(f"checkpoint {root} has no tokenizer.json; save the tokenizer beside the model")
        base = template if isinstance(template, Bundle) else cls.load(template)
        tokenizer = load_tokenizer(root / "tokenizer.json")
        ids: dict[str, int] = {}
        for label in (label for task in base.manifest.tasks.values() for label in task.labels):
            token_id = tokenizer.token_to_id(label.token)
            if token_id is None:
                raise BundleFormatError(f"checkpoint {root}: its tokenizer lacks the answer token {label.token!r}")
            ids[label.token] = token_id
        tasks = {
            name: task.model_copy(
                update={
                    "labels": tuple(lb.model_copy(update={"token_id": ids[lb.token]}) for lb in task.labels),
                    "temperature": 1.0,  # the template's was fitted to another model's logits
                }
            )
            for name, task in base.manifest.tasks.items()
        }
        pad = base.manifest.tokenizer.pad_token_id
        pad_token = next((t for t in base.manifest.tokenizer.special_tokens if t == "<|endoftext|>"), None)
        if pad_token is not None and tokenizer.token_to_id(pad_token) is not None:
            pad = tokenizer.token_to_id(pad_token)
        files = {
            p.name: sha256_file(p) for p in sorted(root.iterdir()) if p.is_file() and p.suffix in _CHECKPOINT_SUFFIXES
        }
        manifest = base.manifest.model_copy(
            update={
                "name": f"{base.name}+{root.name}",
                "version": "unexported",
                "tokenizer": base.manifest.tokenizer.model_copy(update={"pad_token_id": pad}),
                "tasks": tasks,
                "graphs": {},
                "default_graph": None,
                "checkpoint": ".",
                "policy": None,
                "files": files,
                "metrics": {},
            }
        )
        policy = base.path / base.manifest.policy if base.manifest.policy else None
        return cls(path=root, manifest=Manifest.model_validate(manifest.model_dump()), policy_file=policy)

    @property
    def policy_path(self) -> Path | None:
        """The bundle's default policy file, if it has one."""
        if self.policy_file is not None:
            return self.policy_file
        return self.file(self.manifest.policy) if self.manifest.policy else None

    def file(self, name: str) -> Path:
        """Absolute path of a checksummed file of the bundle."""
        if name not in self.manifest.files:
            raise BundleFormatError(f"bundle {self.path} has no checksummed file {name!r}")
        return self.path / name

    @classmethod
    def load(cls, path: str | Path | None = None, *, verify: bool = True) -> Bundle:
        """Read and verify a bundle directory; `None` means the default bundle shipped with the SDK, and the name of
        a shipped bundle (`"redone-small"`, see `shipped_bundles`) that bundle, unless a folder of that name exists."""
        root = _bundle_root(path)
        manifest_path = root / MANIFEST_FILE
        if not root.is_dir():
            hint = (
                " (the default bundle is missing from this installation; reinstall redone-sdk)" if path is None else ""
            )
            raise BundleNotFoundError(f"bundle directory {root} does not exist{hint}")
        if not manifest_path.is_file():
            raise BundleNotFoundError(f"{root} is not a bundle: it has no {MANIFEST_FILE}")
        try:
            raw = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleFormatError(f"{manifest_path} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise BundleFormatError(f"{manifest_path} must hold a JSON object")
        found = raw.get("format_version")
        if found != FORMAT_VERSION:
            raise BundleFormatError(
                f"{manifest_path} has format_version {found!r}; this SDK reads format {FORMAT_VERSION} "
                "(upgrade redone-sdk or re-export the bundle)"
            )
        try:
            manifest = Manifest.model_validate(raw)
        except ValidationError as exc:
            raise BundleFormatError(format_validation_error(exc, f"manifest {manifest_path}")) from None
        bundle = cls(path=root.resolve(), manifest=manifest)
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        """Check that every listed file exists and has the SHA-256 the manifest records."""
        for name, expected in sorted(self.manifest.files.items()):
            target = self.path / name
            if not target.is_file():
                raise BundleIntegrityError(f"bundle {self.path} is missing {name}, which its manifest lists")
            actual = sha256_file(target)
            if actual != expected:
                raise BundleIntegrityError(
                    f"bundle {self.path}: {name} has SHA-256 {actual[:16]}…, the manifest says {expected[:16]}…; "
                    "the file is corrupted or was modified — re-download or re-export the bundle"
                )
