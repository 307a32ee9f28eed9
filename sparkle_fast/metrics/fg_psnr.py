"""Foreground fidelity as PSNR: how closely the edited video keeps the source's pixels inside the (eroded) mask.

    foreground_psnr(source, edited, mask, *, erode_px=3, max_db=100.0, device=None) -> (psnr_db or None, pixels)

source, edited: uint8 (T, H, W, 3) RGB or (T, H, W) gray of equal shape; mask: bool/uint8 (T, H, W), nonzero =
foreground (Sparkle's BAIT mask). The mask is eroded by erode_px (a (2r+1) square) so that the boundary, where a
regenerated subject legitimately blends into the new background, does not count. PSNR = 10 log10(255^2 / MSE) over
every channel of every kept pixel of every frame; identical pixels give max_db (PSNR is infinite there; the cap keeps
the value JSON-safe and is our choice). None when the eroded mask is empty.
"""

from __future__ import annotations

import math
from typing import Any

from sparkle_fast.metrics._tensors import as_frames, as_mask, check_same_shape, erode, pick_device

OP = "foreground_psnr"


def foreground_psnr(source: Any, edited: Any, mask: Any, *, erode_px: int = 3, max_db: float = 100.0,
                    device: Any = None) -> tuple[float | None, int]:
    """(PSNR in dB, capped at max_db; or None when no pixel is left) and the number of foreground pixels used."""
    dev = pick_device(device, source, edited, mask)
    src, out = as_frames(source, "source", OP, dev), as_frames(edited, "edited", OP, dev)
    check_same_shape(OP, src, "source", out, "edited")
    if src.shape[-1] != out.shape[-1]:
        raise ValueError(f"{OP}: source has {src.shape[-1]} channel(s) but edited has {out.shape[-1]}")
    keep = erode(as_mask(mask, tuple(src.shape[:3]), "mask", OP, dev), erode_px)
    pixels = int(keep.sum())
    if pixels == 0:
        return None, 0
    mse = float(((src - out) ** 2)[keep].mean())
    if mse == 0.0:
        return float(max_db), pixels
    return min(float(max_db), 10.0 * math.log10(255.0 ** 2 / mse)), pixels
