"""OpenCV-exact gray conversion and Canny edges, frame by frame over videos.

Stage 5's default control edges ([edges] extractor = "canny") are Canny edges as VideoX-Fun computes them for its
control models: gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), edges = cv2.Canny(gray, 100, 200) (aperture 3, L1
gradient). These ops mean exactly that, bit for bit. The 100 / 200 thresholds are VideoX-Fun's, not published by
Sparkle, whose paper says "Canny edges ... using Lineart [5]"; the line-art extractor is models/lineart.py.

Public ops (numpy / torch (CPU or CUDA) / cupy in, the same kind out; see sparkle_fast.ops._dispatch):
  rgb_to_gray(frames)                 uint8 (..., 3) RGB -> uint8 (...)
  canny(images, low=100, high=200)    uint8 (T, H, W) gray or (T, H, W, 3) RGB -> uint8 (T, H, W) in {0, 255}

The definition (the *_reference functions) calls OpenCV itself: cv2.cvtColor and cv2.Canny ARE what these ops mean.
`canny_numpy` restates OpenCV's algorithm in numpy (it is what the GPU kernels implement, and tests check it against
cv2); its rules, verified against opencv-python-headless 5.0 on photographs and adversarial images:
  * gray = (9798 R + 19235 G + 3735 B + 2**14) >> 15 (OpenCV's 15-bit fixed-point weights; checked on all 2**24 RGB
    values).
  * low > high are swapped; both are floored to integers; "above" means strictly greater (m > low, m > high).
  * 3x3 Sobel dx, dy with BORDER_REPLICATE; magnitude m = |dx| + |dy|; the magnitude is 0 outside the frame.
  * sector: with x = |dx|, y = |dy| << 15 and tan(22.5 deg) in Q15 = 13573: y < 13573 x is horizontal, y > 13573 x
    + (x << 16) is vertical, anything else diagonal, along the main diagonal when dx and dy have the same sign
    (zero counts as positive), else along the anti-diagonal.
  * non-maximum suppression (only for m > low): horizontal keeps m > left and m >= right; vertical keeps m > up and
    m >= down; diagonal keeps m > the upper neighbour and m > the lower one (strict on both sides).
  * kept pixels with m > high are strong, the other kept ones weak; the edges are the strong pixels plus every weak
    pixel 8-connected through weak pixels to a strong one (hysteresis); no edge crosses a frame.

GPU (backend "triton"): kernels/canny.py, one fused Sobel + NMS + double-threshold kernel (gray is computed on the
fly from RGB) and hysteresis as union-find connected components over the whole batch, all on the device with a fixed
number of launches (no host round trip, no iteration count).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sparkle_fast.ops import _dispatch as dispatch

GPU_PREFERENCE = ("triton",)

# OpenCV's RGB -> gray weights (Q15) and tan(22.5 deg) in Q15, as used by cv2.cvtColor and cv2.Canny.
GRAY_WEIGHTS_Q15 = (9798, 19235, 3735)
TG22_Q15 = 13573

# Gradient magnitudes of 8-bit images are at most 4 * 255 * 2 = 2040: thresholds are clamped into [-1, 4096] for
# the kernels without changing any comparison (cv2 would overflow an int on huge thresholds; we do not).
_THRESHOLD_MIN, _THRESHOLD_MAX = -1, 4096


# --- the definition ------------------------------------------------------------------------------------------------


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the reference backend of the canny ops calls OpenCV: pip install opencv-python-headless"
                          ) from exc
    return cv2


def rgb_to_gray_reference(frames: np.ndarray) -> np.ndarray:
    """Definition: cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) on every (H, W, 3) frame of uint8 (..., 3)."""
    frames = np.asarray(frames)
    _check_rgb(frames, "rgb_to_gray", "frames")
    if frames.size == 0:
        return np.zeros(frames.shape[:-1], np.uint8)
    cv2 = _cv2()
    flat = np.ascontiguousarray(frames).reshape(-1, 1, 3)  # any leading shape: one long image of pixels
    # Bounded chunks keep cv2's temporaries small for long videos.
    out = np.empty(flat.shape[0], np.uint8)
    step = 1 << 24
    for start in range(0, flat.shape[0], step):
        out[start:start + step] = cv2.cvtColor(flat[start:start + step], cv2.COLOR_RGB2GRAY).reshape(-1)
    return out.reshape(frames.shape[:-1])


def rgb_to_gray_numpy(frames: np.ndarray) -> np.ndarray:
    """OpenCV's fixed-point RGB -> gray restated in numpy (equal to rgb_to_gray_reference)."""
    f = np.asarray(frames).astype(np.int32)
    wr, wg, wb = GRAY_WEIGHTS_Q15
    return ((f[..., 0] * wr + f[..., 1] * wg + f[..., 2] * wb + (1 << 14)) >> 15).astype(np.uint8)


