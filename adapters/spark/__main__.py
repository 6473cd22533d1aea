"""`spark-submit …/redone_sdk/adapters/spark/__main__.py NOTES OUTPUT [--bundle B …]` or
`python -m redone_sdk.adapters.spark NOTES OUTPUT`: `redone moderate --engine spark` under any launcher."""

import sys

from redone_sdk.adapters.spark.cli import main

if __name__ == "__main__":
    sys.exit(main())
