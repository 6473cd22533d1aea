"""`python -m redone_sdk.serve`: the same as `redone serve`."""

import sys

from .cli import main

sys.exit(main())
