"""All judge-free metrics of one sample, from arrays or from files, as one JSON-ready record.

    record = metrics_for_files(sample_id, source_mp4, edited_mp4, mask_npz=None, control_mp4=None)
    record == {"id", "fg_psnr", "fg_ssim", "bg_motion", "flicker", "edge_f1", "notes": [...]}

A metric that cannot be computed is None and `notes` says why ("fg_psnr: no mask file ..."); nothing raises for a bad
sample. Outputs of another size or length than the source are brought to it first, and a note says so: frames past
the shorter video are dropped, and an output of another frame size is resized to the source's (cv2.INTER_LINEAR, as
stage 5 resizes a background video). bg_motion and flicker describe the edited video alone; fg_* compare it with
the source inside the mask; edge_f1 compares it with the control video.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparkle_fast.metrics.bg_motion import background_motion
from sparkle_fast.metrics.edge_f1 import edge_f1
from sparkle_fast.metrics.fg_psnr import foreground_psnr
from sparkle_fast.metrics.fg_ssim import foreground_ssim
from sparkle_fast.metrics.flicker import flicker

METRIC_KEYS = ("fg_psnr", "fg_ssim", "bg_motion", "flicker", "edge_f1")


@dataclass(frozen=True)
class MetricOptions:
    erode_px: int = 3          # fg_*: the mask is eroded by this many pixels
    grid_step: int = 8         # bg_motion: a tracked point every grid_step pixels
    canny_low: float = 100     # edge_f1: the output's Canny thresholds (the control video's, VideoX-Fun's 100/200)
    canny_high: float = 200
    edge_tolerance: int = 1    # edge_f1: pixels an edge may be off by
    device: str | None = None  # None: CUDA when present


def _resize(video: np.ndarray, height: int, width: int) -> np.ndarray:
    from sparkle_fast.ops.compose import resize_video_reference

    return resize_video_reference(video, height, width)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def sample_metrics(sample_id: str, source: np.ndarray, edited: np.ndarray, mask: np.ndarray | None = None,
                   control: np.ndarray | None = None, options: MetricOptions | None = None,
                   notes: list[str] | None = None) -> dict:
    """The record for one sample from uint8 (T, H, W, 3) source / edited frames, a bool (T, H, W) mask (or None) and
    a uint8 control video (or None)."""
    options = options or MetricOptions()
    notes = list(notes or [])
    record: dict[str, Any] = {"id": sample_id, **dict.fromkeys(METRIC_KEYS)}
    n_frames, height, width = source.shape[:3]
    if edited.shape[1:3] != (height, width):
        notes.append(f"edited video is {edited.shape[2]}x{edited.shape[1]}, resized to the source's {width}x{height}")
        edited = _resize(edited, height, width)
    if len(edited) != n_frames:
        notes.append(f"edited video has {len(edited)} frames, the source {n_frames}: the first "
                     f"{min(len(edited), n_frames)} compared")
    frames = min(len(edited), n_frames)
    source, edited = source[:frames], edited[:frames]
    device = options.device

    value, _ = flicker(edited, device=device)
    record["flicker"] = _round(value)
    if value is None:
        notes.append("flicker: needs at least 3 frames")

    fg = None
    if mask is None:
        notes.append("fg_psnr, fg_ssim, bg_motion: no foreground mask (give --masks DIR with {edit_type}/{id}.npz)")
    elif mask.shape[1:3] != (height, width) or len(mask) < frames:
        notes.append(f"fg_psnr, fg_ssim, bg_motion: the mask is {tuple(mask.shape)} (T, H, W) but the source is "
                     f"{(n_frames, height, width)}")
    else:
        fg = mask[:frames]
    if fg is not None:
        psnr, pixels = foreground_psnr(source, edited, fg, erode_px=options.erode_px, device=device)
        ssim, _ = foreground_ssim(source, edited, fg, erode_px=options.erode_px, device=device)
        record["fg_psnr"], record["fg_ssim"] = _round(psnr), _round(ssim)
        if psnr is None:
            notes.append(f"fg_psnr, fg_ssim: the mask is empty after eroding it by {options.erode_px} px")
        elif ssim is None:
            notes.append("fg_ssim: no mask pixel lies inside the SSIM window's border")
        motion, _ = background_motion(edited, fg, step=options.grid_step, device=device)
        record["bg_motion"] = _round(motion)
        if motion is None:
            notes.append("bg_motion: no background point could be tracked (fewer than 2 frames, or the mask covers "
                         "the frame)")

    if control is None:
        notes.append("edge_f1: no control video (give --masks DIR with {edit_type}/{id}_control.mp4)")
    else:
        if control.shape[1:3] != (height, width):
            notes.append(f"control video is {control.shape[2]}x{control.shape[1]}, resized to {width}x{height}")
            control = _resize(control, height, width)
        both = min(len(control), frames)
        f1, _, _ = edge_f1(control[:both], edited[:both], low=options.canny_low, high=options.canny_high,
                           tolerance=options.edge_tolerance, device=device)
        record["edge_f1"] = _round(f1)
        if f1 is None:
            notes.append("edge_f1: neither the control video nor the output has an edge")
    record["notes"] = notes
    return record


def metrics_for_files(sample_id: str, source_path: str | os.PathLike, edited_path: str | os.PathLike,
                      mask_path: str | os.PathLike | None = None, control_path: str | os.PathLike | None = None,
                      options: MetricOptions | None = None) -> dict:
    """sample_metrics from a source mp4, an edited mp4, a Sparkle mask npz and a control mp4 (the last two optional:
    a missing file is a note). An unreadable video gives every metric None with the error in notes."""
    from sparkle_fast.formats import load_mask
    from sparkle_fast.video import read_frames

    notes: list[str] = []
    try:
        source = read_frames(source_path).frames.numpy()
        edited = read_frames(edited_path).frames.numpy()
    except Exception as exc:  # noqa: BLE001 - one unreadable video is one sample's note, not a stopped evaluation
        return {"id": sample_id, **dict.fromkeys(METRIC_KEYS),
                "notes": [f"all metrics: cannot read the videos ({type(exc).__name__}: {exc})"]}
    mask = control = None
    if mask_path is not None:
        try:
            mask = load_mask(mask_path)
        except Exception as exc:  # noqa: BLE001
            notes.append(f"mask: {exc}")
    if control_path is not None:
        try:
            control = read_frames(control_path).frames.numpy()
        except Exception as exc:  # noqa: BLE001
            notes.append(f"control video: {type(exc).__name__}: {exc}")
    return sample_metrics(sample_id, source, edited, mask, control, options, notes)
