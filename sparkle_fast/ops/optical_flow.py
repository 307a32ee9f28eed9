"""Sparse optical flow for the camera-motion filter: pyramidal Lucas-Kanade and a grid point selector.

Public ops (numpy / torch CPU or CUDA / cupy in, the same kind out; see sparkle_fast.ops._dispatch):

  track_points(prev, next, points, *, window=21, max_level=3, max_iters=30, epsilon=0.01, min_eig_threshold=1e-4,
               initial=None) -> (next_points float32 (B, N, 2), status bool (B, N), error float32 (B, N))
      prev, next: uint8 gray (H, W) or (B, H, W), B frame pairs of one size; points: float32 (N, 2) or (B, N, 2),
      (x, y) pixel coordinates in prev. Unbatched inputs give unbatched outputs.
      Meaning: cv2.calcOpticalFlowPyrLK(prev, next, points, None, winSize=(window, window), maxLevel=max_level,
      criteria=(COUNT | EPS, max_iters, epsilon), minEigThreshold=min_eig_threshold) per pair: max_level=3 is OpenCV's
      default (levels 0..3; fewer when the image gets smaller than the window, as OpenCV does). status is OpenCV's;
      error is the mean |J - I| over the window (OpenCV's default error), 0 where status is False. NaN points fail.
      initial: optional float32 like points, where the points are guessed to be in next (OpenCV's
      OPTFLOW_USE_INITIAL_FLOW: the search starts there, scaled to the top pyramid level); a motion predicted
      by a homography lets the pyramid track points that moved further than it can reach from zero.
  select_points(images, *, cells=(9, 16), margin=8, quality=0.01)
      -> (points float32 (B, R*C, 2), valid bool (B, R*C))
      A regular grid of R x C cells over the image (less a margin); in every cell the pixel with the largest
      Shi-Tomasi response (cv2.cornerMinEigenVal(image, blockSize=3, ksize=3), the score goodFeaturesToTrack uses).
      A cell's point is valid when its response is > 0 and >= quality * the image's largest response. One point per
      cell spreads points over the frame in proportion to area, so a subject gets no more votes than its size.

References: track_points_reference calls OpenCV; select_points_reference uses cv2.cornerMinEigenVal + numpy.
GPU: Triton kernel kernels/lucas_kanade.py (one launch per pyramid level for all pairs of the batch), pyramids and
Scharr derivatives with torch ops (exact integer arithmetic in float32, as OpenCV's uint8 pyrDown and int16 Scharr).
The Triton path equals OpenCV within float tolerance, not bit for bit: tests/test_optical_flow.py states the bounds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparkle_fast.ops import _dispatch as dispatch

GPU_PREFERENCE = ("triton",)
_OP_TRACK = "track_points"
_OP_SELECT = "select_points"


def _cv2():
    import cv2

    return cv2


# --- argument checks -----------------------------------------------------------------------------------------------


def _check_initial(points, initial) -> None:
    if initial is None:
        return
    dispatch.array_kind(initial, "initial", _OP_TRACK)
    dispatch.check_dtype(initial, ("float32",), "initial", _OP_TRACK)
    if tuple(initial.shape) != tuple(points.shape):
        raise ValueError(f"{_OP_TRACK}: initial must have the points' shape {tuple(points.shape)} (guessed positions "
                         f"in next), got {tuple(initial.shape)}")


def _check_track_args(prev, nxt, points, window, max_level, max_iters, epsilon):
    for name, image in (("prev", prev), ("next", nxt)):
        dispatch.array_kind(image, name, _OP_TRACK)
        dispatch.check_dtype(image, ("uint8",), name, _OP_TRACK)
        if image.ndim not in (2, 3):
            raise ValueError(f"{_OP_TRACK}: {name} must be a gray image (H, W) or a batch (B, H, W), got shape "
                             f"{tuple(image.shape)}; convert RGB with ops.rgb_to_gray first")
    if tuple(prev.shape) != tuple(nxt.shape):
        raise ValueError(f"{_OP_TRACK}: prev and next must have the same shape, got {tuple(prev.shape)} and "
                         f"{tuple(nxt.shape)}")
    dispatch.array_kind(points, "points", _OP_TRACK)
    dispatch.check_dtype(points, ("float32",), "points", _OP_TRACK)
    if points.ndim != prev.ndim or points.shape[-1] != 2 or (prev.ndim == 3 and points.shape[0] != prev.shape[0]):
        want = "(B, N, 2) with B = prev.shape[0]" if prev.ndim == 3 else "(N, 2)"
        raise ValueError(f"{_OP_TRACK}: points must be float32 {want} (x, y) coordinates, got shape "
                         f"{tuple(points.shape)}")
    if prev.shape[-1] < 1 or prev.shape[-2] < 1:
        raise ValueError(f"{_OP_TRACK}: images must be at least 1x1, got {tuple(prev.shape)}")
    if not (isinstance(window, (int, np.integer)) and window >= 3 and window % 2 == 1):
        raise ValueError(f"{_OP_TRACK}: window must be an odd integer >= 3, got {window!r}")
    if not (isinstance(max_level, (int, np.integer)) and 0 <= max_level <= 8):
        raise ValueError(f"{_OP_TRACK}: max_level must be an integer in 0..8, got {max_level!r}")
    if not (isinstance(max_iters, (int, np.integer)) and max_iters >= 1):
        raise ValueError(f"{_OP_TRACK}: max_iters must be an integer >= 1, got {max_iters!r}")
    if not epsilon >= 0:
        raise ValueError(f"{_OP_TRACK}: epsilon must be >= 0, got {epsilon!r}")


def pyramid_max_level(height: int, width: int, window: int, max_level: int) -> int:
    """The top level OpenCV's buildOpticalFlowPyramid reaches: it stops before a level would be <= the window."""
    for level in range(max_level + 1):
        width, height = (width + 1) // 2, (height + 1) // 2
        if width <= window or height <= window:
            return level
    return max_level


