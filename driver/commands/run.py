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
    parser.add_argument("--runner", choices=("local", "ray"), default="local",
                        help="local (default: this process, or one worker per --device) or ray (actor pools on a Ray "
                             "cluster; pip install 'sparkle-fast[ray]')")
    parser.add_argument("--ray-address", default=None,
                        help="with --runner ray: the cluster's address (HOST:PORT of `ray start --head`); default: "
                             "start a local Ray instance")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (TOML syntax for the value; repeatable)")
    parser.add_argument("--ablation", choices=("copy-paste", "foreground-only", "single-pass"),
                        help="swap one part of the method for the paper's baseline (run.ablation): copy-paste and "
                             "foreground-only change stage 5, single-pass stage 4; give the run its own --out")
    parser.add_argument("--reuse-from", metavar="RUN_OUT",
                        help="with --ablation and a fresh --out: copy RUN_OUT's results of the stages the ablation "
                             "does not change (1-4, or 1-3 for single-pass) instead of running them again")


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


def _check_ablation_folder(out: str, ablation: str) -> None:
    """An ablation writes its own dataset: refuse an --out that holds a run made with another run.ablation (its
    finished samples would be kept, mixing two methods in one folder)."""
    import json
    from pathlib import Path

    saved = Path(out) / "config.json"
    if not saved.is_file():
        return
    try:
        before = json.loads(saved.read_text(encoding="utf-8")).get("run", {}).get("ablation", "")
    except (OSError, ValueError):
        return
    if before != ablation:
        raise ValueError(f"{out} holds a run with run.ablation {before or 'none'!r}, not {ablation or 'none'!r}: give "
                         "each ablation its own --out")


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
        if args.ablation:
            overrides["run.ablation"] = args.ablation
        config = load_config(args.config, overrides)
        _check_ablation_folder(args.out, config.run.ablation)
        if args.reuse_from:
            from sparkle_fast.driver.ablation import reuse_stages

            seeded = reuse_stages(args.reuse_from, args.out, config.run.ablation)
            print(f"{args.out}: stages {seeded['stages']} of {seeded['samples']} sample(s) reused from "
                  f"{args.reuse_from}", file=sys.stderr)
        stages = parse_stages(args.stages)
        devices = parse_devices(args.device)
        summary = run_pipeline(args.input, args.out, config, models=args.models, stages=stages, limit=args.limit,
                               devices=devices, runner=args.runner, ray_address=args.ray_address)
    except (ConfigError, ValueError, ModelFolderError, ManifestError) as exc:
        print(f"sparkle-fast run: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a worker failed, or the disk is full; what finished is recorded
        print(f"sparkle-fast run: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary["stages"], indent=2))
    print(f"{args.out}: train rows per theme {summary['train_rows']}; summary in {args.out}/summary.json")
    return 0
