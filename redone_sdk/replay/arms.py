"""Arms of an exposure replay, and the cache that makes the model run once per distinct note and bundle.

An arm is a moderation setup: a model (a `Moderator`, or scores computed elsewhere) and a `Policy`, or
nothing at all (a control arm that leaves the log as it is). Arms that share a bundle share its scores:
each distinct note is scored once per bundle (and kept on disk when the cache has a folder), and each
arm's policy re-decides actions from those scores, vectorized (`decide_actions` is `Policy.decide`'s
action over a score matrix).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from redone_sdk.errors import ModelOutputError, PolicyError
from redone_sdk.policy import Policy
from redone_sdk.replay.schemas import ReplayInputError
from redone_sdk.schemas import Note

if TYPE_CHECKING:
    from redone_sdk.matcher import NoteQueryMatcher
    from redone_sdk.moderator import Moderator

__all__ = [
    "ALLOW",
    "REVIEW",
    "BLOCK",
    "Arm",
    "NoteScores",
    "ScoreCache",
    "decide_actions",
    "policy_thresholds",
    "moderator_fingerprint",
    "matcher_fingerprint",
    "CACHE_ENV",
    "default_cache_dir",
]

log = logging.getLogger(__name__)

ALLOW, REVIEW, BLOCK = 0, 1, 2
CACHE_ENV = "REDONE_CACHE_DIR"  # the project's cache folder; replay scores go under <it>/replay-scores


def default_cache_dir() -> Path:
    """The score cache shared by every run: `$REDONE_CACHE_DIR/replay-scores`, else
    `$XDG_CACHE_HOME/redone-sdk/replay-scores` (`~/.cache/redone-sdk/replay-scores`); a new output folder
    reuses the scores of earlier runs."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "replay-scores"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "redone-sdk" / "replay-scores"


ACTION_NAMES = ("allow", "review", "block")


