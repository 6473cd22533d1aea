"""Scoring on Apache Spark (the `[spark]` extra): a Parquet notes dataset scored with a bundle on the executors
into a scores table (`redone_sdk.scores_table`); `redone moderate --engine spark`, `redone replay score
--engine spark`. See docs/replay.md, "Scoring on Spark"."""
