"""Load a model bundle from disk: parse its manifest and verify the manifest and every file before use.

Trust is whole-bundle (docs/bundles.md): each listed file's SHA-256 matches the manifest, the bundle digest (over
the manifest's bytes and every file) can be pinned, shipped bundles are checked against the pins in
`redone_sdk/bundle/pins.json`, and a detached Ed25519 signature (`bundle.sig`) can be required. No symbolic link is
followed anywhere inside a bundle, and the files the SDK reads itself are read once and used from memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from redone_sdk.bundle.manifest import FORMAT_VERSION, MANIFEST_FILE, Manifest, dump_manifest
from redone_sdk.bundle.onnx_refs import external_data_locations
from redone_sdk.bundle.tokenizer import load_tokenizer
from redone_sdk.bundle.trust import (
    MAX_MANIFEST_BYTES,
    MAX_POLICY_BYTES,
    MAX_SIGNATURE_BYTES,
    MAX_TOKENIZER_BYTES,
    SIGNATURE_FILE,
    bundle_digest,
    load_json,
    normalize_digest,
    read_regular_file,
    sign_digest,
    verify_signature,
)
from redone_sdk.errors import BundleFormatError, BundleIntegrityError, BundleNotFoundError
from redone_sdk.schemas import format_validation_error

__all__ = ["Bundle", "VerifiedGraph", "default_bundle_path", "sha256_file", "shipped_bundles"]

_CHUNK = 1 << 20
_CHECKPOINT_SUFFIXES = {".json", ".safetensors"}
_TEMPLATE_POLICY = "\0template-policy"  # key of a checkpoint's policy (its template's) among the verified bytes
_RESERVED = {MANIFEST_FILE, SIGNATURE_FILE}  # never listed in `files`: the digest covers the one, not the other


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def default_bundle_path() -> Path:
    """The bundle shipped inside the package (`redone_sdk/bundles/default`)."""
    return Path(str(resources.files("redone_sdk") / "bundles" / "default"))


def package_bundles_dir() -> Path:
    """The folder of the bundles shipped in the package, whose digests `redone_sdk/bundle/pins.json` pins."""
    return Path(str(resources.files("redone_sdk") / "bundles")).resolve()


def shipped_bundles() -> dict[str, Path]:
    """The bundles inside the package by their manifest name (`Bundle.load("redone-small")`), sorted."""
    found: dict[str, Path] = {}
    for manifest in sorted(default_bundle_path().parent.glob(f"*/{MANIFEST_FILE}")):
        try:
            name = json.loads(manifest.read_text(encoding="utf-8")).get("name")
        except (OSError, ValueError, RecursionError):
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


def _size_limit(name: str, manifest: Manifest) -> int | None:
    """How many bytes a listed file may have before it is refused unread (JSON the SDK parses itself)."""
    if name == manifest.tokenizer.file:
        return MAX_TOKENIZER_BYTES
    if name == manifest.policy:
        return MAX_POLICY_BYTES
    return None


def _refuse_links(root: Path) -> None:
    """Refuse any symbolic link below the bundle's root (a file or a folder): a bundle is self-contained."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        for entry in (*dirs, *files):
            path = Path(folder) / entry
            if path.is_symlink():
                raise BundleIntegrityError(
                    f"bundle {root}: {path.relative_to(root)} is a symbolic link; bundles must not contain links "
                    "(copy the file in instead)"
                )


@dataclass(frozen=True)
class VerifiedGraph:
    """An ONNX graph's verified bytes and those of the external-data files it names (by the name it uses)."""

    model: bytes
    external: dict[str, bytes]

    def prepare(self, session_options: Any) -> bytes:
        """Register the external-data files on ONNX Runtime `session_options` (from memory, never from disk) and
        return the model bytes to create the session from."""
        if self.external:
            names = list(self.external)
            buffers = [self.external[n] for n in names]
            session_options.add_external_initializers_from_files_in_memory(names, buffers, [len(b) for b in buffers])
        return self.model


