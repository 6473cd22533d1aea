"""Model bundles: manifest schema and verified loading."""

from redone_sdk.bundle.loader import Bundle, VerifiedGraph, default_bundle_path, sha256_file, shipped_bundles
from redone_sdk.bundle.manifest import FORMAT_VERSION, MANIFEST_FILE, Manifest, TaskSpec, dump_manifest

__all__ = [
    "Bundle",
    "VerifiedGraph",
    "default_bundle_path",
    "sha256_file",
    "shipped_bundles",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "Manifest",
    "TaskSpec",
    "dump_manifest",
]
