"""End-to-end benchmark of the Kafka adapter: notes/s through Kafka against `classify_batch` alone, on the same
bundle in the same run (the ratio is the figure), and produce-to-verdict latency p50/p99.

    scripts/kafka-broker start
    python -m benchmarks.kafka_e2e --bundle PATH [--notes 5000] [--batch-size 64] [--drains 3] [--json out.json]

1. Baseline: `Moderator.classify_batch` on the notes in batches of `--batch-size`, in this process, measured
   before and after the Kafka run (their mean is the reference; their spread shows how steady the machine was).
   With `--drains N` the drain below is done N times on fresh topics, each by a fresh stream process and
   between two baselines; the drain with the median ratio gives the headline figures, every drain is listed.
2. Throughput: the notes are produced to a fresh topic first; then `python -m redone_sdk.adapters.kafka` (a
   separate process, as deployed) drains that backlog. Its rate is read from its own Prometheus endpoint
   (messages handled, i.e. verdicts acknowledged and offsets committed), from the first batch to the last.
3. Latency: notes are produced at a steady `--latency-rate` (default: half the measured throughput); the time
   from each note's produce timestamp to its verdict reaching a consumer here gives p50/p99.
4. Where the difference goes: CPU seconds per note of `classify_batch` alone (this process) and of the stream
   process over the same drain (from /proc, Linux), and the cores each kept busy. The ratio is their product:
   (stream cores / baseline cores) x (baseline CPU per note / stream CPU per note) -- idle cores, or CPU the
   Kafka path spends per note (kafka-python parses and builds every record in Python).

Measured figures, each with its command: benchmarks/results/kafka.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from redone_sdk import Moderator, Note
from redone_sdk.adapters.kafka import StreamSettings
from redone_sdk.adapters.kafka.admin import ensure_topics, stream_topics
from redone_sdk.adapters.kafka.settings import env_name

from .children import die_with_parent, exit_on_sigterm

REPO = Path(__file__).resolve().parents[1]


def load_texts(count: int) -> list[str]:
    """Real note texts (COLD dev set from the shared data) when available, else varied synthetic ones."""
    data = Path(os.environ.get("REDONE_DATA_DIR", REPO.parent / "shared" / "data")) / "cold" / "dev.csv"
    texts: list[str] = []
    if data.is_file():
        with data.open(encoding="utf-8-sig", newline="") as handle:
            texts = [row["TEXT"] for row in csv.DictReader(handle) if row["TEXT"].strip()]
    if not texts:
        texts = [f"第{i}条笔记：今天去了{i % 50}号咖啡馆，拍了很多照片，推荐给大家。" for i in range(1000)]
    return [texts[i % len(texts)] for i in range(count)]


def baseline(moderator: Moderator, notes: list[Note], batch_size: int) -> tuple[float, float]:
    """(notes/s, CPU seconds per note) of classify_batch alone (the first batch warms up and is not timed)."""
    moderator.classify_batch(notes[:batch_size])
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(notes), batch_size):
        moderator.classify_batch(notes[i : i + batch_size])
    return len(notes) / (time.perf_counter() - started), (time.process_time() - cpu) / len(notes)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def local_broker_pids() -> list[int]:
    """Pids of Apache Kafka brokers running on this machine (Linux /proc), whose CPU competes with the stream's
    when the broker is local, as in this benchmark; empty elsewhere."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if b"kafka.Kafka" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def cpu_seconds(pids: list[int]) -> float | None:
    """Summed CPU seconds of these processes (None when any cannot be read)."""
    values = [process_cpu_seconds(pid) for pid in pids]
    return None if not values or None in values else sum(v for v in values if v is not None)


def metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def start_stream(settings: StreamSettings, args: argparse.Namespace, log: Path) -> subprocess.Popen:
    env = {**os.environ}
    for name, value in settings.model_dump(exclude={"security"}).items():
        if value is not None:
            env[env_name(name)] = str(value).lower() if isinstance(value, bool) else str(value)
    profile = ["-m", "cProfile", "-o", str(args.profile)] if args.profile else []
    command = [
        sys.executable,
        *profile,
        "-m",
        "redone_sdk.adapters.kafka",
        "--bundle",
        str(args.bundle),
        "--log-level",
        "WARNING",
    ]
    if args.workers:
        command += ["--workers", str(args.workers)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.spinning is not None:
        command += ["--spinning" if args.spinning else "--no-spinning"]
    return subprocess.Popen(
        command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, preexec_fn=die_with_parent
    )


def wait_metric(port: int, proc: subprocess.Popen, predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the stream process exited with {proc.returncode}")
        try:
            if predicate():
                return
        except OSError:
            pass  # the metrics endpoint is not up yet
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the stream")
        time.sleep(0.05)


def throughput(
    port: int, proc: subprocess.Popen, total: int, timeout: float
) -> tuple[float, float | None, float | None]:
    """(messages/s, the stream's CPU seconds per message, the local broker's cores busy) while the stream drains
    the backlog, between its first and its last completed batch.

    Each scrape costs the stream process CPU and its GIL (it renders every metric), so the endpoint is read
    every 50 ms only around the first and the last batch; in between, the wait follows the rate seen so far.
    """
    wait_metric(port, proc, lambda: metric(port, "redone_stream_messages_total") > 0, timeout)
    first_count, first_time = metric(port, "redone_stream_messages_total"), time.perf_counter()
    first_cpu = process_cpu_seconds(proc.pid)
    brokers = local_broker_pids()
    first_broker_cpu = cpu_seconds(brokers)
    deadline = first_time + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the stream process exited with {proc.returncode}")
        count, now = metric(port, "redone_stream_messages_total"), time.perf_counter()
        if count >= total:
            cpu = process_cpu_seconds(proc.pid)
            per_note = (cpu - first_cpu) / (count - first_count) if cpu is not None and first_cpu is not None else None
            broker_cpu = cpu_seconds(brokers)
            broker_cores = (
                (broker_cpu - first_broker_cpu) / (now - first_time)
                if broker_cpu is not None and first_broker_cpu is not None
                else None
            )
            return (count - first_count) / (now - first_time), per_note, broker_cores
        if now > deadline:
            raise SystemExit("timed out waiting for the stream")
        rate = (count - first_count) / (now - first_time) if count > first_count else 0.0
        remaining = (total - count) / rate if rate else 0.0
        time.sleep(min(2.0, max(0.05, remaining / 2)))


def latency(settings: StreamSettings, texts: list[str], rate: float, seconds: float) -> tuple[list[float], float]:
    """Produce at `rate` notes/s for `seconds`; (produce-to-verdict latencies in seconds, the rate achieved).

    The reader is polled between sends even when the schedule is behind, so a verdict's arrival is seen when it
    comes, not after the last send; sends are not flushed one by one (linger 0 sends each at once): flushing each
    would let this loop fall behind the schedule at high rates and read verdicts late.
    """
    reader = KafkaConsumer(
        settings.output_topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="latest",
        group_id=f"bench-reader-{uuid.uuid4().hex[:6]}",
        fetch_max_wait_ms=20,
    )
    while not reader.assignment():
        reader.poll(timeout_ms=100)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=0)
    sent: dict[str, float] = {}
    latencies: list[float] = []

    def read(timeout_ms: int) -> None:
        for batch in reader.poll(timeout_ms=timeout_ms).values():
            now = time.perf_counter()
            latencies.extend(now - sent[r.key.decode()] for r in batch if r.key.decode() in sent)

    count = int(rate * seconds)
    started = time.perf_counter()
    for i in range(count):
        due = started + i / rate
        read(0)
        while (now := time.perf_counter()) < due:
            read(max(0, int((due - now) * 1000)))
        note_id = f"lat-{i}"
        sent[note_id] = time.perf_counter()
        producer.send(
            settings.input_topic,
            key=note_id.encode(),
            value=json.dumps({"note_id": note_id, "content": texts[i % len(texts)]}).encode(),
        )
    achieved = count / (time.perf_counter() - started)
    deadline = time.perf_counter() + 60
    while len(latencies) < count and time.perf_counter() < deadline:
        read(100)
    producer.close()
    reader.close()
    return latencies, achieved


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _settings(args: argparse.Namespace, tag: str) -> StreamSettings:
    return StreamSettings(
        bootstrap=args.bootstrap,
        input_topic=f"{tag}-in",
        output_topic=f"{tag}-verdicts",
        review_topic=f"{tag}-review",
        dlq_topic=f"{tag}-dlq",
        group_id=f"{tag}-group",
        guarantee=args.guarantee,
        instance_id=tag,
        batch_size=args.batch_size,
        max_wait_ms=args.max_wait_ms,
        topic_partitions=args.partitions,
        metrics_port=0,
        # the rebalance timeout: a join retried under load leaves the broker waiting this long for the first try
        max_poll_interval_ms=30_000,
    )


def _produce(settings: StreamSettings, notes: list[Note]) -> None:
    """The backlog a drain starts from: every note in the input topic before the stream starts."""
    ensure_topics(settings)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=20)
    for note in notes:
        producer.send(settings.input_topic, key=note.note_id.encode(), value=note.model_dump_json().encode())
    producer.flush()
    producer.close()


