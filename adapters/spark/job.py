"""The driver side of Spark scoring: read a Parquet notes dataset, score it on the executors, write the scores
table (`redone_sdk.scores_table`).

The driver loads and verifies the bundle (digest pin, signature) once, ships its folder to the executors with
`SparkContext.addFile` and pins its digest in the task: each Python worker verifies its copy before scoring
(worker.py). Notes go through `mapInArrow` in Arrow batches of `spark.sql.execution.arrow.maxRecordsPerBatch`.

Bad input rows never stop the job: each note is validated first (`worker.check_batches`, the `Note` rules of the
local engine); an invalid one is skipped, counted (`ScoreSummary.bad_rows`) and written with its reason to
`OUTPUT/_bad_rows` (note_id, error), a folder Spark's and pyarrow's dataset readers leave out of the table. A
`note_id` repeated among the valid rows is scored once, from its first row in file order (files by path, rows
in order), as the local engine keeps it; the later rows are bad rows too (`DUPLICATE_ID`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redone_sdk.errors import InvalidInputError, RedOneError
from redone_sdk.scores_table import BUNDLE_COLUMNS, NOTE_ID, PAIR_SCORE, QUERY, VERDICT_COLUMNS, score_column

from .worker import ERROR_COLUMN, ERROR_MARK, ScoringSpec, check_batches, score_batches, score_pair_batches, spec_for

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from redone_sdk.inference.options import InferenceOptions
    from redone_sdk.matcher import NoteQueryMatcher
    from redone_sdk.moderator import Moderator

__all__ = [
    "SparkScoringError",
    "ScoreSummary",
    "bad_rows_path",
    "get_session",
    "score_checked",
    "score_notes",
    "score_pairs",
    "score_with_spec",
]

TEXT_COLUMNS = ("title", "content")
BAD_ROWS = "_bad_rows"  # under the output: the notes set aside, with why
DUPLICATE_ID = "duplicate note_id: an earlier row with this id is scored"
_FILE, _ROW = "_redone_file", "_redone_row"  # where a row was read: the order that decides which copy is first


class SparkScoringError(RedOneError):
    """The Spark job could not read the notes or score them; the message is the one-line reason."""


@dataclass(frozen=True)
class ScoreSummary:
    notes: int
    output: str
    bundle: str
    digest: str
    bad_rows: int = 0  # notes that failed validation or repeat an earlier note_id: skipped, in `bad_rows_path`
    bad_rows_path: str | None = None


def get_session(master: str | None = None, app_name: str = "redone-score") -> SparkSession:
    """The active SparkSession (spark-submit's, a test's), or a new one on `master` (default: Spark's own).

    Launched by plain Python (not spark-submit), Python workers run this interpreter unless PYSPARK_PYTHON (or
    spark.pyspark.python) says otherwise; under spark-submit the cluster's settings decide."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    return builder.getOrCreate()


def _reason(exc: BaseException) -> str:
    """One line out of a Spark failure: our executors' mark, else the exception's first meaningful line."""
    text = str(exc)
    found = re.search(re.escape(ERROR_MARK) + r"(.*)", text)
    if found:
        return found.group(1).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("at ", "Traceback", "File ", "JVM stacktrace")):
            return line[:500]
    return type(exc).__name__


def _read_notes(spark: SparkSession, notes: str | Path) -> DataFrame:
    from pyspark.sql import functions as F

    path = Path(notes)
    if not path.exists() and "://" not in str(notes):
        raise InvalidInputError(f"no such notes dataset: {notes}")
    try:
        frame = spark.read.parquet(str(notes))
    except Exception as exc:  # AnalysisException, SparkException: a folder with no Parquet, a corrupt footer
        raise SparkScoringError(f"cannot read notes dataset {notes} as Parquet: {_reason(exc)}") from None
    columns = frame.columns
    if NOTE_ID not in columns:
        raise InvalidInputError(f"notes dataset {notes} has no {NOTE_ID!r} column (columns: {', '.join(columns)})")
    if not any(c in columns for c in TEXT_COLUMNS):
        raise InvalidInputError(
            f"notes dataset {notes} has neither 'title' nor 'content' (columns: {', '.join(columns)})"
        )
    return frame.select(
        F.col(NOTE_ID).cast("string").alias(NOTE_ID),
        *[(F.col(c).cast("string") if c in columns else F.lit(None).cast("string")).alias(c) for c in TEXT_COLUMNS],
        F.col("_metadata.file_path").alias(_FILE),
        F.col("_metadata.row_index").alias(_ROW),
    )


