"""`sparkle-fast demo`: all five stages on generated clips with tiny random models (CPU, a few minutes) and an HTML
report."""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "run the five stages on generated clips with tiny random models and write an HTML report (CPU, minutes)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", help="output folder (default out/demo); rerun to resume")
    parser.add_argument("--config", help="another config file instead of the demo's (sparkle_fast/data/demo.toml)")
    parser.add_argument("--device", default="auto",
                        help="as `sparkle-fast run --device` (default auto); cpu,cpu runs two CPU worker processes")


def run(args: argparse.Namespace) -> int:
    import sys

    from sparkle_fast.driver.demo import run_demo
    from sparkle_fast.driver.workers import DeviceError, parse_devices
    from sparkle_fast.layout_check import check_dataset

    try:
        devices = parse_devices(args.device)
    except DeviceError as exc:
        print(f"sparkle-fast demo: {exc}", file=sys.stderr)
        return 2
    summary = run_demo(args.out, config_path=args.config, devices=devices)
    for number, stage in summary["stages"].items():
        print(f"stage {number} {stage['name']}: kept {stage['kept']}, rejected {stage['rejected']}, "
              f"failed {stage['failed']}, {stage['seconds']:.1f} s")
    problems = check_dataset(args.out)
    for problem in problems:
        print(f"layout: {problem}", file=sys.stderr)
    print(f"report: {summary['report']}")
    return 1 if problems else 0
