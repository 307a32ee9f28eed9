"""`sparkle-fast vote-demo`: BAIT's vote carried end to end on synthetic tracking passes.

Until the stages land this is the most complete path that runs: make one tracking pass per 2-FPS anchor with the
failure modes BAIT exists to fix (masks that drift and lose an entity far from their anchor, stray blobs), vote them
with ops.vote_and_pack, write the Sparkle mask npz, read it back with the recipe from Sparkle's README, and report
how much the vote recovers compared with single passes.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from sparkle_fast import formats, ops


def _disk(yy, xx, cy, cx, ry, rx):
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def synthetic_bait_passes(frames: int, height: int, width: int, anchor_stride: int, seed: int):
    """Ground truth (T, H, W) bool, passes (N, T, H, W) uint8 (0/255, as a tracker's thresholded masks), anchors.

    Truth: a person (large ellipse walking across) and a ball (small disk bouncing). A pass started at anchor a is
    exact at a; with distance d = |t - a| its boundary jitters more, its position drifts, it loses the ball after a
    random number of frames, and some passes pick up a stray blob far from their anchor.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = np.arange(frames, dtype=np.float32)
    phase = t / max(frames - 1, 1)
    person = (0.55 * height, (0.25 + 0.5 * phase) * width, 0.30 * height, 0.10 * width)
    ball = ((0.3 + 0.25 * np.abs(np.sin(6 * phase))) * height, (0.8 - 0.6 * phase) * width, 0.06 * height,
            0.06 * height)

    def objects(i, dy=0.0, dx=0.0, scale=1.0, with_ball=True):
        m = _disk(yy, xx, person[0] + dy, person[1][i] + dx, person[2] * scale, person[3] * scale)
        if with_ball:
            m |= _disk(yy, xx, ball[0][i] + dy, ball[1][i] + dx, ball[2] * scale, ball[3] * scale)
        return m

    truth = np.stack([objects(i) for i in range(frames)])
    anchors = list(range(0, frames, anchor_stride))
    passes = np.zeros((len(anchors), frames, height, width), dtype=np.uint8)
    for n, a in enumerate(anchors):
        ball_kept_for = rng.exponential(12.0)  # frames until this pass loses the ball
        stray_from = rng.uniform(15, 40) if rng.random() < 0.4 else math.inf
        stray_at = (rng.uniform(0.1, 0.9) * height, rng.uniform(0.1, 0.9) * width)
        drift = np.zeros(2)
        order = list(range(a, frames)) + list(range(a - 1, -1, -1))  # forward, then backward from the anchor
        for i in order:
            d = abs(i - a)
            if i == a - 1:
                drift = np.zeros(2)  # the backward pass starts afresh at the anchor
            drift += rng.normal(0, 0.15 * d ** 0.5, size=2) if d else 0
            m = objects(i, drift[0], drift[1], 1.0 + rng.normal(0, 0.004 * d), with_ball=d <= ball_kept_for)
            if d >= stray_from:
                m |= _disk(yy, xx, stray_at[0], stray_at[1], 0.08 * height, 0.08 * height)
            passes[n, i] = m * np.uint8(255)
    return truth, passes, anchors


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def run_vote_demo(out_dir, frames=81, height=180, width=320, anchor_stride=8, seed=0, backend="auto",
                  device="cpu") -> dict:
    out = Path(out_dir)
    truth, passes, anchors = synthetic_bait_passes(frames, height, width, anchor_stride, seed)
    print(f"synthetic clip: {frames} frames of {width}x{height}, {len(anchors)} anchors at {anchors}")

    data = passes
    if device != "cpu":
        import torch

        data = torch.from_numpy(passes).to(device)
    start = time.perf_counter()
    packed = ops.vote_and_pack(data, backend=backend)
    if device != "cpu":
        torch.cuda.synchronize()
    vote_seconds = time.perf_counter() - start
    mask_path = formats.save_packed_mask(out / "source_video_mask" / "demo_000000.npz", packed, truth.shape)

    # Read back exactly as Sparkle's README does.
    stored = np.load(mask_path)
    shape = tuple(int(s) for s in stored["shape"])
    recipe_mask = np.unpackbits(stored["mask"])[: math.prod(shape)].reshape(shape).astype(bool)
    voted = ops.vote_masks(passes, backend="reference")

    pass_ious = [_iou(p != 0, truth) for p in passes]
    summary = {
        "frames": frames, "height": height, "width": width, "anchors": anchors,
        "backend": backend, "device": device, "vote_and_pack_seconds": round(vote_seconds, 4),
        "single_pass_iou": {"min": min(pass_ious), "mean": float(np.mean(pass_ious)), "max": max(pass_ious)},
        "voted_iou": _iou(recipe_mask, truth),
        "mask_file": str(mask_path), "mask_file_bytes": mask_path.stat().st_size,
        "unpacked_bytes": int(truth.size),
        "sparkle_recipe_matches": bool(np.array_equal(recipe_mask, voted)),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"single-pass IoU with the truth: min {summary['single_pass_iou']['min']:.3f}  "
          f"mean {summary['single_pass_iou']['mean']:.3f}  max {summary['single_pass_iou']['max']:.3f}")
    print(f"voted IoU with the truth:       {summary['voted_iou']:.3f}")
    print(f"vote_and_pack ({backend}, {device}): {vote_seconds * 1e3:.1f} ms")
    print(f"mask npz: {mask_path} ({summary['mask_file_bytes']} bytes for {summary['unpacked_bytes']} pixels)")
    print(f"loads with Sparkle's recipe and equals the reference vote: {summary['sparkle_recipe_matches']}")
    return summary
