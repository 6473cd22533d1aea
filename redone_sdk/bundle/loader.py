"""Load a model bundle from disk: parse its manifest and verify every file's SHA-256 before use."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from redone_sdk.bundle.manifest import FORMAT_VERSION, MANIFEST_FILE, Manifest
from redone_sdk.errors import BundleFormatError, BundleIntegrityError, BundleNotFoundError
from redone_sdk.schemas import format_validation_error

__all__ = ["Bundle", "default_bundle_path", "sha256_file"]

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def default_bundle_path() -> Path:
    """The bundle shipped inside the package (`redone_sdk/bundles/default`)."""
    return Path(str(resources.files("redone_sdk") / "bundles" / "default"))


@dataclass(frozen=True)
class Bundle:
    """A verified model bundle: its directory and parsed manifest. Nothing in it is executed."""

    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def file(self, name: str) -> Path:
        """Absolute path of a checksummed file of the bundle."""
        if name not in self.manifest.files:
            raise BundleFormatError(f"bundle {self.path} has no checksummed file {name!r}")
        return self.path / name

    @classmethod
    def load(cls, path: str | Path | None = None, *, verify: bool = True) -> Bundle:
        """Read and verify a bundle directory; `None` means the default bundle shipped with the SDK."""
        root = Path(path) if path is not None else default_bundle_path()
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
