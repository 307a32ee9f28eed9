"""Triton kernels for mask augmentation: square dilation, per-frame bounding boxes and convex-polygon filling.

Dilation by k with a (2k+1) x (2k+1) square is separable: a max over 2k+1 columns, then over 2k+1 rows. Pixels
outside the frame count as background (cv2.dilate's default border). Each pass reads 2k+1 L1-cached neighbours per
pixel and writes one byte.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sparkle_fast.kernels._launch import launch, pick, register

_BLOCK_GPU = 1024
_BLOCK_INTERPRETER = 1 << 16


def _block() -> int:
    return pick(_BLOCK_GPU, _BLOCK_INTERPRETER)


@triton.jit
def dilate_pass_kernel(src_ptr, dst_ptr, n_pixels, H, W, k, ALONG_ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """dst[t, r, c] = 1 if any src[t, r, c + d] (ALONG_ROWS: src[t, r + d, c]) is nonzero for |d| <= k, else 0.
    src, dst: contiguous uint8 (T, H, W) flattened."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = idx < n_pixels
    col = idx % W
    row = (idx // W) % H
    hit = tl.zeros((BLOCK,), dtype=tl.int32)
    for d in range(-k, k + 1):
        if ALONG_ROWS:
            ok = inside & (row + d >= 0) & (row + d < H)
            v = tl.load(src_ptr + idx + d * W, mask=ok, other=0)
        else:
            ok = inside & (col + d >= 0) & (col + d < W)
            v = tl.load(src_ptr + idx + d, mask=ok, other=0)
        hit = hit | (v != 0).to(tl.int32)
    tl.store(dst_ptr + idx, hit.to(tl.uint8), mask=inside)


def dilate(mask: torch.Tensor, k: int, out: torch.Tensor) -> torch.Tensor:
    """mask: contiguous uint8 (T, H, W) (nonzero = foreground); out: contiguous uint8 (T, H, W) of 0/1."""
    n = mask.numel()
    if n == 0:
        return out
    H, W = int(mask.shape[1]), int(mask.shape[2])
    block = _block()
    grid = (triton.cdiv(n, block),)
    tmp = torch.empty_like(out)
    launch(dilate_pass_kernel, grid, mask, tmp, n, H, W, int(k), ALONG_ROWS=False, BLOCK=block, num_warps=4)
    launch(dilate_pass_kernel, grid, tmp, out, n, H, W, int(k), ALONG_ROWS=True, BLOCK=block, num_warps=4)
    return out


def bounding_boxes(mask: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Per-frame filled bounding box of the foreground: mask uint8 (T, H, W) -> out uint8 (T, H, W) of 0/1.
    Two reductions and one broadcast compare in torch on the mask's device (memory-bound; no custom kernel needed)."""
    T, H, W = (int(d) for d in mask.shape)
    if T * H * W == 0:
        return out
    fg = mask != 0
    rows_hit, cols_hit = fg.any(dim=2), fg.any(dim=1)  # (T, H), (T, W)
    r = torch.arange(H, device=mask.device)
    c = torch.arange(W, device=mask.device)
    big = max(H, W) + 1
    r0 = torch.where(rows_hit, r, big).amin(dim=1)
    r1 = torch.where(rows_hit, r, -1).amax(dim=1)
    c0 = torch.where(cols_hit, c, big).amin(dim=1)
    c1 = torch.where(cols_hit, c, -1).amax(dim=1)
    in_rows = (r[None, :] >= r0[:, None]) & (r[None, :] <= r1[:, None])
    in_cols = (c[None, :] >= c0[:, None]) & (c[None, :] <= c1[:, None])
    out.copy_((in_rows[:, :, None] & in_cols[:, None, :]).to(torch.uint8))
    return out


@triton.jit
def fill_polygons_kernel(vertices_ptr, counts_ptr, out_ptr, H, W, n_vertices, BLOCK: tl.constexpr):
    """out[t] = 1 where the pixel centre is on the inner side (cross >= 0) of every edge of frame t's polygon and
    inside the bounding box of its vertices. vertices: int32 (T, n_vertices, 2) (x, y), counts: int32 (T,)."""
    t = tl.program_id(1)
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_frame = idx < H * W
    x = (idx % W).to(tl.int64)
    y = (idx // W).to(tl.int64)
    n = tl.load(counts_ptr + t)
    inside = in_frame & (n > 0)
    x_min = tl.full((BLOCK,), 1 << 30, tl.int64)
    y_min = tl.full((BLOCK,), 1 << 30, tl.int64)
    x_max = tl.full((BLOCK,), -1, tl.int64)
    y_max = tl.full((BLOCK,), -1, tl.int64)
    base = vertices_ptr + t * n_vertices * 2
    for e in range(0, n_vertices):
        live = e < n
        nxt = tl.where(live, (e + 1) % tl.maximum(n, 1), 0)
        ax = tl.load(base + e * 2).to(tl.int64)
        ay = tl.load(base + e * 2 + 1).to(tl.int64)
        bx = tl.load(base + nxt * 2).to(tl.int64)
        by = tl.load(base + nxt * 2 + 1).to(tl.int64)
        cross = (bx - ax) * (y - ay) - (by - ay) * (x - ax)
        inside = inside & ((cross >= 0) | (e >= n))
        x_min = tl.where(live, tl.minimum(x_min, ax), x_min)
        x_max = tl.where(live, tl.maximum(x_max, ax), x_max)
        y_min = tl.where(live, tl.minimum(y_min, ay), y_min)
        y_max = tl.where(live, tl.maximum(y_max, ay), y_max)
    inside = inside & (x >= x_min) & (x <= x_max) & (y >= y_min) & (y <= y_max)
    tl.store(out_ptr + t.to(tl.int64) * H * W + idx, inside.to(tl.uint8), mask=in_frame)


def fill_polygons(vertices: torch.Tensor, counts: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """vertices: int32 (T, V, 2) per-frame convex polygons (inside = cross >= 0), counts: int32 (T,) vertices used;
    out: contiguous uint8 (T, H, W), written with 0/1."""
    T, H, W = (int(d) for d in out.shape)
    if T * H * W == 0:
        return out
    block = _block()
    grid = (triton.cdiv(H * W, block), T)
    launch(fill_polygons_kernel, grid, vertices.contiguous(), counts.contiguous(), out, H, W, int(vertices.shape[1]),
           BLOCK=block, num_warps=4)
    return out


# Every variant the GPU launches (compiled ahead of time by sparkle_fast.kernels.aot).
register(dilate_pass_kernel, dict(src_ptr="*u8", dst_ptr="*u8", n_pixels="i32", H="i32", W="i32", k="i32"),
         [dict(ALONG_ROWS=rows, BLOCK=_BLOCK_GPU) for rows in (False, True)], sizes=("BLOCK",))
register(fill_polygons_kernel, dict(vertices_ptr="*i32", counts_ptr="*i32", out_ptr="*u8", H="i32", W="i32",
                                    n_vertices="i32"), [dict(BLOCK=_BLOCK_GPU)], sizes=("BLOCK",))
