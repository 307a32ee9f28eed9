"""Triton kernel for one pyramid level of pyramidal Lucas-Kanade, with OpenCV's calcOpticalFlowPyrLK arithmetic.

Each program tracks BLOCK_P points; a point's 21x21 window is one row of a (BLOCK_P, WIN_PAD) tile (WIN_PAD = the
window area rounded up to a power of two, masked). Per point and level, as OpenCV's LKTrackerInvoker does:
  1. I, Ix, Iy over the window around the previous point, bilinearly interpolated with 14-bit fixed-point weights
     (I scaled by 32 as OpenCV keeps it; Ix, Iy are raw Scharr values), the 2x2 structure matrix and its smallest
     eigenvalue (rejected below min_eig: status false at level 0);
  2. up to max_iters Gauss-Newton steps on the next image J: b = sum((J - I) * grad I), delta = A^-1 b, stopping on
     |delta|^2 <= eps2 or on an oscillation (delta ~ -previous delta: step back half and stop);
  3. at level 0, the error = mean |J - I| over the window at the final point.
Images are read with reflect-101 borders (OpenCV pads its pyramid that way) and derivatives with zero borders (as
OpenCV's copyMakeBorder(BORDER_CONSTANT) of the derivative image). Points outside [-win, size) fail, like OpenCV.
The host side (sparkle_fast.ops.optical_flow) builds the pyramids with torch and launches one kernel per level.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sparkle_fast.kernels._launch import launch, pick, register

# GPU: 2 points per program (1024 window pixels, 8 per thread with 4 warps). Interpreter: one big program.
_BLOCK_P_GPU = 2
_BLOCK_P_INTERPRETER = 64

# OpenCV's fixed-point constants, written as literals inside the kernels: a module global annotated `tl.constexpr`
# runs under the interpreter but the GPU compiler refuses it, and `tl.constexpr(14)` compiles but breaks the
# interpreter. W_BITS = 14: bilinear weights sum to 2**14 (16384.0); I is kept scaled by 2**5 (descale by 2**9 with
# rounding offset 2**8); derivatives are descaled by 2**14. FLT_SCALE = 2**-20 (1 / 1048576) scales the sums of
# products.


@triton.jit
def _reflect101(i, n):
    i = tl.where(i < 0, -i, i)
    i = tl.where(i >= n, 2 * n - 2 - i, i)
    return tl.minimum(tl.maximum(i, 0), n - 1)  # images narrower than the overshoot: clamp after one reflection


@triton.jit
def _weights(fx, fy):
    """OpenCV's fixed-point bilinear weights (sum exactly 2**14), as float32."""
    one = 16384.0  # 2**W_BITS
    w00 = tl.floor((1.0 - fx) * (1.0 - fy) * one + 0.5)
    w01 = tl.floor(fx * (1.0 - fy) * one + 0.5)
    w10 = tl.floor((1.0 - fx) * fy * one + 0.5)
    w11 = one - w00 - w01 - w10
    return w00, w01, w10, w11


@triton.jit
def _gather_image(base, xs, ys, width, height, w00, w01, w10, w11, mask):
    """Bilinear sample of a uint8-valued float image, reflect-101 border, descaled by W_BITS - 5 (I * 32)."""
    x0 = _reflect101(xs, width)
    x1 = _reflect101(xs + 1, width)
    y0 = _reflect101(ys, height) * width
    y1 = _reflect101(ys + 1, height) * width
    s = (tl.load(base + y0 + x0, mask=mask, other=0.0) * w00 + tl.load(base + y0 + x1, mask=mask, other=0.0) * w01
         + tl.load(base + y1 + x0, mask=mask, other=0.0) * w10 + tl.load(base + y1 + x1, mask=mask, other=0.0) * w11)
    return tl.floor((s + 256.0) * (1.0 / 512.0))  # (s + 2**(W_BITS-6)) / 2**(W_BITS-5), exact: s < 2**24


@triton.jit
def _gather_deriv(base, xs, ys, width, height, w00, w01, w10, w11, mask):
    """Bilinear sample of a Scharr derivative, zero outside the image, descaled by W_BITS (rounded)."""
    in_x0 = (xs >= 0) & (xs < width)
    in_x1 = (xs + 1 >= 0) & (xs + 1 < width)
    in_y0 = (ys >= 0) & (ys < height)
    in_y1 = (ys + 1 >= 0) & (ys + 1 < height)
    s = (tl.load(base + ys * width + xs, mask=mask & in_x0 & in_y0, other=0.0) * w00
         + tl.load(base + ys * width + xs + 1, mask=mask & in_x1 & in_y0, other=0.0) * w01
         + tl.load(base + (ys + 1) * width + xs, mask=mask & in_x0 & in_y1, other=0.0) * w10
         + tl.load(base + (ys + 1) * width + xs + 1, mask=mask & in_x1 & in_y1, other=0.0) * w11)
    return tl.floor(s * (1.0 / 16384.0) + 0.5)  # / 2**W_BITS, rounded


