"""Every `redone` command that loads a model, plug-ins included, takes the same inference flags.

Here rather than in tests/sdk: `redone stream` and `redone replay` need the [kafka] and [replay] extras.
"""

from __future__ import annotations

from redone_sdk import InferenceOptions
from redone_sdk.cli import build_parser
from redone_sdk.inference.options import options_from_args


def test_every_command_takes_the_same_inference_flags(every_inference_flag: tuple[list[str], InferenceOptions]) -> None:
    flags, all_set = every_inference_flag
    parser = build_parser()
    commands = {
        "moderate": ["moderate", *flags, "--batch-size", "4"],
        "match": ["match", *flags, "--batch-size", "4"],
        "stream": ["stream", *flags, "--model-batch-size", "4", "--batch-size", "64"],
        "replay exposure": ["replay", "exposure", "--impressions", "i", "--notes", "n", "--out", "o", *flags,
                            "--batch-size", "4"],
        "replay search": ["replay", "search", "--sessions", "s", "--notes", "n", "--out", "o", *flags,
                          "--batch-size", "4"],
        "replay demo": ["replay", "demo", "--out", "o", *flags, "--batch-size", "4"],
    }  # fmt: skip
    for name, argv in commands.items():
        assert options_from_args(parser.parse_args(argv)) == all_set, name
    stream = parser.parse_args(commands["stream"])
    assert stream.batch_size == 64  # the stream's own --batch-size stays its Kafka micro-batch
