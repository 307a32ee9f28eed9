"""Temporal stability: flicker, the part of each pixel's frame-to-frame change that is not smooth in time.

    flicker(video, mask=None, *, region="all", device=None) -> (mean luma levels or None, samples)

video: uint8 (T, H, W, 3) RGB or (T, H, W) gray. For every pixel and every inner frame t (1..T-2) the second
temporal difference |Y[t] - (Y[t-1] + Y[t+1]) / 2| of its BT.601 luma (0..255) is taken, and averaged. A still video
and any steady fade or drift that is linear in time read 0; a brightness that alternates by +-a between frames
reads 2a; noise that changes every frame ("boiling") reads high. Smooth motion contributes only where intensity is
not linear along the motion, so it moves the value far less than a frame difference would. With a mask, region
"background" or "foreground" restricts the average to the pixels outside / inside it at frame t. None for fewer
than 3 frames or an empty region.
"""

from __future__ import annotations

from typing import Any

from sparkle_fast.metrics._tensors import as_frames, as_mask, luma, pick_device

OP = "flicker"
REGIONS = ("all", "background", "foreground")


def flicker(video: Any, mask: Any = None, *, region: str = "all", device: Any = None) -> tuple[float | None, int]:
    """(mean |second temporal difference| of luma, or None) and the number of (pixel, frame) samples averaged."""
    if region not in REGIONS:
        raise ValueError(f"{OP}: region must be one of {REGIONS}, got {region!r}")
    if region != "all" and mask is None:
        raise ValueError(f"{OP}: region {region!r} needs a mask")
    dev = pick_device(device, video, mask)
    frames = as_frames(video, "video", OP, dev)
    if frames.shape[0] < 3:
        return None, 0
    y = luma(frames)
    second = (y[1:-1] - 0.5 * (y[:-2] + y[2:])).abs()
    if region == "all":
        return float(second.mean()), int(second.numel())
    fg = as_mask(mask, tuple(frames.shape[:3]), "mask", OP, dev)[1:-1]
    keep = fg if region == "foreground" else ~fg
    n = int(keep.sum())
    if n == 0:
        return None, 0
    return float(second[keep].mean()), n
