"""What makes a bundle trustworthy as a whole: bounded JSON, one digest over the manifest and every file, and an
optional Ed25519 signature over that digest (docs/bundles.md defines each)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from redone_sdk.errors import BundleIntegrityError, InvalidInputError, RedOneError

__all__ = [
    "DIGEST_VERSION",
    "MAX_JSON_DEPTH",
    "MAX_MANIFEST_BYTES",
    "MAX_POLICY_BYTES",
    "MAX_SIGNATURE_BYTES",
    "MAX_TOKENIZER_BYTES",
    "SIGNATURE_FILE",
    "bundle_digest",
    "check_json_depth",
    "generate_key_pair",
    "load_json",
    "normalize_digest",
    "read_regular_file",
    "sign_digest",
    "signed_message",
    "verify_signature",
]

MAX_MANIFEST_BYTES = 4 << 20  # the shipped manifest is 16 KB; metrics and lineage never come near 4 MiB
MAX_POLICY_BYTES = 1 << 20  # a policy is a few hundred bytes
MAX_TOKENIZER_BYTES = 32 << 20  # the shipped tokenizer.json is 0.4 MB; a 188 MB one took 23 s to parse
MAX_SIGNATURE_BYTES = 4096
MAX_JSON_DEPTH = 32  # the manifest nests 6 deep, a policy 3; Python's parser recurses once per level

SIGNATURE_FILE = "bundle.sig"
DIGEST_VERSION = "redone-bundle-digest-v1"
_SIGNED_PREFIX = b"redone-sdk bundle signature v1\n"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


def read_regular_file(path: Path, *, limit: int | None, what: str, error: type[RedOneError]) -> bytes:
    """The bytes of `path`, a regular file reached without following a symlink at its last component, refused
    (with `error`) past `limit` bytes before anything is read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        if path.is_symlink():
            raise BundleIntegrityError(f"{what} {path} is a symbolic link; bundles must not contain links") from None
        raise error(f"cannot open {what} {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what} {path} is not a regular file")
        if limit is not None and info.st_size > limit:
            raise error(f"{what} {path} has {info.st_size:,} bytes; at most {limit:,} are read")
        data = handle.read() if limit is None else handle.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise error(f"{what} {path} has more than {limit:,} bytes")
    return data


def check_json_depth(data: bytes, *, limit: int = MAX_JSON_DEPTH) -> int:
    """The nesting depth of JSON text, raising ValueError past `limit` — checked before parsing, because Python's
    parser recurses once per level and a 200k-deep document ends in RecursionError."""
    stripped = _JSON_STRING.sub(b"", data)  # brackets inside strings do not nest
    depth = deepest = 0
    for match in _BRACKETS.finditer(stripped):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise ValueError(f"JSON nested more than {limit} levels deep")
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def load_json(data: bytes, *, what: str, error: type[RedOneError], limit: int = MAX_JSON_DEPTH) -> Any:
    """Parse bounded JSON (UTF-8, at most `limit` levels deep), every failure as `error`."""
    try:
        check_json_depth(data, limit=limit)
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # our depth bound; RecursionError only if the bound is raised
        raise error(f"{what} is refused: {exc or 'too deeply nested'}") from None


def bundle_digest(manifest_sha256: str, files: Mapping[str, str]) -> str:
    """The bundle digest: SHA-256 of the listing `<sha256>  <path>\\n` (sha256sum's format) of `manifest.json` and
    every file the manifest lists, sorted by path (by code point, which is `LC_ALL=C sort`'s byte order for UTF-8)."""
    entries = {**files, "manifest.json": manifest_sha256}
    listing = "".join(f"{sha}  {name}\n" for name, sha in sorted(entries.items()))
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def normalize_digest(digest: str) -> str:
    """A pinned digest as 64 lowercase hex digits (`sha256:` prefix and case tolerated)."""
    if not isinstance(digest, str):
        raise InvalidInputError(f"a bundle digest must be a str, got {type(digest).__name__}")
    value = digest.strip().lower().removeprefix("sha256:")
    if not _HEX64.fullmatch(value):
        raise InvalidInputError(f"a bundle digest is 64 hex digits (as `redone bundle` prints it), got {digest!r}")
    return value


