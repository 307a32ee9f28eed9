"""Triton kernels for OpenCV-exact Canny (aperture 3, L1 gradient) over batches of frames.

Two phases, both on the device, no host round trip in between:

1. `canny_nms_kernel` (one 2-D tile of one frame per program): gray (from RGB on the fly, OpenCV's 15-bit weights),
   3x3 Sobel with replicated borders, L1 magnitude, OpenCV's sector test with tan(22.5 deg) in Q15 fixed point,
   non-maximum suppression with OpenCV's tie rules, double threshold. Writes a state map (0 none, 1 weak, 2 strong)
   and initialises the union-find label of every candidate (weak or strong) pixel to its own index. The magnitudes
   of the two neighbours along the gradient are recomputed from gray by gathers (L1-cached), so nothing but the
   state map reaches global memory.

2. Hysteresis as connected components: a weak pixel is an edge iff it is 8-connected through candidates to a strong
   pixel, i.e. iff its 8-connected component of candidates contains a strong pixel. Union-find with atomic_min
   links (Playne & Hawick's lock-free union; links always point to smaller indices, so it terminates and the
   result does not depend on the order of the atomics):
     canny_merge_kernel     union every candidate with its candidate neighbours W, NW, N, NE (within its frame)
     canny_resolve_kernel   compress every candidate's label to its root; strong pixels set ROOT_STRONG on the root
     canny_output_kernel    255 where the candidate's root is flagged, else 0
   A fixed number of launches, whatever the edge lengths: no "changed" flag and no iteration count to guess.

Labels are int32 indices into the batch (frame * H * W + row * W + col); bit 30 marks a strong root, so a batch
must have fewer than 2**30 pixels (the op splits larger batches along frames).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sparkle_fast.kernels._launch import launch, pick, register

ROOT_STRONG = 1 << 30
MAX_BATCH_PIXELS = ROOT_STRONG - 1

# tan(22.5 deg) in Q15, rounded as OpenCV does: int(0.41421356 * 2**15 + 0.5) = 13573.
TG22_Q15 = 13573

# GPU: 16x64 tiles (8 pixels per thread with 4 warps); interpreter: few large programs (~0.5 ms each).
_TILE_GPU = (16, 64)
_TILE_INTERPRETER = (64, 256)
_BLOCK_GPU = 1024
_BLOCK_INTERPRETER = 1 << 16


@triton.jit
def _gray_at(src_ptr, rows, cols, H, W, s_h, s_w, s_c, IS_RGB: tl.constexpr):
    """Gray value (int32) at (rows, cols) with coordinates clamped into the frame (BORDER_REPLICATE).
    src_ptr points at the frame; RGB is converted like cv2.COLOR_RGB2GRAY: (9798 R + 19235 G + 3735 B + 2**14) >> 15."""
    r = tl.minimum(tl.maximum(rows, 0), H - 1)
    c = tl.minimum(tl.maximum(cols, 0), W - 1)
    ptr = src_ptr + r.to(tl.int64) * s_h + c.to(tl.int64) * s_w
    if IS_RGB:
        red = tl.load(ptr).to(tl.int32)
        green = tl.load(ptr + s_c).to(tl.int32)
        blue = tl.load(ptr + 2 * s_c).to(tl.int32)
        return (red * 9798 + green * 19235 + blue * 3735 + 16384) >> 15
    else:
        return tl.load(ptr).to(tl.int32)


@triton.jit
def _sobel(src_ptr, rows, cols, H, W, s_h, s_w, s_c, IS_RGB: tl.constexpr):
    """(dx, dy) of the 3x3 Sobel at (rows, cols), borders replicated (cv2.Sobel(..., BORDER_REPLICATE))."""
    a = _gray_at(src_ptr, rows - 1, cols - 1, H, W, s_h, s_w, s_c, IS_RGB)
    b = _gray_at(src_ptr, rows - 1, cols, H, W, s_h, s_w, s_c, IS_RGB)
    c = _gray_at(src_ptr, rows - 1, cols + 1, H, W, s_h, s_w, s_c, IS_RGB)
    d = _gray_at(src_ptr, rows, cols - 1, H, W, s_h, s_w, s_c, IS_RGB)
    f = _gray_at(src_ptr, rows, cols + 1, H, W, s_h, s_w, s_c, IS_RGB)
    g = _gray_at(src_ptr, rows + 1, cols - 1, H, W, s_h, s_w, s_c, IS_RGB)
    h = _gray_at(src_ptr, rows + 1, cols, H, W, s_h, s_w, s_c, IS_RGB)
    i = _gray_at(src_ptr, rows + 1, cols + 1, H, W, s_h, s_w, s_c, IS_RGB)
    dx = (c - a) + 2 * (f - d) + (i - g)
    dy = (g - a) + 2 * (h - b) + (i - c)
    return dx, dy


@triton.jit
def _magnitude_at(src_ptr, rows, cols, H, W, s_h, s_w, s_c, IS_RGB: tl.constexpr):
    """L1 gradient magnitude at (rows, cols); 0 outside the frame (OpenCV's NMS pads the magnitude with zeros)."""
    dx, dy = _sobel(src_ptr, rows, cols, H, W, s_h, s_w, s_c, IS_RGB)
    inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
    return tl.where(inside, tl.abs(dx) + tl.abs(dy), 0)


@triton.jit
def canny_nms_kernel(src_ptr, state_ptr, label_ptr, H, W, s_t, s_h, s_w, s_c, low, high, state_frame_offset,
                     IS_RGB: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
    """Program (frame t, tile row, tile col). src: uint8 frames with strides (s_t, s_h, s_w[, s_c]) in elements.
    state: uint8 (frames, H, W) contiguous, written from frame `state_frame_offset`; label: int32, same indexing.
    low/high: OpenCV's integer thresholds (floored, low <= high)."""
    t = tl.program_id(0)
    rows = tl.program_id(1) * BH + tl.arange(0, BH)[:, None]
    cols = tl.program_id(2) * BW + tl.arange(0, BW)[None, :]
    inside = (rows < H) & (cols < W)
    frame = src_ptr + t.to(tl.int64) * s_t

    dx, dy = _sobel(frame, rows, cols, H, W, s_h, s_w, s_c, IS_RGB)
    mag = tl.abs(dx) + tl.abs(dy)
    # OpenCV only looks at pixels above the low threshold; the gathers below are masked to them.
    check = inside & (mag > low)

    # Sector of the gradient, exactly as OpenCV: y = |dy| << 15 against |dx| * tan(22.5) and |dx| * tan(67.5)
    # (tan(67.5) = tan(22.5) + 2, hence the + (|dx| << 16)).
    ax = tl.abs(dx)
    ay = tl.abs(dy) << 15
    tg22 = ax * 13573
    tg67 = tg22 + (ax << 16)
    horizontal = ay < tg22
    vertical = (ay > tg67) & (~horizontal)
    diagonal = (~horizontal) & (~vertical)
    # Neighbour offsets along the gradient: the "before" neighbour is at (-dr, -dc), the "after" one at (+dr, +dc).
    # horizontal: (0, 1); vertical: (1, 0); diagonal: (1, s) with s = -1 when dx and dy have opposite signs.
    s = tl.where((dx ^ dy) < 0, -1, 1)
    dr = tl.where(horizontal, 0, 1)
    dc = tl.where(horizontal, 1, tl.where(vertical, 0, s))

    rows_b = rows - dr
    cols_b = cols - dc
    rows_a = rows + dr
    cols_a = cols + dc
    mag_before = _magnitude_at(frame, rows_b, cols_b, H, W, s_h, s_w, s_c, IS_RGB)
    mag_after = _magnitude_at(frame, rows_a, cols_a, H, W, s_h, s_w, s_c, IS_RGB)
    # Tie rule: strictly greater than the "before" neighbour; greater or equal to the "after" one, except on
    # diagonals, where OpenCV is strict on both sides.
    keep = check & (mag > mag_before) & ((mag > mag_after) | ((mag == mag_after) & (~diagonal)))

    state = tl.where(keep, tl.where(mag > high, 2, 1), 0).to(tl.uint8)
    index = (state_frame_offset + t).to(tl.int64) * H * W + rows * W + cols
    tl.store(state_ptr + index, state, mask=inside)
    tl.store(label_ptr + index, index.to(tl.int32), mask=keep)


@triton.jit
def _find(label_ptr, x, active):
    """Root of x for the active lanes (labels may carry the ROOT_STRONG bit, which is masked off)."""
    parent = tl.load(label_ptr + x, mask=active, other=0, volatile=True) & 0x3FFFFFFF
    walking = active & (parent != x)
    while tl.max(walking.to(tl.int32), axis=0) > 0:
        x = tl.where(walking, parent, x)
        parent = tl.load(label_ptr + x, mask=walking, other=0, volatile=True) & 0x3FFFFFFF
        walking = walking & (parent != x)
    return x


@triton.jit
def _union(label_ptr, a, b, active):
    """Link the trees of a and b (lanes where active): the larger root gets the smaller as parent, by atomic_min;
    when another lane changed that root first, retry from the value the atomic returned."""
    todo = active
    while tl.max(todo.to(tl.int32), axis=0) > 0:
        a = _find(label_ptr, a, todo)
        b = _find(label_ptr, b, todo)
        todo = todo & (a != b)
        lo = tl.minimum(a, b)
        hi = tl.maximum(a, b)
        old = tl.atomic_min(label_ptr + hi, lo, mask=todo)
        old = old & 0x3FFFFFFF
        todo = todo & (old != hi)
        a = lo
        b = old


@triton.jit
def canny_merge_kernel(state_ptr, label_ptr, n_pixels, H, W, BLOCK: tl.constexpr):
    """Union each candidate with its candidate neighbours to the W, NW, N and NE (8-connectivity, within a frame)."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = idx < n_pixels
    cand = inside & (tl.load(state_ptr + idx, mask=inside, other=0) != 0)
    col = idx % W
    row = (idx // W) % H
    has_w = cand & (col > 0)
    has_n = cand & (row > 0)
    has_e = cand & (col < W - 1)
    n_w = has_w & (tl.load(state_ptr + idx - 1, mask=has_w, other=0) != 0)
    n_nw = has_n & has_w & (tl.load(state_ptr + idx - W - 1, mask=has_n & has_w, other=0) != 0)
    n_n = has_n & (tl.load(state_ptr + idx - W, mask=has_n, other=0) != 0)
    n_ne = has_n & has_e & (tl.load(state_ptr + idx - W + 1, mask=has_n & has_e, other=0) != 0)
    _union(label_ptr, idx, idx - 1, n_w)
    _union(label_ptr, idx, idx - W - 1, n_nw)
    _union(label_ptr, idx, idx - W, n_n)
    _union(label_ptr, idx, idx - W + 1, n_ne)


@triton.jit
def canny_resolve_kernel(state_ptr, label_ptr, n_pixels, BLOCK: tl.constexpr):
    """Point every candidate straight at its root; strong pixels flag their root with ROOT_STRONG. A root's own
    label is only ever changed by atomic_or, so flags set by other lanes are never overwritten."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = idx < n_pixels
    state = tl.load(state_ptr + idx, mask=inside, other=0)
    cand = inside & (state != 0)
    root = _find(label_ptr, idx, cand)
    tl.store(label_ptr + idx, root, mask=cand & (root != idx))
    tl.atomic_or(label_ptr + root, 1 << 30, mask=cand & (state == 2))


@triton.jit
def _edge_of(state_ptr, label_ptr, idx, inside):
    """True where pixel idx is an edge after hysteresis (needs canny_resolve_kernel to have run)."""
    cand = inside & (tl.load(state_ptr + idx, mask=inside, other=0) != 0)
    root = tl.load(label_ptr + idx, mask=cand, other=0) & 0x3FFFFFFF
    flagged = (tl.load(label_ptr + root, mask=cand, other=0) >> 30) & 1
    return cand & (flagged != 0)


@triton.jit
def canny_output_kernel(state_ptr, label_ptr, out_ptr, n_pixels, BLOCK: tl.constexpr):
    """out: uint8 (n_pixels,) 255 on edges, 0 elsewhere."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = idx < n_pixels
    edge = _edge_of(state_ptr, label_ptr, idx, inside)
    tl.store(out_ptr + idx, tl.where(edge, 255, 0).to(tl.uint8), mask=inside)


@triton.jit
def rgb_to_gray_kernel(src_ptr, out_ptr, n_pixels, BLOCK: tl.constexpr):
    """src: contiguous uint8 (n_pixels, 3) RGB; out: uint8 (n_pixels,) = cv2.COLOR_RGB2GRAY."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = idx < n_pixels
    p = src_ptr + idx.to(tl.int64) * 3
    red = tl.load(p, mask=inside, other=0).to(tl.int32)
    green = tl.load(p + 1, mask=inside, other=0).to(tl.int32)
    blue = tl.load(p + 2, mask=inside, other=0).to(tl.int32)
    gray = (red * 9798 + green * 19235 + blue * 3735 + 16384) >> 15
    tl.store(out_ptr + idx, gray.to(tl.uint8), mask=inside)


# --- launchers -----------------------------------------------------------------------------------------------------


def _block() -> int:
    return pick(_BLOCK_GPU, _BLOCK_INTERPRETER)


def rgb_to_gray(src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """src: contiguous uint8 (..., 3); out: contiguous uint8 (...)."""
    n = out.numel()
    if n:
        block = _block()
        launch(rgb_to_gray_kernel, (triton.cdiv(n, block),), src, out, n, BLOCK=block, num_warps=4)
    return out


def nms_threshold(src: torch.Tensor, is_rgb: bool, low: int, high: int, state: torch.Tensor, label: torch.Tensor,
                  frame_offset: int = 0) -> None:
    """Phase 1 over src frames (T, H, W) or (T, H, W, 3) uint8, any strides, into state/label frames
    [frame_offset, frame_offset + T) of (frames, H, W) contiguous buffers."""
    T, H, W = (int(d) for d in src.shape[:3])
    if T * H * W == 0:
        return
    bh, bw = pick(_TILE_GPU, _TILE_INTERPRETER)
    s_c = int(src.stride(3)) if is_rgb else 0
    grid = (T, triton.cdiv(H, bh), triton.cdiv(W, bw))
    launch(canny_nms_kernel, grid, src, state, label, H, W, int(src.stride(0)), int(src.stride(1)),
           int(src.stride(2)), s_c, int(low), int(high), int(frame_offset), IS_RGB=bool(is_rgb), BH=bh, BW=bw,
           num_warps=4)


def hysteresis_links(state: torch.Tensor, label: torch.Tensor) -> None:
    """Phase 2 up to resolved labels (merge + resolve) over contiguous (frames, H, W) state and label buffers."""
    n, H, W = state.numel(), int(state.shape[1]), int(state.shape[2])
    if n == 0:
        return
    if n > MAX_BATCH_PIXELS:
        raise ValueError(f"canny: {n} pixels in one hysteresis batch; at most {MAX_BATCH_PIXELS}")
    block = _block()
    grid = (triton.cdiv(n, block),)
    launch(canny_merge_kernel, grid, state, label, n, H, W, BLOCK=block, num_warps=4)
    launch(canny_resolve_kernel, grid, state, label, n, BLOCK=block, num_warps=4)


def edges_from_links(state: torch.Tensor, label: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out: contiguous uint8 with state's number of elements, 255 on edges."""
    n = state.numel()
    if n:
        block = _block()
        launch(canny_output_kernel, (triton.cdiv(n, block),), state, label, out, n, BLOCK=block, num_warps=4)
    return out


def canny(src: torch.Tensor, is_rgb: bool, low: int, high: int, out: torch.Tensor) -> torch.Tensor:
    """Full Canny over src (T, H, W) gray or (T, H, W, 3) RGB uint8 into contiguous uint8 out (T, H, W)."""
    T, H, W = (int(d) for d in src.shape[:3])
    state = torch.empty((T, H, W), dtype=torch.uint8, device=src.device)
    label = torch.empty((T, H, W), dtype=torch.int32, device=src.device)
    nms_threshold(src, is_rgb, low, high, state, label)
    hysteresis_links(state, label)
    return edges_from_links(state, label, out)


# Every variant the GPU launches (compiled ahead of time by sparkle_fast.kernels.aot).
register(rgb_to_gray_kernel, dict(src_ptr="*u8", out_ptr="*u8", n_pixels="i32"), [dict(BLOCK=_BLOCK_GPU)],
         sizes=("BLOCK",))
register(canny_nms_kernel,
         dict(src_ptr="*u8", state_ptr="*u8", label_ptr="*i32", H="i32", W="i32", s_t="i32", s_h="i32", s_w="i32",
              s_c="i32", low="i32", high="i32", state_frame_offset="i32"),
         [dict(IS_RGB=rgb, BH=_TILE_GPU[0], BW=_TILE_GPU[1]) for rgb in (False, True)], sizes=("BH", "BW"))
register(canny_merge_kernel, dict(state_ptr="*u8", label_ptr="*i32", n_pixels="i32", H="i32", W="i32"),
         [dict(BLOCK=_BLOCK_GPU)], sizes=("BLOCK",))
register(canny_resolve_kernel, dict(state_ptr="*u8", label_ptr="*i32", n_pixels="i32"), [dict(BLOCK=_BLOCK_GPU)],
         sizes=("BLOCK",))
register(canny_output_kernel, dict(state_ptr="*u8", label_ptr="*i32", out_ptr="*u8", n_pixels="i32"),
         [dict(BLOCK=_BLOCK_GPU)], sizes=("BLOCK",))
