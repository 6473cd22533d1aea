"""The Kafka path's own CPU per note, without a model: what any stream pays per message on this machine.

    scripts/kafka-broker start
    python -m benchmarks.kafka_clients [--notes 20000] [--batch-size 64] [--bundle PATH] [--json out.json]

Each client drains the same backlog of note messages doing the stream's per-message work and nothing else: parse
the value as JSON, produce one verdict (a fixed ModerationResult-sized JSON, two headers) keyed by the note,
and per batch wait for the acknowledgements (acks=all, idempotent) and commit the offsets synchronously.
Reported per client: notes/s, the client process's CPU microseconds per note (every thread), and the local
broker's (when it runs on this machine, as in the tests). `kafka-python` is the client the adapter uses;
`confluent-kafka` (librdkafka, C) is shown for comparison, or as unavailable when it is not installed.
Set against the model's own CPU per note, these figures bound the stream's ratio to `classify_batch` alone
(benchmarks/kafka_e2e.py) from above. Measured figures: benchmarks/results/kafka.md.

With `--bundle` each batch is also classified (notes validated from their JSON, `classify_batch`, one verdict
JSON each; real COLD dev texts), one batch at a time in one thread -- simpler than `redone stream`, which
classifies the next batch while it delivers the last -- and each drain's notes/s is divided by
`classify_batch` alone on the same notes, measured before and after it: the same loop with either client, so
the difference between the clients' ratios is what the client costs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .kafka_e2e import baseline, cpu_seconds, load_texts, local_broker_pids

CLIENTS = ("kafka-python", "confluent-kafka")
_VERDICT = json.dumps(
    {
        "note_id": "n0",
        "flagged": False,
        "label": "safe",
        "scores": {"offensive": 0.0123, "hate": 0.0021, "sexism": 0.0012},
        "action": "allow",
        "model": "redone-small 0.3.1",
        "truncated": False,
    }
).encode()
_TEXT = "今天去了咖啡馆，拍了很多照片，推荐给大家。周末人不多，环境安静，适合看书。"


def _fill(bootstrap: str, topic: str, texts: list[str]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    for i, text in enumerate(texts):
        value = json.dumps({"note_id": f"n{i}", "content": text}, ensure_ascii=False).encode()
        producer.send(topic, key=f"n{i}".encode(), value=value)
    producer.flush()
    producer.close()


Verdicts = Callable[[list[bytes]], list[bytes]]


def fixed_verdicts(values: list[bytes]) -> list[bytes]:
    """No model: parse each note's JSON and answer with a fixed verdict of the real one's size."""
    for value in values:
        json.loads(value)
    return [_VERDICT] * len(values)


def model_verdicts(moderator: Any) -> Verdicts:
    """The stream's own work per batch: validate each value as a `Note`, `classify_batch`, one JSON verdict each."""
    from redone_sdk import Note

    def verdicts(values: list[bytes]) -> list[bytes]:
        results = moderator.classify_batch([Note.model_validate_json(value) for value in values])
        return [result.model_dump_json().encode() for result in results]

    return verdicts


def _headers(offset: int) -> list[tuple[str, bytes]]:
    return [("redone-model", b"redone-small 0.3.1"), ("redone-source-offset", str(offset).encode())]


def _drain_kafka_python(
    bootstrap: str, source: str, sink: str, notes: int, batch_size: int, verdicts: Verdicts
) -> Callable[[], int]:
    from kafka import KafkaConsumer, KafkaProducer

    consumer = KafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=f"{source}-group",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=batch_size,
        # the rebalance timeout: a join retried under load leaves the broker waiting this long for the first try
        max_poll_interval_ms=30_000,
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    deadline = time.monotonic() + 120
    while not consumer.assignment():
        if time.monotonic() > deadline:
            raise SystemExit(f"kafka-python: no partition of {source} assigned within 120 s")
        consumer.poll(timeout_ms=100, update_offsets=False)
    consumer.seek_to_beginning()

    def run() -> int:
        done, deadline = 0, time.monotonic() + 300
        while done < notes and time.monotonic() < deadline:
            records = [r for batch in consumer.poll(timeout_ms=500).values() for r in batch]
            for record, verdict in zip(records, verdicts([r.value for r in records]), strict=True):
                producer.send(sink, key=record.key, value=verdict, headers=_headers(record.offset))
            done += len(records)
            producer.flush()
            consumer.commit()
        consumer.close()
        producer.close()
        return done

    return run


