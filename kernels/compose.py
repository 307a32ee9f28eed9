"""Triton kernel for Sparkle's decoupled edge composition (and its ablation baselines).

One pass over the pixels: read the mask (one byte, or one bit of np.packbits order), pick the source value inside
the mask and the background value outside, write it to 3 channels (RGB control video, as control models expect).

EDGE_MODE 0: src/bg are uint8 maps (edge maps, or RGB frames with 3 channels for copy-and-paste).
EDGE_MODE 1: src/bg are Canny state + union-find labels from kernels/canny.py (source frames 0..T-1, background
             frames T..2T-1 of one batch): the edge bit is looked up through the label root, so the two edge maps
             are never written to global memory (the fused two-videos-in, control-video-out path).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sparkle_fast.kernels._launch import launch, pick, register
from sparkle_fast.kernels.canny import _edge_of

_BLOCK_GPU = 1024
_BLOCK_INTERPRETER = 1 << 16


def _block() -> int:
    return pick(_BLOCK_GPU, _BLOCK_INTERPRETER)


@triton.jit
def compose_kernel(src_ptr, bg_ptr, state_ptr, label_ptr, mask_ptr, out_ptr, n_pixels,
                   EDGE_MODE: tl.constexpr, HAS_BG: tl.constexpr, MASK_PACKED: tl.constexpr,
                   CHANNELS_IN: tl.constexpr, BLOCK: tl.constexpr):
    """out: uint8 (n_pixels, 3). CHANNELS_IN: 1 (maps replicated to 3 channels) or 3 (RGB in, EDGE_MODE 0 only)."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = idx < n_pixels
    if MASK_PACKED:
        byte = tl.load(mask_ptr + idx // 8, mask=inside, other=0).to(tl.int32)
        fg = inside & (((byte >> (7 - idx % 8)) & 1) != 0)
    else:
        fg = inside & (tl.load(mask_ptr + idx, mask=inside, other=0) != 0)
    bg_side = inside & (~fg)
    ch = tl.arange(0, 4)[None, :]
    out_mask = inside[:, None] & (ch < 3)
    if EDGE_MODE == 1:
        src_edge = _edge_of(state_ptr, label_ptr, idx, fg)
        value = tl.where(src_edge, 255, 0)
        if HAS_BG:
            bg_edge = _edge_of(state_ptr, label_ptr, idx + n_pixels, bg_side)
            value = tl.where(bg_edge, 255, value)
        pix = tl.broadcast_to(value[:, None], (BLOCK, 4))
    elif CHANNELS_IN == 1:
        value = tl.load(src_ptr + idx, mask=fg, other=0)
        if HAS_BG:
            value = tl.where(fg, value, tl.load(bg_ptr + idx, mask=bg_side, other=0))
        pix = tl.broadcast_to(value[:, None], (BLOCK, 4))
    else:
        offs = idx.to(tl.int64)[:, None] * 3 + ch
        pix = tl.load(src_ptr + offs, mask=fg[:, None] & (ch < 3), other=0)
        if HAS_BG:
            pix = tl.where(fg[:, None], pix, tl.load(bg_ptr + offs, mask=bg_side[:, None] & (ch < 3), other=0))
    tl.store(out_ptr + idx.to(tl.int64)[:, None] * 3 + ch, pix.to(tl.uint8), mask=out_mask)


def compose(src: torch.Tensor | None, bg: torch.Tensor | None, mask: torch.Tensor, mask_packed: bool,
            out: torch.Tensor, channels_in: int = 1, state: torch.Tensor | None = None,
            label: torch.Tensor | None = None, has_bg: bool = True) -> torch.Tensor:
    """Launch over n = T*H*W pixels. src/bg: contiguous uint8 (n,) or (n, 3), or None with state/label given
    (EDGE_MODE 1). mask: contiguous uint8 (n,) bytes or packed (ceil(n/8),). out: contiguous uint8 (n, 3)."""
    n = out.numel() // 3
    if n == 0:
        return out
    block = _block()
    edge_mode = 1 if state is not None else 0
    dummy = mask  # unused pointer arguments still need a tensor
    launch(compose_kernel, (triton.cdiv(n, block),),
           src if src is not None else dummy, bg if bg is not None else dummy,
           state if state is not None else dummy, label if label is not None else dummy, mask, out, n,
           EDGE_MODE=edge_mode, HAS_BG=bool(has_bg), MASK_PACKED=bool(mask_packed), CHANNELS_IN=int(channels_in),
           BLOCK=block, num_warps=4)
    return out


# Every variant sparkle_fast.ops.compose launches on a GPU (compiled ahead of time by sparkle_fast.kernels.aot):
# compose_edges (maps + background), foreground_only_control (no background), copy_paste_composite (RGB),
# control_video (Canny state + labels), each with a byte or a bit-packed mask. Unused pointers get the mask (u8).
_POINTERS = dict(src_ptr="*u8", bg_ptr="*u8", state_ptr="*u8", label_ptr="*u8", mask_ptr="*u8", out_ptr="*u8")
register(compose_kernel, dict(**_POINTERS, n_pixels="i32"),
         [dict(EDGE_MODE=mode, HAS_BG=has_bg, MASK_PACKED=packed, CHANNELS_IN=channels, BLOCK=_BLOCK_GPU,
               signature=dict(label_ptr="*i32") if mode == 1 else {})
          for mode, has_bg, channels in ((0, True, 1), (0, False, 1), (0, True, 3), (1, True, 1))
          for packed in (False, True)],
         sizes=("BLOCK",))
