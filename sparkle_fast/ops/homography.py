"""Batched robust homography fitting (RANSAC) for the camera-motion filter.

Public op (numpy / torch CPU or CUDA / cupy in, the same kind out; see sparkle_fast.ops._dispatch):

  find_homographies(src, dst, valid=None, *, threshold=3.0, max_iters=512, confidence=0.995, seed=0, refine=True,
                    keys=None) -> (homographies float64 (B, 3, 3), inliers bool (B, N))
      src, dst: float32 (B, N, 2) (or (N, 2): unbatched results) point correspondences in pixels, src -> dst.
      valid: optional bool (B, N); rows that are False, or hold a NaN/inf, are never sampled nor inliers.
      keys: optional integers (B,) in 0..2**32-1 keying each pair's random draw (default: the pair's index in the
      batch). Give a pair the same key (e.g. its frame index within its clip) and its result no longer depends on
      which other pairs share the batch.
      A pair whose fit fails (fewer than 4 usable points, every sample degenerate, collinear points) gets a NaN
      homography and no inliers: a result, not an exception.

The method, identical on every backend (the definition is find_homographies_reference):
  1. The usable correspondences of each pair are moved to the front (stable order), n of them.
  2. Hypotheses h = 0..max_iters-1: 4 indices drawn by a counter-based hash of (seed, keys[pair], h) (so the draw
     is the same on every backend), rejected when indices repeat, when 3 of the 4 points
     are collinear or the sample's orientation is inconsistent (OpenCV's check); else the 4-point DLT (h33 = 1,
     Gaussian elimination in float64) and its inlier count: squared reprojection error <= threshold**2.
  3. The winner is the hypothesis OpenCV's sequential loop would keep: the first with the most inliers among those
     it would have evaluated, where the loop length shrinks with the best inlier ratio so far exactly as
     cv::RANSACUpdateNumIters (confidence, 4-point model) does. All max_iters hypotheses are scored in one launch.
  4. refine: a least-squares normalized DLT (Hartley) on the winner's inliers, kept when it has at least as many
     inliers, done twice. The inliers returned are those of the returned homography (OpenCV returns those of the
     minimal sample instead, then refines with Levenberg-Marquardt).
  Homographies are scaled so that H[2, 2] = 1.

Backends: reference (numpy, all steps); cuda: steps 1-3 on the device (step 1 and 3 with torch ops, step 2, the hot
part: B * max_iters * N reprojections, in one launch of csrc/ransac.cu, built with -fmad=false so its doubles round
as numpy's), then one copy of the points and the winners' models to the host for step 4, done by the reference's
numpy code. Step 3's loop lengths come from a table of ransac_iterations (the reference's function, evaluated on the
host from the call's parameters only), so the device picks the very hypothesis the reference picks. Results equal
the reference's. The CUDA kernel's per-hypothesis code is csrc/ransac_core.h; its host twin (sparkle_fast._C.
ransac_score_host) runs the same code on the CPU and is tested to give the same scores as step 2 here.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from sparkle_fast._build import cuda_kernels, extension
from sparkle_fast.ops import _dispatch as dispatch

_OP = "find_homographies"
GPU_PREFERENCE = ("cuda",)
MIN_TWICE_AREA = 1e-3  # as ransac_core.h
MIN_PIVOT = 1e-12
_DBL_MIN = np.finfo(np.float64).tiny
_REFERENCE_CHUNK = 32  # pairs per vectorized chunk of the reference (bounds its (chunk, K, N) temporaries)


# --- argument checks -----------------------------------------------------------------------------------------------


def _check_keys(keys, n_pairs: int) -> np.ndarray:
    """uint32 (n_pairs,): the pairs' draw keys (their batch index when keys is None)."""
    if keys is None:
        return np.arange(n_pairs, dtype=np.uint32)
    values = np.asarray(keys.cpu() if hasattr(keys, "cpu") else keys)
    if values.shape != (n_pairs,) or values.dtype.kind not in "iu" or (
            values.size and (values.min() < 0 or values.max() >= 1 << 32)):
        raise ValueError(f"{_OP}: keys must be {n_pairs} integers in 0..2**32-1 (one per pair), got "
                         f"{values.dtype} {values.shape}")
    return values.astype(np.uint32)