# --- the definition ------------------------------------------------------------------------------------------------


def track_points_reference(prev, nxt, points, *, window: int = 21, max_level: int = 3, max_iters: int = 30,
                           epsilon: float = 0.01, min_eig_threshold: float = 1e-4, initial=None):
    """Definition: cv2.calcOpticalFlowPyrLK on every pair (numpy in, numpy out)."""
    _check_track_args(prev, nxt, points, window, max_level, max_iters, epsilon)
    _check_initial(points, initial)
    cv2 = _cv2()
    batched = prev.ndim == 3
    prev, nxt, points = (np.asarray(a) for a in (prev, nxt, points))
    guesses = None if initial is None else np.asarray(initial)
    if not batched:
        prev, nxt, points = prev[None], nxt[None], points[None]
        guesses = None if guesses is None else guesses[None]
    n_pairs, n = points.shape[:2]
    out_pts = np.zeros((n_pairs, n, 2), np.float32)
    status = np.zeros((n_pairs, n), bool)
    error = np.zeros((n_pairs, n), np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, int(max_iters), float(epsilon))
    for b in range(n_pairs):
        finite = np.isfinite(points[b]).all(axis=1)
        out_pts[b] = points[b]
        if n == 0 or not finite.any():
            continue
        pts = np.ascontiguousarray(points[b][finite]).reshape(-1, 1, 2)
        start = None if guesses is None else np.ascontiguousarray(guesses[b][finite]).reshape(-1, 1, 2).copy()
        moved, st, err = cv2.calcOpticalFlowPyrLK(
            np.ascontiguousarray(prev[b]), np.ascontiguousarray(nxt[b]), pts, start, winSize=(window, window),
            maxLevel=int(max_level), criteria=criteria, minEigThreshold=float(min_eig_threshold),
            flags=0 if start is None else cv2.OPTFLOW_USE_INITIAL_FLOW)
        ok = st.reshape(-1).astype(bool)
        out_pts[b][finite] = moved.reshape(-1, 2)
        status[b][finite] = ok
        error[b][finite] = np.where(ok, err.reshape(-1), 0.0)
    if not batched:
        return out_pts[0], status[0], error[0]
    return out_pts, status, error


def _check_select_args(images, cells, margin, quality):
    dispatch.array_kind(images, "images", _OP_SELECT)
    dispatch.check_dtype(images, ("uint8",), "images", _OP_SELECT)
    if images.ndim not in (2, 3):
        raise ValueError(f"{_OP_SELECT}: images must be gray (H, W) or (B, H, W), got shape {tuple(images.shape)}")
    rows, cols = (int(c) for c in cells)
    height, width = int(images.shape[-2]), int(images.shape[-1])
    if rows < 1 or cols < 1:
        raise ValueError(f"{_OP_SELECT}: cells must be two positive integers, got {cells!r}")
    if margin < 0 or (height - 2 * margin) // rows < 1 or (width - 2 * margin) // cols < 1:
        raise ValueError(f"{_OP_SELECT}: a {height}x{width} image less a margin of {margin} cannot hold {rows}x{cols} "
                         "cells; use fewer cells or a smaller margin")
    if not 0 <= quality <= 1:
        raise ValueError(f"{_OP_SELECT}: quality must be in [0, 1], got {quality!r}")
    return rows, cols


