"""The `sparkle-fast` command: a thin dispatcher over the command modules in driver/commands/."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sparkle_fast._version import __version__
from sparkle_fast.driver.commands import COMMAND_MODULES


def _command_modules():
    return [importlib.import_module(f"sparkle_fast.driver.commands.{name}") for name in COMMAND_MODULES]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparkle-fast",
        description="GPU kernel core and driver for the Sparkle video background-replacement data pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"sparkle-fast {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        sub = commands.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
