"""`redone replay synth`: a seeded, realistic synthetic log built from the shared labeled data.

Feed: notes are texts of the harm sets' dev parts (COLD, SWSR, Davidson) with their labels as ground
truth; note popularity follows a power law (Zipf), exposures decay after a note is created, users differ
in activity (log-normal) and in how much harmful content they are shown (Beta around the harmful base
rate), feed positions and clicks carry a position bias.

Search: page views of SNS-Bench QueryCorr queries. Each query's page holds its labeled note(s) (grade
-1 … 3) and notes of other queries (assumed unrelated, grade -1) in a fixed candidate set; the logged
ranker orders them by relevance plus per-view noise; clicks follow a position-based model with known
examination and attractiveness (written to `synth.json`, so an estimate can be checked against truth).

Texts derived from SNS-Bench are CC BY-NC-SA 4.0: so is anything `synth` writes from them.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from redone_sdk.labeled_data import DATA_SOURCES, default_data_dir, harm_examples, querycorr_examples
from redone_sdk.replay.schemas import JUDGMENTS_SCHEMA, LABELS_SCHEMA, NOTES_SCHEMA, SESSIONS_SCHEMA

__all__ = ["SynthConfig", "synthesize", "write_impressions", "true_examination", "TRUE_ATTRACTIVENESS"]

# Search click model used to simulate: examination of (0-based) rank k, attractiveness by grade.
TRUE_ATTRACTIVENESS = {-1: 0.03, 0: 0.08, 1: 0.2, 2: 0.4, 3: 0.65}


def true_examination(k: np.ndarray | int) -> np.ndarray:
    return np.power(np.asarray(k, dtype=np.float64) + 1.0, -0.8)


SURFACES = ("homefeed", "follow", "nearby")
SURFACE_SHARES = (0.75, 0.2, 0.05)


class SynthConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    seed: int = 0
    users: int = Field(default=5_000, ge=1)
    notes: int = Field(default=4_000, ge=1, description="Feed notes (drawn from the harm sets' dev parts).")
    impressions: int = Field(default=300_000, ge=1)
    days: int = Field(default=14, ge=1)
    start: datetime = datetime(2025, 3, 3, tzinfo=timezone.utc)
    harmful_note_share: float = Field(default=0.15, ge=0.0, le=1.0, description="Share of feed notes that are harmful.")
    harmful_rate: float = Field(
        default=0.05, gt=0.0, lt=1.0, description="Expected share of exposures that are harmful."
    )
    user_harm_concentration: float = Field(
        default=4.0, gt=0.0, description="Beta concentration of users' harmful share."
    )
    popularity_exponent: float = Field(default=1.1, gt=0.0, description="Zipf exponent of note popularity.")
    lifetime_hours: float = Field(default=30.0, gt=0.0, description="Mean time from a note's creation to an exposure.")
    feed_positions: int = Field(default=20, ge=1)
    search_sessions: int = Field(default=5_000, ge=0)
    page_size: int = Field(default=10, ge=2)
    search_split: str = Field(
        default="dev", description="QueryCorr split whose queries make the sessions (dev or all)."
    )
    ranker_noise: float = Field(default=1.2, ge=0.0, description="Std-dev of the logged ranker's noise, in grades.")
    bad_rows: int = Field(default=0, ge=0, description="Malformed impressions mixed in (to show the accounting).")
    sources: tuple[str, ...] = ("cold", "swsr", "davidson")


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    weights = np.power(np.arange(1, n + 1, dtype=np.float64), -exponent)
    rng.shuffle(weights)
    return weights


def write_impressions(
    path: Path,
    *,
    rng: np.random.Generator,
    n_impressions: int,
    note_ids: list[str] | np.ndarray,
    note_created: np.ndarray,
    note_harmful: np.ndarray,
    n_users: int,
    start_s: int,
    days: int,
    harmful_rate: float,
    user_harm_concentration: float = 4.0,
    popularity_exponent: float = 1.1,
    lifetime_hours: float = 30.0,
    feed_positions: int = 20,
    bad_rows: int = 0,
    chunk_rows: int = 1_000_000,
    slot_s: int = 3600,
    keep_dictionaries: bool = True,
) -> int:
    """Write a synthetic impression log to Parquet, in time order, in row groups of about `chunk_rows`.

    Time is cut into slots of `slot_s` seconds with a daily cycle of traffic. In each slot a user (by
    activity) is shown a harmful note with the user's own probability (Beta around `harmful_rate`), else
    a benign one; the note is drawn among notes already created, by popularity (Zipf) times
    exp(-age / lifetime). Positions are geometric, clicks carry a position bias. Memory stays bounded.

    `keep_dictionaries`: let the id columns' dictionaries grow as large as needed (64 MiB pages), as a
    logging pipeline writing Parquet for analytics would; False uses pyarrow's default 1 MiB limit, past
    which ids fall back to plain encoding (slower to read back).
    """
    n_notes = len(note_ids)
    weights = _zipf_weights(n_notes, popularity_exponent, rng)
    activity = rng.lognormal(0.0, 1.0, n_users)
    activity_cdf = np.cumsum(activity) / activity.sum()
    a = harmful_rate * user_harm_concentration
    if 0 < a < user_harm_concentration:
        user_harm = rng.beta(a, user_harm_concentration - a, n_users)
    else:
        user_harm = np.full(n_users, harmful_rate)
    pos_p = np.power(0.85, np.arange(feed_positions))
    pos_p /= pos_p.sum()
    note_ctr = rng.beta(2.0, 18.0, n_notes)
    feed_exam = np.power(np.arange(1, feed_positions + 1, dtype=np.float64), -0.5)
    pools = [np.flatnonzero(~note_harmful), np.flatnonzero(note_harmful)]
    lifetime_s = lifetime_hours * 3600.0
    n_slots = max(1, math.ceil(days * 86_400 / slot_s))
    slot_start = start_s + np.arange(n_slots, dtype=np.int64) * slot_s
    hour = ((slot_start - start_s) % 86_400) / 3600.0
    traffic = 1.0 + 0.6 * np.sin(2 * np.pi * (hour - 9.0) / 24.0)  # quiet at night, busy in the evening
    per_slot = rng.multinomial(n_impressions, traffic / traffic.sum())
    user_dict = pa.array([f"u{i:07d}" for i in range(n_users)], type=pa.string())
    note_dict = pa.array(list(note_ids), type=pa.string())
    surface_dict = pa.array(list(SURFACES), type=pa.string())
    schema = pa.schema(
        [
            ("timestamp", pa.timestamp("s", tz="UTC")),
            ("user", pa.string()),
            ("note", pa.string()),
            ("surface", pa.dictionary(pa.int8(), pa.string())),
            ("position", pa.int16()),
            ("click", pa.int8()),
        ]
    )

    def slot_rows(slot: int, n: int) -> dict[str, np.ndarray]:
        users = np.searchsorted(activity_cdf, rng.random(n), side="right").clip(max=n_users - 1)
        harmful = rng.random(n) < user_harm[users]
        notes = np.empty(n, dtype=np.int64)
        age = slot_start[slot] - note_created
        alive = np.where(age >= 0, weights * np.exp(-np.maximum(age, 0) / lifetime_s), 0.0)
        cdfs = []
        for pool in pools:
            w = np.cumsum(alive[pool])
            cdfs.append(w / w[-1] if len(w) and w[-1] > 0 else None)
        if cdfs[0] is None:
            harmful[:] = True
        if cdfs[1] is None:
            harmful[:] = False
        for kind, pool in enumerate(pools):
            pick = harmful if kind else ~harmful
            if pick.any() and cdfs[kind] is not None:
                drawn = np.searchsorted(cdfs[kind], rng.random(int(pick.sum())), side="right")
                notes[pick] = pool[drawn.clip(max=len(pool) - 1)]
        ts = slot_start[slot] + np.sort(rng.integers(0, slot_s, n))
        position = rng.choice(feed_positions, size=n, p=pos_p)
        return {
            "timestamp": ts,
            "user": users,
            "note": notes,
            "surface": rng.choice(len(SURFACES), size=n, p=SURFACE_SHARES),
            "position": position + 1,
            "click": rng.random(n) < feed_exam[position] * note_ctr[notes],
        }

    def write(parts: list[dict[str, np.ndarray]], writer: pq.ParquetWriter) -> None:
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        table = pa.table(
            {
                "timestamp": pa.array(cols["timestamp"], type=pa.timestamp("s", tz="UTC")),
                # Plain text: the writer builds each row group's dictionary from the ids it holds.
                "user": user_dict.take(pa.array(cols["user"].astype(np.int32))),
                "note": note_dict.take(pa.array(cols["note"].astype(np.int32))),
                "surface": pa.DictionaryArray.from_arrays(pa.array(cols["surface"].astype(np.int8)), surface_dict),
                "position": pa.array(cols["position"].astype(np.int16)),
                "click": pa.array(cols["click"].astype(np.int8)),
            },
            schema=schema,
        )
        writer.write_table(table)

    written = 0
    options = {"dictionary_pagesize_limit": 1 << 26} if keep_dictionaries else {}
    with pq.ParquetWriter(path, schema, **options) as writer:
        parts: list[dict[str, np.ndarray]] = []
        pending = 0
        for slot in range(n_slots):
            if per_slot[slot] == 0:
                continue
            parts.append(slot_rows(slot, int(per_slot[slot])))
            pending += int(per_slot[slot])
            if pending >= chunk_rows:
                write(parts, writer)
                written += pending
                parts, pending = [], 0
        if parts:
            write(parts, writer)
            written += pending
        if bad_rows:
            writer.write_table(_bad_impressions(bad_rows, rng, start_s, note_dict, schema))
    return written + bad_rows


def _bad_impressions(
    n: int, rng: np.random.Generator, start_s: int, note_dict: pa.Array, schema: pa.Schema
) -> pa.Table:
    """Malformed rows of five kinds: no user, position 0, click 2, unknown note, no timestamp."""
    kind = np.arange(n) % 5
    ts = [None if k == 4 else start_s + int(rng.integers(0, 86_400)) for k in kind]
    users = [None if k == 0 else "u0000000" for k in kind]
    notes = ["no-such-note" if k == 3 else note_dict[0].as_py() for k in kind]
    return pa.table(
        {
            "timestamp": pa.array(ts, type=pa.timestamp("s", tz="UTC")),
            "user": pa.array(users, type=pa.string()),
            "note": pa.array(notes, type=pa.string()),
            "surface": pa.array(["homefeed"] * n).dictionary_encode().cast(schema.field("surface").type),
            "position": pa.array([0 if k == 1 else 1 for k in kind], type=pa.int16()),
            "click": pa.array([2 if k == 2 else 0 for k in kind], type=pa.int8()),
        },
        schema=schema,
    )


def _harm_pool(data_dir: Path, sources: tuple[str, ...]) -> list[tuple[str, str, str]]:
    pool = []
    for source in sources:
        lang = "en" if source == "davidson" else "zh"
        for example in harm_examples(data_dir, source, "dev"):
            pool.append((example.record["text"], example.label, lang))
    return pool


def _search_pairs(data_dir: Path, split: str) -> list[tuple[str, str, int]]:
    splits = ("dev",) if split == "dev" else ("train", "dev")
    out = []
    for s in splits:
        for example in querycorr_examples(data_dir, s):  # type: ignore[arg-type]
            out.append((example.record["query"], example.record["note"], int(example.label)))
    return out


def synthesize(out_dir: str | Path, config: SynthConfig | None = None, *, data_dir: str | Path | None = None) -> dict:
    """Write impressions, notes, labels, search sessions and judgments under `out_dir`; return the manifest.

    Files: `impressions.parquet`, `notes.parquet`, `labels.parquet`, `sessions.parquet`,
    `judgments.parquet`, `synth.json` (the settings, the true click model and the data licenses).
    """
    config = config or SynthConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(data_dir) if data_dir is not None else default_data_dir()
    rng = np.random.default_rng(config.seed)
    start_s = int(config.start.timestamp())
    end_s = start_s + config.days * 86_400

    # Feed notes from the harm sets' dev parts.
    pool = _harm_pool(data, config.sources)
    harmful_pool = [i for i, p in enumerate(pool) if p[1] != "safe"]
    safe_pool = [i for i, p in enumerate(pool) if p[1] == "safe"]
    n_harm = min(len(harmful_pool), round(config.notes * config.harmful_note_share))
    n_safe = min(len(safe_pool), config.notes - n_harm)
    chosen = list(rng.choice(harmful_pool, n_harm, replace=False)) + list(rng.choice(safe_pool, n_safe, replace=False))
    rng.shuffle(chosen)
    feed_ids = [f"f{i:07d}" for i in range(len(chosen))]
    lifetime_s = config.lifetime_hours * 3600
    created = rng.uniform(start_s - 3 * lifetime_s, end_s - 3600, len(chosen)).astype(np.int64)
    harmful = np.array([pool[i][1] != "safe" for i in chosen], dtype=bool)

    # Search pages from QueryCorr.
    pairs = _search_pairs(data, config.search_split) if config.search_sessions else []
    by_query: dict[str, list[tuple[str, int]]] = {}
    for query, text, grade in pairs:
        by_query.setdefault(query, []).append((text, grade))
    search_texts: dict[str, str] = {}
    for _, text, _ in _search_pairs(data, "all") if pairs else []:
        search_texts.setdefault(text, f"s{len(search_texts):06d}")
    distractors = list(search_texts.values())

    notes_rows = {
        "note_id": feed_ids + list(search_texts.values()),
        "title": [""] * (len(feed_ids) + len(search_texts)),
        "content": [pool[i][0] for i in chosen] + list(search_texts),
        "tags": [[] for _ in range(len(feed_ids) + len(search_texts))],
        "lang": [pool[i][2] for i in chosen] + ["en"] * len(search_texts),
        "author_id": [f"a{int(x):05d}" for x in rng.integers(0, max(1, config.users // 4), len(feed_ids))]
        + [None] * len(search_texts),
        "created_at": [datetime.fromtimestamp(int(t), tz=timezone.utc) for t in created] + [None] * len(search_texts),
    }
    pq.write_table(pa.table(notes_rows, schema=NOTES_SCHEMA), out / "notes.parquet")
    pq.write_table(
        pa.table({"note_id": feed_ids, "label": [pool[i][1] for i in chosen]}, schema=LABELS_SCHEMA),
        out / "labels.parquet",
    )

    written = write_impressions(
        out / "impressions.parquet",
        rng=rng,
        n_impressions=config.impressions,
        note_ids=feed_ids,
        note_created=created,
        note_harmful=harmful,
        n_users=config.users,
        start_s=start_s,
        days=config.days,
        harmful_rate=config.harmful_rate,
        user_harm_concentration=config.user_harm_concentration,
        popularity_exponent=config.popularity_exponent,
        lifetime_hours=config.lifetime_hours,
        feed_positions=config.feed_positions,
        bad_rows=config.bad_rows,
    )

    sessions_written, true_cpr = _write_search(out, config, rng, by_query, search_texts, distractors)
    manifest = {
        "generator": "redone replay synth",
        "config": json.loads(config.model_dump_json()),
        "files": {
            "impressions": "impressions.parquet",
            "notes": "notes.parquet",
            "labels": "labels.parquet",
            "sessions": "sessions.parquet",
            "judgments": "judgments.parquet",
        },
        "rows": {
            "impressions": written,
            "feed_notes": len(feed_ids),
            "harmful_feed_notes": int(harmful.sum()),
            "search_notes": len(search_texts),
            "sessions": sessions_written,
            "queries": len(by_query),
        },
        "truth": {
            "search_examination_by_rank": [round(float(x), 6) for x in true_examination(np.arange(config.page_size))],
            "search_attractiveness_by_grade": {str(k): v for k, v in TRUE_ATTRACTIVENESS.items()},
            "search_expected_cpr_logged": true_cpr,
            "distractor_grade_assumed": -1,
        },
        "data_sources": {
            k: {"name": v[0], "license": v[1]} for k, v in DATA_SOURCES.items() if k in (*config.sources, "sns-bench")
        },
        "license": "CC BY-NC-SA 4.0 where derived from SNS-Bench (sessions, judgments, search notes): "
        "non-commercial use only.",
    }
    (out / "synth.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def _write_search(
    out: Path,
    config: SynthConfig,
    rng: np.random.Generator,
    by_query: dict[str, list[tuple[str, int]]],
    search_texts: dict[str, str],
    distractors: list[str],
) -> tuple[int, float | None]:
    queries = sorted(by_query)
    pages: dict[str, list[tuple[str, int]]] = {}
    judgments: dict[tuple[str, str], int] = {}
    for query in queries:
        own = [(search_texts[text], grade) for text, grade in by_query[query]][: config.page_size - 1]
        own_ids = {n for n, _ in own}
        room = config.page_size - len(own)
        others = [
            d
            for d in rng.choice(distractors, min(len(distractors), room + len(own)), replace=False)
            if d not in own_ids
        ][:room]
        page = own + [(str(n), -1) for n in others]
        pages[query] = page
        for note_id, grade in page:
            judgments[(query, note_id)] = grade
    rows = {"session_id": [], "query": [], "notes": [], "clicks": []}
    expected = []
    if queries and config.search_sessions:
        weights = _zipf_weights(len(queries), 1.0, rng)
        picks = rng.choice(len(queries), size=config.search_sessions, p=weights / weights.sum())
        for s, q in enumerate(picks):
            query = queries[int(q)]
            page = pages[query]
            grades = np.array([g for _, g in page], dtype=np.float64)
            order = np.argsort(-(grades + rng.normal(0.0, config.ranker_noise, len(page))), kind="stable")
            shown = [page[i] for i in order]
            exam = true_examination(np.arange(len(shown)))
            attract = np.array([TRUE_ATTRACTIVENESS[g] for _, g in shown])
            clicks = (rng.random(len(shown)) < exam * attract).astype(np.int8)
            expected.append(1.0 - float(np.prod(1.0 - exam * attract)))
            rows["session_id"].append(f"q{s:07d}")
            rows["query"].append(query)
            rows["notes"].append([n for n, _ in shown])
            rows["clicks"].append(clicks.tolist())
    pq.write_table(pa.table(rows, schema=SESSIONS_SCHEMA), out / "sessions.parquet")
    pq.write_table(
        pa.table(
            {
                "query": [q for q, _ in judgments],
                "note_id": [n for _, n in judgments],
                "grade": list(judgments.values()),
            },
            schema=JUDGMENTS_SCHEMA,
        ),
        out / "judgments.parquet",
    )
    true_cpr = float(np.mean(expected)) if expected else None
    return len(rows["query"]), (round(true_cpr, 6) if true_cpr is not None and math.isfinite(true_cpr) else None)


def period_of(config: SynthConfig) -> tuple[datetime, datetime]:
    return config.start, config.start + timedelta(days=config.days)