def _cell_geometry(height, width, rows, cols, margin):
    cell_h, cell_w = (height - 2 * margin) // rows, (width - 2 * margin) // cols
    return cell_h, cell_w


def _pick_cells_numpy(score: np.ndarray, rows, cols, margin, quality):
    """score: float32 (B, H, W) -> points (B, R*C, 2), valid (B, R*C). Ties: the first pixel in row-major order."""
    n_images, height, width = score.shape
    cell_h, cell_w = _cell_geometry(height, width, rows, cols, margin)
    region = score[:, margin:margin + rows * cell_h, margin:margin + cols * cell_w]
    tiles = region.reshape(n_images, rows, cell_h, cols, cell_w).transpose(0, 1, 3, 2, 4)
    tiles = tiles.reshape(n_images, rows * cols, cell_h * cell_w)
    best = tiles.argmax(axis=2)
    best_score = np.take_along_axis(tiles, best[..., None], axis=2)[..., 0]
    cell = np.arange(rows * cols)
    ys = margin + (cell // cols) * cell_h + best // cell_w
    xs = margin + (cell % cols) * cell_w + best % cell_w
    points = np.stack([xs, ys], axis=-1).astype(np.float32)
    top = score.reshape(n_images, -1).max(axis=1, initial=0.0)
    valid = (best_score > 0) & (best_score >= quality * top[:, None])
    return points, valid


def select_points_reference(images, *, cells=(9, 16), margin: int = 8, quality: float = 0.01):
    """Definition: per-cell argmax of cv2.cornerMinEigenVal(image, 3, 3) (numpy in, numpy out)."""
    rows, cols = _check_select_args(images, cells, margin, quality)
    cv2 = _cv2()
    images = np.asarray(images)
    batched = images.ndim == 3
    stack = images if batched else images[None]
    score = np.stack([cv2.cornerMinEigenVal(np.ascontiguousarray(im), 3, ksize=3) for im in stack]) \
        if len(stack) else np.zeros((0,) + stack.shape[1:], np.float32)
    points, valid = _pick_cells_numpy(score, rows, cols, margin, quality)
    return (points, valid) if batched else (points[0], valid[0])


# --- torch glue for the GPU path -----------------------------------------------------------------------------------


def _reflect101_index(n: int, pad: int, device):
    import torch

    i = torch.arange(-pad, n + pad, device=device)
    i = torch.where(i < 0, -i, i)
    i = torch.where(i >= n, 2 * n - 2 - i, i)
    return i.clamp(0, max(n - 1, 0))


def _pyr_down(image):
    """cv2.pyrDown of uint8-valued float32 images (B, H, W): 5x5 [1 4 6 4 1]^2 / 256, reflect-101, rounded."""
    import torch

    _, height, width = image.shape
    taps = (1.0, 4.0, 6.0, 4.0, 1.0)
    rows = image[:, _reflect101_index(height, 2, image.device)]
    out_h, out_w = (height + 1) // 2, (width + 1) // 2
    vertical = sum(t * rows[:, k:k + 2 * out_h:2] for k, t in enumerate(taps))
    cols = vertical[:, :, _reflect101_index(width, 2, image.device)]
    full = sum(t * cols[:, :, k:k + 2 * out_w:2] for k, t in enumerate(taps))
    return torch.floor((full + 128.0) / 256.0)


def _scharr(image):
    """OpenCV's calcSharrDeriv (dx, dy as raw Scharr sums) of float32 (B, H, W), reflect-101 borders."""
    _, height, width = image.shape
    rows = image[:, _reflect101_index(height, 1, image.device)]
    smooth = (rows[:, :-2] + rows[:, 2:]) * 3.0 + rows[:, 1:-1] * 10.0
    diff = rows[:, 2:] - rows[:, :-2]
    col = _reflect101_index(width, 1, image.device)
    smooth, diff = smooth[:, :, col], diff[:, :, col]
    dx = smooth[:, :, 2:] - smooth[:, :, :-2]
    dy = (diff[:, :, 2:] + diff[:, :, :-2]) * 3.0 + diff[:, :, 1:-1] * 10.0
    return dx.contiguous(), dy.contiguous()


def track_points_triton(prev, nxt, points, *, window, max_level, max_iters, epsilon, min_eig_threshold,
                        initial=None):
    """prev/next uint8 torch (B, H, W), points (and initial) float32 torch (B, N, 2) on one device -> torch
    results."""
    import torch

    from sparkle_fast.kernels import lucas_kanade

    n_pairs, n = points.shape[:2]
    height, width = int(prev.shape[1]), int(prev.shape[2])
    flat_points = points.reshape(-1, 2).contiguous()
    next_pts = (flat_points if initial is None else initial.reshape(-1, 2)).clone().contiguous()
    status = torch.ones(n_pairs * n, dtype=torch.int8, device=prev.device)
    err = torch.zeros(n_pairs * n, dtype=torch.float32, device=prev.device)
    if n_pairs * n == 0:
        return next_pts.reshape(n_pairs, n, 2), status.bool().reshape(n_pairs, n), err.reshape(n_pairs, n)
    top = pyramid_max_level(height, width, window, max_level)
    prev_pyr, next_pyr = [prev.float().contiguous()], [nxt.float().contiguous()]
    for _ in range(top):
        prev_pyr.append(_pyr_down(prev_pyr[-1]).contiguous())
        next_pyr.append(_pyr_down(next_pyr[-1]).contiguous())
    for level in range(top, -1, -1):
        dx, dy = _scharr(prev_pyr[level])
        lucas_kanade.track_level(prev_pyr[level], next_pyr[level], dx, dy, flat_points, next_pts, status, err, n,
                                 level, level == top, window, int(max_iters), float(epsilon) ** 2,
                                 float(min_eig_threshold))
    return next_pts.reshape(n_pairs, n, 2), status.bool().reshape(n_pairs, n), err.reshape(n_pairs, n)


def _min_eig_torch(images):
    """cv2.cornerMinEigenVal(image, blockSize=3, ksize=3) of uint8 torch (B, H, W), as float32."""
    height, width = images.shape[1:]
    x = images.float()
    rows = x[:, _reflect101_index(height, 1, x.device)]
    smooth = rows[:, :-2] + 2.0 * rows[:, 1:-1] + rows[:, 2:]
    diff = rows[:, 2:] - rows[:, :-2]
    col = _reflect101_index(width, 1, x.device)
    smooth, diff = smooth[:, :, col], diff[:, :, col]
    scale = 1.0 / (4.0 * 3.0 * 255.0)  # OpenCV: 1 / ((1 << (ksize - 1)) * blockSize * 255)
    dx = (smooth[:, :, 2:] - smooth[:, :, :-2]) * scale
    dy = (diff[:, :, :-2] + 2.0 * diff[:, :, 1:-1] + diff[:, :, 2:]) * scale

    def box3(v):  # unnormalised 3x3 box sum, reflect-101
        v = v[:, _reflect101_index(height, 1, v.device)]
        v = v[:, :-2] + v[:, 1:-1] + v[:, 2:]
        v = v[:, :, col]
        return v[:, :, :-2] + v[:, :, 1:-1] + v[:, :, 2:]

    a, b, c = box3(dx * dx) * 0.5, box3(dx * dy), box3(dy * dy) * 0.5
    return (a + c) - ((a - c) ** 2 + b * b).sqrt()


def select_points_torch(images, rows, cols, margin, quality):
    import torch

    score = _min_eig_torch(images)
    n_images, height, width = score.shape
    cell_h, cell_w = _cell_geometry(height, width, rows, cols, margin)
    region = score[:, margin:margin + rows * cell_h, margin:margin + cols * cell_w]
    tiles = region.reshape(n_images, rows, cell_h, cols, cell_w).permute(0, 1, 3, 2, 4)
    tiles = tiles.reshape(n_images, rows * cols, cell_h * cell_w)
    best_score, best = tiles.max(dim=2)
    cell = torch.arange(rows * cols, device=images.device)
    ys = margin + torch.div(cell, cols, rounding_mode="floor") * cell_h + torch.div(best, cell_w, rounding_mode="floor")
    xs = margin + (cell % cols) * cell_w + best % cell_w
    points = torch.stack([xs, ys], dim=-1).float()
    top = score.reshape(n_images, -1).amax(dim=1) if n_images else score.new_zeros(0)
    valid = (best_score > 0) & (best_score >= quality * top[:, None])
    return points, valid


# --- public ops ----------------------------------------------------------------------------------------------------


def track_points(prev: Any, next: Any, points: Any, *, window: int = 21, max_level: int = 3,  # noqa: A002
                 max_iters: int = 30, epsilon: float = 0.01, min_eig_threshold: float = 1e-4, initial: Any = None,
                 backend: str | None = "auto"):
    """Pyramidal Lucas-Kanade (cv2.calcOpticalFlowPyrLK's meaning) for B frame pairs at once; see the module
    docstring for shapes. Returns (next_points, status, error) as the caller's array kind, on its device."""
    _check_track_args(prev, next, points, window, max_level, max_iters, epsilon)
    _check_initial(points, initial)
    kind = dispatch.array_kind(prev, "prev", _OP_TRACK)
    chosen = dispatch.resolve_backend(backend, kind, _OP_TRACK, GPU_PREFERENCE)
    options = dict(window=int(window), max_level=int(max_level), max_iters=int(max_iters), epsilon=float(epsilon),
                   min_eig_threshold=float(min_eig_threshold))
    if chosen == "reference":
        host = [dispatch.to_numpy(a, dispatch.array_kind(a, name, _OP_TRACK))
                for a, name in ((prev, "prev"), (next, "next"), (points, "points"))]
        guesses = None if initial is None else dispatch.to_numpy(initial, dispatch.array_kind(initial, "initial",
                                                                                                _OP_TRACK))
        result = track_points_reference(*host, initial=guesses, **options)
        return tuple(dispatch.from_numpy(r, kind, like=prev) for r in result)
    t_prev, t_next, t_pts = (dispatch.to_torch(a, dispatch.array_kind(a, n, _OP_TRACK))
                             for a, n in ((prev, "prev"), (next, "next"), (points, "points")))
    if t_next.device != t_prev.device or t_pts.device != t_prev.device:
        raise ValueError(f"{_OP_TRACK}: prev, next and points must be on one device, got {t_prev.device}, "
                         f"{t_next.device}, {t_pts.device}")
    t_init = None if initial is None else dispatch.to_torch(initial, dispatch.array_kind(initial, "initial",
                                                                                          _OP_TRACK))
    if t_init is not None and t_init.device != t_prev.device:
        raise ValueError(f"{_OP_TRACK}: initial must be on the images' device {t_prev.device}, got {t_init.device}")
    batched = t_prev.ndim == 3
    if not batched:
        t_prev, t_next, t_pts = t_prev[None], t_next[None], t_pts[None]
        t_init = None if t_init is None else t_init[None]
    with dispatch.on_device_of(t_prev, kind):
        result = track_points_triton(t_prev, t_next, t_pts, initial=t_init, **options)
    if not batched:
        result = tuple(r[0] for r in result)
    return tuple(dispatch.from_torch(r, kind) for r in result)


def select_points(images: Any, *, cells=(9, 16), margin: int = 8, quality: float = 0.01,
                  backend: str | None = "auto"):
    """One Shi-Tomasi corner per grid cell; see the module docstring. Returns (points float32 (B, R*C, 2),
    valid bool (B, R*C)) (no B for a single (H, W) image) as the caller's array kind. GPU: torch ops."""
    rows, cols = _check_select_args(images, cells, margin, quality)
    kind = dispatch.array_kind(images, "images", _OP_SELECT)
    chosen = dispatch.resolve_backend(backend, kind, _OP_SELECT, ("triton",))
    if chosen == "reference":
        result = select_points_reference(dispatch.to_numpy(images, kind), cells=cells, margin=margin,
                                         quality=quality)
        return tuple(dispatch.from_numpy(r, kind, like=images) for r in result)
    tensor = dispatch.to_torch(images, kind)
    batched = tensor.ndim == 3
    with dispatch.on_device_of(tensor, kind):
        points, valid = select_points_torch(tensor if batched else tensor[None], rows, cols, int(margin),
                                            float(quality))
    if not batched:
        points, valid = points[0], valid[0]
    return dispatch.from_torch(points, kind), dispatch.from_torch(valid, kind)
