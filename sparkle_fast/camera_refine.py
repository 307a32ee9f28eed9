"""Step 5b of the camera filter: frame 0 -> t homographies refined by tracking on frames aligned to frame 0.

    h = refine_from_first(first, later, h_init, points, valid, n_pairs, thresholds)

Why: Lucas-Kanade tracks a window by a translation. When the camera zooms or rolls, a window's content scales or
turns between frame 0 and frame t (by 12% or 7 degrees for 3 px per sampled frame at the corners over 10 frames), and
each point's track is off by about half a pixel, in a direction set by the texture (measured with
cv2.calcOpticalFlowPyrLK as well: median 0.5-0.7 px on noise-free zooms and rotations, tracked straight from frame 0
or frame by frame). Warping frame t back into frame 0 by the current estimate removes that deformation; what is left
to track is a small translation, which LK measures without the bias. Each iteration (`refine_iters`):
  1. every later frame t is warped into frame 0's coordinates by its current homography (bilinear, torch
     grid_sample, batched); where frame t does not reach, frame 0 itself fills in, so that the border of frame t
     is not an edge that pulls the windows near it (points whose window leaves frame t are dropped anyway);
  2. frame 0's points (the caller's; camera.py gives a grid denser than step 5's) are tracked into the warped
     frames and back (ops.track_points, one launch each way, a small pyramid: what is left to track is small) and
     mapped into frame t by the current homography. Each frame is tracked on its own, so points that step 5's
     frame-by-frame following lost come back;
  3. the background: points the current estimates align within `refine_capture_px` in most of the later half of
     their clip's frames (where the camera's motion has added up, so a subject has separated from it);
  4. the motion model is fitted to them (choose_motion_model), points left farther than `refine_trim_sigmas` robust
     standard deviations (at most `refine_trim_px`, at least 0.1 px) are dropped, and it is fitted again. A frame
     keeps its previous homography when fewer than `refine_min_points` points remain (an affine fit needs 3; the
     floor is for robustness, and 12 rather than 16 keeps late frames of a plain background behind a large subject).

Why a choice of model: an 8-parameter homography fitted on points that cover part of the frame (a 40% subject
hides the rest) extrapolates its two perspective terms to the far corners, where a few tenths of a pixel of
tracking error become a pixel or more; when the camera's motion is affine (a zoom, a roll, a dolly) the 6-parameter
affine fit is as right and much steadier there. So the homography is kept only when it explains the points
significantly better, by Torr's geometric robust information criterion (choose_motion_model). A camera that turns
(a real pan or tilt: lines converge, a keystone) passes that test easily, even by half a degree. The choice is
made once per clip (the criterion summed over its frames), not per frame: whether the camera turns is a property of
the clip, and per frame the homography won by chance on some frames of an affine drift, extrapolating 0.6 px
errors to the corners.
Measured (bench/camera_accuracy.py, docs/CAMERA_CALIBRATION.md), with camera.py's rival hypothesis: frame 0 -> t
within 0.5 px on 68 of 72 clips with a 40% subject (44 without this step) and 70 of 72 with a 20% subject.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sparkle_fast.ops.homography import refit_homographies
from sparkle_fast.ops.optical_flow import track_points

TRIM_FLOOR_PX = 0.1  # the trim never drops points closer than this (sigma can be ~0 on noise-free frames)
WARP_PIXELS = 1 << 24  # pixels per grid_sample call (bounds its float32 temporaries: ~0.5 GB)


def warp_to_first(frames: Any, homographies: Any, fill: Any = None) -> Any:
    """uint8 torch (P, H, W) frames t and float64 (P, 3, 3) frame 0 -> t homographies (numpy, or torch on the
    frames' device: no upload) -> uint8 torch (P, H, W) frames seen in frame 0's coordinates: out[p](x) =
    frames[p](H_p x), bilinear; where H_p x falls outside frame t, fill[p](x) (uint8 torch (P, H, W)), or 0 without
    fill."""
    import torch

    n, height, width = frames.shape
    out = torch.empty_like(frames)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32, device=frames.device),
                            torch.arange(width, dtype=torch.float32, device=frames.device), indexing="ij")
    # float32 elementwise (not a matmul, which TF32 settings could round to 10 bits): ~1e-4 px at 1280 px
    if isinstance(homographies, torch.Tensor):
        h_all = homographies.to(frames.device, torch.float32)
    else:
        h_all = torch.from_numpy(np.ascontiguousarray(homographies, np.float64)).to(frames.device, torch.float32)
    chunk = max(1, WARP_PIXELS // max(height * width, 1))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        h = h_all[start:stop, :, :, None, None]  # (chunk, 3, 3, 1, 1)
        z = h[:, 2, 0] * xs + h[:, 2, 1] * ys + h[:, 2, 2]
        x = (h[:, 0, 0] * xs + h[:, 0, 1] * ys + h[:, 0, 2]) / z  # (chunk, H, W): where each pixel is in frame t
        y = (h[:, 1, 0] * xs + h[:, 1, 1] * ys + h[:, 1, 2]) / z
        # grid_sample's align_corners=False coordinates: pixel i's center is at (2i + 1) / size - 1 (right for a
        # size of 1 too, where align_corners=True would send every coordinate to the one pixel)
        grid = torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1)
        sampled = torch.nn.functional.grid_sample(frames[start:stop, None].float(), grid, mode="bilinear",
                                                  padding_mode="zeros", align_corners=False)[:, 0]
        if fill is not None:
            outside = (x < 0) | (x > width - 1) | (y < 0) | (y > height - 1)
            sampled = torch.where(outside, fill[start:stop].float(), sampled)
        out[start:stop] = sampled.round().clamp(0, 255).to(torch.uint8)
    return out


def apply_homographies(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    """float64 (B, 3, 3) and (B, N, 2) -> (B, N, 2): the points mapped by their row's homography."""
    mapped = np.einsum("bij,bnj->bni", h, np.concatenate([points, np.ones(points.shape[:-1] + (1,))], axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return mapped[..., :2] / mapped[..., 2:3]


def fit_affine(src: np.ndarray, dst: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Least-squares affine maps src -> dst on the masked points. float64 (B, N, 2), (B, N, 2), bool (B, N) ->
    float64 (B, 3, 3) with last row (0, 0, 1); NaN where fewer than 3 points or the points are collinear."""
    w = mask.astype(np.float64)
    design = np.concatenate([np.nan_to_num(src), np.ones(src.shape[:-1] + (1,))], axis=-1)  # (B, N, 3)
    normal = np.einsum("bn,bni,bnj->bij", w, design, design)
    rhs = np.einsum("bn,bni,bnj->bij", w, design, np.nan_to_num(dst))  # (B, 3, 2)
    out = np.full(src.shape[:1] + (3, 3), np.nan)
    # a well-conditioned normal matrix (relative to its scale) means at least 3 non-collinear points
    scale = np.maximum(np.abs(normal).max(axis=(1, 2)), 1e-300)
    ok = (w.sum(axis=1) >= 3) & (np.abs(np.linalg.det(normal / scale[:, None, None])) > 1e-12)
    if ok.any():
        solution = np.linalg.solve(normal[ok], rhs[ok])  # (k, 3, 2)
        out[ok, :2, :] = solution.transpose(0, 2, 1)
        out[ok, 2, :] = (0.0, 0.0, 1.0)
    return out


def masked_median(values: np.ndarray, mask: np.ndarray, empty: float) -> np.ndarray:
    """float64 (B,): per row, the median of values (B, N) where mask (B, N); `empty` for rows with none (one
    vectorized call, not a Python loop over rows: a batch holds ten rows per clip)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
        median = np.nanmedian(np.where(mask, values, np.nan), axis=1)
    return np.where(mask.any(axis=1), median, empty)


def robust_sigma2(squared_errors: np.ndarray, mask: np.ndarray, empty: float) -> np.ndarray:
    """float64 (B,): per row, a robust variance per coordinate of 2-d errors: the median squared error over the
    median of a chi-square with 2 degrees of freedom (2 ln 2). squared_errors float (B, N), mask bool (B, N);
    `empty` for rows with no masked point."""
    return masked_median(squared_errors, mask, empty) / (2 * np.log(2))


def _squared_errors(h: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    err = ((apply_homographies(np.nan_to_num(h), src) - dst) ** 2).sum(axis=-1)
    return np.nan_to_num(err, nan=np.inf)


def choose_motion_model(src: np.ndarray, dst: np.ndarray, mask: np.ndarray,
                        groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the affine or the homography least-squares fit on the masked points, by GRIC (module docstring).
    float64 (B, N, 2), (B, N, 2), bool (B, N) -> (float64 (B, 3, 3), bool (B,) True where the homography was
    kept). NaN rows where neither model can be fitted.

    GRIC (Torr) with both models mapping the plane to the plane: score = sum_i min(e_i^2 / sigma^2, 4) + 2 log(4n)
    per parameter pair, so the homography (2 more parameters) wins only when its capped residuals are lower by more
    than 2 log(4n). sigma^2 (per coordinate) is robust: the median squared error of the homography / (2 ln 2), the
    median of a chi-square with 2 degrees of freedom; the cap keeps a few bad points from deciding.
    groups: optional int (B,): rows with the same group (a clip's frames) make one choice, on the sum over them of
    each row's margin (rows where one of the models cannot be fitted count 0 and take the model that can)."""
    n = mask.sum(axis=1)
    h_full = refit_homographies(src, dst, mask)
    h_affine = fit_affine(src, dst, mask)
    full_ok = np.isfinite(h_full).all(axis=(1, 2)) & (n > 4)
    affine_ok = np.isfinite(h_affine).all(axis=(1, 2))
    e_full = _squared_errors(h_full, src, dst)
    e_affine = _squared_errors(h_affine, src, dst)
    sigma2 = np.maximum(robust_sigma2(e_full, mask, empty=np.inf), 1e-12)
    with np.errstate(invalid="ignore"):
        rho_full = np.where(mask, np.minimum(e_full / sigma2[:, None], 4.0), 0.0).sum(axis=1)
        rho_affine = np.where(mask, np.minimum(e_affine / sigma2[:, None], 4.0), 0.0).sum(axis=1)
    penalty = 2 * np.log(4 * np.maximum(n, 1))
    gain = np.where(full_ok & affine_ok, rho_affine - rho_full - penalty, 0.0)
    if groups is not None and groups.size:
        total = np.zeros(int(groups.max()) + 1)
        np.add.at(total, groups, gain)
        gain = total[groups]
    keep_full = full_ok & (~affine_ok | (gain > 0))
    return np.where(keep_full[:, None, None], h_full, h_affine), keep_full


# --- the same maths in torch, on the frames' device --------------------------------------------------------------
# refine_from_first runs its iterations with these, so the loop copies nothing to or from the host: on a GPU each
# copy waits for every launch before it. They are twins of the numpy functions above (the definitions), tested
# against them: equal for the medians, within 1e-9 px (mapped points) for the fits; the choices they make (which
# points are background, affine or homography) are the numpy functions' on every case tested. float64 throughout
# (on a GPU as well: no TF32 in float64 matmuls).

INVERSE_ITERATIONS = 6  # inverse-iteration steps for the DLT's null vector (error ~ (lambda1 / lambda2) ** steps)
_SHIFT = 1e-12          # relative shift keeping an exact fit's (singular) normal matrix factorizable


def apply_homographies_torch(h: Any, points: Any) -> Any:
    """apply_homographies on torch: float64 (B, 3, 3) and (B, N, 2) -> (B, N, 2)."""
    import torch

    x, y = points[..., 0], points[..., 1]

    def row(i):
        return h[:, i, 0, None] * x + h[:, i, 1, None] * y + h[:, i, 2, None]

    z = row(2)
    return torch.stack([row(0) / z, row(1) / z], dim=-1)


def _det3(m: Any) -> Any:
    """float64 (B,) determinants of (B, 3, 3), written out (torch.linalg.det's error checks would wait for the GPU)."""
    return (m[:, 0, 0] * (m[:, 1, 1] * m[:, 2, 2] - m[:, 1, 2] * m[:, 2, 1])
            - m[:, 0, 1] * (m[:, 1, 0] * m[:, 2, 2] - m[:, 1, 2] * m[:, 2, 0])
            + m[:, 0, 2] * (m[:, 1, 0] * m[:, 2, 1] - m[:, 1, 1] * m[:, 2, 0]))


def fit_affine_torch(src: Any, dst: Any, mask: Any) -> Any:
    """fit_affine on torch: float64 (B, N, 2), (B, N, 2), bool (B, N) -> float64 (B, 3, 3), NaN rows as there."""
    import torch

    w = mask.to(torch.float64)
    design = torch.cat([torch.nan_to_num(src), torch.ones_like(src[..., :1])], dim=-1)  # (B, N, 3)
    weighted = (design * w[..., None]).transpose(1, 2)
    normal = weighted @ design
    rhs = weighted @ torch.nan_to_num(dst)  # (B, 3, 2)
    scale = normal.abs().amax(dim=(1, 2)).clamp_min(1e-300)
    ok = (w.sum(dim=1) >= 3) & (_det3(normal / scale[:, None, None]).abs() > 1e-12)
    eye = torch.eye(3, dtype=normal.dtype, device=normal.device).expand_as(normal)
    solution = torch.linalg.solve_ex(torch.where(ok[:, None, None], normal, eye), rhs, check_errors=False).result
    out = torch.cat([solution.transpose(1, 2), eye[:, 2:3]], dim=1)
    return torch.where(ok[:, None, None], out, torch.full_like(out, float("nan")))


def _null_vector(normal: Any) -> Any:
    """float64 (B, 9): the eigenvector of the smallest eigenvalue of symmetric PSD (B, 9, 9), by inverse iteration on
    one LU factorization (numpy's refit takes it from eigh; torch's eigh checks for errors, which waits for the
    GPU). The shift keeps an exact fit's singular matrix factorizable; rows whose factorization fails come out
    non-finite, as the callers' checks expect of a degenerate fit."""
    import torch

    n = normal.shape[-1]
    scale = normal.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1e-300) / n
    eye = torch.eye(n, dtype=normal.dtype, device=normal.device)
    lu, pivots, _ = torch.linalg.lu_factor_ex(normal / scale[:, None, None] + _SHIFT * eye, check_errors=False)
    v = torch.ones(normal.shape[:-1] + (1,), dtype=normal.dtype, device=normal.device) / math.sqrt(n)
    for _ in range(INVERSE_ITERATIONS):
        v = torch.linalg.lu_solve(lu, pivots, v)
        v = v / v.norm(dim=-2, keepdim=True)
    return v[..., 0]


def refit_homographies_torch(src: Any, dst: Any, mask: Any) -> Any:
    """ops.homography.refit_homographies on torch (least-squares normalized DLT on the masked points): float64
    (B, N, 2), (B, N, 2), bool (B, N) -> float64 (B, 3, 3), H[2, 2] = 1, NaN where fewer than 4 points or
    degenerate."""
    import torch

    n_pairs = src.shape[0]
    src = torch.where(mask[..., None], src, 0.0)
    dst = torch.where(mask[..., None], dst, 0.0)
    w = mask.to(torch.float64)
    count = w.sum(dim=1)
    safe = count.clamp_min(1.0)[:, None]

    def normalizer(p):
        p = torch.nan_to_num(p)
        mean = (w[..., None] * p).sum(dim=1) / safe
        dist = (w * ((p - mean[:, None]) ** 2).sum(-1).sqrt()).sum(dim=1) / safe[:, 0]
        scale = math.sqrt(2.0) / torch.where(dist > 0, dist, 1.0)
        zero = torch.zeros_like(scale)
        t = torch.stack([scale, zero, -scale * mean[:, 0], zero, scale, -scale * mean[:, 1], zero, zero,
                         torch.ones_like(scale)], dim=-1).reshape(n_pairs, 3, 3)
        return t, (p - mean[:, None]) * scale[:, None, None], dist > 0

    ts, qs, ok_s = normalizer(src)
    td, qd, ok_d = normalizer(dst)
    x, y, u, v = qs[..., 0], qs[..., 1], qd[..., 0], qd[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    a = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y, -u], dim=-1)
    b = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y, -v], dim=-1)
    normal = (a * w[..., None]).transpose(1, 2) @ a + (b * w[..., None]).transpose(1, 2) @ b
    hn = _null_vector(normal).reshape(n_pairs, 3, 3)
    h = torch.linalg.solve_ex(td, hn, check_errors=False).result @ ts
    h = h / h[:, 2:3, 2:3]
    bad = (count < 4) | ~ok_s | ~ok_d | ~torch.isfinite(h).all(dim=2).all(dim=1)
    return torch.where(bad[:, None, None], torch.full_like(h, float("nan")), h)


def masked_median_torch(values: Any, mask: Any, empty: float) -> Any:
    """masked_median on torch, equal to it: float64 (B,); numpy's median of an even count (the mean of the two
    middle values), NaN values ignored as nanmedian does, `empty` for rows with no masked point."""
    import torch

    counted = mask & ~torch.isnan(values)
    k = counted.sum(dim=1)
    ordered = torch.where(counted, values, torch.inf).sort(dim=1).values
    last = max(values.shape[1] - 1, 0)
    low = ordered.gather(1, ((k - 1).clamp(min=0) // 2).clamp(max=last)[:, None])[:, 0]
    high = ordered.gather(1, (k // 2).clamp(max=last)[:, None])[:, 0]
    median = torch.where(k > 0, (low + high) / 2, float("nan"))
    return torch.where(mask.any(dim=1), median, empty)


def robust_sigma2_torch(squared_errors: Any, mask: Any, empty: float) -> Any:
    """robust_sigma2 on torch."""
    return masked_median_torch(squared_errors, mask, empty) / (2 * np.log(2))


def group_layout(groups: np.ndarray, device: Any) -> tuple[Any, Any]:
    """Row groups on `device`, built on the host from groups int (B,) (values 0..G-1): (layout int64 torch (G, L):
    row g lists the rows of group g, padded with B (group_sum's extra zero row), group int64 torch (B,): each row's
    group). For group sums without atomics (deterministic on a GPU) and without a host round trip."""
    import torch

    groups = np.asarray(groups, np.int64)
    n_groups = int(groups.max()) + 1 if groups.size else 0
    members = [np.flatnonzero(groups == g) for g in range(n_groups)]
    width = max((len(m) for m in members), default=0)
    layout = np.full((n_groups, width), len(groups), np.int64)
    for g, m in enumerate(members):
        layout[g, :len(m)] = m
    flat = torch.from_numpy(np.concatenate([layout.ravel(), groups])).to(device)  # one upload
    return flat[:layout.size].reshape(layout.shape), flat[layout.size:]


def group_sum(values: Any, layout: Any) -> Any:
    """(G, ...) sums over each group's rows of values (B, ...) (layout from group_layout)."""
    import torch

    padded = torch.cat([values, torch.zeros_like(values[:1])])
    return padded[layout].sum(dim=1)


def _squared_errors_torch(h, src, dst):
    import torch

    err = ((apply_homographies_torch(torch.nan_to_num(h), src) - dst) ** 2).sum(dim=-1)
    return torch.nan_to_num(err, nan=torch.inf)


def choose_motion_model_torch(src: Any, dst: Any, mask: Any, groups: tuple[Any, Any] | None = None
                              ) -> tuple[Any, Any]:
    """choose_motion_model on torch; groups given as group_layout(groups) (built once, on the host, by the caller).
    Returns (float64 (B, 3, 3), bool (B,))."""
    import torch

    n = mask.sum(dim=1)
    h_full = refit_homographies_torch(src, dst, mask)
    h_affine = fit_affine_torch(src, dst, mask)
    full_ok = torch.isfinite(h_full).all(dim=2).all(dim=1) & (n > 4)
    affine_ok = torch.isfinite(h_affine).all(dim=2).all(dim=1)
    e_full = _squared_errors_torch(h_full, src, dst)
    e_affine = _squared_errors_torch(h_affine, src, dst)
    sigma2 = robust_sigma2_torch(e_full, mask, empty=math.inf).clamp_min(1e-12)
    rho_full = torch.where(mask, (e_full / sigma2[:, None]).clamp(max=4.0), 0.0).sum(dim=1)
    rho_affine = torch.where(mask, (e_affine / sigma2[:, None]).clamp(max=4.0), 0.0).sum(dim=1)
    penalty = 2 * torch.log(4 * n.clamp_min(1).to(torch.float64))
    gain = torch.where(full_ok & affine_ok, rho_affine - rho_full - penalty, 0.0)
    if groups is not None and len(gain):
        layout, group_of_row = groups
        gain = group_sum(gain, layout)[group_of_row]
    keep_full = full_ok & (~affine_ok | (gain > 0))
    return torch.where(keep_full[:, None, None], h_full, h_affine), keep_full


def refine_from_first(first: Any, later: Any, h_init: np.ndarray, points: Any, valid: Any, n_pairs: list[int],
                      th, exclude: np.ndarray | None = None, return_support: bool = False):
    """Refined frame 0 -> t homographies (module docstring).

    first: uint8 torch (P, H, W): each row's clip's frame 0; later: uint8 torch (P, H, W): frame t of that row.
    h_init: float64 (P, 3, 3) the current frame 0 -> t estimates (NaN rows are left NaN).
    points: float32 torch (P, N, 2) frame 0's points; valid: bool torch (P, N) those that exist.
    n_pairs: the rows of each clip, in order (sum = P).
    exclude: optional bool (P, N): points never to count as background (step 5's subject points).
    th: CameraThresholds (refine_iters, refine_max_level, refine_capture_px, refine_trim_px, refine_trim_sigmas,
    refine_min_points, fb_threshold_px, window).
    Returns float64 (P, 3, 3); with return_support, also bool (P, N): the points the last iteration fitted as
    background in each row (all False in a row whose fit was not updated).

    Device traffic: the inputs the host holds (h_init, exclude, the row bookkeeping) go up once before the first
    iteration; the iterations run on the frames' device (the *_torch twins above); the results come back in one
    copy after the last."""
    import torch

    height, width = first.shape[1:]
    device = first.device
    h_host = np.array(h_init, np.float64)
    margin = th.window // 2 + 1
    clip_of_row = np.repeat(np.arange(len(n_pairs)), n_pairs)
    frame_of_row = np.concatenate([np.arange(n) for n in n_pairs]) if n_pairs else np.zeros(0, int)
    late_row = frame_of_row >= np.repeat(np.asarray(n_pairs) // 2, n_pairs)
    rows = np.flatnonzero(np.isfinite(h_host).all(axis=(1, 2)))  # NaN rows stay NaN
    support_host = np.zeros(tuple(points.shape[:2]), bool)
    if rows.size == 0 or th.refine_iters <= 0:
        return (h_host, support_host) if return_support else h_host
    # everything the loop needs from the host, uploaded once: the integers in one copy, the floats in another
    clip_rows = clip_of_row[rows]
    groups = group_layout(clip_rows, device)  # the rows of each clip: the votes' and the model choice's groups
    layout, group_of_row = groups
    index, late = torch.from_numpy(np.concatenate([rows, late_row[rows]]).astype(np.int64)).to(device).reshape(2, -1)
    late = late.bool()
    n_rows, n_points = len(rows), points.shape[1]
    floats = [h_host[rows].reshape(-1)] + ([] if exclude is None else [np.asarray(exclude, np.float64)[rows].ravel()])
    floats = torch.from_numpy(np.concatenate(floats)).to(device)
    h_cur = floats[:n_rows * 9].reshape(n_rows, 3, 3)
    excluded = None if exclude is None else floats[n_rows * 9:].reshape(n_rows, n_points) != 0
    base, pts, targets, usable = first[index], points[index], later[index], valid[index]
    s = pts.to(torch.float64)
    near = torch.zeros(pts.shape[:2], dtype=torch.bool, device=device)
    good = torch.zeros(len(rows), dtype=torch.bool, device=device)
    for _ in range(th.refine_iters):
        aligned = warp_to_first(targets, h_cur, fill=base)
        fwd, st_f, _ = track_points(base, aligned, pts, window=th.window, max_level=th.refine_max_level)
        back, st_b, _ = track_points(aligned, base, fwd, window=th.window, max_level=th.refine_max_level)
        ok = usable & st_f & st_b & ((back - pts).norm(dim=-1) <= th.fb_threshold_px)
        fwd = fwd.to(torch.float64)
        # where each point is in frame t: its position in the aligned frame, mapped by the current homography
        in_t = apply_homographies_torch(h_cur, fwd)
        inside = ((in_t[..., 0] >= margin) & (in_t[..., 0] <= width - 1 - margin)
                  & (in_t[..., 1] >= margin) & (in_t[..., 1] <= height - 1 - margin))
        ok = ok & inside & torch.isfinite(in_t).all(dim=-1)
        # background: points that the current estimates already align (within refine_capture_px) in most of the
        # later half of their clip's frames, where the camera's motion has added up and a subject has separated
        close = ok & (((fwd - s) ** 2).sum(dim=-1).sqrt() <= th.refine_capture_px)
        seen = group_sum((ok & late[:, None]).to(torch.int64), layout)
        agree = group_sum((close & late[:, None]).to(torch.int64), layout)
        near = close & (2 * agree > seen)[group_of_row]
        if excluded is not None:
            near = near & ~excluded
        h_fit, _ = choose_motion_model_torch(s, in_t, near, groups)
        err = ((apply_homographies_torch(torch.nan_to_num(h_fit), s) - in_t) ** 2).sum(dim=-1).sqrt()
        sigma = robust_sigma2_torch(err ** 2, near, empty=0.0).sqrt()
        trim = torch.clamp((th.refine_trim_sigmas * sigma).clamp_min(TRIM_FLOOR_PX), max=th.refine_trim_px)
        near = near & (err <= trim[:, None])
        h_fit, _ = choose_motion_model_torch(s, in_t, near, groups)
        good = (near.sum(dim=1) >= th.refine_min_points) & torch.isfinite(h_fit).all(dim=2).all(dim=1)
        h_cur = torch.where(good[:, None, None], h_fit, h_cur)
    # one copy back: the homographies and the last iteration's support
    packed = torch.cat([h_cur.reshape(len(rows), 9), (near & good[:, None]).to(torch.float64)], dim=1).cpu().numpy()
    h_host[rows] = packed[:, :9].reshape(-1, 3, 3)
    support_host[rows] = packed[:, 9:] != 0
    return (h_host, support_host) if return_support else h_host
