"""redone-sdk benchmarks: speed, quality and memory of the default bundle against its peers, in one run.

Run `python -m benchmarks [--quick]` from the repository root (or `redone bench` once the CLI entry point is
installed). Every module is imported relatively so the package also works when mapped as `redone_sdk.benchmarks`.
"""

__all__ = ["SCHEMA"]

SCHEMA = "redone-sdk-benchmark/1"