def signed_message(digest: str) -> bytes:
    """The bytes an Ed25519 bundle signature covers: a fixed prefix and the bundle digest in hex."""
    return _SIGNED_PREFIX + normalize_digest(digest).encode("ascii")


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise RedOneError("bundle signatures need the `cryptography` package: pip install 'redone-sdk[sign]'") from exc
    return serialization, ed25519


def _pem(key: str | bytes | os.PathLike[str], what: str) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str) and key.lstrip().startswith("-----BEGIN"):
        return key.encode("ascii")
    path = Path(key)
    try:
        return read_regular_file(path, limit=64 << 10, what=what, error=InvalidInputError)
    except FileNotFoundError:
        raise InvalidInputError(f"{what} {path} does not exist") from None


def _public_key(key: Any) -> Any:
    serialization, ed25519 = _crypto()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if not isinstance(key, (str, bytes, os.PathLike)):
        raise InvalidInputError(f"public_key must be a PEM file, PEM text or an Ed25519PublicKey, got {type(key)}")
    try:
        loaded = serialization.load_pem_public_key(_pem(key, "public key"))
    except ValueError as exc:
        raise InvalidInputError(f"cannot read the public key: {exc}") from None
    if not isinstance(loaded, ed25519.Ed25519PublicKey):
        raise InvalidInputError(f"bundle signatures are Ed25519; the public key is a {type(loaded).__name__}")
    return loaded


def _private_key(key: Any) -> Any:
    serialization, ed25519 = _crypto()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    try:
        loaded = serialization.load_pem_private_key(_pem(key, "private key"), password=None)
    except (TypeError, ValueError) as exc:  # TypeError: an encrypted key
        raise InvalidInputError(f"cannot read the private key (an unencrypted PEM): {exc}") from None
    if not isinstance(loaded, ed25519.Ed25519PrivateKey):
        raise InvalidInputError(f"bundle signatures are Ed25519; the private key is a {type(loaded).__name__}")
    return loaded


def generate_key_pair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM), unencrypted."""
    serialization, ed25519 = _crypto()
    private = ed25519.Ed25519PrivateKey.generate()
    return (
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )


def sign_digest(digest: str, private_key: Any) -> bytes:
    """The contents of a `bundle.sig` for `digest`: JSON with the algorithm, the digest and the signature."""
    signature = _private_key(private_key).sign(signed_message(digest))
    body = {
        "algorithm": "ed25519",
        "digest": normalize_digest(digest),
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode("ascii")


def verify_signature(signature_file: bytes, digest: str, public_key: Any, *, where: str) -> None:
    """Check a `bundle.sig`'s Ed25519 signature over `digest` (the bundle's actual digest, never the one the file
    names), raising BundleIntegrityError when it does not verify."""
    key = _public_key(public_key)
    body = load_json(signature_file, what=f"signature {where}", error=BundleIntegrityError, limit=2)
    if not isinstance(body, dict) or body.get("algorithm") != "ed25519" or not isinstance(body.get("signature"), str):
        raise BundleIntegrityError(f"signature {where} is not an ed25519 bundle signature")
    try:
        raw = base64.b64decode(body["signature"], validate=True)
    except ValueError:
        raise BundleIntegrityError(f"signature {where} is not base64") from None
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(raw, signed_message(digest))
    except InvalidSignature:
        signed_for = body.get("digest")
        hint = (
            f"; it was made for digest {signed_for}, the bundle's is {digest}"
            if isinstance(signed_for, str) and signed_for != digest
            else " (wrong key, or the signature was altered)"
        )
        raise BundleIntegrityError(f"signature {where} does not verify with the given public key{hint}") from None
