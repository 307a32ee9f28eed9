"""`sparkle-fast validate OUT`: check a folder against Sparkle's released layout and schemas."""

from __future__ import annotations

import argparse

NAME = "validate"
HELP = "check an output folder against Sparkle's released layout and jsonl schemas (exit 1 if anything departs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="the dataset folder (the one holding prompts/)")
    parser.add_argument("--skip-videos", action="store_true", help="do not open the videos (faster)")


def run(args: argparse.Namespace) -> int:
    from sparkle_fast.layout_check import check_dataset

    problems = check_dataset(args.out, check_videos=not args.skip_videos)
    for problem in problems:
        print(problem)
    print(f"{args.out}: {'conforms to' if not problems else f'{len(problems)} departures from'} Sparkle's layout")
    return 1 if problems else 0
