"""`python -m redone_sdk.replay …`: the replay commands without the `redone` front end."""

import sys

from redone_sdk.replay.cli import main

sys.exit(main())
