"""`sparkle-fast run`: the pipeline over a folder of videos or a CSV, writing Sparkle's layout under --out."""

from __future__ import annotations

import argparse
import tomllib

NAME = "run"
HELP = "run the five Sparkle stages over videos, writing the dataset, out/manifest.sqlite and out/summary.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="a folder of videos, or a CSV with src_video[, prompt, theme]")
    parser.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    parser.add_argument("--config", help="TOML file of thresholds and sizes (default: Sparkle's values)")
    parser.add_argument("--models", default="tiny",
                        help="'tiny' (random tiny models: a dry run) or a folder with one sub-folder per model slot")
    parser.add_argument("--stages", default="1-5", help="stages to run, e.g. 1-5, 1-3 or 2,4 (default 1-5)")
    parser.add_argument("--themes", help="comma-separated themes for a folder input (overrides run.themes)")
    parser.add_argument("--limit", type=int,
                        help="register and run only the first N input samples (samples of earlier runs wait too)")
    parser.add_argument("--device", default="auto",
                        help="auto (one worker per visible GPU; CPU without one), cpu, cuda, cuda:N, or a list such "
                             "as cuda:0,cuda:1: one worker process per device on disjoint shards of the samples")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (TOML syntax for the value; repeatable)")


def parse_override(text: str) -> tuple[str, object]:
    """"thresholds.edit_frame0=7.5" -> ("thresholds.edit_frame0", 7.5); a value that is not TOML is a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set {text!r}: expected SECTION.KEY=VALUE")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip(), parsed


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from sparkle_fast.driver.config import ConfigError, load_config
    from sparkle_fast.driver.manifest import ManifestError
    from sparkle_fast.driver.run import parse_stages, run_pipeline
    from sparkle_fast.driver.workers import parse_devices
    from sparkle_fast.models.slots import ModelFolderError

    try:
        overrides = dict(parse_override(text) for text in args.overrides)
        if args.themes:
            overrides["run.themes"] = [t.strip() for t in args.themes.split(",") if t.strip()]
        config = load_config(args.config, overrides)
        stages = parse_stages(args.stages)
        devices = parse_devices(args.device)
        summary = run_pipeline(args.input, args.out, config, models=args.models, stages=stages, limit=args.limit,
                               devices=devices)
    except (ConfigError, ValueError, ModelFolderError, ManifestError) as exc:
        print(f"sparkle-fast run: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a worker failed, or the disk is full; what finished is recorded
        print(f"sparkle-fast run: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary["stages"], indent=2))
    print(f"{args.out}: train rows per theme {summary['train_rows']}; summary in {args.out}/summary.json")
    return 0