def _drain_figures(
    number: int,
    before: tuple[float, float],
    after: tuple[float, float],
    e2e: float,
    stream_cpu: float | None,
    broker_cores: float | None,
) -> dict[str, Any]:
    """One drain against the mean of the baselines measured just before and just after it."""
    base, base_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    return {
        "drain": number,
        "classify_batch_notes_per_s": round(base, 1),
        "classify_batch_before_after": [round(before[0], 1), round(after[0], 1)],
        "kafka_e2e_notes_per_s": round(e2e, 1),
        "ratio": round(e2e / base, 3),
        "classify_batch_cpu_us_per_note": round(1e6 * base_cpu, 1),
        "classify_batch_cores": round(base * base_cpu, 2),
        "stream_cpu_us_per_note": round(1e6 * stream_cpu, 1) if stream_cpu else None,
        "kafka_cpu_us_per_note": round(1e6 * (stream_cpu - base_cpu), 1) if stream_cpu else None,
        "stream_cores": round(e2e * stream_cpu, 2) if stream_cpu else None,
        # the ratio, split: (stream cores / baseline cores) x (baseline CPU per note / stream CPU per note)
        "ratio_from_cores": round(e2e * stream_cpu / (base * base_cpu), 3) if stream_cpu else None,
        "ratio_from_cpu_per_note": round(base_cpu / stream_cpu, 3) if stream_cpu else None,
        # a broker on this machine (as here) takes CPU the stream could otherwise use
        "local_broker_cores": round(broker_cores, 2) if broker_cores is not None else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kafka_e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, type=Path, help="model bundle directory")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--notes", type=int, default=5000, help="notes for the baseline and throughput runs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=int, default=50)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--guarantee", choices=("at-least-once", "exactly-once"), default="at-least-once")
    parser.add_argument(
        "--workers", type=int, default=None, help="model passes at once (both runs; default: the SDK's, one per core)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads of each pass (both runs; alone: one pass at a time)"
    )
    parser.add_argument("--latency-rate", type=float, default=None, help="notes/s (default: half the throughput)")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument(
        "--spinning",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the stream's ONNX Runtime threads busy-wait between batches (default: ONNX Runtime's choice)",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="run the stream under cProfile, write its stats here, print the top"
    )
    parser.add_argument(
        "--drains",
        type=int,
        default=1,
        help="backlogs to drain, each by a fresh stream process between two baselines; the median ratio is reported",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.drains < 1:
        parser.error("--drains must be at least 1")
    exit_on_sigterm()  # a terminated benchmark still stops its stream and deletes its topics

    texts = load_texts(args.notes)
    notes = [Note(note_id=f"n{i}", content=t) for i, t in enumerate(texts)]
    moderator = Moderator.load(args.bundle, intra_op_threads=args.threads, workers=args.workers)
    baselines = [baseline(moderator, notes, args.batch_size)]  # before the first drain, then after each
    drains: list[dict[str, Any]] = []
    latencies: list[float] = []
    rate = offered = 0.0
    for number in range(1, args.drains + 1):
        settings = _settings(args, f"bench-{uuid.uuid4().hex[:8]}")
        _produce(settings, notes)
        port = _free_port()
        log = Path(tempfile.gettempdir()) / f"{settings.instance_id}-stream.log"
        proc = start_stream(settings.model_copy(update={"metrics_port": port}), args, log)
        try:
            e2e, stream_cpu, broker_cores = throughput(port, proc, len(notes), timeout=600)
            baselines.append(baseline(moderator, notes, args.batch_size))  # the stream is idle now
            if number == args.drains:
                rate = args.latency_rate or max(1.0, e2e / 2)
                latencies, offered = latency(settings, texts, rate, args.latency_seconds)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
            admin.delete_topics(stream_topics(settings), raise_errors=False)
            admin.close()
        drains.append(_drain_figures(number, baselines[-2], baselines[-1], e2e, stream_cpu, broker_cores))

    median = sorted(drains, key=lambda d: d["ratio"])[(len(drains) - 1) // 2]  # the lower one of an even count
    results = {
        "bundle": f"{moderator.bundle.name} {moderator.bundle.version}",
        "notes": len(notes),
        "batch_size": args.batch_size,
        "max_wait_ms": args.max_wait_ms,
        "partitions": args.partitions,
        "guarantee": args.guarantee,
        "threads": args.threads,
        "workers": args.workers,
        # the drain with the median ratio; every drain is under "drains"
        **{k: v for k, v in median.items() if k != "drain"},
        "median_of_drains": len(drains),
        "median_drain": median["drain"],
        "ratio_drains": [d["ratio"] for d in drains],
        "drains": drains,
        "latency_rate_notes_per_s": round(rate, 1),
        "latency_rate_achieved_notes_per_s": round(offered, 1),
        "latency_samples": len(latencies),
        "latency_p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
        "latency_p99_ms": round(1000 * percentile(latencies, 0.99), 1) if latencies else None,
    }
    if args.profile:
        import pstats

        pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(30)
    width = max(len(k) for k in results)
    for key, value in results.items():
        if key != "drains":
            print(f"{key:<{width}}  {value}")
    for drain in drains:
        print(
            f"drain {drain['drain']}: {drain['kafka_e2e_notes_per_s']:,.0f} notes/s through Kafka, "
            f"{drain['classify_batch_notes_per_s']:,.0f} alone, ratio {drain['ratio']} "
            f"(cores {drain['ratio_from_cores']} x CPU per note {drain['ratio_from_cpu_per_note']})"
        )
    print(json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
