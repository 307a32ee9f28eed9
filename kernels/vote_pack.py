"""Triton kernels for BAIT's majority vote and Sparkle's bit-packed masks.

Each program owns BLOCK_BYTES output bytes, i.e. 8 * BLOCK_BYTES consecutive pixels, loops over the passes and
counts votes in registers, then writes either one byte per pixel (0/1) or the packed bits (np.packbits order:
pixel i in byte i // 8 at bit 7 - i % 8, zero padding after the last pixel). One read of the passes, one write.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sparkle_fast.kernels._launch import launch, pick, register

# GPU: 256 bytes = 2048 pixels per program (16 per thread with 4 warps, i.e. one 16-byte load per pass).
# Interpreter: programs run one after another at ~0.5 ms each, so use few large ones.
_BLOCK_BYTES_GPU = 256
_BLOCK_BYTES_INTERPRETER = 4096


@triton.jit
def _store_votes(fg, out_ptr, pid, n_pixels, PACK_OUT: tl.constexpr, BLOCK_BYTES: tl.constexpr):
    """fg: (8 * BLOCK_BYTES,) bool for this program's pixels, False past n_pixels."""
    if PACK_OUT:
        bits = tl.reshape(fg.to(tl.int32), (BLOCK_BYTES, 8))
        weights = 1 << (7 - tl.arange(0, 8))  # big-endian within each byte
        packed = tl.sum(bits * weights[None, :], axis=1)
        byte_idx = pid * BLOCK_BYTES + tl.arange(0, BLOCK_BYTES)
        tl.store(out_ptr + byte_idx, packed.to(tl.uint8), mask=byte_idx < tl.cdiv(n_pixels, 8))
    else:
        pixels = pid * (BLOCK_BYTES * 8) + tl.arange(0, BLOCK_BYTES * 8)
        tl.store(out_ptr + pixels, fg.to(tl.uint8), mask=pixels < n_pixels)


@triton.jit
def vote_u8_kernel(passes_ptr, out_ptr, n_passes, n_pixels, min_votes,
                   PACK_OUT: tl.constexpr, BLOCK_BYTES: tl.constexpr):
    """passes: uint8 (n_passes, n_pixels), nonzero = foreground."""
    pid = tl.program_id(0)
    pixels = pid * (BLOCK_BYTES * 8) + tl.arange(0, BLOCK_BYTES * 8)
    in_range = pixels < n_pixels
    votes = tl.zeros((BLOCK_BYTES * 8,), dtype=tl.int32)
    ptr = passes_ptr + pixels
    for _ in range(n_passes):
        values = tl.load(ptr, mask=in_range, other=0)
        votes += (values != 0).to(tl.int32)
        ptr += n_pixels  # pointer arithmetic is 64-bit: n_passes * n_pixels may exceed 2**31
    _store_votes((votes >= min_votes) & in_range, out_ptr, pid, n_pixels, PACK_OUT, BLOCK_BYTES)


@triton.jit
def vote_packed_kernel(passes_ptr, out_ptr, n_passes, n_pixels, min_votes,
                       PACK_OUT: tl.constexpr, BLOCK_BYTES: tl.constexpr):
    """passes: uint8 (n_passes, ceil(n_pixels / 8)) packed bits; padding bits are ignored."""
    pid = tl.program_id(0)
    row_bytes = tl.cdiv(n_pixels, 8)
    byte_idx = pid * BLOCK_BYTES + tl.arange(0, BLOCK_BYTES)
    shifts = 7 - tl.arange(0, 8)
    votes = tl.zeros((BLOCK_BYTES, 8), dtype=tl.int32)
    ptr = passes_ptr + byte_idx
    for _ in range(n_passes):
        packed = tl.load(ptr, mask=byte_idx < row_bytes, other=0).to(tl.int32)
        votes += (packed[:, None] >> shifts[None, :]) & 1
        ptr += row_bytes
    pixels = pid * (BLOCK_BYTES * 8) + tl.arange(0, BLOCK_BYTES * 8)
    fg = (tl.reshape(votes, (BLOCK_BYTES * 8,)) >= min_votes) & (pixels < n_pixels)
    _store_votes(fg, out_ptr, pid, n_pixels, PACK_OUT, BLOCK_BYTES)


def vote(passes: torch.Tensor, n_pixels: int, packed_in: bool, min_votes: int, out: torch.Tensor,
         pack_out: bool) -> torch.Tensor:
    """Launch the vote over contiguous uint8 `passes` (N, n_pixels) or, packed_in, (N, ceil(n_pixels/8)).

    out: contiguous uint8, ceil(n_pixels/8) bytes when pack_out else n_pixels bytes (0/1). Returns out.
    """
    if n_pixels == 0:
        return out
    block_bytes = pick(_BLOCK_BYTES_GPU, _BLOCK_BYTES_INTERPRETER)
    grid = (triton.cdiv(triton.cdiv(n_pixels, 8), block_bytes),)
    kernel = vote_packed_kernel if packed_in else vote_u8_kernel
    launch(kernel, grid, passes, out, int(passes.shape[0]), int(n_pixels), int(min_votes), PACK_OUT=bool(pack_out),
           BLOCK_BYTES=block_bytes, num_warps=4)
    return out


# Every variant the GPU launches (compiled ahead of time by sparkle_fast.kernels.aot).
for _kernel in (vote_u8_kernel, vote_packed_kernel):
    register(_kernel, dict(passes_ptr="*u8", out_ptr="*u8", n_passes="i32", n_pixels="i32", min_votes="i32"),
             [dict(PACK_OUT=p, BLOCK_BYTES=_BLOCK_BYTES_GPU) for p in (False, True)], sizes=("BLOCK_BYTES",))
del _kernel
