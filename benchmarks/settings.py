"""What one benchmark run measures and where: sizes per mode, bundle paths and their defaults."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Settings",
    "SECTIONS",
    "MODE_SIZES",
    "repo_root",
    "default_output_dir",
    "default_bundle_full",
    "BUNDLE_FULL_ENV",
    "pick_bundle",
]

BUNDLE_FULL_ENV = "REDONE_BENCH_BUNDLE_FULL"  # where bundle-full is looked for when --bundle-full is not given

SECTIONS = ("speed", "profile", "quality", "memory")

# notes: speed sample; batch1_notes: notes timed one per call; rounds: interleaved speed rounds;
# quality_cap: records per dev set (0: all); peer_train_cap: TF-IDF training examples (0: all);
# memory_notes: notes classified in the memory probe; profile_notes: the first notes of the speed sample that the
# profile uses; profile_repeats: best-of for the stage breakdown; ort_rounds: rounds of the ONNX Runtime variants.
MODE_SIZES: dict[str, dict[str, int]] = {
    "quick": {
        "notes": 64,
        "batch1_notes": 16,
        "rounds": 1,
        "quality_cap": 96,
        "peer_train_cap": 3000,
        "memory_notes": 256,
        "profile_notes": 64,
        "profile_repeats": 1,
        "ort_rounds": 1,
    },
    "full": {
        "notes": 512,
        "batch1_notes": 512,  # one call per note is the noisiest mode: the whole sample, every round
        "rounds": 5,
        "quality_cap": 0,
        "peer_train_cap": 0,
        "memory_notes": 256,
        "profile_notes": 256,
        "profile_repeats": 2,
        "ort_rounds": 3,
    },
}


def repo_root() -> Path | None:
    """The source checkout this package sits in (it has pyproject.toml), if any."""
    parent = Path(__file__).resolve().parent.parent
    return parent if (parent / "pyproject.toml").is_file() else None


def default_output_dir() -> Path:
    root = repo_root()
    return root / "benchmarks" / "results" if root else Path.cwd() / "benchmark-results"


def default_bundle_full() -> Path:
    """Where a pipeline run leaves bundle-full: `$REDONE_BENCH_BUNDLE_FULL`, else `runs/default/bundle-full`."""
    env = os.environ.get(BUNDLE_FULL_ENV)
    return Path(env) if env else (repo_root() or Path.cwd()) / "runs" / "default" / "bundle-full"


def pick_bundle(explicit: Path | None, bundle_full: Path) -> tuple[Path, str]:
    """The bundle for quality and memory: --bundle, else the SDK's shipped default, else bundle-full's sibling."""
    if explicit is not None:
        return explicit, "--bundle"
    from redone_sdk.bundle import default_bundle_path

    shipped = default_bundle_path()
    if (shipped / "manifest.json").is_file():
        return shipped, "the SDK's shipped default bundle (redone_sdk/bundles/default)"
    sibling = bundle_full.parent / "bundle"
    if (sibling / "manifest.json").is_file():
        return sibling, f"no shipped default bundle yet: the shipped layout beside --bundle-full ({sibling})"
    return bundle_full, "no shipped default bundle yet: --bundle-full itself (int8 graph)"


@dataclass
class Settings:
    mode: str
    bundle_full: Path
    bundle: Path
    bundle_source: str
    data_dir: Path
    output_dir: Path
    threads: int
    batch_size: int
    tuned_batch_size: int | None
    sections: tuple[str, ...]
    command: str
    sizes: dict[str, int] = field(default_factory=dict)
    bundle_full_source: str = "--bundle-full"
    # bundle_full is the tiny preset trained on the fly (no pipeline run found): its rows are not the default model's
    stand_in: bool = False
    data_source: str = "--data-dir"

    def __post_init__(self) -> None:
        self.sizes = {**MODE_SIZES[self.mode], **self.sizes}

    def size(self, name: str) -> int:
        return self.sizes[name]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, Path):
                out[key] = str(value)
        out["sections"] = list(self.sections)
        names = ("OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM", "REDONE_DATA_DIR")
        out["environment"] = {k: os.environ[k] for k in names if k in os.environ}
        return out
