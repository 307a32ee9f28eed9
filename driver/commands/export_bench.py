"""`sparkle-fast export-bench OUT [--bench DIR]`: Sparkle-Bench from a finished run (see driver/export_bench.py)."""

from __future__ import annotations

import argparse
import json
import sys

NAME = "export-bench"
HELP = "write Sparkle-Bench (samples that passed stages 1-4 and failed stage 5) from a run's output folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="the run's output folder (holding manifest.sqlite)")
    parser.add_argument("--bench", default=None, help="where to write the benchmark (default: OUT/sparkle_bench)")
    parser.add_argument("--masks", default=None,
                        help="where to write the stage-4 masks ({theme}/{id}.npz) and control videos "
                             "({theme}/{id}_control.mp4) for `sparkle-fast eval --masks` (default: BENCH/masks)")
    parser.add_argument("--samples", choices=("rejected", "passed-4"), default="rejected",
                        help="rejected: Sparkle's rule (passed stages 1-4, rejected by stage 5; default); passed-4: "
                             "every sample that passed stage 4, to evaluate a run's own dataset and its ablations")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sparkle_fast.driver.export_bench import export_bench

    bench = Path(args.bench) if args.bench else Path(args.out) / "sparkle_bench"
    try:
        exported = export_bench(args.out, bench, args.masks, args.samples)
    except (FileNotFoundError, OSError, ValueError) as exc:
        print(f"sparkle-fast export-bench: {exc}", file=sys.stderr)
        return 2
    masks = args.masks or str(bench / "masks")
    print(json.dumps({"bench": str(bench), "masks": masks, "samples": exported}))
    return 0