def opencv_thresholds(low: float, high: float) -> tuple[int, int]:
    """OpenCV's integer thresholds: swapped when low > high, then floored (clamped to [-1, 4096], which changes no
    comparison with an 8-bit image's L1 magnitude)."""
    low, high = float(low), float(high)
    if low > high:
        low, high = high, low

    def clamp(v: float) -> int:
        return int(min(max(math.floor(v), _THRESHOLD_MIN), _THRESHOLD_MAX))

    return clamp(low), clamp(high)


def canny_reference(images: np.ndarray, low: float = 100, high: float = 200) -> np.ndarray:
    """Definition: cv2.Canny(gray, low, high, apertureSize=3, L2gradient=False) per frame, gray from
    rgb_to_gray_reference when images are RGB. images: uint8 (T, H, W) or (T, H, W, 3) -> uint8 (T, H, W)."""
    images = np.asarray(images)
    is_rgb = _check_images(images, "canny", "images")
    low, high = _check_thresholds(low, high, "canny")
    gray = rgb_to_gray_reference(images) if is_rgb else images
    out = np.zeros(gray.shape, np.uint8)
    if gray.size == 0:
        return out
    cv2 = _cv2()
    for t in range(gray.shape[0]):
        out[t] = cv2.Canny(np.ascontiguousarray(gray[t]), low, high, apertureSize=3, L2gradient=False)
    return out


def canny_state_numpy(gray: np.ndarray, low: float = 100, high: float = 200) -> np.ndarray:
    """OpenCV's Sobel + non-maximum suppression + double threshold in numpy, for one uint8 (H, W) frame.
    Returns uint8 (H, W): 0 none, 1 weak, 2 strong (the state map the GPU kernel writes)."""
    low_i, high_i = opencv_thresholds(low, high)
    H, W = gray.shape
    g = np.pad(gray.astype(np.int32), 1, mode="edge")  # BORDER_REPLICATE
    dx = (g[:-2, 2:] - g[:-2, :-2]) + 2 * (g[1:-1, 2:] - g[1:-1, :-2]) + (g[2:, 2:] - g[2:, :-2])
    dy = (g[2:, :-2] - g[:-2, :-2]) + 2 * (g[2:, 1:-1] - g[:-2, 1:-1]) + (g[2:, 2:] - g[:-2, 2:])
    mag = np.abs(dx) + np.abs(dy)
    padded = np.pad(mag, 1)  # zero magnitude outside the frame

    def at(dr: int, dc: int) -> np.ndarray:
        return padded[1 + dr:1 + dr + H, 1 + dc:1 + dc + W]

    ax, ay = np.abs(dx), np.abs(dy) << 15
    tg22 = ax * TG22_Q15
    horizontal = ay < tg22
    vertical = ~horizontal & (ay > tg22 + (ax << 16))
    same_sign = (dx ^ dy) >= 0
    keep_h = (mag > at(0, -1)) & (mag >= at(0, 1))
    keep_v = (mag > at(-1, 0)) & (mag >= at(1, 0))
    keep_d = np.where(same_sign, (mag > at(-1, -1)) & (mag > at(1, 1)), (mag > at(-1, 1)) & (mag > at(1, -1)))
    keep = np.where(horizontal, keep_h, np.where(vertical, keep_v, keep_d)) & (mag > low_i)
    return np.where(keep, np.where(mag > high_i, 2, 1), 0).astype(np.uint8)


def hysteresis_numpy(state: np.ndarray) -> np.ndarray:
    """Edges (uint8 0/255) of one (H, W) state map: 8-connected components of candidates that hold a strong pixel."""
    cv2 = _cv2()
    n, labels = cv2.connectedComponents((state > 0).astype(np.uint8), connectivity=8)
    strong = np.zeros(n, bool)
    strong[labels[state == 2]] = True
    strong[0] = False  # label 0 is the background
    return np.where(strong[labels], 255, 0).astype(np.uint8)


