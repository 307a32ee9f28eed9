"""`sparkle-fast openve3m-filter PAIRS.csv --out KEPT.csv`: the paper's EditScore pre-filter of OpenVE-3M pairs
(2 FPS, mean overall >= 8), writing an input CSV for `sparkle-fast run --themes openve3m` (driver/openve3m.py)."""

from __future__ import annotations

import argparse

NAME = "openve3m-filter"
HELP = ("score OpenVE-3M source/edited pairs with EditScore at 2 FPS and keep those with mean overall >= 8, writing "
        "an input CSV for `sparkle-fast run --themes openve3m` (resumable)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pairs", help="CSV with src_video (or source_video), edited_video (or tgt_video) and prompt")
    parser.add_argument("--out", required=True, help="the kept pairs' CSV (its .scores.jsonl is written beside it)")
    parser.add_argument("--models", default="tiny",
                        help="'tiny' (a random tiny scorer: a dry run) or a --models folder (its editscore/ slot)")
    parser.add_argument("--config", help="the run's TOML config (its [scorer] settings, e.g. passes)")
    parser.add_argument("--threshold", type=float, default=8.0, help="keep when the mean overall is >= this (8)")
    parser.add_argument("--fps", type=float, default=2.0, help="frames sampled per second of each video (2)")


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from sparkle_fast.driver.config import ConfigError, load_config
    from sparkle_fast.driver.openve3m import filter_pairs
    from sparkle_fast.models.scorer import EditScoreAdapter
    from sparkle_fast.models.slots import ModelFolderError
    from sparkle_fast.stages.common import load_slot_models, release_slot_models

    if args.fps <= 0:
        print(f"sparkle-fast openve3m-filter: --fps must be positive, got {args.fps}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        models = load_slot_models(args.models, {"scorer": (EditScoreAdapter.tiny, EditScoreAdapter.from_pretrained)})
    except (ConfigError, ModelFolderError, OSError) as exc:
        print(f"sparkle-fast openve3m-filter: {exc}", file=sys.stderr)
        return 2
    try:
        scorer = models["scorer"]
        if hasattr(scorer, "use_run_config"):
            scorer.use_run_config(config)
        summary = filter_pairs(args.pairs, args.out, scorer, fps=args.fps, threshold=args.threshold,
                               log=lambda message: print(message, file=sys.stderr, flush=True))
    except (ValueError, OSError) as exc:
        print(f"sparkle-fast openve3m-filter: {exc}", file=sys.stderr)
        return 2
    finally:
        release_slot_models(models)
    print(json.dumps(summary, indent=2))
    print(f"next: sparkle-fast run --input {args.out} --themes openve3m --out OUT --models {args.models}")
    return 0
