"""How close camera.analyze's frame 0 -> t homographies (`from_first`) come to the truth when a large subject moves
in front of a moving camera; prints a markdown table (docs/CAMERA_CALIBRATION.md, "Homography accuracy").

Clips: pan, zoom, rotate, combo, drift and turn at 0.5, 1 and 3 px per sampled frame, on the astronaut and coffee
photographs, with a textured subject moving at 3 px per sampled frame or followed by the camera (still in the
frame); 288 x 384, 11 frames, noise 2, seeds 100 onward. Per clip: the worst frame's corner error (px) against the
known homography.

    python bench/camera_accuracy.py                # 20% and 40% subjects, 72 clips each (about 3 minutes)
    python bench/camera_accuracy.py --quick        # 4 clips of 40%, to check the script runs
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from sparkle_fast import camera
from sparkle_fast.camera_synthetic import corner_error, make_clip

SIZE = (288, 384)


def clip_specs(fraction: float, quick: bool) -> list[dict]:
    specs = []
    for motion in ("pan", "zoom", "rotate", "combo", "drift", "turn") if not quick else ("pan", "turn"):
        for speed in (0.5, 1.0, 3.0) if not quick else (3.0,):
            for photo in ("astronaut", "coffee") if not quick else ("coffee",):
                for subject_speed in (3.0, 0.0):
                    specs.append(dict(motion=motion, speed=speed, photo=photo, subject_fraction=fraction,
                                      subject_speed=subject_speed, noise=2.0))
    return specs


def worst_errors(fraction: float, quick: bool) -> list[tuple[dict, float, bool | None]]:
    specs = clip_specs(fraction, quick)
    clips = [make_clip(n_frames=11, size=SIZE, seed=100 + i, **spec) for i, spec in enumerate(specs)]
    results = camera.analyze_many([c.frames for c in clips])
    rows = []
    for spec, clip, result in zip(specs, clips, results, strict=True):
        worst = max(corner_error(h, clip.homographies[k + 1], SIZE) for k, h in enumerate(result.from_first))
        rows.append((spec, worst, result.static))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print("| subject | clips | within 0.5 px | median worst error px | called static |")
    print("|---|---|---|---|---|")
    for fraction in (0.2, 0.4) if not args.quick else (0.4,):
        rows = worst_errors(fraction, args.quick)
        worst = np.array([w for _, w, _ in rows])
        static = sum(1 for _, _, s in rows if s)
        print(f"| {fraction:.0%} | {len(rows)} | {(worst <= 0.5).sum()} | {np.median(worst):.2f} | {static} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