def canny_numpy(images: np.ndarray, low: float = 100, high: float = 200) -> np.ndarray:
    """OpenCV's Canny restated in numpy (see the module docstring); equal to canny_reference."""
    images = np.asarray(images)
    is_rgb = _check_images(images, "canny", "images")
    gray = rgb_to_gray_numpy(images) if is_rgb else images
    out = np.zeros(gray.shape, np.uint8)
    for t in range(gray.shape[0]):
        if gray[t].size:
            out[t] = hysteresis_numpy(canny_state_numpy(gray[t], low, high))
    return out


# --- argument checks -----------------------------------------------------------------------------------------------


def _check_rgb(frames: Any, op: str, name: str) -> None:
    dispatch.check_dtype(frames, ("uint8",), name, op)
    if frames.ndim < 1 or frames.shape[-1] != 3:
        raise ValueError(f"{op}: {name} must be RGB with a last dimension of 3, got shape {tuple(frames.shape)}")


def _check_images(images: Any, op: str, name: str) -> bool:
    """True for RGB (T, H, W, 3), False for gray (T, H, W); errors otherwise."""
    dispatch.check_dtype(images, ("uint8",), name, op)
    if images.ndim == 3:
        return False
    if images.ndim == 4 and images.shape[-1] == 3:
        return True
    raise ValueError(f"{op}: {name} must be gray (T, H, W) or RGB (T, H, W, 3) uint8, got shape "
                     f"{tuple(images.shape)}; add a leading frame axis for a single image (images[None])")


def _check_thresholds(low: Any, high: Any, op: str) -> tuple[float, float]:
    values = []
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
            raise ValueError(f"{op}: {name} must be a finite number, got {v!r}")
        values.append(float(v))
    return values[0], values[1]


# --- public ops ----------------------------------------------------------------------------------------------------


def rgb_to_gray(frames: Any, *, backend: str | None = "auto") -> Any:
    """RGB to gray exactly as cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).

    frames: uint8 (..., 3), any leading shape and strides. Returns uint8 (...), same array kind and device.
    """
    op = "rgb_to_gray"
    kind = dispatch.array_kind(frames, "frames", op)
    _check_rgb(frames, op, "frames")
    chosen = dispatch.resolve_backend(backend, kind, op, GPU_PREFERENCE)
    if chosen == "reference":
        return dispatch.from_numpy(rgb_to_gray_reference(dispatch.to_numpy(frames, kind)), kind, like=frames)

    import torch

    from sparkle_fast.kernels import canny as kernels

    tensor = dispatch.to_torch(frames, kind)
    with dispatch.on_device_of(tensor, kind):
        src = tensor.contiguous()
        out = torch.empty(src.shape[:-1], dtype=torch.uint8, device=src.device)
        kernels.rgb_to_gray(src, out)
    return dispatch.from_torch(out, kind)


def canny(images: Any, low: float = 100, high: float = 200, *, backend: str | None = "auto") -> Any:
    """Canny edges equal to cv2.Canny(gray, low, high, apertureSize=3, L2gradient=False) frame by frame.

    images: uint8 (T, H, W) gray or (T, H, W, 3) RGB (converted as rgb_to_gray), any strides; numpy, torch (CPU or
        CUDA) or cupy. A single image needs a leading frame axis.
    low, high: hysteresis thresholds on the L1 gradient magnitude (swapped when low > high, floored, as OpenCV).
    Returns uint8 (T, H, W), 255 on edges and 0 elsewhere, same array kind and device as images.
    """
    op = "canny"
    kind = dispatch.array_kind(images, "images", op)
    is_rgb = _check_images(images, op, "images")
    low, high = _check_thresholds(low, high, op)
    chosen = dispatch.resolve_backend(backend, kind, op, GPU_PREFERENCE)
    if chosen == "reference":
        return dispatch.from_numpy(canny_reference(dispatch.to_numpy(images, kind), low, high), kind, like=images)

    import torch

    from sparkle_fast.kernels import canny as kernels

    low_i, high_i = opencv_thresholds(low, high)
    tensor = dispatch.to_torch(images, kind)
    with dispatch.on_device_of(tensor, kind):
        T, H, W = (int(d) for d in tensor.shape[:3])
        out = torch.empty((T, H, W), dtype=torch.uint8, device=tensor.device)
        # Union-find labels are 30-bit batch indices: split very long batches along frames.
        per_chunk = max(1, kernels.MAX_BATCH_PIXELS // max(1, H * W))
        for start in range(0, T, per_chunk):
            stop = min(T, start + per_chunk)
            kernels.canny(tensor[start:stop], is_rgb, low_i, high_i, out[start:stop])
    return dispatch.from_torch(out, kind)
