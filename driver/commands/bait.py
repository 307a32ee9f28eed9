"""`sparkle-fast bait`: stage 4 BAIT alone, e.g. on Sparkle's released intermediates.

    sparkle-fast bait source_video/ID.mp4 --grounding foreground_grounding_r2.jsonl [--id ID] \\
        [--models tiny|DIR] --out ID.npz

Reads every frame of VIDEO (a Sparkle source clip: 16 fps, <= 81 frames), takes the sample's round-2 grounding (one
list of boxes per 2-FPS frame), tracks with SAM3 from every anchor and writes the voted mask as Sparkle's npz. Prints
one JSON object (frames, height, width, anchors, passes, encoder_calls, seconds, ...). Exit status: 0 written,
1 the sample was rejected (the JSON says why, nothing written), 2 unreadable input, unknown id or bad model folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NAME = "bait"
HELP = "BAIT on one video: multi-anchor SAM3 tracking from round-2 grounding, voted into Sparkle's mask npz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="the source clip (e.g. Sparkle's {edit_type}/source_video/{id}.mp4)")
    parser.add_argument("--grounding", required=True, help="foreground_grounding_r2.jsonl (Sparkle's schema)")
    parser.add_argument("--id", default=None, help="sample id in the jsonl (default: the video's file name without "
                                                   "extension if the jsonl has it, else the jsonl's only record)")
    parser.add_argument("--models", default="tiny", help="'tiny' (random weights, a demo) or a --models DIR with a "
                                                         "sam3/ folder (or the sam3 folder itself)")
    parser.add_argument("--out", required=True, help="the mask npz to write")
    parser.add_argument("--mode", choices=("bait", "single"), default="bait",
                        help="bait: every anchor, both directions; single: one forward pass from the first anchor")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--max-cached-frames", type=int, default=None,
                        help="bound on cached frame features (default: the whole clip)")


def _fail(message: str) -> int:
    print(f"sparkle-fast bait: error: {message}", file=sys.stderr)
    return 2


def _sam3_folder(models: str) -> Path:
    root = Path(models)
    return root / "sam3" if (root / "sam3").is_dir() else root


def run(args: argparse.Namespace) -> int:
    from sparkle_fast.bait import GroundingFileError, default_anchor_frames, load_r2_records, run_bait
    from sparkle_fast.models.slots import ModelFolderError
    from sparkle_fast.models.tracker import Sam3Tracker
    from sparkle_fast.video import VideoError, probe, read_frames

    # Inputs first, so a bad path fails in a second rather than after loading the model.
    try:
        info = probe(args.video)
    except VideoError as exc:
        return _fail(f"cannot read the video: {exc}")
    try:
        records = load_r2_records(args.grounding)
    except GroundingFileError as exc:
        return _fail(str(exc))
    sample_id = args.id
    if sample_id is None:
        stem = Path(args.video).stem
        sample_id = stem if stem in records or len(records) != 1 else next(iter(records))
    if sample_id not in records:
        return _fail(f"{args.grounding}: no record with id {sample_id!r} ({len(records)} records); pass --id")
    if args.max_cached_frames is not None and args.max_cached_frames < 1:
        return _fail(f"--max-cached-frames must be >= 1, got {args.max_cached_frames}")
    try:
        tracker = (Sam3Tracker.tiny(device=args.device) if args.models == "tiny"
                   else Sam3Tracker.from_pretrained(_sam3_folder(args.models), device=args.device))
    except ModelFolderError as exc:
        return _fail(str(exc))
    try:
        frames = read_frames(args.video, info=info, device=tracker.device).frames
    except VideoError as exc:
        return _fail(f"cannot read the video: {exc}")

    result = run_bait(tracker, frames, records[sample_id].frame_objects, mode=args.mode,
                      anchor_frames=default_anchor_frames(int(frames.shape[0]), info.fps),
                      max_cached_frames=args.max_cached_frames)
    summary = {"id": sample_id, "video": str(args.video), **result.summary()}
    if result.ok:
        summary["out"] = str(result.save(args.out))
    print(json.dumps(summary))
    tracker.release()
    return 0 if result.ok else 1
