"""`sparkle-fast vote-demo`: BAIT's vote end to end on synthetic tracking passes (see driver/vote_demo.py)."""

from __future__ import annotations

import argparse

NAME = "vote-demo"
HELP = "BAIT's vote end to end on synthetic tracking passes: vote, pack, save the Sparkle npz, reload, report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/vote-demo", help="folder for the mask npz and summary.json")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--anchor-stride", type=int, default=8, help="frames between anchors (16 fps at 2 FPS: 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="auto", help="auto, reference, triton or cuda")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda to run the vote on the GPU")


def run(args: argparse.Namespace) -> int:
    from sparkle_fast.driver.vote_demo import run_vote_demo

    summary = run_vote_demo(
        out_dir=args.out, frames=args.frames, height=args.height, width=args.width,
        anchor_stride=args.anchor_stride, seed=args.seed, backend=args.backend, device=args.device,
    )
    return 0 if summary["sparkle_recipe_matches"] else 1
