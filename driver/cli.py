"""The `sparkle-fast` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from sparkle_fast._version import __version__


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparkle-fast",
        description="GPU kernel core and driver for the Sparkle video background-replacement data pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"sparkle-fast {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    commands.add_parser("info", help="print how sparkle_fast was built and which GPUs and libraries it sees (JSON)")

    demo = commands.add_parser(
        "vote-demo",
        help="BAIT's vote end to end on synthetic tracking passes: vote, pack, save the Sparkle npz, reload, report",
    )
    demo.add_argument("--out", default="out/vote-demo", help="folder for the mask npz and summary.json")
    demo.add_argument("--frames", type=int, default=81)
    demo.add_argument("--height", type=int, default=180)
    demo.add_argument("--width", type=int, default=320)
    demo.add_argument("--anchor-stride", type=int, default=8, help="frames between anchors (16 fps at 2 FPS: 8)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--backend", default="auto", help="auto, reference, triton or cuda")
    demo.add_argument("--device", default="cpu", help="cpu, or cuda to run the vote on the GPU")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        from sparkle_fast import build_info

        print(json.dumps(build_info(), indent=2))
        return 0
    if args.command == "vote-demo":
        from sparkle_fast.driver.vote_demo import run_vote_demo

        summary = run_vote_demo(
            out_dir=args.out, frames=args.frames, height=args.height, width=args.width,
            anchor_stride=args.anchor_stride, seed=args.seed, backend=args.backend, device=args.device,
        )
        return 0 if summary["sparkle_recipe_matches"] else 1
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
