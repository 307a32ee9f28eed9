"""Stage 1's coarse filter: is a clip filmed by a fixed camera?

    from sparkle_fast import camera
    result = camera.analyze("clip.mp4")                # or uint8 frames (T, H, W, 3) / gray (T, H, W)
    results = camera.analyze_many([path_or_frames, ...])  # all pairs of all clips in one tracking + one RANSAC launch

Method (per clip, frames sampled at 2 FPS by default when a path is given):
  1. Gray frames, each normalized to mean 128 / std 48 so that global brightness flicker does not break the
     brightness constancy Lucas-Kanade assumes.
  2. For every consecutive pair (t, t+1): one Shi-Tomasi corner per grid cell of frame t (ops.select_points), so
     points cover the frame in proportion to area: a subject covering 40% of the frame holds ~40% of the points.
  3. Pyramidal Lucas-Kanade t -> t+1 and back (ops.track_points); a point counts when both directions succeed and it
     returns within `fb_threshold_px` of where it started (rejects occlusions, compression artefacts, the subject's
     edges).
  4. RANSAC homography per pair (ops.find_homographies, reprojection threshold `ransac_threshold_px`), then a
     second RANSAC on the points the first left out; the background's model is the one whose inliers cover more of
     the frame's border cells, so RANSAC cannot lock onto a large textured subject (a subject rarely surrounds
     the frame; the background does). Both launches batch every pair of every clip.
  5. Displacement = the largest distance a frame corner moves. Per pair from the pair's homography; over the clip
     from the composed homography frame 0 -> t (so a slow drift adds up).

The rule (thresholds in CameraThresholds; defaults from bench/calibrate_camera.py, docs/CAMERA_CALIBRATION.md):
  undecidable (static None, with a reason): fewer than 2 frames; a frame with fewer than `min_points` corners
      (textureless); a pair where fewer than `min_points` points could be tracked at all.
  not static, reason "scene cut ...": a pair where less than `min_track_ratio` of the corners track both ways or
      less than `min_inlier_ratio` of the tracked points agree on one homography (nothing in the two frames
      corresponds: a cut, or motion so violent the clip is unusable anyway).
  static  iff  max clip displacement <= threshold_px  and  every pair's displacement <= pair_threshold_px
      (the second catches handheld shake, which can return to where it started).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sparkle_fast import ops
from sparkle_fast.ops.homography import find_homographies
from sparkle_fast.ops.optical_flow import select_points, track_points


@dataclass(frozen=True)
class CameraThresholds:
    """The decision rule's parameters (see the module docstring; defaults calibrated, docs/CAMERA_CALIBRATION.md)."""

    threshold_px: float = 2.0         # largest corner displacement over the clip for a static camera
    pair_threshold_px: float = 1.5    # largest corner displacement between consecutive sampled frames
    min_points: int = 16              # fewer corners / tracked points: undecidable
    min_track_ratio: float = 0.25     # fewer corners tracked both ways: scene cut
    min_inlier_ratio: float = 0.2     # fewer tracked points on the homography: scene cut / unusable
    ransac_threshold_px: float = 0.5  # RANSAC reprojection threshold
    fb_threshold_px: float = 1.0      # forward-backward tracking consistency
    cells: tuple[int, int] = (12, 16)  # point grid (rows, cols)
    window: int = 21                  # Lucas-Kanade window
    max_level: int = 3                # Lucas-Kanade pyramid levels above the image
    ransac_iters: int = 256
    seed: int = 0


@dataclass
class CameraMotion:
    """The verdict for one clip. static is None when undecidable (reason says why)."""

    static: bool | None
    max_displacement_px: float                 # over the clip (NaN when undecidable)
    pair_displacement_px: list[float]          # per consecutive pair
    inlier_ratio: float                        # the smallest over pairs: inliers / tracked points
    tracked_points: int                        # the smallest over pairs
    pairs: int
    reason: str | None = None
    homographies: np.ndarray | None = field(default=None, repr=False)  # (pairs, 3, 3): frame t -> t+1

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("homographies")
        return d


def _undecided(pairs: int, reason: str, **extra) -> CameraMotion:
    values = dict(static=None, max_displacement_px=math.nan, pair_displacement_px=[], inlier_ratio=math.nan,
                  tracked_points=0, pairs=pairs, reason=reason)
    values.update(extra)
    return CameraMotion(**values)