def _check_args(src, dst, valid, threshold, max_iters, confidence, seed):
    for name, pts in (("src", src), ("dst", dst)):
        dispatch.array_kind(pts, name, _OP)
        dispatch.check_dtype(pts, ("float32",), name, _OP)
        if pts.ndim not in (2, 3) or pts.shape[-1] != 2:
            raise ValueError(f"{_OP}: {name} must be float32 (B, N, 2) or (N, 2) points, got shape {tuple(pts.shape)}")
    if tuple(src.shape) != tuple(dst.shape):
        raise ValueError(f"{_OP}: src and dst must have the same shape, got {tuple(src.shape)} and {tuple(dst.shape)}")
    if valid is not None:
        dispatch.array_kind(valid, "valid", _OP)
        dispatch.check_dtype(valid, ("bool",), "valid", _OP)
        if tuple(valid.shape) != tuple(src.shape[:-1]):
            raise ValueError(f"{_OP}: valid must be bool with shape {tuple(src.shape[:-1])}, got {tuple(valid.shape)}")
    if not threshold > 0:
        raise ValueError(f"{_OP}: threshold must be a positive number of pixels, got {threshold!r}")
    if not (isinstance(max_iters, (int, np.integer)) and 1 <= max_iters <= 1 << 20):
        raise ValueError(f"{_OP}: max_iters must be an integer in 1..2**20, got {max_iters!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"{_OP}: confidence must be in (0, 1), got {confidence!r}")
    if not (isinstance(seed, (int, np.integer)) and 0 <= seed < 1 << 32):
        raise ValueError(f"{_OP}: seed must be an integer in 0..2**32-1, got {seed!r}")


# --- the definition ------------------------------------------------------------------------------------------------


def _mix32(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def sample_indices(seed: int, n_valid: np.ndarray, n_hyp: int, keys: np.ndarray) -> np.ndarray:
    """int64 (B, n_hyp, 4): the correspondence indices of every hypothesis of the pairs keyed `keys` (uint32 (B,));
    ransac_core.h's sample_index."""
    with np.errstate(over="ignore"):
        pairs = np.asarray(keys, np.uint32)[:, None, None]
        hyps = np.arange(n_hyp, dtype=np.uint32)[None, :, None]
        ks = np.arange(4, dtype=np.uint32)[None, None, :]
        h = _mix32(np.uint32(seed) ^ np.uint32(0x9E3779B9))
        h = _mix32(h ^ pairs)
        h = _mix32(h ^ hyps)
        h = _mix32(h ^ ((ks + np.uint32(1)) * np.uint32(0x85EBCA6B)))
    n = np.maximum(n_valid, 1).astype(np.uint32)[:, None, None]
    return (h % n).astype(np.int64)


def _twice_area(x, y, i, j, k):
    return (x[..., j] - x[..., i]) * (y[..., k] - y[..., i]) - (x[..., k] - x[..., i]) * (y[..., j] - y[..., i])


def _solve4(sx, sy, dx, dy):
    """Batched 4-point DLT (..., 4) -> (ok (...), h (..., 9)): ransac_core.h's solve_homography4, same op order."""
    shape = sx.shape[:-1]
    m = np.zeros(shape + (8, 9))
    for k in range(4):
        x, y, u, v = sx[..., k], sy[..., k], dx[..., k], dy[..., k]
        m[..., 2 * k, 0], m[..., 2 * k, 1], m[..., 2 * k, 2] = x, y, 1.0
        m[..., 2 * k, 6], m[..., 2 * k, 7], m[..., 2 * k, 8] = -u * x, -u * y, u
        m[..., 2 * k + 1, 3], m[..., 2 * k + 1, 4], m[..., 2 * k + 1, 5] = x, y, 1.0
        m[..., 2 * k + 1, 6], m[..., 2 * k + 1, 7], m[..., 2 * k + 1, 8] = -v * x, -v * y, v
    m = m.reshape(-1, 8, 9)
    ok = np.ones(m.shape[0], bool)
    rows = np.arange(m.shape[0])
    for c in range(8):
        pivot = c + np.abs(m[:, c:, c]).argmax(axis=1)  # first largest, as the strict '>' scan in C
        ok &= np.abs(m[rows, pivot, c]) >= MIN_PIVOT
        top, piv = m[rows, c].copy(), m[rows, pivot].copy()
        m[rows, c], m[rows, pivot] = piv, top
        diag = np.where(ok, m[:, c, c], 1.0)
        f = m[:, c + 1:, c] / diag[:, None]
        m[:, c + 1:, c:] = m[:, c + 1:, c:] - f[:, :, None] * m[:, c, None, c:]
    h = np.zeros((m.shape[0], 9))
    for c in range(7, -1, -1):
        s = m[:, c, 8].copy()
        for k in range(c + 1, 8):
            s = s - m[:, c, k] * h[:, k]
        h[:, c] = s / np.where(ok, m[:, c, c], 1.0)
    h[:, 8] = 1.0
    return ok.reshape(shape), h.reshape(shape + (9,))


def _inlier_mask(h, sx, sy, dx, dy, thr2):
    """h (..., 9), points (..., N) float64 -> bool (..., N) (ransac_core.h's is_inlier)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        h = h[..., None, :]
        w = h[..., 6] * sx + h[..., 7] * sy + h[..., 8]
        ex = (h[..., 0] * sx + h[..., 1] * sy + h[..., 2]) / w - dx
        ey = (h[..., 3] * sx + h[..., 4] * sy + h[..., 5]) / w - dy
        return ex * ex + ey * ey <= thr2


def score_hypotheses_reference(src_c: np.ndarray, dst_c: np.ndarray, n_valid: np.ndarray, keys: np.ndarray,
                               n_hyp: int, seed: int, thr2: float) -> tuple[np.ndarray, np.ndarray]:
    """Step 2 in numpy. src_c, dst_c: float32 (B, N, 2) with the usable rows first; n_valid int (B,); keys uint32
    (B,).
    Returns scores int32 (B, n_hyp) (-1 = rejected sample) and models float64 (B, n_hyp, 9)."""
    n_pairs, n_points = src_c.shape[:2]
    scores = np.full((n_pairs, n_hyp), -1, np.int32)
    models = np.zeros((n_pairs, n_hyp, 9))
    for start in range(0, n_pairs, _REFERENCE_CHUNK):
        stop = min(start + _REFERENCE_CHUNK, n_pairs)
        nv = np.minimum(n_valid[start:stop], n_points)
        idx = sample_indices(seed, nv, n_hyp, keys[start:stop])
        distinct = np.ones(idx.shape[:2], bool)
        for k in range(4):
            for j in range(k):
                distinct &= idx[..., j] != idx[..., k]
        s = src_c[start:stop].astype(np.float64)
        d = dst_c[start:stop].astype(np.float64)
        flat_idx = idx.reshape(len(nv), -1)
        sx, sy, dx, dy = (np.take_along_axis(a[..., c], flat_idx, axis=1).reshape(idx.shape)
                          for a, c in ((s, 0), (s, 1), (d, 0), (d, 1)))
        good = distinct & (nv >= 4)[:, None]
        negative = np.zeros(idx.shape[:2], np.int32)
        for i, j, k in ((0, 1, 2), (1, 2, 3), (0, 2, 3), (0, 1, 3)):
            a, b = _twice_area(sx, sy, i, j, k), _twice_area(dx, dy, i, j, k)
            good &= (a * a >= MIN_TWICE_AREA ** 2) & (b * b >= MIN_TWICE_AREA ** 2)
            negative += a * b < 0
        good &= (negative == 0) | (negative == 4)
        solved, h = _solve4(sx, sy, dx, dy)
        good &= solved
        inl = _inlier_mask(h, s[:, None, :, 0], s[:, None, :, 1], d[:, None, :, 0], d[:, None, :, 1], thr2)
        inl &= (np.arange(n_points)[None, :] < nv[:, None])[:, None, :]
        scores[start:stop] = np.where(good, inl.sum(axis=2), -1)
        models[start:stop] = h
    return scores, models


def ransac_iterations(best: np.ndarray, n: np.ndarray, confidence: float, max_iters: int) -> np.ndarray:
    """cv::RANSACUpdateNumIters for a 4-point model, vectorized: the loop length after finding `best` inliers of n
    (max_iters while best < 4, i.e. before OpenCV's first update)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ep = np.clip(1.0 - best / np.maximum(n, 1), 0.0, 1.0)
        num = np.log(max(1.0 - confidence, _DBL_MIN))
        denom_lin = 1.0 - (1.0 - ep) ** 4
        denom = np.log(np.maximum(denom_lin, _DBL_MIN))
        iters = np.where((denom >= 0) | (-num >= max_iters * -denom), max_iters, np.round(num / denom))
        iters = np.where(denom_lin < _DBL_MIN, 0, iters)
    return np.where(best < 4, max_iters, iters)


def pick_winners(scores: np.ndarray, n_valid: np.ndarray, confidence: float) -> np.ndarray:
    """Step 3: int64 (B,) winning hypothesis per pair (-1 when every sample was rejected)."""
    n_pairs, n_hyp = scores.shape
    if n_hyp == 0:
        return np.full(n_pairs, -1)
    best = np.maximum.accumulate(scores, axis=1)
    iters = ransac_iterations(best, n_valid[:, None].astype(np.float64), confidence, n_hyp)
    done = (np.arange(n_hyp)[None, :] + 1) >= iters
    last = np.where(done.any(axis=1), done.argmax(axis=1), n_hyp - 1)
    masked = np.where(np.arange(n_hyp)[None, :] <= last[:, None], scores, -2)
    winner = masked.argmax(axis=1)
    return np.where(masked[np.arange(n_pairs), winner] >= 4, winner, -1)


def refit_homographies(src: np.ndarray, dst: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Least-squares normalized DLT on the masked correspondences. src, dst float64 (B, N, 2), mask bool (B, N)
    -> float64 (B, 3, 3) with H[2, 2] = 1, NaN where fewer than 4 points or degenerate."""
    n_pairs = src.shape[0]
    # rows outside the mask weigh 0 but must stay finite: an inf there would make 0 * inf = NaN in the sums
    src, dst = np.where(mask[..., None], src, 0.0), np.where(mask[..., None], dst, 0.0)
    w = mask.astype(np.float64)
    count = w.sum(axis=1)
    safe = np.maximum(count, 1.0)[:, None]

    def normalizer(p):
        mean = (w[..., None] * np.nan_to_num(p)).sum(axis=1) / safe
        dist = (w * np.linalg.norm(np.nan_to_num(p) - mean[:, None], axis=2)).sum(axis=1) / safe[:, 0]
        scale = np.sqrt(2.0) / np.where(dist > 0, dist, 1.0)
        t = np.zeros((n_pairs, 3, 3))
        t[:, 0, 0] = t[:, 1, 1] = scale
        t[:, 0, 2], t[:, 1, 2], t[:, 2, 2] = -scale * mean[:, 0], -scale * mean[:, 1], 1.0
        q = (np.nan_to_num(p) - mean[:, None]) * scale[:, None, None]
        return t, q, dist > 0

    ts, qs, ok_s = normalizer(src)
    td, qd, ok_d = normalizer(dst)
    x, y, u, v = qs[..., 0], qs[..., 1], qd[..., 0], qd[..., 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    a = np.stack([x, y, one, zero, zero, zero, -u * x, -u * y, -u], axis=-1)
    b = np.stack([zero, zero, zero, x, y, one, -v * x, -v * y, -v], axis=-1)
    normal = np.einsum("bn,bni,bnj->bij", w, a, a) + np.einsum("bn,bni,bnj->bij", w, b, b)
    _, vectors = np.linalg.eigh(normal)
    hn = vectors[:, :, 0].reshape(n_pairs, 3, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.linalg.solve(td, hn) @ ts if n_pairs else np.zeros((0, 3, 3))
        h = h / h[:, 2:3, 2:3]
    bad = (count < 4) | ~ok_s | ~ok_d | ~np.isfinite(h).all(axis=(1, 2))
    h[bad] = np.nan
    return h


def _finish(src: np.ndarray, dst: np.ndarray, usable: np.ndarray, scores: np.ndarray, models: np.ndarray,
            n_valid: np.ndarray, threshold: float, confidence: float, refine: bool):
    """Steps 3 and 4 on the host (the reference). Returns (H (B, 3, 3) float64, inliers (B, N) bool)."""
    n_pairs = src.shape[0]
    winner = pick_winners(scores, n_valid, confidence)
    found = winner >= 0
    h = np.full((n_pairs, 9), np.nan)
    h[found] = models[np.arange(n_pairs)[found], winner[found]]
    return _refine(src, dst, usable, h, found, threshold, refine)


def _refine(src: np.ndarray, dst: np.ndarray, usable: np.ndarray, h: np.ndarray, found: np.ndarray, threshold: float,
            refine: bool):
    """Step 4 (numpy, shared by every backend): the winners' models h float64 (B, 9) (NaN where not found) ->
    (H (B, 3, 3) float64, inliers (B, N) bool)."""
    n_pairs = src.shape[0]
    thr2 = float(threshold) ** 2
    s, d = src.astype(np.float64), dst.astype(np.float64)

    def inliers_of(h):
        m = _inlier_mask(h.reshape(n_pairs, 9), s[..., 0], s[..., 1], d[..., 0], d[..., 1], thr2) & usable
        return m & np.isfinite(h.reshape(n_pairs, 9)).all(axis=1)[:, None]

    h = np.where(found[:, None], h, np.nan).reshape(n_pairs, 3, 3)
    inl = inliers_of(h)
    if refine:
        for _ in range(2):
            candidate = refit_homographies(s, d, inl)
            cand_inl = inliers_of(candidate)
            better = found & np.isfinite(candidate).all(axis=(1, 2)) & (cand_inl.sum(1) >= inl.sum(1))
            h[better], inl[better] = candidate[better], cand_inl[better]
    return h, inl


def _usable(src, dst, valid):
    usable = np.isfinite(src).all(axis=-1) & np.isfinite(dst).all(axis=-1)
    return usable if valid is None else usable & valid


def _compact(src, dst, usable):
    order = np.argsort(~usable, axis=1, kind="stable")
    src_c = np.ascontiguousarray(np.take_along_axis(src, order[..., None], axis=1), dtype=np.float32)
    dst_c = np.ascontiguousarray(np.take_along_axis(dst, order[..., None], axis=1), dtype=np.float32)
    return src_c, dst_c, usable.sum(axis=1).astype(np.int32)


def find_homographies_reference(src, dst, valid=None, *, threshold: float = 3.0, max_iters: int = 512,
                                confidence: float = 0.995, seed: int = 0, refine: bool = True, keys=None):
    """Definition of find_homographies (numpy in, numpy out); see the module docstring."""
    _check_args(src, dst, valid, threshold, max_iters, confidence, seed)
    src, dst = np.asarray(src), np.asarray(dst)
    batched = src.ndim == 3
    if not batched:
        src, dst = src[None], dst[None]
        valid = None if valid is None else np.asarray(valid)[None]
        keys = None if keys is None else np.atleast_1d(np.asarray(keys))
    usable = _usable(src, dst, valid)
    src_c, dst_c, n_valid = _compact(src, dst, usable)
    scores, models = score_hypotheses_reference(src_c, dst_c, n_valid, _check_keys(keys, len(src)), int(max_iters),
                                                int(seed), float(threshold) ** 2)
    h, inl = _finish(src, dst, usable, scores, models, n_valid, threshold, confidence, refine)
    return (h, inl) if batched else (h[0], inl[0])


def score_hypotheses_host_twin(src_c, dst_c, n_valid, keys, n_hyp, seed, thr2):
    """Step 2 by the CUDA kernel's code run on the host (sparkle_fast._C.ransac_score_host)."""
    ext = extension()
    if ext is None:
        raise dispatch.BackendUnavailableError(f"{_OP}: sparkle_fast._C is not built; pip install -e . first")
    src_c, dst_c = np.ascontiguousarray(src_c, np.float32), np.ascontiguousarray(dst_c, np.float32)
    n_valid = np.ascontiguousarray(n_valid, np.int32)
    keys = np.ascontiguousarray(keys, np.uint32)
    scores = np.empty((src_c.shape[0], n_hyp), np.int32)
    models = np.empty((src_c.shape[0], n_hyp, 9), np.float64)
    ext.ransac_score_host(src_c.ctypes.data, dst_c.ctypes.data, n_valid.ctypes.data, keys.ctypes.data, src_c.shape[0],
                          src_c.shape[1], n_hyp, seed, thr2, scores.ctypes.data, models.ctypes.data)
    return scores, models


def score_hypotheses_cuda(src_c, dst_c, n_valid, keys, n_hyp, seed, thr2):
    """Step 2 on the GPU (csrc/ransac.cu): torch CUDA tensors src_c, dst_c float32 (B, N, 2) contiguous with the
    usable rows first, n_valid int32 (B,), keys int32 (B,) (the uint32 bits) -> device tensors scores int32
    (B, n_hyp) and models float64 (B, n_hyp, 9), equal bit for bit to score_hypotheses_reference."""
    import torch

    n_pairs, n_points = src_c.shape[:2]
    scores = torch.empty((n_pairs, n_hyp), dtype=torch.int32, device=src_c.device)
    models = torch.empty((n_pairs, n_hyp, 9), dtype=torch.float64, device=src_c.device)
    for start in range(0, n_pairs, 65535):  # grid.y limit
        stop = min(start + 65535, n_pairs)
        # keys travel with their pairs, so a chunk draws as the whole batch does
        cuda_kernels().ransac_score(src_c[start].data_ptr(), dst_c[start].data_ptr(), n_valid[start].data_ptr(),
                                    keys[start].data_ptr(), stop - start, n_points, n_hyp, seed, thr2,
                                    scores[start].data_ptr(), models[start].data_ptr(),
                                    dispatch.current_stream_handle(src_c))
    return scores, models


# --- steps 1 and 3 on the device (torch ops; the same code runs on CPU tensors in the tests) ------------------------

_FULL_TABLE_MAX_POINTS = 2048  # (N + 1)**2 int32 entries: 16.8 MB at this size


@functools.lru_cache(maxsize=16)
def _iteration_table_host(n_values: tuple[int, ...] | int, n_points: int, confidence: float,
                          max_iters: int) -> np.ndarray:
    """int32 (R, n_points + 1): row r, column best = ransac_iterations(best, n) for n = n_values[r] (every n in
    0..n_points when n_values is an int). The reference's own function, so the device selection is exact."""
    ns = np.arange(n_points + 1) if isinstance(n_values, int) else np.asarray(n_values)
    best = np.arange(n_points + 1, dtype=np.float64)[None, :]
    return ransac_iterations(best, ns[:, None].astype(np.float64), confidence, max_iters).astype(np.int32)


_DEVICE_TABLES: dict = {}


def iteration_rows(n_valid, n_points: int, confidence: float, max_iters: int):
    """(table int32 (R, n_points + 1) on n_valid's device, row int64 (B,) of each pair). Up to
    _FULL_TABLE_MAX_POINTS points per pair the table holds every n (cached per device and parameters, uploaded
    once: no data crosses); above that only the n present (one small copy of n_valid to the host)."""
    import torch

    device = n_valid.device
    if n_points <= _FULL_TABLE_MAX_POINTS:
        key = (n_points, float(confidence), int(max_iters), str(device))
        table = _DEVICE_TABLES.get(key)
        if table is None:
            if len(_DEVICE_TABLES) >= 16:
                _DEVICE_TABLES.clear()
            table = torch.from_numpy(_iteration_table_host(n_points, n_points, float(confidence),
                                                           int(max_iters))).to(device)
            _DEVICE_TABLES[key] = table
        return table, n_valid.long()
    present, rows = np.unique(n_valid.cpu().numpy(), return_inverse=True)
    table = _iteration_table_host(tuple(int(n) for n in present), n_points, float(confidence), int(max_iters))
    return torch.from_numpy(table).to(device), torch.from_numpy(rows.astype(np.int64)).to(device)


def usable_torch(src, dst, valid):
    """Step 1a on the device: bool (B, N), finite src and dst rows (and valid)."""
    import torch

    usable = torch.isfinite(src).all(dim=-1) & torch.isfinite(dst).all(dim=-1)
    return usable if valid is None else usable & valid


def compact_torch(src, dst, usable):
    """Step 1b on the device, equal to _compact: usable rows first in stable order -> (src_c, dst_c float32
    (B, N, 2) contiguous, n_valid int32 (B,))."""
    import torch

    order = torch.sort((~usable).to(torch.int32), dim=1, stable=True).indices
    index = order[..., None].expand(-1, -1, 2)
    return (torch.gather(src, 1, index).float().contiguous(), torch.gather(dst, 1, index).float().contiguous(),
            usable.sum(dim=1, dtype=torch.int32))


def pick_winners_torch(scores, table, rows):
    """Step 3 on the device, equal to pick_winners: scores int32 (B, H), the iteration table and each pair's row
    (iteration_rows) -> winner int64 (B,) (-1 when every sample was rejected or no sample had 4 inliers)."""
    import torch

    n_pairs, n_hyp = scores.shape
    best = torch.cummax(scores, dim=1).values.clamp(min=0).long()  # best < 4 (incl. -1): max_iters, as best = 0
    iters = table[rows[:, None], best]
    hyp = torch.arange(n_hyp, device=scores.device)
    done = (hyp[None, :] + 1) >= iters
    last = torch.where(done.any(dim=1), done.to(torch.uint8).argmax(dim=1), n_hyp - 1)  # argmax: the first
    masked = torch.where(hyp[None, :] <= last[:, None], scores, torch.full_like(scores, -2))
    winner = masked.argmax(dim=1)  # the first of the best (as numpy's argmax)
    return torch.where(masked.gather(1, winner[:, None])[:, 0] >= 4, winner, torch.full_like(winner, -1))


def _find_on_device(src, dst, valid, keys, threshold, max_iters, confidence, seed, refine):
    """Steps 1-3 on the device (torch tensors (B, N, 2) on a GPU), step 4 on the host from one copy of the points
    and the winners' models (no host compaction, no upload of points). Results equal the reference's."""
    import torch

    n_pairs, n_points = src.shape[:2]
    usable = usable_torch(src, dst, valid)
    src_c, dst_c, n_valid = compact_torch(src, dst, usable)
    # torch has no uint32 arithmetic everywhere; the kernel reads the same 4 bytes as int32
    key_bits = torch.from_numpy(_check_keys(keys, n_pairs).view(np.int32)).to(src.device)
    scores, models = score_hypotheses_cuda(src_c, dst_c, n_valid, key_bits, int(max_iters), int(seed),
                                           float(threshold) ** 2)
    table, rows = iteration_rows(n_valid, n_points, confidence, max_iters)
    winner = pick_winners_torch(scores, table, rows)
    found = winner >= 0
    h = models[torch.arange(n_pairs, device=src.device), winner.clamp(min=0)]
    # one device -> host copy: points, usable rows, the winners' models and whether each pair has one
    payload = torch.cat([src.reshape(n_pairs, -1).double(), dst.reshape(n_pairs, -1).double(), usable.double(), h,
                         found.double()[:, None]], dim=1).cpu().numpy()
    cut = np.cumsum([2 * n_points, 2 * n_points, n_points, 9])
    h_src, h_dst, h_usable, h_models, h_found = np.split(payload, cut, axis=1)
    return _refine(h_src.reshape(n_pairs, n_points, 2), h_dst.reshape(n_pairs, n_points, 2), h_usable != 0,
                   h_models, h_found[:, 0] != 0, threshold, refine)


def find_homographies(src: Any, dst: Any, valid: Any = None, *, threshold: float = 3.0, max_iters: int = 512,
                      confidence: float = 0.995, seed: int = 0, refine: bool = True, keys: Any = None,
                      backend: str | None = "auto"):
    """Batched RANSAC homographies src -> dst; see the module docstring. Returns (homographies float64 (B, 3, 3),
    inliers bool (B, N)) as the caller's array kind and device (no B for unbatched input)."""
    _check_args(src, dst, valid, threshold, max_iters, confidence, seed)
    kind = dispatch.array_kind(src, "src", _OP)
    chosen = dispatch.resolve_backend(backend, kind, _OP, GPU_PREFERENCE)
    if chosen == "reference":
        host = [None if a is None else dispatch.to_numpy(a, dispatch.array_kind(a, name, _OP))
                for a, name in ((src, "src"), (dst, "dst"), (valid, "valid"))]
        result = find_homographies_reference(*host, threshold=threshold, max_iters=max_iters,
                                             confidence=confidence, seed=seed, refine=refine, keys=keys)
        return tuple(dispatch.from_numpy(r, kind, like=src) for r in result)

    t_src, t_dst = (dispatch.to_torch(a, dispatch.array_kind(a, name, _OP)) for a, name in ((src, "src"), (dst, "dst")))
    t_valid = None if valid is None else dispatch.to_torch(valid, dispatch.array_kind(valid, "valid", _OP))
    for name, t in (("dst", t_dst), ("valid", t_valid)):
        if t is not None and t.device != t_src.device:
            raise ValueError(f"{_OP}: {name} must be on src's device {t_src.device}, got {t.device}")
    batched = t_src.ndim == 3
    if not batched:
        t_src, t_dst = t_src[None], t_dst[None]
        t_valid = None if t_valid is None else t_valid[None]
        keys = None if keys is None else np.atleast_1d(np.asarray(keys.cpu() if hasattr(keys, "cpu") else keys))
    with dispatch.on_device_of(t_src, kind):
        h, inl = _find_on_device(t_src, t_dst, t_valid, keys, threshold, max_iters, confidence, seed, refine)
    if not batched:
        h, inl = h[0], inl[0]
    return dispatch.from_numpy(h, kind, like=src), dispatch.from_numpy(inl, kind, like=src)
