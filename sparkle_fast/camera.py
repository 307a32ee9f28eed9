"""Stage 1's coarse filter: is a clip filmed by a fixed camera?

    from sparkle_fast import camera
    result = camera.analyze("clip.mp4")                # or uint8 frames (T, H, W, 3) / gray (T, H, W)
    results = camera.analyze_many([path_or_frames, ...])  # all pairs of all clips batched into each launch

Method (per clip, frames sampled at 2 FPS by default when a path is given):
  1. Gray frames, each divided by its robust gain relative to frame 0 (so that global brightness flicker does not
     break the brightness constancy Lucas-Kanade assumes), then mapped so that frame 0 has mean 128 / std 48.
  2. Direct tracks: one Shi-Tomasi corner per grid cell of frame 0 (ops.select_points; points cover the frame in
     proportion to area, so a subject on 40% of the frame holds ~40% of them), tracked by pyramidal Lucas-Kanade
     from frame 0 to every later sampled frame and back (ops.track_points, one launch each way for all clips); a
     point counts in frame t when both directions succeed and it returns within `fb_threshold_px` of its start.
  3. The still-points test (method "still-points"). A point is still when it is tracked in, and stays within `still_px`
     of its start in, every frame; points tracked all along that are not still have moved (a subject, or a moving
     camera's background); points lost in some frame (occluded by a passing subject) count as neither. The camera is
     static by this test when there are at least `still_min_points` still points, they are at least `still_border_ratio`
     of the border ring's still and moved points, and at least 2 still points lie in the ring along each of
     `still_min_sides` of the frame's 4 sides. Why the sides: a subject up to ~40% of the frame spans at most ~63% of
     its width and height and so reaches at most 2 sides, while the background surrounds the frame; so a camera
     following a subject (the subject still in the frame, the background moving) fails the test. The homographies are
     least-squares fits on the still points, and the rule below still applies. Why this test: with a large textured
     subject, a pair's RANSAC homography can absorb part of the subject and measure a static camera as moving by several
     pixels (4 of the calibration grid's static clips did); a set of points that provably never moved cannot be fooled
     so.
  4. Every other clip (method "homography"): for every consecutive pair (t, t+1), corners of frame t tracked to t+1
     and back; RANSAC homography per pair (ops.find_homographies, threshold `ransac_threshold_px`), then a second
     RANSAC on the points the first left out; the background's model is the one holding the larger share of each
     frame side's tracked points (side_share), so RANSAC does not lock onto a large textured subject, which holds
     more points than a plain background but reaches at most two sides. Each is one batched launch.
  5. Frame-0 points followed frame by frame (t -> t+1 from where each was at t, forward-backward checked; one
     launch per step for all clips), then the same two-model RANSAC on frame 0 -> t; the background is one set of
     points, those on the chosen model in most of the later half of the frames, and every frame 0 -> t homography
     is refitted on that set (`from_first`). Why: a motion slower than the RANSAC threshold per pair lets one pair
     homography fit the background and a still subject at once, under-measuring the camera; from frame 0 the
     camera's motion adds up and they separate. Why followed and not tracked straight from frame 0 as in step 2: a
     camera moving 3 px per sampled frame is 30 px away by the end, where straight tracking loses the background
     while a subject the camera follows keeps tracking (measured: frame 0 -> t within 0.5 px on 35 of 60 clips with
     a 40% subject, against 30 straight).
  5b. The frame 0 -> t homographies are refined (sparkle_fast.camera_refine): each frame t is warped back into
     frame 0 by its current homography and frame 0's points (a denser grid, `refine_cells`) are tracked into it
     again, which removes the half-pixel
     bias Lucas-Kanade has when the camera zooms or rolls (a window's content scales or turns); the fit is an
     affine map unless a homography explains the points significantly better (GRIC), so that points on part of
     the frame do not extrapolate perspective terms to the far corners (chosen once per clip). Points step 5 voted
     subject stay out. A rival hypothesis, that step 5's subject points are the background (a followed subject
     step 5 took for the background: a slow zoom, a fast roll over a plain table), is refined in the same launches
     and wins when its aligned points hold more of the frame's sides, and at least `still_min_sides`.
     `refine_iters` iterations of a warp and two tracking launches for all clips and rivals (measured: frame 0 -> t
     within 0.5 px on 68 of 72 clips with a 40% subject, against 44 without this step).
  6. Displacement = the largest distance a frame corner moves: per pair from the pair homographies; over the clip,
     the larger of the composed pair homographies and the fits of steps 5-5b (so a slow drift adds up).
  A subject that reaches 3 sides and fills most of the border while the camera moves (a close-up that spans the
  frame) can be taken for the background by steps 3-5; the VLM check behind this filter is the remedy.

Device traffic (frames on a GPU): the tracking, the background-model choices of steps 4-5 and step 5b's
iterations run on the device; a clip group's analysis copies to or from the host a fixed number of times (one packed
copy of the direct tracks, one of the pair results, one of the refinement's results, a few small uploads of row
bookkeeping, and each find_homographies call's own copy), however many clips, frame steps and refinement iterations
it has (tests/test_camera_syncs.py counts them). Steps 3 and 5's per-clip bookkeeping and least-squares refits stay
in numpy float64 on the host, once per group, as the reference they always were.

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
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from sparkle_fast import ops
from sparkle_fast.ops.homography import find_homographies
from sparkle_fast.ops.optical_flow import select_points, track_points


@dataclass(frozen=True)
class CameraThresholds:
    """The decision rule's parameters (see the module docstring). Ours: Sparkle's coarse filter (Unimatch flow and a
    homography, Appendix A) is not public; these defaults are calibrated on synthetic 288 x 384 clips
    (docs/CAMERA_CALIBRATION.md). Pixel values are absolute here; thresholds_for_size scales the decision thresholds
    to another frame size (stage 1 does)."""

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
    still_px: float = 0.5             # a frame-0 point tracked within this of its start in every frame is "still"
    still_border_ratio: float = 0.5   # still points' least share of the border ring's points that stay tracked
    still_min_sides: int = 3          # frame sides (of 4) whose ring must hold at least 2 still points
    still_min_points: int = 8         # and at least this many still points in all (a plain wall has few corners)
    refine_iters: int = 2             # step 5b: tracking passes on frames aligned to frame 0 (0: none)
    refine_cells: tuple[int, int] = (18, 24)  # their point grid, denser than `cells`
    refine_max_level: int = 2         # their Lucas-Kanade pyramid levels (what is left to track is small)
    refine_capture_px: float = 1.0    # background there: points the current estimate aligns within this
    refine_trim_px: float = 0.5       # their fit drops points left farther than this or than
    refine_trim_sigmas: float = 3.0   # this many robust standard deviations of the fit's errors, then fits again
    refine_min_points: int = 12       # a frame keeps its previous estimate when fewer background points remain
    rival_threshold_px: float = 1.0   # RANSAC threshold of step 5b's rival hypothesis (step 5's subject as background)


# On CPU tensors a Python value of a tensor costs no wait, so data-dependent shortcuts that skip work are taken there;
# on a GPU the work is done without asking (tests/test_camera_syncs.py turns this off to count a GPU run's traffic).
HOST_SHORTCUTS = True

# The frames bench/calibrate_camera.py chose the pixel thresholds on: 288 x 384, a 480-pixel diagonal.
CALIBRATION_DIAGONAL_PX = 480.0


def thresholds_for_size(thresholds: CameraThresholds, height: int, width: int,
                        reference_diagonal_px: float = CALIBRATION_DIAGONAL_PX) -> CameraThresholds:
    """`thresholds` for a height x width frame: the two decision thresholds (threshold_px, pair_threshold_px), which
    are in pixels of a frame whose diagonal is `reference_diagonal_px`, scaled by the ratio of the diagonals, so the
    same scene filmed at 360p, 720p or 1080p gets the same verdict (a camera motion is a fraction of the frame).
    Frames smaller than the reference keep the reference's pixel values: there the tracker's noise, not the frame,
    sets the floor (a static 96 x 64 clip measures ~0.5 px). The tracking tolerances (fb_threshold_px,
    ransac_threshold_px, still_px, refine_*_px) stay in pixels for the same reason. reference_diagonal_px 0 (or less)
    returns `thresholds` unchanged (absolute pixels). This scaling is the project's choice: Sparkle's Appendix A is
    not public."""
    if reference_diagonal_px <= 0:
        return thresholds
    scale = max(1.0, math.hypot(height, width) / reference_diagonal_px)
    return replace(thresholds, threshold_px=thresholds.threshold_px * scale,
                   pair_threshold_px=thresholds.pair_threshold_px * scale)


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
    method: str = "homography"                 # "still-points" or "homography": which rule decided (see module)
    homographies: np.ndarray | None = field(default=None, repr=False)  # (pairs, 3, 3): frame t -> t+1
    # (pairs, 3, 3): frame 0 -> frame t+1, fitted on points tracked directly from frame 0 where that fit is trusted
    # (enough points on it), else the composition of `homographies`; the better estimate for slow motion.
    from_first: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("homographies")
        d.pop("from_first")
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
    """uint8 (T, H, W, 3) or (T, H, W) (numpy or torch) -> normalized uint8 gray torch (T, H, W) on its device.

    Every frame is divided by its global gain relative to frame 0 (brightness flicker), then the whole clip gets one
    affine map that gives frame 0 mean 128 and std 48. Why not each frame its own mean/std: a large subject moving
    across the frame changes the frame's statistics a little every frame, and LK reads such a brightness change on
    a weakly textured background window as motion (measured: a static background drifting 0.05 px per sampled
    frame). The gain is the median of the per-pixel ratio frame t / frame 0: for a fixed camera most pixels see the
    same scene, so a subject covering less than half the frame cannot move the median."""
    import torch

    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if frames.dtype != torch.uint8 or frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
        raise ValueError(f"camera.analyze: frames must be uint8 (T, H, W, 3) RGB or (T, H, W) gray, got "
                         f"{frames.dtype} {tuple(frames.shape)}")
    gray = ops.rgb_to_gray(frames) if frames.ndim == 4 else frames
    g = gray.float()
    first = g[0]
    lit = first >= 16  # dark pixels give noisy ratios
    # the median over the lit pixels, as NaN-free medians of the ratios (torch's nanmedian picks the same element as
    # median on the lit pixels alone); no lit pixel: gain 1. No boolean indexing or branch: on a GPU either would
    # wait for the device.
    ratios = torch.where(lit, g / torch.where(lit, first, 1.0), torch.nan).reshape(g.shape[0], -1)
    median = ratios.nanmedian(dim=1).values
    gain = torch.where(torch.isnan(median), 1.0, median.clamp_min(1e-3)).view(-1, 1, 1)
    g = g / gain
    mean = first.mean()
    std = first.std().clamp_min(1.0) if first.numel() > 1 else torch.ones_like(mean)
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
    """Steps 2-6 for a group of clips of one frame size; every launch batches all their pairs (step 5's following
    takes one launch per frame step)."""
    import torch

    points, valid = select_points(torch.stack([g[0] for g in grays]), cells=th.cells, margin=_point_margin(th))
    direct = _track_from_first(grays, points, valid, th)
    out: list[CameraMotion | None] = _still_points(direct, size, th)
    rest = [i for i, r in enumerate(out) if r is None]
    if not rest:
        return out
    pairwise = _pairwise([grays[i] for i in rest], size, th)
    index = torch.tensor(rest, device=points.device)
    chained = _track_chained([grays[i] for i in rest], points[index], valid[index], th)
    keys = np.concatenate([np.arange(n) for n in chained.n_pairs])
    _, inliers = _background_homographies(chained.src, chained.dst, chained.tracked, th, keys)
    h0t, foreground, background = _consistent_background(chained, inliers, th)
    h0t = _refine([grays[i] for i in rest], chained, h0t, foreground, background, pairwise, th)
    trusted = np.isfinite(h0t).all(axis=(1, 2))
    disp = np.where(trusted, corner_displacement(np.nan_to_num(h0t), size), np.nan)
    start = 0
    for j, (i, result) in enumerate(zip(rest, pairwise, strict=True)):
        block = slice(start, start + chained.n_pairs[j])
        start += chained.n_pairs[j]
        clip_direct = disp[block]
        from_first = np.where(np.isfinite(clip_direct)[:, None, None], h0t[block], _compose(result.homographies))
        result = replace(result, from_first=from_first)
        if result.static is not None and np.isfinite(clip_direct).any() and math.isfinite(result.max_displacement_px):
            worst = max(result.max_displacement_px, float(np.nanmax(clip_direct)))
            result = replace(result, max_displacement_px=worst,
                             static=bool(result.static and worst <= th.threshold_px))
        out[i] = result
    return out


def _consistent_background(direct, inliers,
                           th: CameraThresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 (rows, 3, 3): frame 0 -> t homographies of every clip of `direct` (`inliers` bool (rows, N) are those
    of the model step 5's RANSAC chose; torch on the tracks' device) fitted on each clip's background points, NaN
    where too few; bool (rows, N): the points followed into the later half of their clip's frames that were not
    voted background (a subject), on each of the clip's rows; and bool (rows, N): those voted background. The
    direct tracks follow the same points through the clip, so the background is one set of points: those on the
    chosen (background) model in most of the frames where they are tracked. Fitting every t on that set keeps a
    subject out even at a t where its motion is within the RANSAC threshold of the background's."""
    from sparkle_fast.camera_refine import apply_homographies
    from sparkle_fast.ops.homography import refit_homographies

    src, dst, tracked, _, inliers = direct.host(inliers)  # one copy to the host for the group
    out = np.full((len(inliers), 3, 3), np.nan)
    foreground = np.zeros(inliers.shape, bool)
    voted = np.zeros(inliers.shape, bool)  # `background` of each clip, on each of its rows
    for n, start in zip(direct.n_pairs, direct.first_row, strict=True):
        block = slice(start, start + n)
        # the vote counts the later half of the frames: the camera's motion has added up there, so a subject that
        # fits the background's model early (both within the threshold of no motion) has separated from it
        late = slice(start + n // 2, start + n)
        seen = tracked[late].sum(0)
        background = (2 * inliers[late].sum(0) > seen) & (seen > 0)
        foreground[block] = (seen > 0) & ~background
        voted[block] = background
        mask = tracked[block] & background
        h = refit_homographies(src[block], dst[block], mask)
        # one trimming pass: drop background points the refit leaves beyond the RANSAC threshold in that frame
        err = np.linalg.norm(apply_homographies(np.nan_to_num(h), src[block]) - dst[block], axis=-1)
        with np.errstate(invalid="ignore"):
            mask &= err <= th.ransac_threshold_px
        h = refit_homographies(src[block], dst[block], mask)
        h[mask.sum(1) < th.min_points] = np.nan
        out[block] = h
    return out, foreground, voted


def _rival_homographies(direct, subject: np.ndarray, th: CameraThresholds) -> np.ndarray:
    """float64 (rows, 3, 3): frame 0 -> t homographies of the rival hypothesis, that step 5's subject points
    (`subject`, bool (rows, N)) are the background: per row a RANSAC on their followed tracks (threshold
    `rival_threshold_px`, looser than step 5's: a background step 5 lost is one its tracks fit badly, e.g. a fast
    roll), refitted on the inliers; NaN where fewer than min_points are inliers."""
    import torch

    from sparkle_fast.ops.homography import refit_homographies

    src, dst, tracked, _ = direct.host()
    mask = subject & tracked
    keys = np.concatenate([np.arange(n) for n in direct.n_pairs])
    _, inliers = find_homographies(direct.src, direct.dst, torch.from_numpy(mask).to(direct.src.device),
                                   threshold=th.rival_threshold_px, max_iters=th.ransac_iters, seed=th.seed, keys=keys)
    (inliers,) = _to_host(inliers)
    mask &= inliers
    h = refit_homographies(src, dst, mask)  # float64 on the host, once per group (as step 5's)
    h[mask.sum(1) < th.min_points] = np.nan
    return h


def _refine(grays: list, chained, h0t: np.ndarray, foreground: np.ndarray, background: np.ndarray, pairwise: list,
            th: CameraThresholds) -> np.ndarray:
    """Step 5b (sparkle_fast.camera_refine): float64 (rows, 3, 3) frame 0 -> t homographies refined on frames
    aligned to frame 0.

    Hypothesis A starts from step 5's fits (or the composed pair homographies where step 5 has none: too few
    background points followed to the end) and keeps the points step 5 voted subject (`foreground`, bool (rows, N))
    out of the background. Hypothesis B, for the clips where it can be fitted (_rival_homographies), starts from step
    5's subject points taken as the background and keeps step 5's background points (`background`, bool (rows, N))
    out. Both are refined in one call; B replaces A when its aligned background holds at least 2 points along more
    of the frame's sides than A's, and along at least `still_min_sides` (the background surrounds the frame, a
    subject of at most ~40% reaches at most 2 sides). Why: step 5 takes a followed subject for the background when
    the camera's motion is slow enough to stay within the RANSAC threshold of the subject's for most pairs (a slow
    zoom), or when its followed tracks of the background drift (a fast roll of a plain table top); aligned on frame
    0, the background's points line up again (measured: 2 such clips of 72 at 40% subject, both now within 0.5 px).

    The points are a denser grid of frame 0's corners (`refine_cells`): a plain background behind a 40% subject
    leaves few cells of the coarse grid with a corner. A dense point inherits step 5's vote of its nearest coarse
    point within half a coarse cell. A clip with no step-5 fit at all keeps no vote in A (its vote chose a model that
    did not hold)."""
    import torch

    from sparkle_fast.camera_refine import refine_from_first

    if th.refine_iters <= 0:
        return h0t
    n_pairs, first_row = chained.n_pairs, chained.first_row
    device = grays[0].device
    firsts = torch.stack([g[0] for g in grays])
    later = torch.cat([g[1:] for g in grays])
    height, width = firsts.shape[1:]
    margin = _point_margin(th)
    cells = _fitting_cells(th.refine_cells, th.cells, height, width, margin)
    points, valid = select_points(firsts, cells=cells, margin=margin)
    coarse = chained.src[torch.tensor(first_row, device=device)]  # (clips, Nc, 2) step 5's points
    distance, nearest = _to_host(*torch.cdist(points, coarse).min(dim=-1))
    distance = distance.astype(np.float32)  # compared in float32 against the radius, as before the packed copy
    radius = 0.5 * max((height - 2 * margin) / th.cells[0], (width - 2 * margin) / th.cells[1])

    def inherit(vote: np.ndarray) -> np.ndarray:  # bool (clips, Nc) step 5's points -> (clips, N) dense points
        return np.take_along_axis(vote, nearest, axis=1) & (distance <= radius)

    finite = np.isfinite(h0t).all(axis=(1, 2))
    composed = np.concatenate([_compose(r.homographies) for r in pairwise])
    start_a = np.where(finite[:, None, None], h0t, composed)
    fitted = np.array([finite[r:r + n].any() for r, n in zip(first_row, n_pairs, strict=True)])
    exclude_a = inherit(foreground[first_row] & fitted[:, None])
    start_b = _rival_homographies(chained, foreground, th)
    rivals = [c for c, (r, n) in enumerate(zip(first_row, n_pairs, strict=True))
              if np.isfinite(start_b[r:r + n]).all()]
    exclude_b = inherit(background[first_row])[rivals]
    # one refinement call for A (every clip) then B (the rivals): rows of clip c, hypothesis by hypothesis
    clips = list(range(len(n_pairs))) + rivals
    rows = np.concatenate([np.arange(first_row[c], first_row[c] + n_pairs[c]) for c in clips])
    hyp_pairs = [n_pairs[c] for c in clips]
    repeat = _repeat_index(hyp_pairs, device, of=clips)  # each hypothesis' clip, once per row
    h_init = np.concatenate([start_a, start_b[rows[len(h0t):]]])
    exclude = np.repeat(np.concatenate([exclude_a, exclude_b]), hyp_pairs, axis=0)
    h, support = refine_from_first(firsts[repeat], later[torch.from_numpy(rows).to(device)], h_init,
                                   points[repeat], valid[repeat], hyp_pairs, th,
                                   exclude=exclude, return_support=True)
    held = _sides_held(support, hyp_pairs, cells)
    out = h[:len(h0t)]
    hyp_first = np.cumsum([0] + hyp_pairs[:-1])
    for j, c in enumerate(rivals):
        b = len(n_pairs) + j
        if held[b] > held[c] and held[b] >= th.still_min_sides:
            out[first_row[c]:first_row[c] + n_pairs[c]] = h[hyp_first[b]:hyp_first[b] + n_pairs[c]]
    return out


def _sides_held(support: np.ndarray, n_pairs: list[int], cells: tuple[int, int]) -> np.ndarray:
    """int (clips,): per clip, sides_holding of frame 0's points (grid `cells`) that are background (`support`,
    bool (rows, N), from refine_from_first) in most of the later half of its frames."""
    out = np.zeros(len(n_pairs), int)
    for c, (start, n) in enumerate(zip(np.cumsum([0] + n_pairs[:-1]), n_pairs, strict=True)):
        late = support[start + n // 2:start + n]
        out[c] = sides_holding(2 * late.sum(axis=0) > len(late), cells)
    return out


def _fitting_cells(wanted: tuple[int, int], fallback: tuple[int, int], height: int, width: int,
                   margin: int) -> tuple[int, int]:
    """`wanted` point-grid cells if frames of (height, width) less `margin` hold at least one pixel per cell, else
    `fallback` (the grid every other step already used on these frames)."""
    rows, cols = wanted
    return wanted if (height - 2 * margin) // rows >= 1 and (width - 2 * margin) // cols >= 1 else fallback


def _to_host(*tensors) -> list[np.ndarray]:
    """numpy copies of torch tensors (one device, any shapes; bool, integer or float dtypes) in one copy to the host:
    packed as float64 on the device (exact for these values: floats up to float64, bools, counts < 2**53)."""
    import torch

    if not tensors:
        return []
    packed = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors]).cpu().numpy()
    out, start = [], 0
    for t in tensors:
        part = packed[start:start + t.numel()].reshape(tuple(t.shape))
        start += t.numel()
        if t.dtype == torch.bool:
            part = part != 0
        elif not t.dtype.is_floating_point:
            part = part.astype(np.int64)
        out.append(part)
    return out


