"""`sparkle-fast package OUT --to RELEASE`: a run's kept samples as the Sparkle dataset is published (see
driver/package.py)."""

from __future__ import annotations

import argparse
import json
import sys

NAME = "package"
HELP = "package a run's kept samples as Sparkle's release: prompts, previews, ~5GB tar shards, card, SHA256SUMS"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="the run's output folder (holding manifest.sqlite)")
    parser.add_argument("--to", required=True, dest="release", help="the release folder (created; rerun to add "
                        "newly kept samples: finished shards are not rewritten)")
    parser.add_argument("--shard-size", default=None, help="largest shard, e.g. 5GB (Sparkle's), 500MB, 300KiB "
                        "(default: the release's, else 5GB)")
    parser.add_argument("--preview", type=int, default=None, help="samples per theme stored uncompressed "
                        "(default: the release's, else 100 as in Sparkle)")
    parser.add_argument("--format", choices=("tar", "webdataset"), default=None,
                        help="tar: Sparkle's {theme}_{source_video|edited_video}_partXX.tar (default); webdataset: "
                        "webdataset/{theme}_partXX.tar with each sample's videos, mask and json together")
    parser.add_argument("--models", default=None, help="the model folder the run used, listed in the dataset card")


def run(args: argparse.Namespace) -> int:
    from sparkle_fast.driver.package import PackageError, package_release, parse_size

    try:
        shard_bytes = parse_size(args.shard_size) if args.shard_size is not None else None
        summary = package_release(args.out, args.release, shard_bytes=shard_bytes, preview=args.preview,
                                  fmt=args.format, models=args.models,
                                  log=lambda message: print(message, file=sys.stderr, flush=True))
    except (PackageError, ValueError, OSError) as exc:
        print(f"sparkle-fast package: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0