def policy_thresholds(policy: Policy, categories: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(review, block) thresholds per category, in `categories` order; a rule that never blocks gives +inf."""
    policy.check_categories(categories)
    review = np.array([policy.rule_for(c).review for c in categories], dtype=np.float64)
    block = np.array(
        [np.inf if policy.rule_for(c).block is None else policy.rule_for(c).block for c in categories], dtype=np.float64
    )
    return review, block


def decide_actions(policy: Policy, categories: Sequence[str], scores: np.ndarray) -> np.ndarray:
    """The action code (ALLOW / REVIEW / BLOCK) of each row of `scores` [notes, categories] under `policy`.

    Equals `Policy.decide(dict(zip(categories, row)))[1]` for every row (the tests check it), in one
    vectorized pass, so a threshold sweep over a million notes takes milliseconds. Like `Policy.decide` it fails
    closed on a row with a non-finite score: `ModelOutputError`, or REVIEW when the policy's `on_invalid_output`
    is "review" (a NaN compares false with every threshold: it would otherwise be ALLOW).
    """
    review, block = policy_thresholds(policy, categories)
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(categories):
        raise ValueError(f"scores must be [notes, {len(categories)}], got {values.shape}")
    invalid = ~np.isfinite(values).all(axis=1)
    if invalid.any() and policy.on_invalid_output == "error":
        first = int(np.flatnonzero(invalid)[0])
        raise ModelOutputError(
            f"{int(invalid.sum())} score rows are not finite (the first: row {first}); "
            f"policy {policy.name!r} has on_invalid_output='error'",
            index=first,
        )
    out = np.zeros(len(values), dtype=np.int8)
    for j in range(len(categories)):  # a loop over a few categories beats a reduction along a short axis
        column = np.ascontiguousarray(values[:, j])
        out = np.maximum(
            out, np.where(column >= block[j], BLOCK, np.where(column >= review[j], REVIEW, ALLOW)).astype(np.int8)
        )
    out[invalid] = REVIEW
    return out


@dataclass(frozen=True)
class NoteScores:
    """Harm scores of notes computed elsewhere: one row per note id, one column per category."""

    note_ids: pa.Array
    categories: tuple[str, ...]
    matrix: np.ndarray

    def __post_init__(self) -> None:
        if self.matrix.shape != (len(self.note_ids), len(self.categories)):
            raise ValueError(
                f"scores matrix {self.matrix.shape} does not fit "
                f"{len(self.note_ids)} notes x {len(self.categories)} categories"
            )

    @classmethod
    def from_mapping(
        cls, scores: Mapping[str, Mapping[str, float]], categories: Sequence[str] | None = None
    ) -> NoteScores:
        """From {note_id: {category: score}}; categories default to the first note's, in its order."""
        ids = list(scores)
        cats = tuple(categories) if categories is not None else tuple(next(iter(scores.values()), {}))
        matrix = np.array([[float(scores[n][c]) for c in cats] for n in ids], dtype=np.float32).reshape(
            len(ids), len(cats)
        )
        return cls(pa.array(ids, type=pa.string()), cats, matrix)

    def lookup(self, note_ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(scores aligned to `note_ids`, mask of ids that have no scores)."""
        rows = (
            pc.index_in(note_ids, value_set=self.note_ids).cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
        )
        missing = rows < 0
        out = np.zeros((len(rows), len(self.categories)), dtype=np.float32)
        out[~missing] = self.matrix[rows[~missing]]
        return out, missing


@dataclass
class Arm:
    """One moderation setup. `policy=None` and no model: a control arm that removes nothing.

    Give either `moderator` (a loaded `Moderator`; its policy is used unless `policy` is given) or
    `scores` (a `NoteScores`, e.g. verdicts computed by another system) with a `policy`.
    `review_delay`: how long after a note enters review its exposures stop (None: the replay's default).
    """

    name: str
    policy: Policy | None = None
    moderator: Moderator | None = None
    scores: NoteScores | None = None
    review_delay: timedelta | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ReplayInputError("an arm needs a non-empty name")
        if self.moderator is not None and self.scores is not None:
            raise ReplayInputError(f"arm {self.name!r}: give a moderator or precomputed scores, not both")
        if self.moderator is not None and self.policy is None:
            self.policy = self.moderator.policy
        if self.scores is not None and self.policy is None:
            raise ReplayInputError(f"arm {self.name!r}: precomputed scores need a policy")
        if self.policy is not None and self.moderator is None and self.scores is None:
            raise ReplayInputError(f"arm {self.name!r}: a policy needs a moderator or precomputed scores")
        if self.policy is not None:
            try:
                self.policy.check_categories(self.categories)
            except PolicyError as exc:
                raise ReplayInputError(f"arm {self.name!r}: {exc}") from None

    @classmethod
    def control(cls, name: str = "control") -> Arm:
        return cls(name=name)

    @classmethod
    def from_bundle(
        cls,
        name: str,
        bundle: str | Path | None,
        policy: Policy | str | Path | None = None,
        *,
        review_delay: timedelta | None = None,
        **load_options,
    ) -> Arm:
        """Load a `Moderator` from a bundle (None: the default bundle) with an optional policy file."""
        from redone_sdk.moderator import Moderator

        moderator = Moderator.load(bundle, policy=policy, **load_options)
        return cls(name=name, moderator=moderator, review_delay=review_delay)

    @property
    def is_control(self) -> bool:
        return self.policy is None

    @property
    def categories(self) -> tuple[str, ...]:
        if self.moderator is not None:
            return tuple(self.moderator.categories)
        if self.scores is not None:
            return self.scores.categories
        return ()

    def describe(self) -> str:
        if self.is_control:
            return "no moderation (the log as it is)"
        source = (
            f"bundle {self.moderator.bundle.name} {self.moderator.bundle.version}"
            if self.moderator is not None
            else "precomputed scores"
        )
        return f"{source}, policy {self.policy.name!r}"


def _bundle_fingerprint(kind: str, model: Moderator | NoteQueryMatcher) -> str:
    """What makes a model's scores: the bundle's files and what runs them (`backend_info`: the resolved backend,
    graph precision or dtype, providers; threads, workers and batch size change no score and are left out)."""
    bundle = model.bundle
    manifest = bundle.manifest
    payload = json.dumps(
        {
            "kind": kind,
            "name": bundle.name,
            "version": bundle.version,
            "files": dict(sorted(manifest.files.items())),
            "default_graph": manifest.default_graph,
            "backend": dataclasses.asdict(model.backend_info),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def moderator_fingerprint(moderator: Moderator) -> str:
    """Identifies a moderator's scores: bundle name, version, file checksums and the backend that runs them."""
    return _bundle_fingerprint("moderation", moderator)


def matcher_fingerprint(matcher: NoteQueryMatcher) -> str:
    """Identifies a matcher's scores, as `moderator_fingerprint` does a moderator's."""
    return _bundle_fingerprint("matching", matcher)


@dataclass
class _Store:
    """Scores keyed by a string (note id + text hash, …): a table in memory, optionally a Parquet file that
    several runs (and processes) share: a save merges what others wrote since and replaces the file atomically."""

    columns: tuple[str, ...]
    path: Path | None
    keys: pa.Array = field(default_factory=lambda: pa.array([], type=pa.string()))
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    dirty: bool = False

    def __post_init__(self) -> None:
        self.matrix = np.zeros((0, len(self.columns)), dtype=np.float32)
        loaded = self._read()
        if loaded is not None:
            self.keys, self.matrix = loaded

    def _read(self) -> tuple[pa.Array, np.ndarray] | None:
        """The file's keys and scores; None when there is none, or it is unreadable or of other columns (a
        cache is never worth failing a run for: it is warned about and rebuilt)."""
        if self.path is None or not self.path.is_file():
            return None
        try:
            table = pq.read_table(self.path)
        except (OSError, pa.ArrowException) as exc:
            log.warning("score cache %s is unreadable (%s); scoring again", self.path, exc)
            return None
        if table.column_names != ["key", *self.columns] or not pa.types.is_string(table.schema.field("key").type):
            log.warning("score cache %s has other columns; ignoring it", self.path)
            return None
        keys = table.column("key").combine_chunks()
        matrix = np.stack([table.column(c).to_numpy().astype(np.float32) for c in self.columns], axis=1)
        return keys, matrix.reshape(len(keys), len(self.columns))

    def get(self, keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        rows = pc.index_in(keys, value_set=self.keys).cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
        missing = rows < 0
        out = np.zeros((len(keys), len(self.columns)), dtype=np.float32)
        out[~missing] = self.matrix[rows[~missing]]
        return out, missing

    def put(self, keys: pa.Array, values: np.ndarray) -> None:
        if len(keys) == 0:
            return
        self.keys = pa.concat_arrays([self.keys, keys.cast(pa.string())])
        self.matrix = np.concatenate([self.matrix, values.astype(np.float32)])
        self.dirty = True

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        on_disk = self._read()  # another run may have added scores since this one loaded the file
        if on_disk is not None and len(on_disk[0]):
            theirs, their_matrix = on_disk
            new = pc.invert(pc.is_in(theirs, value_set=self.keys)).to_numpy(zero_copy_only=False)
            if new.any():
                self.keys = pa.concat_arrays([self.keys, theirs.filter(pa.array(new))])
                self.matrix = np.concatenate([self.matrix, their_matrix[new]])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table({"key": self.keys, **{c: self.matrix[:, i] for i, c in enumerate(self.columns)}})
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            pq.write_table(table, tmp)
            tmp.replace(self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self.dirty = False


class ScoreCache:
    """Model scores per (bundle, note text): in memory for a run, and on disk when `directory` is given
    (the CLI's default, `default_cache_dir()`, is shared by every run, whatever its output folder).

    The key of a note is its id and the SHA-256 of its text, so a note edited since it was scored is
    scored again; a bundle's scores live in a file named by the hash of its fingerprint (name, version, file
    checksums and the backend that runs them, `backend_info`) and of the score columns (the categories the
    policy reads), so neither another bundle, backend nor category set is ever served them. Thresholds of a
    policy change no score: arms that share a bundle share its scores.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._stores: dict[tuple[str, tuple[str, ...]], _Store] = {}
        self.model_calls: dict[str, int] = {}

    def _store(self, fingerprint: str, columns: tuple[str, ...]) -> _Store:
        key = (fingerprint, columns)
        if key not in self._stores:
            name = hashlib.sha256(json.dumps([fingerprint, list(columns)]).encode()).hexdigest()[:32]
            path = self.directory / f"scores-{name}.parquet" if self.directory else None
            self._stores[key] = _Store(columns=columns, path=path)
        return self._stores[key]

    def scores(
        self,
        fingerprint: str,
        columns: Sequence[str],
        keys: pa.Array,
        compute: Callable[[np.ndarray], np.ndarray],
        *,
        save: bool = True,
    ) -> np.ndarray:
        """Scores of each key; `compute(positions)` scores the keys not cached yet (positions into `keys`)."""
        store = self._store(fingerprint, tuple(columns))
        values, missing = store.get(keys)
        todo = np.flatnonzero(missing)
        if len(todo):
            fresh = np.asarray(compute(todo), dtype=np.float32).reshape(len(todo), len(columns))
            store.put(keys.take(pa.array(todo)), fresh)
            if save:
                store.save()
            values[todo] = fresh
        self.model_calls[fingerprint] = self.model_calls.get(fingerprint, 0) + len(todo)
        return values

    def moderation_scores(
        self,
        moderator: Moderator,
        note_ids: pa.Array,
        notes: Iterable[Note],
        *,
        chunk: int = 20_000,
        batch_size: int = 1024,
    ) -> np.ndarray:
        """Harm scores [len(note_ids), categories], in `note_ids` order.

        `notes` yields the `Note` of every id (in any order, e.g. streamed from the notes table); they are
        keyed by id and text hash in chunks, and only those not cached go through the model.
        """
        from redone_sdk.replay.hashing import text_hash

        fingerprint = moderator_fingerprint(moderator)
        categories = tuple(moderator.categories)
        store = self._store(fingerprint, categories)
        out = np.zeros((len(note_ids), len(categories)), dtype=np.float32)
        found = np.zeros(len(note_ids), dtype=bool)
        scored = 0

        def process(buffer: list[Note]) -> None:
            nonlocal scored
            ids = pa.array([n.note_id for n in buffer], type=pa.string())
            keys = pa.array([f"{n.note_id}\x1f{text_hash(n.text)}" for n in buffer], type=pa.string())
            values, missing = store.get(keys)
            todo = np.flatnonzero(missing)
            for start in range(0, len(todo), batch_size):
                part = todo[start : start + batch_size]
                results = moderator.classify_batch([buffer[int(i)] for i in part])
                values[part] = [[r.scores[c] for c in categories] for r in results]
            if len(todo):
                store.put(keys.take(pa.array(todo)), values[todo])
                scored += len(todo)
                log.info(
                    "scored %d notes with %s (%d from cache so far)",
                    scored,
                    moderator,
                    found.sum() + len(buffer) - scored,
                )
            rows = pc.index_in(ids, value_set=note_ids).cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
            mine = rows >= 0
            out[rows[mine]] = values[mine]
            found[rows[mine]] = True

        buffer: list[Note] = []
        for note in notes:
            buffer.append(note)
            if len(buffer) >= chunk:
                process(buffer)
                buffer = []
        if buffer:
            process(buffer)
        store.save()
        self.model_calls[fingerprint] = self.model_calls.get(fingerprint, 0) + scored
        if not found.all():
            missing_ids = note_ids.filter(pa.array(~found))[:3].to_pylist()
            raise ReplayInputError(
                f"{int((~found).sum())} notes to score were not found in the notes table, e.g. {missing_ids}"
            )
        return out
