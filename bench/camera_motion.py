"""Benchmark the camera-motion filter: clips per second for Sparkle clips (81 frames at 720p sampled at 2 FPS:
11 frames, 10 pairs), against OpenCV on the host.

Implementations (one row each; clips/s = clips / median time):
  opencv-1thread / opencv-all   goodFeaturesToTrack + calcOpticalFlowPyrLK + findHomography(RANSAC) per pair, with
                                cv2.setNumThreads(1) / all threads, on host gray frames
  ours-kernels                  camera.analyze_many on gray frames already on the run's device: frame-0 point
                                selection and tracking to every frame and back (the still-points test), then for
                                the clips it does not accept (the panning half of the batch) pair selection and
                                tracking with two-model RANSAC, and frame-0 points followed frame by frame (one
                                launch per step) with RANSAC on frame 0 -> t, refined twice on frames warped back
                                to frame 0 (camera_refine); the whole batch in one call. Half static, half panning
                                clips: static ones cost one tracking pass, moving ones five.
  ours-end-to-end               camera.analyze_many on mp4 paths: decode (2 FPS) + the above
The target on an H100 is >= 1000 clips/s for ours-kernels, so that decode is the limit.

    python bench/camera_motion.py            # GPU if torch sees one, else CPU
    python bench/camera_motion.py --quick    # small clips, to check the script runs
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from harness import Bench

from sparkle_fast import camera
from sparkle_fast.camera_synthetic import make_clip


def opencv_clip(gray: np.ndarray) -> float:
    """The host peer: the classic OpenCV recipe, per pair; returns the largest pair corner displacement."""
    worst = 0.0
    for a, b in zip(gray[:-1], gray[1:], strict=True):
        pts = cv2.goodFeaturesToTrack(a, maxCorners=192, qualityLevel=0.01, minDistance=8)
        if pts is None or len(pts) < 4:
            continue
        moved, status, _ = cv2.calcOpticalFlowPyrLK(a, b, pts, None, winSize=(21, 21), maxLevel=3)
        ok = status.ravel() == 1
        if ok.sum() < 4:
            continue
        h, _ = cv2.findHomography(pts[ok], moved[ok], cv2.RANSAC, 1.0)
        if h is not None:
            worst = max(worst, float(camera.corner_displacement(h, a.shape)))
    return worst


def main(argv=None) -> int:
    bench, _ = Bench.from_args("camera_motion", argv, description=__doc__.splitlines()[0])
    size, n_frames, n_clips = ((144, 256), 4, 2) if bench.quick else ((720, 1280), 11, 16 if bench.device == "cpu"
                                                                      else 256)
    clips = [make_clip("pan" if i % 2 else "static", size=size, n_frames=n_frames, speed=1.0, seed=i).frames
             for i in range(min(n_clips, 8))]
    clips = [clips[i % len(clips)] for i in range(n_clips)]
    case = {"clips": n_clips, "frames": n_frames, "size": list(size)}
    grays = [cv2.cvtColor(f.reshape(-1, size[1], 3), cv2.COLOR_RGB2GRAY).reshape(n_frames, *size) for f in clips]
    host_repeat = 1 if not bench.quick else None

    def opencv_all():
        return [opencv_clip(g) for g in grays]

    cv2.setNumThreads(1)
    bench.measure("opencv-1thread", opencv_all, case, device="cpu", repeat=host_repeat,
                  note=f"clips/s = {n_clips} / median")
    cv2.setNumThreads(-1)
    bench.measure("opencv-all", opencv_all, case, device="cpu", repeat=host_repeat)

    dev_grays = [torch.from_numpy(g).to(bench.device) for g in grays]
    bench.measure("ours-kernels", lambda: camera.analyze_many(dev_grays, device=bench.device), case,
                  repeat=host_repeat if bench.device == "cpu" else None)
    with tempfile.TemporaryDirectory() as tmp:
        from sparkle_fast.video import write_video

        paths = [write_video(Path(tmp) / f"{i}.mp4", c, fps=2) for i, c in enumerate(clips)]
        bench.measure("ours-end-to-end", lambda: camera.analyze_many(paths, device=bench.device), case,
                      repeat=host_repeat if bench.device == "cpu" else None)
    bench.compare_to("opencv-1thread")
    for row in bench.rows:
        print(f"{row['impl']:>16}: {n_clips / row['median_s']:.1f} clips/s")
    bench.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