def _drain_confluent(
    bootstrap: str, source: str, sink: str, notes: int, batch_size: int, verdicts: Verdicts
) -> Callable[[], int]:
    from confluent_kafka import Consumer, Producer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{source}-group",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([source])
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    first = consumer.consume(1, 30.0)  # joins the group; this message is handled in the timed part

    def run() -> int:
        done, pending, deadline = 0, first, time.monotonic() + 300
        while done < notes and time.monotonic() < deadline:
            polled, pending = pending or consumer.consume(batch_size, 0.5), None
            messages = [m for m in polled if not m.error()]
            for message, verdict in zip(messages, verdicts([m.value() for m in messages]), strict=True):
                producer.produce(sink, key=message.key(), value=verdict, headers=_headers(message.offset()))
            done += len(messages)
            producer.flush()
            if polled:
                consumer.commit(asynchronous=False)
        consumer.close()
        return done

    return run


_DRAINS = {"kafka-python": _drain_kafka_python, "confluent-kafka": _drain_confluent}


def measure(
    client: str,
    *,
    bootstrap: str,
    texts: list[str],
    batch_size: int,
    partitions: int,
    verdicts: Verdicts = fixed_verdicts,
) -> dict[str, Any]:
    """One client's drain of a fresh backlog; {"unavailable": why} when the client is not installed."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    try:
        __import__({"kafka-python": "kafka", "confluent-kafka": "confluent_kafka"}[client])
    except ImportError as exc:
        return {"client": client, "unavailable": f"not installed ({exc})"}
    tag = f"clients-{uuid.uuid4().hex[:8]}"
    source, sink = f"{tag}-in", f"{tag}-out"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(source, partitions, 1), NewTopic(sink, partitions, 1)])
    try:
        notes = len(texts)
        _fill(bootstrap, source, texts)
        run = _DRAINS[client](bootstrap, source, sink, notes, batch_size, verdicts)
        brokers = local_broker_pids()
        wall, cpu, broker = time.perf_counter(), time.process_time(), cpu_seconds(brokers)
        done = run()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        broker_after = cpu_seconds(brokers)
    finally:
        admin.delete_topics([source, sink])
        admin.close()
    if done < notes:
        raise SystemExit(f"{client}: drained {done} of {notes} notes in the time allowed")
    return {
        "client": client,
        "notes": done,
        "notes_per_s": round(done / wall, 1),
        "client_cpu_us_per_note": round(1e6 * cpu / done, 1),
        "local_broker_cpu_us_per_note": (
            round(1e6 * (broker_after - broker) / done, 1) if broker is not None and broker_after is not None else None
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kafka_clients", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--notes", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="each client drains this many backlogs, in turn")
    parser.add_argument("--clients", default=",".join(CLIENTS), help=f"comma-separated, among {', '.join(CLIENTS)}")
    parser.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="also classify each batch with this bundle (the stream's work, one batch at a time) and report the "
        "ratio to classify_batch alone, measured before and after each drain",
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = sorted(set(clients) - set(CLIENTS))
    if unknown:
        parser.error(f"unknown clients {unknown}; choose among {list(CLIENTS)}")
    texts = load_texts(args.notes) if args.bundle else [_TEXT] * args.notes
    verdicts: Verdicts = fixed_verdicts
    alone: Callable[[], tuple[float, float]] | None = None  # classify_batch alone on the same notes
    if args.bundle:
        from redone_sdk import Moderator, Note

        moderator = Moderator.load(args.bundle)
        verdicts = model_verdicts(moderator)
        notes = [Note(note_id=f"n{i}", content=t) for i, t in enumerate(texts)]
        alone = lambda: baseline(moderator, notes, args.batch_size)  # noqa: E731

    rows: list[dict[str, Any]] = []
    before = alone() if alone else None
    for round_ in range(1, args.rounds + 1):  # interleaved, so a noisy spell hits every client alike
        for client in clients:
            row = measure(
                client,
                bootstrap=args.bootstrap,
                texts=texts,
                batch_size=args.batch_size,
                partitions=args.partitions,
                verdicts=verdicts,
            )
            if alone and "notes_per_s" in row:
                after = alone()
                base = (before[0] + after[0]) / 2
                row["classify_batch_notes_per_s"] = round(base, 1)
                row["ratio"] = round(row["notes_per_s"] / base, 3)
                before = after
            rows.append({"round": round_, **row})
            if "unavailable" in row:
                print(f"round {round_}  {client:<16} unavailable: {row['unavailable']}")
            else:
                ratio = f"  ratio {row['ratio']} to classify_batch alone" if "ratio" in row else ""
                print(
                    f"round {round_}  {client:<16} {row['notes_per_s']:>9,.0f} notes/s  "
                    f"client {row['client_cpu_us_per_note']:>6.1f} µs/note  "
                    f"broker {row['local_broker_cpu_us_per_note']} µs/note{ratio}"
                )
    results = {
        "notes": args.notes,
        "batch_size": args.batch_size,
        "partitions": args.partitions,
        "bundle": str(args.bundle) if args.bundle else None,
        "runs": rows,
    }
    print(json.dumps(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
