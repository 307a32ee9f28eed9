"""Adherence to the control video: F1 between the control video's edges and the Canny edges of the output.

    edge_f1(control, video, *, low=100, high=200, tolerance=1, device=None)
        -> (f1 or None, precision or None, recall or None)

control: the stage-5 control video, uint8 (T, H, W, 3) or (T, H, W) (white edges on black; as decoded from its mp4,
so a pixel is an edge when its luma > 127). video: the output, uint8 (T, H, W, 3) RGB or (T, H, W) gray, of the same
(T, H, W). Output edges are sparkle_fast.ops.canny(video, low, high) (OpenCV's Canny; the control video's own
thresholds by default). An output edge pixel is correct when a control edge lies within `tolerance` pixels (a
(2t+1) square), and a control edge pixel is recalled when an output edge lies within it; F1 = 2PR / (P + R).
Precision is None when the output has no edge, recall when the control has none; F1 is None only when both are
empty and 0 when exactly one is.
"""

from __future__ import annotations

from typing import Any

import torch

from sparkle_fast.metrics._tensors import as_frames, dilate, luma, pick_device

OP = "edge_f1"


def edge_f1(control: Any, video: Any, *, low: float = 100, high: float = 200, tolerance: int = 1,
            device: Any = None) -> tuple[float | None, float | None, float | None]:
    """(F1, precision, recall) of the output's Canny edges against the control video's edges."""
    from sparkle_fast.ops import canny

    dev = pick_device(device, control, video)
    ctrl = as_frames(control, "control", OP, dev)
    out = as_frames(video, "video", OP, dev)
    if ctrl.shape[:3] != out.shape[:3]:
        raise ValueError(f"{OP}: control is {tuple(ctrl.shape[:3])} but video is {tuple(out.shape[:3])} (T, H, W)")
    target = luma(ctrl) > 127
    frames = out.to(torch.uint8)
    frames = frames[..., 0] if frames.shape[-1] == 1 else frames
    edges = torch.as_tensor(canny(frames.contiguous(), low, high)).to(dev) > 0
    n_out, n_ctrl = int(edges.sum()), int(target.sum())
    if n_out == 0 and n_ctrl == 0:
        return None, None, None
    precision = float((edges & dilate(target, tolerance)).sum()) / n_out if n_out else None
    recall = float((target & dilate(edges, tolerance)).sum()) / n_ctrl if n_ctrl else None
    if not precision or not recall:  # one side empty, or nothing matched
        return 0.0, precision, recall
    return 2 * precision * recall / (precision + recall), precision, recall
