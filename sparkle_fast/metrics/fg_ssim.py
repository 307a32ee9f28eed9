"""Foreground fidelity as SSIM: structural similarity of source and edited luma, averaged inside the (eroded) mask.

    foreground_ssim(source, edited, mask, *, erode_px=3, sigma=1.5, device=None) -> (ssim or None, pixels)
    ssim_map(a, b, *, sigma=1.5, data_range=255.0) -> float32 (T, H - 2r, W - 2r)

SSIM is Wang et al. (2004) with an isotropic Gaussian window (sigma 1.5, truncated at 3.5 sigma: an 11 x 11 window),
K1 = 0.01, K2 = 0.03, population (not sample) covariances: the same definition as skimage.metrics.
structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255), whose
mean it equals when the mask covers the frame (tests/test_metrics.py states the tolerance). The map is computed only
where the whole window lies inside the frame (skimage crops the same border before averaging). Colour frames are
compared on their BT.601 luma. None when no eroded-mask pixel lies inside that border.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from sparkle_fast.metrics._tensors import as_frames, as_mask, check_same_shape, erode, luma, pick_device

OP = "foreground_ssim"
K1, K2 = 0.01, 0.03
TRUNCATE = 3.5  # scipy.ndimage.gaussian_filter's default, used by skimage


def gaussian_window(sigma: float, device, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius int(TRUNCATE * sigma + 0.5) (scipy's rule)."""
    radius = int(TRUNCATE * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    weights = torch.exp(-0.5 * (x / sigma) ** 2)
    return (weights / weights.sum()).to(dtype)


def _blur_valid(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of (T, H, W) without padding: (T, H - 2r, W - 2r)."""
    k = window.numel()
    x = torch.nn.functional.conv2d(x[:, None], window.view(1, 1, k, 1))
    return torch.nn.functional.conv2d(x, window.view(1, 1, 1, k))[:, 0]


def ssim_map(a: torch.Tensor, b: torch.Tensor, *, sigma: float = 1.5, data_range: float = 255.0) -> torch.Tensor:
    """Per-pixel SSIM of float (T, H, W) images, valid region only: (T, H - 2r, W - 2r), r = int(3.5 sigma + 0.5).
    Computed in float64 (the means of squares cancel badly in float32 on flat 0..255 regions)."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    window = gaussian_window(sigma, a.device, torch.float64)
    mu_a, mu_b = _blur_valid(a, window), _blur_valid(b, window)
    var_a = _blur_valid(a * a, window) - mu_a ** 2
    var_b = _blur_valid(b * b, window) - mu_b ** 2
    cov = _blur_valid(a * b, window) - mu_a * mu_b
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


def foreground_ssim(source: Any, edited: Any, mask: Any, *, erode_px: int = 3, sigma: float = 1.5,
                    device: Any = None) -> tuple[float | None, int]:
    """(mean SSIM over the eroded mask's pixels inside the valid border, or None) and that pixel count."""
    dev = pick_device(device, source, edited, mask)
    src, out = as_frames(source, "source", OP, dev), as_frames(edited, "edited", OP, dev)
    check_same_shape(OP, src, "source", out, "edited")
    keep = erode(as_mask(mask, tuple(src.shape[:3]), "mask", OP, dev), erode_px)
    radius = int(TRUNCATE * sigma + 0.5)
    height, width = src.shape[1:3]
    if height <= 2 * radius or width <= 2 * radius:
        return None, 0
    keep = keep[:, radius:height - radius, radius:width - radius]
    pixels = int(keep.sum())
    if pixels == 0:
        return None, 0
    value = float(ssim_map(luma(src), luma(out), sigma=sigma)[keep].mean())
    return (value if math.isfinite(value) else None), pixels