@dataclass
class _DirectTracks:
    """Points of each clip's first sampled frame and where they are in each later sampled frame (row = (clip, t)),
    tracked straight from frame 0 (_track_from_first) or followed frame by frame (_track_chained)."""

    src: Any          # float32 torch (P, N, 2): the points in frame 0
    dst: Any          # float32 torch (P, N, 2): where they are in frame t
    tracked: Any      # bool torch (P, N): tracked (both ways, forward-backward consistent) up to frame t
    valid: Any        # bool torch (clips, N): a corner was found in the point's cell of frame 0
    n_pairs: list[int]
    first_row: list[int]
    _host: list | None = None

    def host(self, *extra) -> list[np.ndarray]:
        """numpy float64 src, dst, bool tracked, valid, then `extra` tensors (e.g. inliers): one copy to the host
        (src, dst, tracked and valid are kept for the next call, which copies only its extra)."""
        if self._host is None:
            got = _to_host(self.src, self.dst, self.tracked, self.valid, *extra)
            self._host = got[:4]
            return got
        return self._host + _to_host(*extra)


def _repeat_index(counts: list[int], device, of: np.ndarray | None = None):
    """int64 torch (sum(counts),) on `device`: index i (or of[i]) repeated counts[i] times, made on the host and
    uploaded once; x[index] is x.repeat_interleave(counts), without the device reporting the output size back to
    the host (which repeat_interleave with device counts does) and shared by every tensor repeated alike."""
    import torch

    rows = np.repeat(np.arange(len(counts)) if of is None else np.asarray(of), counts).astype(np.int64)
    return torch.from_numpy(rows).to(device)


