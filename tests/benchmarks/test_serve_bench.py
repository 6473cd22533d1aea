"""benchmarks/serve.py's pure parts: reading wrk's report (a real one, captured from `wrk --latency` against
`redone serve`) and rendering the results block."""

from __future__ import annotations

import pytest

from redone_sdk.benchmarks.serve import parse_wrk, render

WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:18090/v1/moderations
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.10ms    1.93ms  17.85ms   76.41%
    Req/Sec   280.50     35.86   323.00     50.00%
  Latency Distribution
     50%    6.68ms
     75%    8.42ms
     90%    8.99ms
     99%   13.97ms
  282 requests in 1.01s, 346.58KB read
Requests/sec:    279.36
Transfer/sec:    343.34KB
"""


def test_wrk_report_is_read() -> None:
    figures = parse_wrk(WRK_OUTPUT)
    assert figures == {"notes_per_s": 279.36, "p50_ms": 6.68, "p99_ms": 13.97, "non_2xx": 0.0, "socket_errors": 0.0}


def test_wrk_units_and_errors() -> None:
    text = (
        WRK_OUTPUT.replace("6.68ms", "950.00us").replace("13.97ms", "1.20s")
        + "  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 7\n"
    )
    figures = parse_wrk(text)
    assert figures["p50_ms"] == pytest.approx(0.95)
    assert figures["p99_ms"] == pytest.approx(1200.0)
    assert figures["non_2xx"] == 7 and figures["socket_errors"] == 3


def test_unreadable_output_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="cannot read wrk's output"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_results_block() -> None:
    run = {
        "batching": True, "connections": 64, "notes_per_s": 345.4, "p50_ms": 167.54, "p99_ms": 298.52,
        "bulk_notes_per_s": 474.4, "ratio": 0.728, "server_cpu_ms_per_note": 4.63, "server_cores": 1.6,
        "bulk_cpu_ms_per_note": 3.95,
    }  # fmt: skip
    report = {
        "command": "python -m benchmarks.serve --seconds 8", "date": "2026-12-06 18:36 UTC", "bundle": "b 1",
        "backend": "onnx int8", "cores": 2, "load_average_before": [0.5], "load_average_after": [1.9],
        "baselines_notes_per_s": [470.0, 478.8], "runs": [run, {**run, "batching": False, "connections": 1}],
    }  # fmt: skip
    block = render(report).splitlines()
    assert block[0] == "Command: `python -m benchmarks.serve --seconds 8`  "
    assert "before the first run and after each): 470, 479 notes/s" in block[4]
    assert block[-2] == "| on | 64 | 345 | 474 | **0.73** | 167.5 ms | 298.5 ms | 4.63 ms (3.95) | 1.60 |"
    assert block[-1].startswith("| off | 1 | 345 |")


def test_results_block_names_the_passes_compared() -> None:
    run = {
        "batching": True, "connections": 64, "notes_per_s": 400.0, "p50_ms": 150.0, "p99_ms": 220.0,
        "bulk_notes_per_s": 480.0, "ratio": 0.833,
    }  # fmt: skip
    report = {
        "command": "python -m benchmarks.serve --max-passes 1,2", "date": "2026-12-06 22:00 UTC", "bundle": "b 1",
        "backend": "onnx int8", "cores": 2, "load_average_before": [0.5], "load_average_after": [1.9],
        "baselines_notes_per_s": [480.0, 480.0],
        "runs": [{**run, "max_passes": 1}, {**run, "max_passes": 2}, {**run, "batching": False, "max_passes": None}],
    }  # fmt: skip
    rows = render(report).splitlines()[-3:]
    assert [row.split(" | ")[0] for row in rows] == ["| on, 1 pass at once", "| on, 2 passes at once", "| off"]
