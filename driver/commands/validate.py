"""`sparkle-fast validate PATH`: check a run's output folder or a packaged release against Sparkle's released layout
and schemas (sparkle_fast/layout_check.py)."""

from __future__ import annotations

import argparse

NAME = "validate"
HELP = ("check a run's output folder, or a release from `sparkle-fast package`, against Sparkle's layout, schemas and "
        "clip spec (exit 1 if anything departs)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="the dataset folder (a run's output folder, or a release folder holding "
                        "release_state.json: then shard names and members, checksums and orphans are checked too)")
    parser.add_argument("--skip-videos", action="store_true", help="do not open the videos and masks (faster)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sparkle_fast.layout_check import RELEASE_STATE, check_dataset

    problems = check_dataset(args.out, check_videos=not args.skip_videos)
    for problem in problems:
        print(problem)
    what = "release" if (Path(args.out) / RELEASE_STATE).exists() else "layout"
    print(f"{args.out}: {'conforms to' if not problems else f'{len(problems)} departures from'} Sparkle's {what}")
    return 1 if problems else 0
