"""A local[2] SparkSession for the Spark scoring tests (the [spark] extra and Java 17+): small memory, no UI,
two shuffle partitions; its Python workers run this interpreter. Started once for the whole session."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator

import pytest

pytest.importorskip("pyspark", reason="the [spark] extra is not installed")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java 17+ (no java on PATH, no JAVA_HOME)", allow_module_level=True)


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("redone-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.python.worker.reuse", "true")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
