"""How a source of another aspect ratio becomes a clip of the run's size (config [clip] aspect; our choice: Sparkle's
clips are all 16:9 and its paper says nothing about other sources).

  crop     scale to cover out_h x out_w (aspect kept), keep the middle (the default: no bars for the models to see)
  pad      scale to fit inside (aspect kept), centre on black
  stretch  resize to exactly out_h x out_w (aspect not kept)

    plan = aspect_plan(src_h, src_w, out_h, out_w, "crop")   # decode at plan.scaled, then:
    clip = apply_aspect(frames, plan)                        # uint8 (T, plan.scaled..., C) -> (T, out_h, out_w, C)

A source already of the output's aspect ratio (to the pixel) is resized alone in every mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MODES = ("crop", "pad", "stretch")


@dataclass(frozen=True)
class AspectPlan:
    mode: str
    source: tuple[int, int]   # (H, W) of the source
    scaled: tuple[int, int]   # (H, W) to decode at
    out: tuple[int, int]      # (H, W) of the clip
    offset: tuple[int, int]   # crop: (top, left) of the kept window in `scaled`; pad: of `scaled` in `out`

    def to_dict(self) -> dict:
        return {"mode": self.mode, "source": list(self.source), "scaled": list(self.scaled), "out": list(self.out),
                "offset": list(self.offset)}


def aspect_plan(src_h: int, src_w: int, out_h: int, out_w: int, mode: str = "crop") -> AspectPlan:
    """The decode size and window for one source (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"aspect mode must be one of {', '.join(MODES)}, got {mode!r}")
    if min(src_h, src_w, out_h, out_w) <= 0:
        raise ValueError(f"aspect_plan: sizes must be positive, got source {src_h}x{src_w}, output {out_h}x{out_w}")
    out = (int(out_h), int(out_w))
    if mode == "stretch":
        return AspectPlan(mode, (src_h, src_w), out, out, (0, 0))
    pick = max if mode == "crop" else min
    scale = pick(out_h / src_h, out_w / src_w)
    clamp = max if mode == "crop" else min  # never below the output when cropping, never above it when padding
    scaled = (clamp(out_h, round(src_h * scale)), clamp(out_w, round(src_w * scale)))
    if mode == "crop":
        offset = ((scaled[0] - out_h) // 2, (scaled[1] - out_w) // 2)
    else:
        offset = ((out_h - scaled[0]) // 2, (out_w - scaled[1]) // 2)
    return AspectPlan(mode, (src_h, src_w), scaled, out, offset)


def apply_aspect(frames: Any, plan: AspectPlan) -> Any:
    """frames decoded at plan.scaled (numpy or torch, (T, H, W[, C])) -> the clip at plan.out, same kind/device."""
    if tuple(frames.shape[1:3]) != plan.scaled:
        raise ValueError(f"apply_aspect: frames are {tuple(frames.shape[1:3])}, the plan decodes at {plan.scaled}")
    (top, left), (out_h, out_w) = plan.offset, plan.out
    if plan.scaled == plan.out:
        return frames
    if plan.mode == "crop":
        window = frames[:, top:top + out_h, left:left + out_w]
        if hasattr(window, "contiguous"):  # torch
            return window.contiguous()
        import numpy as np

        return np.ascontiguousarray(window)
    shape = (frames.shape[0], out_h, out_w) + tuple(frames.shape[3:])
    if hasattr(frames, "new_zeros"):  # torch
        out = frames.new_zeros(shape)
    else:
        import numpy as np

        out = np.zeros(shape, dtype=frames.dtype)
    out[:, top:top + plan.scaled[0], left:left + plan.scaled[1]] = frames
    return out
