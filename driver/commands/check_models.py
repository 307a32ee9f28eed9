"""`sparkle-fast check-models DIR`: what each model slot of a --models folder holds and how it differs from
Sparkle's setup (sparkle_fast/models/check.py), from configs and safetensors headers only."""

from __future__ import annotations

import argparse

NAME = "check-models"
HELP = ("report what each model slot of a --models folder holds (family, size, LoRA coverage, Fun-Control inputs) "
        "and how it differs from Sparkle's setup, without loading a weight (exit 1 if a slot is wrong or missing)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models",
                        help="the --models folder (one sub-folder per slot, see sparkle_fast/models/slots.py)")
    parser.add_argument("--config", default=None,
                        help="the run's TOML config: its [scorer], [i2v] and [control] settings are checked against "
                             "the folders (default: Sparkle's settings)")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from sparkle_fast.driver.config import ConfigError, load_config
    from sparkle_fast.models.check import check_models, format_report

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    reports = check_models(args.models, config)
    if args.json:
        print(json.dumps([{**dataclasses.asdict(r), "folder": str(r.folder)} for r in reports], indent=2))
    else:
        print(format_report(reports))
    return 1 if any(r.status == "wrong" for r in reports) else 0
