import sys

from redone_sdk.cli import main

sys.exit(main())
