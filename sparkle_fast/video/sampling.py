"""Which frames to read and at what size: fps sampling, Sparkle's clip conventions, resizing.

fps sampling rule (used for `read_frames(fps=...)`, Sparkle's 2-FPS grounding/anchor frames and clip resampling):
    sample k is taken at time t_k = k / target_fps (k = 0, 1, ...) and is the frame on screen at that time, i.e. the
    frame i whose display interval [i / source_fps, (i + 1) / source_fps) contains t_k:
        i_k = floor(k * source_fps / target_fps)          (exact rational arithmetic, no float rounding)
    for every k with t_k before the end of the video (i_k < frame_count).
    16 fps -> 2 FPS:        0, 8, 16, 24, ...               (every 8th frame; 11 anchors for 81 frames)
    25 fps -> 2 FPS:        0, 12, 25, 37, 50, 62, 75, ...  (12.5 frames apart: alternately 12 and 13)
    30000/1001 -> 2 FPS:    0, 14, 29, 44, 59, 74, 89, ...  (14.985 frames apart: steps of 15, with a step of
                                                            14 whenever the 0.015-frame lag adds up to a frame)
    The first frame is always sampled; the sampled frames never drift from the wall clock (no accumulated error).
    Variable frame rate videos use their real timestamps with the same definition: i_k is the last frame whose
    timestamp is <= t_k. A target rate above the source rate repeats frames (each sample shows what is on screen).

Sparkle clip conventions (ClipSpec): see FACTS.md section 1. Sparkle's clips are 1280x720, 16 fps, and 81 frames
(or fewer, always 4k+1: the Wan VAE compresses time by 4 after the first frame). Kiwi-Edit reads from frame 0 at
the source rate, keeps min(81, n) frames trimmed to 4k+1, scales to about 1280*720 pixels keeping the aspect ratio
and floors H and W to multiples of 32 (720 -> 704).

Resizing (resize_frames): bilinear interpolation with antialiasing when shrinking (torch.nn.functional.interpolate,
mode="bilinear", antialias=True, align_corners=False: half-pixel centres, the filter widened by the scale factor
when downscaling, like PIL's BILINEAR resize), computed in float32 and rounded to the nearest uint8. The same code
runs on CPU and CUDA tensors, so every decode backend resizes identically. Any output size >= 1 works, odd or even.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np
import torch

from sparkle_fast.video.probe import VideoInfo

Rate = int | float | Fraction


def as_fraction(rate: Rate) -> Fraction:
    """An exact frame rate. Ints and Fractions are kept. A float that is an NTSC rate n * 1000/1001 to within
    0.005 frames/s (29.97, 23.976, 59.94) becomes Fraction(n * 1000, 1001); any other float becomes the nearest
    fraction with a denominator <= 1001 (12.5 -> 25/2)."""
    if isinstance(rate, Fraction):
        value = rate
    elif isinstance(rate, int):
        value = Fraction(rate)
    else:
        rate = float(rate)
        ntsc_base = round(rate * 1.001)
        if abs(rate - round(rate)) > 1e-6 and abs(rate * 1.001 - ntsc_base) < 0.005:
            value = Fraction(ntsc_base * 1000, 1001)
        else:
            value = Fraction(rate).limit_denominator(1001)
    if value <= 0:
        raise ValueError(f"frame rate must be positive, got {rate!r}")
    return value


def sample_indices(frame_count: int, source_fps: Rate, target_fps: Rate,
                   timestamps: np.ndarray | tuple[float, ...] | None = None,
                   duration: float | None = None) -> np.ndarray:
    """Source frame indices sampled at `target_fps` (the rule in the module docstring).

    frame_count: frames in the source. source_fps, target_fps: rates (exact fractions preferred).
    timestamps: for a variable-rate source, each frame's time in seconds (ascending, from 0); None = constant rate.
    duration: end of the last frame in seconds (variable rate only; default: last timestamp + one mean interval).
    Returns int64 (K,), ascending (non-decreasing when target_fps > source_fps).
    """
    if frame_count <= 0:
        return np.zeros(0, dtype=np.int64)
    target = as_fraction(target_fps)
    if timestamps is None:
        source = as_fraction(source_fps)
        # i_k = floor(k * source / target) < frame_count  <=>  k < frame_count * target / source
        count = math.ceil(frame_count * target / source)
        ks = np.arange(count, dtype=np.int64)
        num, den = source.numerator * target.denominator, source.denominator * target.numerator
        return (ks * num) // den
    times = np.asarray(timestamps, dtype=np.float64)
    if len(times) != frame_count:
        raise ValueError(f"timestamps has {len(times)} entries for {frame_count} frames")
    if duration is None:
        duration = float(times[-1] + (times[-1] / (frame_count - 1) if frame_count > 1 else 1 / float(target)))
    count = math.ceil(duration * float(target) - 1e-9)
    sample_times = np.arange(count, dtype=np.float64) / float(target)
    # 1 microsecond of slack: timestamps are stored in integer ticks, sample times are exact multiples.
    return np.searchsorted(times, sample_times + 1e-6, side="right").astype(np.int64) - 1


def trim_to_4k_plus_1(frame_count: int, max_frames: int = 81, step: int = 4) -> int:
    """The clip length Sparkle/Wan use: min(frame_count, max_frames) rounded down to step*k + 1 (0 if no frames).

    81 -> 81, 80 -> 77, 73 -> 73, 5 -> 5, 4 -> 1, 1 -> 1, 0 -> 0.
    """
    available = min(int(frame_count), int(max_frames))
    if available <= 0:
        return 0
    return (available - 1) // step * step + 1


@dataclass(frozen=True)
class ClipSpec:
    """How a source video becomes a training clip. Defaults are Sparkle's: 16 fps, <= 81 frames as 4k+1, 1280x720.

    fps:          output frame rate, frames picked by the fps rule; None keeps every source frame (Kiwi-Edit).
    max_frames:   upper bound on the clip length before trimming.
    frame_step:   lengths are trimmed down to frame_step * k + 1 (4 for the Wan VAE).
    size:         (height, width) of the output; None keeps the source size.
    fit:          "stretch": resize to exactly `size` (aspect ratio not kept; Sparkle's clips are all 16:9).
                  "area": keep the aspect ratio and scale so that H*W is about size[0]*size[1] (Kiwi-Edit).
    multiple_of:  floor H and W to multiples of this after fitting (Kiwi-Edit: 32, so 720 -> 704); 1 = off.
    """

    fps: Rate | None = 16
    max_frames: int = 81
    frame_step: int = 4
    size: tuple[int, int] | None = (720, 1280)
    fit: Literal["stretch", "area"] = "stretch"
    multiple_of: int = 1

    def frame_indices(self, info: VideoInfo) -> np.ndarray:
        """Source indices of the clip's frames, int64 (T,) with T = 4k+1 <= max_frames (or 0 for no frames)."""
        if self.fps is None:
            picked = np.arange(info.frame_count, dtype=np.int64)
        else:
            picked = sample_indices(info.frame_count, info.fps, self.fps,
                                    None if info.constant_rate else info.timestamps, info.duration)
        return picked[: trim_to_4k_plus_1(len(picked), self.max_frames, self.frame_step)]

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the clip for a source of height x width."""
        if self.size is None:
            out_h, out_w = height, width
        elif self.fit == "stretch":
            out_h, out_w = self.size
        elif self.fit == "area":
            scale = math.sqrt(self.size[0] * self.size[1] / (height * width))
            out_h, out_w = round(height * scale), round(width * scale)
        else:
            raise ValueError(f"ClipSpec.fit must be 'stretch' or 'area', got {self.fit!r}")
        step = self.multiple_of
        # Floor to the multiple, but never to 0: a tiny source still yields one block.
        return max(step, out_h // step * step), max(step, out_w // step * step)


SPARKLE_CLIP = ClipSpec()
"""Sparkle's clip: 16 fps, at most 81 frames trimmed to 4k+1, resized to 1280x720."""

KIWI_EDIT_CLIP = ClipSpec(fps=None, fit="area", multiple_of=32)
"""Kiwi-Edit's reading: source rate, <= 81 frames as 4k+1, about 1280*720 pixels, H and W floored to x32."""


def resize_frames(frames: torch.Tensor, size: tuple[int, int], chunk: int = 16) -> torch.Tensor:
    """Resize uint8 RGB frames (T, H, W, 3) to (T, size[0], size[1], 3) on their own device.

    Bilinear with antialiasing (see the module docstring). Returns `frames` itself when the size already matches.
    chunk: frames converted to float32 at a time, bounding the temporary memory to chunk * H * W * 12 bytes.
    """
    out_h, out_w = int(size[0]), int(size[1])
    if out_h < 1 or out_w < 1:
        raise ValueError(f"resize target must be at least 1x1, got {size}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {tuple(frames.shape)} {frames.dtype}")
    if tuple(frames.shape[1:3]) == (out_h, out_w):
        return frames
    out = torch.empty((frames.shape[0], out_h, out_w, 3), dtype=torch.uint8, device=frames.device)
    for start in range(0, frames.shape[0], chunk):
        part = frames[start:start + chunk].permute(0, 3, 1, 2).to(torch.float32)  # (t, 3, H, W) as interpolate wants
        scaled = torch.nn.functional.interpolate(part, size=(out_h, out_w), mode="bilinear", align_corners=False,
                                                 antialias=True)
        out[start:start + chunk] = scaled.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out