def _point_margin(th: CameraThresholds) -> int:
    """Pixels kept clear of the frame's edge by the point grids (most of a Lucas-Kanade window)."""
    return max(th.window // 2 - 2, 0)


def _track_from_first(grays: list, points, valid, th: CameraThresholds) -> _DirectTracks:
    """Frame 0's points (float32 torch (clips, N, 2), valid bool (clips, N), from ops.select_points) tracked straight
    to every later sampled frame and back, one launch each way for all clips."""
    import torch

    n_pairs = [g.shape[0] - 1 for g in grays]
    first = torch.stack([g[0] for g in grays])
    repeat = _repeat_index(n_pairs, first.device)
    prev = first[repeat]
    nxt = torch.cat([g[1:] for g in grays])
    start_pts, start_valid = points[repeat], valid[repeat]
    fwd, st_f, _ = track_points(prev, nxt, start_pts, window=th.window, max_level=th.max_level)
    back, st_b, _ = track_points(nxt, prev, fwd, window=th.window, max_level=th.max_level)
    tracked = start_valid & st_f & st_b & ((back - start_pts).norm(dim=-1) <= th.fb_threshold_px)
    return _DirectTracks(start_pts, fwd, tracked, valid, n_pairs,
                         [int(x) for x in np.cumsum([0] + n_pairs[:-1])])


def _track_chained(grays: list, points, valid, th: CameraThresholds) -> _DirectTracks:
    """Frame 0's points (as _track_from_first) followed frame by frame (t -> t+1 from where they were at t), each
    step one launch for all clips; a point lost at one step stays lost."""
    import torch

    n_pairs = [g.shape[0] - 1 for g in grays]
    first_row = [int(x) for x in np.cumsum([0] + n_pairs[:-1])]
    device = points.device
    where = points.clone()
    alive = valid.clone()
    rows_dst = torch.empty((sum(n_pairs),) + tuple(points.shape[1:]), dtype=points.dtype, device=device)
    rows_tracked = torch.empty((sum(n_pairs), points.shape[1]), dtype=torch.bool, device=device)
    # Every step's clips and output rows, uploaded once (a per-step upload would sync with the device every step);
    # the clips' frames side by side in one tensor, so a step's frame pairs are one gather, not a per-clip stack.
    steps = max(n_pairs)
    members_of = [[c for c, n in enumerate(n_pairs) if n > k] for k in range(steps)]
    sizes = [len(m) for m in members_of]
    clip_index = np.concatenate([np.asarray(m, np.int64) for m in members_of])
    row_index = np.concatenate([np.asarray([first_row[c] + k for c in m], np.int64) for k, m in enumerate(members_of)])
    frame_of_step = np.concatenate([np.full(n, k, np.int64) for k, n in enumerate(sizes)])
    clip_index, row_index, frame_of_step = torch.from_numpy(  # one upload
        np.concatenate([clip_index, row_index, frame_of_step])).to(device).reshape(3, -1)
    padded = torch.stack([torch.cat([g, g[-1:].expand(steps + 1 - g.shape[0], *g.shape[1:])]) for g in grays])
    offsets = np.cumsum([0] + sizes)
    for k in range(steps):
        part = slice(int(offsets[k]), int(offsets[k + 1]))
        idx, rows = clip_index[part], row_index[part]  # the clips that have a step k; row (clip, t = k + 1)
        frame = frame_of_step[part]
        prev = padded[idx, frame]
        nxt = padded[idx, frame + 1]
        pts = where[idx]
        fwd, st_f, _ = track_points(prev, nxt, pts, window=th.window, max_level=th.max_level)
        back, st_b, _ = track_points(nxt, prev, fwd, window=th.window, max_level=th.max_level)
        ok = alive[idx] & st_f & st_b & ((back - pts).norm(dim=-1) <= th.fb_threshold_px)
        where[idx] = torch.where(ok[..., None], fwd, pts)
        alive[idx] = ok
        rows_dst[rows], rows_tracked[rows] = fwd, ok
    return _DirectTracks(points[_repeat_index(n_pairs, device)], rows_dst, rows_tracked, valid,
                         n_pairs, first_row)


def _still_points(direct: _DirectTracks, size: tuple[int, int], th: CameraThresholds) -> list[CameraMotion | None]:
    """Step 3: a static CameraMotion for each clip the still-points test accepts, None for the others."""
    from sparkle_fast.ops.homography import refit_homographies

    near = direct.tracked & ((direct.dst - direct.src).norm(dim=-1) <= th.still_px)
    src, dst, tracked_np, valid_np, near_np = direct.host(near)  # one copy to the host for the group
    ring = border_cells(th.cells)
    out: list[CameraMotion | None] = []
    for c, (n, start) in enumerate(zip(direct.n_pairs, direct.first_row, strict=True)):
        block = slice(start, start + n)
        still = near_np[block].all(axis=0)
        # Points tracked all along that left the still radius: the subject, or a moving camera's background.
        # Occluded points (lost in some frame) are neither: a subject sweeping over the background hides some.
        moved = tracked_np[block].all(axis=0) & ~still
        ring_still, ring_moved = int((still & ring).sum()), int((moved & ring).sum())
        sides_held = sides_holding(still, th.cells)
        if (still.sum() < th.still_min_points or ring_still < th.still_border_ratio * max(ring_still + ring_moved, 1)
                or sides_held < th.still_min_sides):
            out.append(None)
            continue
        h0t = refit_homographies(src[block], dst[block], np.broadcast_to(still, (n, still.size)))
        previous = np.concatenate([np.eye(3)[None], h0t[:-1]])
        with np.errstate(divide="ignore", invalid="ignore"):
            pair_h = h0t @ np.linalg.inv(previous) if np.isfinite(previous).all() else np.full((n, 3, 3), np.nan)
        pair_h = pair_h / pair_h[:, 2:3, 2:3]
        n_valid = np.full(n, int(valid_np[c].sum()))
        result = _decide(pair_h, n_valid, tracked_np[block].sum(1), np.full(n, int(still.sum())), size, th,
                         cut_rule=False)
        out.append(replace(result, method="still-points", from_first=h0t) if result.static else None)
    return out


def _pairwise(grays: list, size: tuple[int, int], th: CameraThresholds) -> list[CameraMotion]:
    """Step 4 and the pair part of step 6: every pair of every clip in one launch each."""
    import torch

    prev = torch.cat([g[:-1] for g in grays])
    nxt = torch.cat([g[1:] for g in grays])
    points, valid = select_points(prev, cells=th.cells, margin=_point_margin(th))
    fwd, st_f, _ = track_points(prev, nxt, points, window=th.window, max_level=th.max_level)
    back, st_b, _ = track_points(nxt, prev, fwd, window=th.window, max_level=th.max_level)
    fb_ok = (back - points).norm(dim=-1) <= th.fb_threshold_px
    tracked = valid & st_f & st_b & fb_ok
    keys = np.concatenate([np.arange(g.shape[0] - 1) for g in grays])
    h, inliers = _background_homographies(points, fwd, tracked, th, keys)
    # one copy to the host: the homographies and the three counts per pair
    counts = torch.stack([valid.sum(1), tracked.sum(1), inliers.sum(1)], dim=1).to(torch.float64)
    host = torch.cat([h.reshape(len(h), 9), counts], dim=1).cpu().numpy()
    h = host[:, :9].reshape(-1, 3, 3)
    n_valid, n_tracked, n_inliers = (host[:, 9 + k].astype(np.int64) for k in range(3))
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


def _background_homographies(points, moved, tracked, th: CameraThresholds, keys: np.ndarray):
    """The background's homography per pair, and its inliers (torch on the points' device: float64 (P, 3, 3),
    bool (P, N)).

    RANSAC keeps the largest consistent motion, which is the subject's when the subject holds more good corners than
    the background (a textured subject in front of a plain wall). So a second RANSAC fits the points the first
    model left out, and of the two the background is the one with the larger side_share: a subject (at most ~40%
    of the frame) reaches at most two sides, the background surrounds the frame. (Counting the border points each
    model holds, as before, let a dense subject win over a plain background.)
    keys (P,): each pair's index within its clip keys its RANSAC draw, so a clip's verdict does not depend on the
    other clips in its batch.
    The choice is made on the device, and there the second RANSAC runs even when no pair has points enough for it
    (its pairs then have no usable point and lose): asking the host first would wait for the device. On CPU tensors
    (HOST_SHORTCUTS) the host asks, and skips it: same results.
    """
    import torch

    def fit(mask):
        return find_homographies(points, moved, mask, threshold=th.ransac_threshold_px, max_iters=th.ransac_iters,
                                 seed=th.seed, keys=keys)

    h1, in1 = fit(tracked)
    rest = tracked & ~in1
    n_tracked = tracked.sum(1).to(torch.float64)
    second = rest.sum(1) >= (th.min_inlier_ratio * n_tracked).clamp_min(th.min_points)
    if HOST_SHORTCUTS and tracked.device.type == "cpu" and not bool(second.any()):
        return h1, in1
    h2, in2 = fit(rest & second[:, None])
    score1, score2 = side_share_torch(in1, tracked, th.cells), side_share_torch(in2, tracked, th.cells)
    use2 = second & torch.isfinite(h2).all(dim=2).all(dim=1) & (score2 > score1)
    return torch.where(use2[:, None, None], h2, h1), torch.where(use2[:, None], in2, in1)


def side_share_torch(inliers, tracked, cells: tuple[int, int]):
    """side_share on torch (bool (P, N) on one device -> float64 (P,)); the sides are made on the device (no copy)
    and summed in numpy's order, so the comparison of two scores is numpy's."""
    import torch

    rows, cols = cells
    cell = torch.arange(rows * cols, device=inliers.device)
    r, c = cell // cols, cell % cols
    sides = torch.stack([r < 2, r >= rows - 2, c < 2, c >= cols - 2])  # frame_sides(cells)
    on = (inliers[:, None, :] & sides[None]).sum(-1).to(torch.float64)
    seen = (tracked[:, None, :] & sides[None]).sum(-1).to(torch.float64)
    share = on / seen.clamp_min(1.0)
    return ((share[:, 0] + share[:, 1]) + share[:, 2]) + share[:, 3]


def frame_sides(cells: tuple[int, int], width: int = 2) -> np.ndarray:
    """bool (4, rows * cols): the grid cells along the top, bottom, left and right edges (select_points' order)."""
    rows, cols = cells
    r, c = np.divmod(np.arange(rows * cols), cols)
    return np.stack([r < width, r >= rows - width, c < width, c >= cols - width])


def sides_holding(points: np.ndarray, cells: tuple[int, int]) -> int:
    """How many of the frame's 4 sides (frame_sides) hold at least 2 of `points` (bool (rows * cols,), a grid of
    `cells` in select_points' order): the still-points test and step 5b's choice of hypothesis both ask whether a
    point set surrounds the frame as a background does."""
    return int(((frame_sides(cells) & points).sum(axis=1) >= 2).sum())


def side_share(inliers: np.ndarray, tracked: np.ndarray, cells: tuple[int, int]) -> np.ndarray:
    """float (P,): over the frame's 4 sides, the sum of the share of each side's tracked points that are inliers.
    The background surrounds the frame and holds most of every side (score near 4, less the sides a subject
    touches); a subject up to ~40% of the frame reaches at most 2 sides and part of each (score under ~1.3). Shares,
    not counts: a strongly textured subject keeps more tracked points than a plain background does."""
    sides = frame_sides(cells)
    on = (inliers[:, None, :] & sides[None]).sum(-1)
    seen = (tracked[:, None, :] & sides[None]).sum(-1)
    return (on / np.maximum(seen, 1)).sum(-1)


def _compose(pair_h: np.ndarray) -> np.ndarray:
    """float64 (P, 3, 3) frame t -> t+1 homographies -> (P, 3, 3) frame 0 -> t+1, scaled to H[2, 2] = 1."""
    out, total = [], np.eye(3)
    for h in pair_h:
        total = h @ total
        total = total / total[2, 2]
        out.append(total)
    return np.stack(out) if out else np.zeros((0, 3, 3))


def _decide(h, n_valid, n_tracked, n_inliers, size, th: CameraThresholds, *, cut_rule: bool = True) -> CameraMotion:
    """The rule on one clip's pair homographies (P, 3, 3) and per-pair point counts (P,). cut_rule=False for step 3,
    whose still points are by construction tracked in every frame (no cut) and may be fewer than the subject's."""
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
                         | ~np.isfinite(pair_disp)) if cut_rule else np.flatnonzero(~np.isfinite(pair_disp))
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
