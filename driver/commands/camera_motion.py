"""`sparkle-fast camera-motion VIDEO...`: is each video filmed by a fixed camera? (Stage 1's coarse filter.)"""

from __future__ import annotations

import argparse
import json
import math

NAME = "camera-motion"
HELP = "decide for each video whether the camera is fixed (optical flow + RANSAC homography); one line per video"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--threshold-px", type=float, default=None,
                        help="largest corner displacement over the clip for a static camera (default: calibrated, "
                             "see docs/CAMERA_CALIBRATION.md)")
    parser.add_argument("--fps", type=float, default=2.0, help="sampling rate (default 2, as Sparkle)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def _number(x: float):
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from sparkle_fast import camera

    if args.threshold_px is not None and not args.threshold_px > 0:
        print("camera-motion: --threshold-px must be a positive number of pixels")
        return 2
    thresholds = camera.CameraThresholds()
    if args.threshold_px is not None:
        thresholds = replace(thresholds, threshold_px=args.threshold_px)
    for video in args.videos:  # one at a time so each line appears as soon as it is known
        (result,) = camera.analyze_many([video], thresholds, fps=args.fps, device=args.device)
        if isinstance(result, Exception):
            record = dict(video=video, static=None, max_displacement_px=None, inlier_ratio=None, pairs=0,
                          tracked_points=0, reason=None, error=f"{type(result).__name__}: {result}")
        else:
            record = dict(video=video, static=result.static, max_displacement_px=_number(result.max_displacement_px),
                          inlier_ratio=_number(result.inlier_ratio), pairs=result.pairs,
                          tracked_points=result.tracked_points, reason=result.reason, error=None)
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            verdict = {True: "static", False: "moving", None: "undecided"}[record["static"]]
            detail = record["error"] or record["reason"] or f"max displacement {record['max_displacement_px']} px"
            print(f"{video}\t{verdict}\t{detail}", flush=True)
    return 0
