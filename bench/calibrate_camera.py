"""Calibrate camera.analyze's thresholds on synthetic clips of known motion; prints a markdown table.

Every clip: 11 frames (10 pairs, as 81 frames at 2 FPS), 288x384, a scikit-image photograph seen by a camera moving
as `motion` at `speed` px per sampled frame, with or without a textured subject moving coherently (3 px per sampled
frame), or a subject the camera follows (the subject still in the frame while the background moves), noise, flicker.
For each case we record the measured largest clip displacement and largest pair displacement (px), with the
thresholds disabled, so the table shows where static clips end and moving ones begin. docs/CAMERA_CALIBRATION.md
explains how the defaults were chosen from it.

    python bench/calibrate_camera.py            # the full table (a minute on 2 CPU cores)
    python bench/calibrate_camera.py --quick    # 16 of the cases (static ones and 0.25 px/frame moves)
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace

from sparkle_fast import camera
from sparkle_fast.camera_synthetic import make_clip


def cases(quick: bool):
    out = []
    photos = ("astronaut", "coffee") if not quick else ("astronaut",)
    for photo in photos:
        for subject in (0.0, 0.2, 0.4):
            for noise, flicker in ((0.0, 0.0), (3.0, 0.0), (0.0, 0.2)):
                out.append(dict(motion="static", speed=0.0, photo=photo, subject_fraction=subject, noise=noise,
                                flicker=flicker))
        for motion in ("pan", "zoom", "rotate", "shake", "drift", "combo", "turn"):
            for speed in ((0.1, 0.25, 0.5, 1.0, 5.0) if not quick else (0.25,)):
                for subject in ((0.0, 0.4) if not quick else (0.0,)):
                    out.append(dict(motion=motion, speed=speed, photo=photo, subject_fraction=subject, noise=2.0,
                                    flicker=0.0))
                if not quick and speed in (0.25, 1.0, 5.0):  # the camera follows the subject
                    for subject in (0.2, 0.4):
                        out.append(dict(motion=motion, speed=speed, photo=photo, subject_fraction=subject, noise=2.0,
                                        flicker=0.0, subject_speed=0.0))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    specs = cases(args.quick)
    clips = [make_clip(n_frames=11, size=(288, 384), seed=i,
                       **{"subject_speed": 3.0, **spec}) for i, spec in enumerate(specs)]
    loose = replace(camera.CameraThresholds(), threshold_px=math.inf, pair_threshold_px=math.inf)
    results = camera.analyze_many([c.frames for c in clips], loose)
    print("| motion | px/frame | photo | subject | noise | flicker | clip disp px | max pair disp px | inliers | "
          "method | default verdict |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    defaults = camera.CameraThresholds()
    worst_static, best_moving = 0.0, math.inf
    wrong = []
    for spec, r in zip(specs, results, strict=True):
        pair = max(r.pair_displacement_px) if r.pair_displacement_px else math.nan
        verdict = (r.reason or "?") if r.static is None else (
            "static" if r.max_displacement_px <= defaults.threshold_px and pair <= defaults.pair_threshold_px
            else "moving")
        if r.reason is None:
            expected_static = spec["motion"] == "static"
            # a move counts as camera motion we must reject when it adds up to >= 2.5 px over the clip
            if expected_static:
                worst_static = max(worst_static, r.max_displacement_px)
            elif spec["speed"] >= 0.25:
                best_moving = min(best_moving, max(r.max_displacement_px, pair))
            # shake is judged by its pair displacement (it returns to where it started): only >= 1 px/frame counts
            must_reject = spec["speed"] >= (1.0 if spec["motion"] == "shake" else 0.25)
            if (expected_static and verdict != "static") or (must_reject and verdict == "static"):
                wrong.append(spec)
        subject = spec["subject_fraction"]
        if subject and spec.get("subject_speed") == 0.0:
            subject = f"{subject} followed"
        print(f"| {spec['motion']} | {spec['speed']} | {spec['photo']} | {subject} | {spec['noise']} "
              f"| {spec['flicker']} | {r.max_displacement_px:.3f} | {pair:.3f} | {r.inlier_ratio:.2f} | {r.method} "
              f"| {verdict} |")
    print(f"\nlargest displacement of a static clip: {worst_static:.3f} px; smallest (clip or pair) of a clip moving "
          f">= 0.25 px/frame: {best_moving:.3f} px")
    print(f"wrong verdicts (static called moving, or a camera moving >= 0.25 px/frame, shake >= 1, called static): "
          f"{len(wrong)} of {len(specs)}")
    for spec in wrong:
        print(f"  {spec}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
