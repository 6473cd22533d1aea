"""`python -m redone_sdk.adapters.kafka ...`: the same as `redone stream ...`."""

import sys

from .cli import main

sys.exit(main())