@dataclass(frozen=True)
class Bundle:
    """A verified model bundle: its directory and parsed manifest. Nothing in it is executed."""

    path: Path
    manifest: Manifest
    policy_file: Path | None = None
    manifest_sha256: str | None = None  # of manifest.json's bytes as read; None: of the manifest as dumped
    _verified: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def digest(self) -> str:
        """The bundle digest: one SHA-256 over manifest.json's bytes and every listed file (docs/bundles.md)."""
        manifest_sha = self.manifest_sha256
        if manifest_sha is None:
            manifest_sha = hashlib.sha256(dump_manifest(self.manifest).encode("utf-8")).hexdigest()
        return bundle_digest(manifest_sha, self.manifest.files)

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
        files = {
            p.name: sha256_file(p) for p in sorted(root.iterdir()) if p.is_file() and p.suffix in _CHECKPOINT_SUFFIXES
        }
        tokenizer = load_tokenizer(
            read_regular_file(
                root / "tokenizer.json", limit=MAX_TOKENIZER_BYTES, what="tokenizer", error=BundleFormatError
            ),
            where=str(root / "tokenizer.json"),
        )
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
        bundle = cls(path=root, manifest=Manifest.model_validate(manifest.model_dump()), policy_file=policy)
        if base.manifest.policy:  # the template's policy, as verified with the template
            bundle._verified[_TEMPLATE_POLICY] = base.read_verified(base.manifest.policy)
        return bundle

    @property
    def policy_path(self) -> Path | None:
        """The bundle's default policy file, if it has one."""
        if self.policy_file is not None:
            return self.policy_file
        return self.file(self.manifest.policy) if self.manifest.policy else None

    def policy_bytes(self) -> bytes | None:
        """The default policy's verified bytes (the template's for a checkpoint), or None when it has none."""
        if self.policy_file is not None:
            return self._verified.get(_TEMPLATE_POLICY) or read_regular_file(
                self.policy_file, limit=MAX_POLICY_BYTES, what="policy", error=BundleFormatError
            )
        return self.read_verified(self.manifest.policy) if self.manifest.policy else None

    def file(self, name: str) -> Path:
        """Absolute path of a checksummed file of the bundle."""
        if name not in self.manifest.files:
            raise BundleFormatError(f"bundle {self.path} has no checksummed file {name!r}")
        return self.path / name

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        verify: bool = True,
        digest: str | None = None,
        public_key: Any = None,
    ) -> Bundle:
        """Read and verify a bundle directory; `None` means the default bundle shipped with the SDK, and the name of
        a shipped bundle (`"redone-small"`, see `shipped_bundles`) that bundle, unless a folder of that name exists.

        `digest` pins the bundle digest (`redone bundle` prints it) and `public_key` (an Ed25519 PEM file, PEM
        text or key) requires a valid `bundle.sig`: a mismatch is `BundleIntegrityError`. A bundle shipped in the
        package is also checked against its pin in `redone_sdk/bundle/pins.json`."""
        bundle = cls._read(_bundle_root(path), verify=verify, shipped_hint=path is None)
        bundle._check_pin()
        bundle.check(digest=digest, public_key=public_key)
        return bundle

    @classmethod
    def _read(cls, root: Path, *, verify: bool = True, shipped_hint: bool = False) -> Bundle:
        """Parse (and with `verify`, verify) the bundle at `root`, without pins, digest or signature checks."""
        if not root.is_dir():
            hint = " (the default bundle is missing from this installation; reinstall redone-sdk)"
            hint = hint if shipped_hint else ""
            raise BundleNotFoundError(f"bundle directory {root} does not exist{hint}")
        root = root.resolve()  # links above the bundle (the path it is reached by) are the caller's; none below
        manifest_path = root / MANIFEST_FILE
        if not manifest_path.is_file() and not manifest_path.is_symlink():
            raise BundleNotFoundError(f"{root} is not a bundle: it has no {MANIFEST_FILE}")
        try:
            data = read_regular_file(manifest_path, limit=MAX_MANIFEST_BYTES, what="manifest", error=BundleFormatError)
        except FileNotFoundError:
            raise BundleNotFoundError(f"{root} is not a bundle: it has no {MANIFEST_FILE}") from None
        raw = load_json(data, what=f"manifest {manifest_path}", error=BundleFormatError)
        if not isinstance(raw, dict):
            raise BundleFormatError(f"{manifest_path} must hold a JSON object")
        found = raw.get("format_version")
        if found != FORMAT_VERSION or isinstance(found, bool):
            raise BundleFormatError(
                f"{manifest_path} has format_version {found!r}; this SDK reads format {FORMAT_VERSION} "
                "(upgrade redone-sdk or re-export the bundle)"
            )
        try:  # strict: `true` or "0.5" where a number belongs is refused, not coerced
            manifest = Manifest.model_validate_json(data, strict=True)
        except ValidationError as exc:
            raise BundleFormatError(format_validation_error(exc, f"manifest {manifest_path}")) from None
        reserved = sorted(_RESERVED & set(manifest.files))
        if reserved:
            raise BundleFormatError(f"manifest {manifest_path} lists {reserved} in `files`, which it may not")
        bundle = cls(path=root, manifest=manifest, manifest_sha256=hashlib.sha256(data).hexdigest())
        if verify:
            bundle.verify()
        return bundle

    def _cached_kind(self, name: str) -> bool:
        """Whether the SDK reads `name` itself (kept in memory once verified) rather than a framework by path."""
        manifest = self.manifest
        for folder in (manifest.checkpoint, manifest.generation):
            if folder is not None and (folder == "." or name.startswith(folder.rstrip("/") + "/")):
                return False
        return True

    def _open_listed(self, name: str, limit: int | None) -> bytes:
        """Read a listed file without following any link on the way from the bundle's root."""
        return read_regular_file(self._listed_path(name), limit=limit, what=name, error=BundleFormatError)

    def _listed_path(self, name: str) -> Path:
        """The path of a listed file, refused if any component below the root is a link or it is not a file."""
        target = self.path
        parts = PurePosixPath(name).parts
        for i, part in enumerate(parts):
            target = target / part
            try:
                info = os.lstat(target)
            except FileNotFoundError:
                raise BundleIntegrityError(f"bundle {self.path} is missing {name}, which its manifest lists") from None
            if stat.S_ISLNK(info.st_mode):
                raise BundleIntegrityError(
                    f"bundle {self.path}: {PurePosixPath(*parts[: i + 1])} is a symbolic link; bundles must not "
                    "contain links (copy the file in instead)"
                )
            if i < len(parts) - 1 and not stat.S_ISDIR(info.st_mode):
                raise BundleIntegrityError(f"bundle {self.path} is missing {name}, which its manifest lists")
        if not stat.S_ISREG(os.lstat(target).st_mode):
            raise BundleIntegrityError(f"bundle {self.path}: {name} is not a regular file")
        return target

    def _check_bytes(self, name: str, data: bytes) -> None:
        self._check_sha(name, hashlib.sha256(data).hexdigest())

    def _check_sha(self, name: str, actual: str) -> None:
        expected = self.manifest.files[name]
        if actual != expected:
            raise BundleIntegrityError(
                f"bundle {self.path}: {name} has SHA-256 {actual[:16]}…, the manifest says {expected[:16]}…; "
                "the file is corrupted or was modified — re-download or re-export the bundle"
            )

    def verify(self) -> None:
        """Check every listed file: no link on its way, its SHA-256 as the manifest records, JSON files within
        their size caps, and ONNX graphs naming no external data the manifest does not list. The files the SDK
        reads itself are kept in memory from here on (`read_verified`), so a file changed later is never used."""
        _refuse_links(self.path)
        for name in sorted(self.manifest.files):
            if self._cached_kind(name) or name.endswith(".onnx"):
                data = self._open_listed(name, _size_limit(name, self.manifest))
                self._check_bytes(name, data)
                if name.endswith(".onnx"):
                    self._external_targets(name, data)
                if self._cached_kind(name):
                    self._verified[name] = data
            else:  # read by a framework from its path (checkpoint weights): hashed, not held in memory
                self._check_sha(name, sha256_file(self._listed_path(name)))

    def _external_targets(self, graph: str, data: bytes) -> dict[str, str]:
        """{location as the graph names it: the listed bundle file it is} for an ONNX graph's external data."""
        try:
            locations = external_data_locations(data)
        except ValueError as exc:
            raise BundleFormatError(f"bundle {self.path}: {graph} is not a readable ONNX model: {exc}") from None
        targets: dict[str, str] = {}
        folder = PurePosixPath(graph).parent
        for location in dict.fromkeys(locations):
            relative = PurePosixPath(location)
            resolved = os.path.normpath(str(folder / relative)) if not relative.is_absolute() else location
            if relative.is_absolute() or resolved.startswith("..") or resolved not in self.manifest.files:
                raise BundleIntegrityError(
                    f"bundle {self.path}: {graph} reads external data from {location!r}, which the manifest does "
                    "not list; every file a graph reads must be listed (and is then verified)"
                )
            targets[location] = resolved
        return targets

    def read_verified(self, name: str) -> bytes:
        """The bytes of listed file `name` exactly as verified: kept from `verify`, or else read now and checked
        against the manifest before they are returned (never a path to reopen)."""
        if name not in self.manifest.files:
            raise BundleFormatError(f"bundle {self.path} has no checksummed file {name!r}")
        data = self._verified.get(name)
        if data is None:
            data = self._open_listed(name, _size_limit(name, self.manifest))
            self._check_bytes(name, data)
            if self._cached_kind(name):
                self._verified[name] = data
        return data

    def verified_graph(self, name: str) -> VerifiedGraph:
        """An ONNX graph and its external-data files, all from verified bytes, for ONNX Runtime."""
        model = self.read_verified(name)
        external = {loc: self.read_verified(target) for loc, target in self._external_targets(name, model).items()}
        return VerifiedGraph(model=model, external=external)

    def check(self, *, digest: str | None = None, public_key: Any = None) -> None:
        """Refuse the bundle unless its digest is `digest` (when given) and, with `public_key`, its `bundle.sig`
        is a valid Ed25519 signature of its digest by that key."""
        actual = self.digest
        if digest is not None:
            expected = normalize_digest(digest)
            if actual != expected:
                raise BundleIntegrityError(
                    f"bundle {self.path} ({self.name} {self.version}) has digest {actual}, expected {expected}: "
                    "it is not the bundle that was pinned"
                )
        if public_key is not None:
            sig_path = self.path / SIGNATURE_FILE
            try:
                signature = read_regular_file(
                    sig_path, limit=MAX_SIGNATURE_BYTES, what="signature", error=BundleIntegrityError
                )
            except FileNotFoundError:
                raise BundleIntegrityError(
                    f"bundle {self.path} is not signed: it has no {SIGNATURE_FILE} (redone bundle sign --key …)"
                ) from None
            verify_signature(signature, actual, public_key, where=str(sig_path))

    def _check_pin(self) -> None:
        """A bundle inside the package must have the digest `redone_sdk/bundle/pins.json` records for it."""
        if self.path.parent != package_bundles_dir():
            return
        from redone_sdk.bundle.pins import check_pin

        check_pin(self)

    def sign(self, private_key: Any) -> Path:
        """Write `bundle.sig`: an Ed25519 signature (private key: PEM file, PEM text or key) of the digest."""
        content = sign_digest(self.digest, private_key)
        target = self.path / SIGNATURE_FILE
        temporary = target.with_name(f".{SIGNATURE_FILE}.tmp")
        temporary.write_bytes(content)
        os.replace(temporary, target)
        return target
