"""`sparkle-fast info`: how sparkle_fast was built and which GPUs and libraries it sees, as JSON."""

from __future__ import annotations

import argparse
import json

NAME = "info"
HELP = "print how sparkle_fast was built and which GPUs and libraries it sees (JSON)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace) -> int:
    from sparkle_fast import build_info

    print(json.dumps(build_info(), indent=2))
    return 0