def corner_displacement(h: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float64 (...,): the largest distance a frame corner moves under homographies h (..., 3, 3)."""
    height, width = size
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], np.float64).T
    mapped = h @ corners
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = mapped[..., :2, :] / mapped[..., 2:3, :]
    return np.linalg.norm(xy - corners[:2], axis=-2).max(axis=-1)


def _gray_frames(frames):
    """uint8 (T, H, W, 3) or (T, H, W) (numpy or torch) -> normalized uint8 gray torch (T, H, W) on its device."""
    import torch

    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if frames.dtype != torch.uint8 or frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
        raise ValueError(f"camera.analyze: frames must be uint8 (T, H, W, 3) RGB or (T, H, W) gray, got "
                         f"{frames.dtype} {tuple(frames.shape)}")
    gray = ops.rgb_to_gray(frames) if frames.ndim == 4 else frames
    g = gray.float()
    mean = g.mean(dim=(1, 2), keepdim=True)
    std = g.std(dim=(1, 2), keepdim=True).clamp_min(1.0) if g.shape[1] * g.shape[2] > 1 else torch.ones_like(mean)
    return ((g - mean) / std * 48.0 + 128.0).round().clamp(0, 255).to(torch.uint8)


def _load(item, fps: float, device: str):
    if isinstance(item, (str, os.PathLike)):
        from sparkle_fast.video import read_frames

        return read_frames(item, fps=fps, device=device).frames
    return item


def analyze_many(clips: list[Any], thresholds: CameraThresholds | None = None, *, fps: float = 2.0,
                 device: str | None = None) -> list[CameraMotion | Exception]:
    """Analyze many clips: each a video path (sampled at `fps`) or uint8 frames (T, H, W, 3) / (T, H, W) (numpy, or
    torch on any device). Clips of one frame size go through one tracking launch and one RANSAC launch together.
    Returns one CameraMotion per clip, or the exception (e.g. a VideoError) that stopped reading that clip."""
    import torch

    th = thresholds or CameraThresholds()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    results: list[Any] = [None] * len(clips)
    grays: dict[int, Any] = {}
    for i, item in enumerate(clips):
        try:
            frames = _load(item, fps, device)
            if isinstance(frames, np.ndarray) or frames.device.type != torch.device(device).type:
                frames = torch.as_tensor(np.asarray(frames) if isinstance(frames, np.ndarray) else frames).to(device)
            grays[i] = _gray_frames(frames)
        except Exception as exc:  # a failed clip is a result, never a crash of the run
            results[i] = exc
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, g in grays.items():
        if g.shape[0] < 2:
            results[i] = _undecided(0, f"clip too short: {g.shape[0]} sampled frame(s), need at least 2")
        else:
            by_size.setdefault(tuple(g.shape[1:]), []).append(i)
    for size, members in by_size.items():
        try:
            for i, r in zip(members, _analyze_group([grays[i] for i in members], size, th), strict=True):
                results[i] = r
        except ValueError as exc:  # e.g. frames too small for the point grid
            for i in members:
                results[i] = _undecided(grays[i].shape[0] - 1, f"cannot analyze {size[0]}x{size[1]} frames: {exc}")
    return results


def analyze(clip: Any, thresholds: CameraThresholds | None = None, *, fps: float = 2.0,
            device: str | None = None) -> CameraMotion:
    """Analyze one clip (see analyze_many); raises what reading it raised (VideoError for a bad video)."""
    (result,) = analyze_many([clip], thresholds, fps=fps, device=device)
    if isinstance(result, Exception):
        raise result
    return result


def _analyze_group(grays: list, size: tuple[int, int], th: CameraThresholds) -> list[CameraMotion]:
    import torch

    prev = torch.cat([g[:-1] for g in grays])
    nxt = torch.cat([g[1:] for g in grays])
    points, valid = select_points(prev, cells=th.cells, margin=max(th.window // 2 - 2, 0))
    fwd, st_f, _ = track_points(prev, nxt, points, window=th.window, max_level=th.max_level)
    back, st_b, _ = track_points(nxt, prev, fwd, window=th.window, max_level=th.max_level)
    fb_ok = (back - points).norm(dim=-1) <= th.fb_threshold_px
    tracked = valid & st_f & st_b & fb_ok
    h, inliers = _background_homographies(points, fwd, tracked, th)
    n_valid = valid.sum(1).cpu().numpy()
    n_tracked = tracked.sum(1).cpu().numpy()
    n_inliers = inliers.sum(1)
    out, start = [], 0
    for g in grays:
        n_pairs = g.shape[0] - 1
        out.append(_decide(h[start:start + n_pairs], n_valid[start:start + n_pairs],
                           n_tracked[start:start + n_pairs], n_inliers[start:start + n_pairs], size, th))
        start += n_pairs
    return out


def border_cells(cells: tuple[int, int], width: int = 2) -> np.ndarray:
    """bool (rows * cols,): the grid cells within `width` cells of the frame's edge (select_points' order)."""
    rows, cols = cells
    r, c = np.divmod(np.arange(rows * cols), cols)
    return (r < width) | (r >= rows - width) | (c < width) | (c >= cols - width)


def _background_homographies(points, moved, tracked, th: CameraThresholds):
    """The background's homography per pair, and its inliers (numpy (P, 3, 3), (P, N)).

    RANSAC keeps the largest consistent motion, which is the subject's when the subject holds more good corners than
    the background (a textured subject in front of a plain wall). So a second RANSAC fits the points the first
    model left out, and of the two the background is the one whose inliers cover more of the frame's border cells:
    a subject (at most ~40% of the frame) rarely reaches around the whole border, the background does.
    """
    def fit(mask):
        h, inl = find_homographies(points, moved, mask, threshold=th.ransac_threshold_px,
                                   max_iters=th.ransac_iters, seed=th.seed)
        return (np.asarray(h.cpu()) if hasattr(h, "cpu") else np.asarray(h),
                np.asarray(inl.cpu()) if hasattr(inl, "cpu") else np.asarray(inl))

    tracked_np = np.asarray(tracked.cpu())
    h1, in1 = fit(tracked)
    rest = tracked_np & ~in1
    n_tracked = tracked_np.sum(1)
    second = rest.sum(1) >= np.maximum(th.min_points, th.min_inlier_ratio * n_tracked)
    if not second.any():
        return h1, in1
    import torch

    h2, in2 = fit(torch.from_numpy(rest & second[:, None]).to(tracked.device))
    ring = border_cells(th.cells)
    cover1, cover2 = (in1 & ring).sum(1), (in2 & ring).sum(1)
    use2 = second & np.isfinite(h2).all(axis=(1, 2)) & (cover2 > cover1)
    return np.where(use2[:, None, None], h2, h1), np.where(use2[:, None], in2, in1)


def _decide(h, n_valid, n_tracked, n_inliers, size, th: CameraThresholds) -> CameraMotion:
    n_pairs = len(h)
    with np.errstate(divide="ignore", invalid="ignore"):
        inlier_ratio = np.where(n_tracked > 0, n_inliers / np.maximum(n_tracked, 1), 0.0)
    pair_disp = corner_displacement(h, size)
    common = dict(pair_displacement_px=[float(d) for d in pair_disp], inlier_ratio=float(inlier_ratio.min()),
                  tracked_points=int(n_tracked.min()), homographies=h)
    textureless = np.flatnonzero(n_valid < th.min_points)
    if textureless.size:
        k = int(textureless[0])
        return _undecided(n_pairs, f"textureless frame {k}: {int(n_valid[k])} corners, need {th.min_points}",
                          **common)
    ratio_tracked = n_tracked / np.maximum(n_valid, 1)
    cut = np.flatnonzero((ratio_tracked < th.min_track_ratio) | (inlier_ratio < th.min_inlier_ratio)
                         | ~np.isfinite(pair_disp))
    if cut.size:
        k = int(cut[0])
        return CameraMotion(False, math.inf, pairs=n_pairs, reason=(
            f"scene cut or unusable motion between sampled frames {k} and {k + 1}: {int(n_tracked[k])} of "
            f"{int(n_valid[k])} corners tracked, {int(n_inliers[k])} on one homography"), **common)
    few = np.flatnonzero(n_tracked < th.min_points)
    if few.size:
        k = int(few[0])
        return _undecided(n_pairs, f"too few points between sampled frames {k} and {k + 1}: {int(n_tracked[k])} "
                          f"tracked, need {th.min_points}", **common)
    total = np.eye(3)
    clip_disp = 0.0
    for k in range(n_pairs):
        total = h[k] @ total
        total = total / total[2, 2]
        clip_disp = max(clip_disp, float(corner_displacement(total, size)))
    static = clip_disp <= th.threshold_px and float(pair_disp.max()) <= th.pair_threshold_px
    return CameraMotion(bool(static), clip_disp, pairs=n_pairs, **common)
