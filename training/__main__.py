import sys

from redone_sdk.training.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