def _checked(frame: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(valid notes, one per note_id; (note_id, error) of the rest): each row validated once per use on the
    executors; of a note_id on several valid rows, the first in file order is kept (the local engine's rule)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    schema = StructType([*frame.schema.fields, StructField(ERROR_COLUMN, StringType(), True)])
    checked = frame.mapInArrow(check_batches, schema)
    invalid = checked.where(F.col(ERROR_COLUMN).isNotNull()).select(NOTE_ID, ERROR_COLUMN)
    rank = F.row_number().over(Window.partitionBy(NOTE_ID).orderBy(_FILE, _ROW))
    ranked = checked.where(F.col(ERROR_COLUMN).isNull()).drop(ERROR_COLUMN).withColumn("_rank", rank)
    good = ranked.where(F.col("_rank") == 1).drop("_rank", _FILE, _ROW)
    repeated = ranked.where(F.col("_rank") > 1).select(NOTE_ID, F.lit(DUPLICATE_ID).alias(ERROR_COLUMN))
    return good, invalid.unionByName(repeated)


def bad_rows_path(output: str | Path) -> str:
    return f"{str(output).rstrip('/')}/{BAD_ROWS}"


def _write_bad_rows(bad: DataFrame, output: str | Path, what: str) -> int:
    """Write the invalid notes (if any) under the output; their number."""
    try:
        count = bad.count()
        if count:
            bad.coalesce(1).write.mode("overwrite").parquet(bad_rows_path(output))
    except Exception as exc:
        raise SparkScoringError(f"writing the bad rows of {what} failed: {_reason(exc)}") from None
    return count


def _output_schema(spec: ScoringSpec):
    from pyspark.sql.types import FloatType, StringType, StructField, StructType

    fields = [StructField(NOTE_ID, StringType(), False)]
    fields += [StructField(c, StringType(), False) for c in VERDICT_COLUMNS]
    fields += [StructField(score_column(c), FloatType(), False) for c in spec.categories]
    fields += [StructField(c, StringType(), False) for c in BUNDLE_COLUMNS]
    return StructType(fields)


def executor_options(options: InferenceOptions) -> dict[str, Any]:
    """Options for a Python worker: one pass at a time on one thread unless set (Spark runs a task per core)."""
    fields = dataclasses.asdict(options)
    if options.workers is None and options.intra_op_threads is None:
        fields.update(workers=1, intra_op_threads=1)
    return fields


def score_with_spec(
    spark: SparkSession,
    notes: str | Path,
    output: str | Path,
    spec: ScoringSpec,
    *,
    overwrite: bool = False,
    partitions: int | None = None,
) -> int:
    """Score `notes` into `output` on the executors with `spec` (its bundle already shipped or shared), in
    `partitions` tasks (default: as read, at least Spark's default parallelism); the number of notes written
    (invalid notes are skipped and written to `OUTPUT/_bad_rows`, see `score_checked`)."""
    return score_checked(spark, notes, output, spec, overwrite=overwrite, partitions=partitions)[0]


def score_checked(
    spark: SparkSession,
    notes: str | Path,
    output: str | Path,
    spec: ScoringSpec,
    *,
    overwrite: bool = False,
    partitions: int | None = None,
) -> tuple[int, int]:
    """`score_with_spec`, returning (notes written, invalid notes skipped and written to `OUTPUT/_bad_rows`)."""
    if Path(output).exists() and not overwrite:
        raise InvalidInputError(f"output {output} exists; remove it or pass --overwrite")
    frame = _read_notes(spark, notes)
    # as many tasks as the dataset was read in, and at least one per core Spark has (a small dataset is one file,
    # one partition): the notes come out of the duplicate check's shuffle, whose partitions Spark may coalesce
    wanted = partitions or max(spark.sparkContext.defaultParallelism, frame.rdd.getNumPartitions())

    def score(batches):
        return score_batches(spec, batches)

    good, bad = _checked(frame)
    scored = good.repartition(wanted).mapInArrow(score, _output_schema(spec))
    try:
        scored.write.mode("overwrite" if overwrite else "errorifexists").parquet(str(output))
    except Exception as exc:  # Py4JJavaError, PythonException, SparkException: one line, not the JVM's trace
        raise SparkScoringError(f"scoring {notes} failed: {_reason(exc)}") from None
    skipped = _write_bad_rows(bad, output, str(notes))
    return spark.read.parquet(str(output)).count(), skipped


def ship_bundle(spark: SparkSession, moderator: Moderator | NoteQueryMatcher, options: InferenceOptions) -> ScoringSpec:
    """Ship the moderator's bundle folder to the executors; the spec that pins its digest."""
    root = Path(moderator.bundle.path).resolve()
    spark.sparkContext.addFile(str(root), recursive=True)
    return spec_for(moderator, root.name, shipped=True, options=executor_options(options))


def score_notes(
    notes: str | Path,
    output: str | Path,
    *,
    bundle: str | Path | None = None,
    policy: str | Path | None = None,
    options: InferenceOptions | None = None,
    digest: str | None = None,
    public_key: Any = None,
    spark: SparkSession | None = None,
    master: str | None = None,
    overwrite: bool = False,
    partitions: int | None = None,
) -> ScoreSummary:
    """Score a Parquet notes dataset with a bundle on Spark and write the scores table at `output`."""
    from redone_sdk.inference.options import InferenceOptions
    from redone_sdk.moderator import Moderator

    options = options or InferenceOptions()
    moderator = Moderator.load(bundle, policy=policy, options=options, digest=digest, public_key=public_key)
    spark = spark or get_session(master)
    spec = ship_bundle(spark, moderator, options)
    count, skipped = score_checked(spark, notes, output, spec, overwrite=overwrite, partitions=partitions)
    return ScoreSummary(
        notes=count,
        output=str(output),
        bundle=f"{spec.name} {spec.version}",
        digest=spec.digest,
        bad_rows=skipped,
        bad_rows_path=bad_rows_path(output) if skipped else None,
    )


def _session_pairs(spark: SparkSession, sessions: str | Path, notes: DataFrame) -> DataFrame:
    """The distinct (query, note) pairs of a search sessions dataset, joined with the notes' texts (`notes`: one
    row per note_id, `_checked`'s)."""
    from pyspark.sql import functions as F

    if not Path(sessions).exists() and "://" not in str(sessions):
        raise InvalidInputError(f"no such sessions dataset: {sessions}")
    try:
        frame = spark.read.parquet(str(sessions))
    except Exception as exc:
        raise SparkScoringError(f"cannot read sessions dataset {sessions} as Parquet: {_reason(exc)}") from None
    missing = [c for c in (QUERY, "notes") if c not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"sessions dataset {sessions} has no {', '.join(missing)} column (columns: {', '.join(frame.columns)})"
        )
    pairs = (
        frame.select(F.col(QUERY).cast("string").alias(QUERY), F.explode("notes").alias(NOTE_ID))
        .where(F.col(QUERY).isNotNull() & F.col(NOTE_ID).isNotNull())
        .select(QUERY, F.col(NOTE_ID).cast("string").alias(NOTE_ID))
        .distinct()
    )
    return pairs.join(notes, on=NOTE_ID, how="inner").select(QUERY, NOTE_ID, *TEXT_COLUMNS)


def score_pairs(
    sessions: str | Path,
    notes: str | Path,
    output: str | Path,
    *,
    bundle: str | Path | None = None,
    options: InferenceOptions | None = None,
    digest: str | None = None,
    public_key: Any = None,
    spark: SparkSession | None = None,
    master: str | None = None,
    overwrite: bool = False,
    partitions: int | None = None,
) -> ScoreSummary:
    """Score the (query, note) pairs of a search sessions dataset with the bundle's matcher on Spark, into a pair
    scores table at `output` (for `redone replay search --scores`)."""
    from pyspark.sql.types import FloatType, StringType, StructField, StructType

    from redone_sdk.inference.options import InferenceOptions
    from redone_sdk.matcher import NoteQueryMatcher

    options = options or InferenceOptions()
    matcher = NoteQueryMatcher.load(bundle, options=options, digest=digest, public_key=public_key)
    if Path(output).exists() and not overwrite:
        raise InvalidInputError(f"output {output} exists; remove it or pass --overwrite")
    spark = spark or get_session(master)
    spec = ship_bundle(spark, matcher, options)
    valid, bad = _checked(_read_notes(spark, notes))
    frame = _session_pairs(spark, sessions, valid)
    frame = frame.repartition(partitions or spark.sparkContext.defaultParallelism)
    schema = StructType(
        [StructField(QUERY, StringType(), False), StructField(NOTE_ID, StringType(), False)]
        + [StructField(PAIR_SCORE, FloatType(), False)]
        + [StructField(c, StringType(), False) for c in BUNDLE_COLUMNS]
    )

    def score(batches):
        return score_pair_batches(spec, batches)

    try:
        frame.mapInArrow(score, schema).write.mode("overwrite" if overwrite else "errorifexists").parquet(str(output))
    except Exception as exc:
        raise SparkScoringError(f"scoring the pairs of {sessions} failed: {_reason(exc)}") from None
    skipped = _write_bad_rows(bad, output, str(notes))
    count = spark.read.parquet(str(output)).count()
    return ScoreSummary(
        notes=count,
        output=str(output),
        bundle=f"{spec.name} {spec.version}",
        digest=spec.digest,
        bad_rows=skipped,
        bad_rows_path=bad_rows_path(output) if skipped else None,
    )