@triton.jit
def lk_level_kernel(prev_ptr, next_ptr, dx_ptr, dy_ptr, points_ptr, next_pts_ptr, status_ptr, err_ptr,
                    n_points_total, n_per_pair, height, width, scale, max_iters, eps2, min_eig,
                    WIN: tl.constexpr, WIN_PAD: tl.constexpr, BLOCK_P: tl.constexpr, IS_TOP: tl.constexpr,
                    IS_BOTTOM: tl.constexpr):
    """One level. prev/next/dx/dy: float32 (B, height, width) of this level; points: float32 (P, 2) at level 0;
    next_pts: float32 (P, 2) in this level's coordinates (in from the level above, out for the level below, or the
    result at level 0; at the top level the start guesses, in level-0 coordinates); status: int8 (P,), 1 on entry;
    err: float32 (P,), written at level 0."""
    pid = tl.program_id(0)
    p = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = p < n_points_total
    pair = (p // n_per_pair).to(tl.int64)
    plane = pair * height * width

    half = (WIN - 1) * 0.5
    prev_x = tl.load(points_ptr + 2 * p, mask=pmask, other=0.0) * scale
    prev_y = tl.load(points_ptr + 2 * p + 1, mask=pmask, other=0.0) * scale
    if IS_TOP:  # next_pts holds the start guesses at level 0 (the points themselves, or OpenCV's initial flow)
        nx = tl.load(next_pts_ptr + 2 * p, mask=pmask, other=0.0) * scale
        ny = tl.load(next_pts_ptr + 2 * p + 1, mask=pmask, other=0.0) * scale
    else:
        nx = tl.load(next_pts_ptr + 2 * p, mask=pmask, other=0.0) * 2.0
        ny = tl.load(next_pts_ptr + 2 * p + 1, mask=pmask, other=0.0) * 2.0
    status = tl.load(status_ptr + p, mask=pmask, other=0)

    prev_x -= half
    prev_y -= half
    ipx = tl.floor(prev_x)
    ipy = tl.floor(prev_y)
    # NaN points fail every comparison, hence this positive form.
    inside = (ipx >= -WIN) & (ipx < width) & (ipy >= -WIN) & (ipy < height)

    w = tl.arange(0, WIN_PAD)
    wmask = w < WIN * WIN
    tile_mask = pmask[:, None] & wmask[None, :] & inside[:, None]
    ipx_i = tl.where(inside, ipx, 0.0).to(tl.int32)
    ipy_i = tl.where(inside, ipy, 0.0).to(tl.int32)
    xs = ipx_i[:, None] + (w % WIN)[None, :]
    ys = ipy_i[:, None] + (w // WIN)[None, :]
    w00, w01, w10, w11 = _weights(prev_x - ipx, prev_y - ipy)
    w00, w01, w10, w11 = w00[:, None], w01[:, None], w10[:, None], w11[:, None]
    ival = _gather_image(prev_ptr + plane[:, None], xs, ys, width, height, w00, w01, w10, w11, tile_mask)
    ix = _gather_deriv(dx_ptr + plane[:, None], xs, ys, width, height, w00, w01, w10, w11, tile_mask)
    iy = _gather_deriv(dy_ptr + plane[:, None], xs, ys, width, height, w00, w01, w10, w11, tile_mask)
    ival = tl.where(tile_mask, ival, 0.0)
    ix = tl.where(tile_mask, ix, 0.0)
    iy = tl.where(tile_mask, iy, 0.0)

    a11 = tl.sum(ix * ix, axis=1) * (1.0 / 1048576.0)
    a12 = tl.sum(ix * iy, axis=1) * (1.0 / 1048576.0)
    a22 = tl.sum(iy * iy, axis=1) * (1.0 / 1048576.0)
    det = a11 * a22 - a12 * a12
    min_eig_value = (a22 + a11 - tl.sqrt((a11 - a22) * (a11 - a22) + 4.0 * a12 * a12)) / (2.0 * WIN * WIN)
    trackable = inside & (min_eig_value >= min_eig) & (det >= 1.1920929e-07)
    if IS_BOTTOM:
        status = tl.where(trackable, status, 0)
    inv_det = 1.0 / tl.where(trackable, det, 1.0)

    tl.store(next_pts_ptr + 2 * p, nx, mask=pmask)  # OpenCV stores the level's start point before any check
    tl.store(next_pts_ptr + 2 * p + 1, ny, mask=pmask)
    nx -= half
    ny -= half
    active = pmask & trackable
    prev_dx = tl.zeros((BLOCK_P,), dtype=tl.float32)
    prev_dy = tl.zeros((BLOCK_P,), dtype=tl.float32)
    for j in range(max_iters):
        inx = tl.floor(nx)
        iny = tl.floor(ny)
        in_bounds = (inx >= -WIN) & (inx < width) & (iny >= -WIN) & (iny < height)
        if IS_BOTTOM:
            status = tl.where(active & ~in_bounds, 0, status)
        active = active & in_bounds
        jmask = tile_mask & active[:, None]
        v00, v01, v10, v11 = _weights(nx - inx, ny - iny)
        jx = tl.where(active, inx, 0.0).to(tl.int32)[:, None] + (w % WIN)[None, :]
        jy = tl.where(active, iny, 0.0).to(tl.int32)[:, None] + (w // WIN)[None, :]
        jval = _gather_image(next_ptr + plane[:, None], jx, jy, width, height, v00[:, None], v01[:, None],
                             v10[:, None], v11[:, None], jmask)
        diff = tl.where(jmask, jval - ival, 0.0)
        b1 = tl.sum(diff * ix, axis=1) * (1.0 / 1048576.0)
        b2 = tl.sum(diff * iy, axis=1) * (1.0 / 1048576.0)
        step_x = (a12 * b2 - a22 * b1) * inv_det
        step_y = (a12 * b1 - a11 * b2) * inv_det
        nx = tl.where(active, nx + step_x, nx)
        ny = tl.where(active, ny + step_y, ny)
        converged = step_x * step_x + step_y * step_y <= eps2
        oscillating = (j > 0) & (tl.abs(step_x + prev_dx) < 0.01) & (tl.abs(step_y + prev_dy) < 0.01) & ~converged
        nx = tl.where(active & oscillating, nx - step_x * 0.5, nx)
        ny = tl.where(active & oscillating, ny - step_y * 0.5, ny)
        active = active & ~converged & ~oscillating
        prev_dx = step_x
        prev_dy = step_y

    if IS_BOTTOM:
        inx = tl.floor(nx)
        iny = tl.floor(ny)
        in_bounds = (inx >= -WIN) & (inx < width) & (iny >= -WIN) & (iny < height)
        status = tl.where(in_bounds, status, 0)
        ok = pmask & (status != 0)
        v00, v01, v10, v11 = _weights(nx - inx, ny - iny)
        jx = tl.where(ok, inx, 0.0).to(tl.int32)[:, None] + (w % WIN)[None, :]
        jy = tl.where(ok, iny, 0.0).to(tl.int32)[:, None] + (w // WIN)[None, :]
        emask = tile_mask & ok[:, None]
        jval = _gather_image(next_ptr + plane[:, None], jx, jy, width, height, v00[:, None], v01[:, None],
                             v10[:, None], v11[:, None], emask)
        err = tl.sum(tl.where(emask, tl.abs(jval - ival), 0.0), axis=1) * (1.0 / (32.0 * WIN * WIN))
        tl.store(err_ptr + p, tl.where(ok, err, 0.0), mask=pmask)
        tl.store(status_ptr + p, status, mask=pmask)
    tl.store(next_pts_ptr + 2 * p, nx + half, mask=pmask)
    tl.store(next_pts_ptr + 2 * p + 1, ny + half, mask=pmask)


def track_level(prev: torch.Tensor, nxt: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, points: torch.Tensor,
                next_pts: torch.Tensor, status: torch.Tensor, err: torch.Tensor, n_per_pair: int, level: int,
                is_top: bool, window: int, max_iters: int, eps2: float, min_eig: float) -> None:
    """Launch one level. Images float32 contiguous (B, h, w); points/next_pts float32 (P, 2); status int8 (P,);
    err float32 (P,). Updates next_pts, status and err in place."""
    n_total = points.shape[0]
    if n_total == 0:
        return
    block_p = pick(_BLOCK_P_GPU, _BLOCK_P_INTERPRETER)
    win_pad = triton.next_power_of_2(window * window)
    height, width = int(prev.shape[1]), int(prev.shape[2])
    grid = (triton.cdiv(n_total, block_p),)
    launch(lk_level_kernel, grid, prev, nxt, dx, dy, points, next_pts, status, err, int(n_total), int(n_per_pair),
           height, width, 1.0 / (1 << level), int(max_iters), float(eps2), float(min_eig), WIN=int(window),
           WIN_PAD=win_pad, BLOCK_P=block_p, IS_TOP=bool(is_top), IS_BOTTOM=level == 0, num_warps=4)


# Every variant the GPU launches (compiled ahead of time by sparkle_fast.kernels.aot): the windows the project uses
# (21: track_points' default and the camera filter's; 15: metrics.bg_motion's), at the top level, the bottom level,
# both (images too small for a pyramid) and neither. Another window compiles on its first launch.
TRACKED_WINDOWS = (15, 21)
register(lk_level_kernel,
         dict(prev_ptr="*fp32", next_ptr="*fp32", dx_ptr="*fp32", dy_ptr="*fp32", points_ptr="*fp32",
              next_pts_ptr="*fp32", status_ptr="*i8", err_ptr="*fp32", n_points_total="i32", n_per_pair="i32",
              height="i32", width="i32", scale="fp32", max_iters="i32", eps2="fp32", min_eig="fp32"),
         [dict(WIN=win, WIN_PAD=triton.next_power_of_2(win * win), BLOCK_P=_BLOCK_P_GPU, IS_TOP=top, IS_BOTTOM=bottom)
          for win in TRACKED_WINDOWS for top in (False, True) for bottom in (False, True)],
         sizes=("BLOCK_P",))
