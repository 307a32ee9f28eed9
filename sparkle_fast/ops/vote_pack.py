"""BAIT's pixel-wise majority vote and Sparkle's bit-packed mask format.

BAIT tracks the foreground from several anchor frames; each tracking pass gives a mask video, and a pixel is kept
when more than half of the passes say it is foreground. Sparkle stores masks bit-packed with np.packbits.

Public ops (all accept numpy / torch / cupy and return the same kind; see sparkle_fast.ops._dispatch):
  vote_masks(passes, min_votes=None, *, shape=None)   -> bool (T, H, W)
  vote_and_pack(passes, min_votes=None, *, shape=None) -> uint8 (ceil(T*H*W / 8),)  fused: one read, one write
  pack_bits(mask)                                      -> uint8 (ceil(mask.size / 8),) == np.packbits(mask.ravel())
  unpack_bits(packed, shape)                           -> bool shape

passes is either uint8/bool (N, T, H, W), nonzero = foreground, or already bit-packed uint8 (N, ceil(T*H*W / 8)) with
`shape=(T, H, W)` given. N is 1..255. A pixel is foreground iff at least `min_votes` passes say so; the default
min_votes = N // 2 + 1 is a strict majority (ties are background). Padding bits of packed inputs are ignored and
those of packed outputs are zero.

The *_reference functions below are the definition: every backend must equal them bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparkle_fast._build import cuda_kernels
from sparkle_fast.ops import _dispatch as dispatch

MAX_PASSES = 255  # vote counts fit in a byte: the CUDA kernels count in byte lanes
MAX_PIXELS_PER_PASS = 2**31 - 1  # the GPU kernels index pixels of one pass with 32-bit integers

# Fastest first, for backend="auto" on GPU inputs. The CUDA kernel does 16-byte loads and counts in byte lanes;
# this order is to be confirmed by bench/vote_pack.py on an H100 (see bench/README.md).
GPU_PREFERENCE = ("cuda", "triton")

# The reference works through the pixels in chunks to bound its temporary memory; a multiple of 8 keeps packed
# chunks on byte boundaries.
_REFERENCE_CHUNK_PIXELS = 1 << 22


# --- the definition ------------------------------------------------------------------------------------------------


def _vote_rows_reference(rows: np.ndarray, n_pixels: int, packed_in: bool, min_votes: int,
                         pack_out: bool) -> np.ndarray:
    """rows: (N, n_pixels) bool/uint8, or (N, ceil(n_pixels/8)) uint8 packed. Returns 1-D bool or packed uint8."""
    votes = np.empty(n_pixels, dtype=bool)
    for start in range(0, n_pixels, _REFERENCE_CHUNK_PIXELS):
        stop = min(start + _REFERENCE_CHUNK_PIXELS, n_pixels)
        if packed_in:
            chunk = np.unpackbits(rows[:, start // 8 : (stop + 7) // 8], axis=1, count=stop - start)
        else:
            chunk = rows[:, start:stop]
        votes[start:stop] = (chunk != 0).sum(axis=0, dtype=np.uint8) >= min_votes  # N <= 255 fits a uint8
    return np.packbits(votes) if pack_out else votes


def vote_masks_reference(passes: np.ndarray, min_votes: int | None = None, *, shape=None) -> np.ndarray:
    """numpy definition of vote_masks."""
    call = _parse_vote_call("vote_masks", passes, min_votes, shape)
    return _vote_rows_reference(call.rows_of(passes), call.n_pixels, call.packed_in, call.min_votes,
                                pack_out=False).reshape(call.shape)


def vote_and_pack_reference(passes: np.ndarray, min_votes: int | None = None, *, shape=None) -> np.ndarray:
    """numpy definition of vote_and_pack."""
    call = _parse_vote_call("vote_and_pack", passes, min_votes, shape)
    return _vote_rows_reference(call.rows_of(passes), call.n_pixels, call.packed_in, call.min_votes, pack_out=True)


def pack_bits_reference(mask: np.ndarray) -> np.ndarray:
    """numpy definition of pack_bits."""
    return np.packbits(np.asarray(mask).ravel())


def unpack_bits_reference(packed: np.ndarray, shape) -> np.ndarray:
    """numpy definition of unpack_bits (the recipe in Sparkle's README, with the byte count checked)."""
    shape = _check_shape(shape, "unpack_bits", "shape", ndim=None)
    _check_packed_length(np.asarray(packed), math.prod(shape), "unpack_bits", "packed")
    return np.unpackbits(packed)[: math.prod(shape)].reshape(shape).astype(bool)


# --- argument checks -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _VoteCall:
    n_passes: int
    n_pixels: int
    shape: tuple[int, ...]  # the shape of one pass's mask (the output shape of vote_masks)
    packed_in: bool
    min_votes: int

    @property
    def row_length(self) -> int:
        return (self.n_pixels + 7) // 8 if self.packed_in else self.n_pixels

    def rows_of(self, passes):
        """passes as (N, row_length) rows (numpy or torch)."""
        return passes.reshape(self.n_passes, self.row_length)


def _check_shape(shape, op: str, name: str, ndim: int | None) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in shape)
        valid = all(d >= 0 and d == s for d, s in zip(dims, shape, strict=True)) and (ndim is None or len(dims) == ndim)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        want = f"{ndim} non-negative integers" if ndim else "a tuple of non-negative integers"
        raise ValueError(f"{op}: {name} must be {want}, got {shape!r}")
    return dims


def _check_packed_length(packed, n_pixels: int, op: str, name: str) -> None:
    if dispatch.dtype_name(packed) != "uint8" or packed.ndim != 1:
        raise ValueError(f"{op}: {name} must be a 1-D uint8 array of packed bits, got {dispatch.dtype_name(packed)} "
                         f"with shape {tuple(packed.shape)}")
    if packed.shape[0] != (n_pixels + 7) // 8:
        raise ValueError(f"{op}: {name} has {packed.shape[0]} bytes but the shape needs ceil({n_pixels}/8) = "
                         f"{(n_pixels + 7) // 8}")


def _parse_vote_call(op: str, passes: Any, min_votes: int | None, shape) -> _VoteCall:
    dispatch.array_kind(passes, "passes", op)
    if shape is None:
        dispatch.check_dtype(passes, ("bool", "uint8"), "passes", op)
        if passes.ndim != 4:
            raise ValueError(f"{op}: passes must be (N, T, H, W), got shape {tuple(passes.shape)}; for bit-packed "
                             "passes (N, ceil(T*H*W/8)) also pass shape=(T, H, W)")
        n_passes, mask_shape, packed_in = int(passes.shape[0]), tuple(int(d) for d in passes.shape[1:]), False
        n_pixels = math.prod(mask_shape)
    else:
        mask_shape = _check_shape(shape, op, "shape", ndim=3)
        n_pixels = math.prod(mask_shape)
        dispatch.check_dtype(passes, ("uint8",), "passes (bit-packed, since shape is given)", op)
        if passes.ndim != 2 or passes.shape[1] != (n_pixels + 7) // 8:
            raise ValueError(f"{op}: bit-packed passes for shape {mask_shape} must be (N, {(n_pixels + 7) // 8}), got "
                             f"{tuple(passes.shape)}")
        n_passes, packed_in = int(passes.shape[0]), True
    if not 1 <= n_passes <= MAX_PASSES:
        raise ValueError(f"{op}: the number of passes N must be in 1..{MAX_PASSES}, got {n_passes}")
    if n_pixels > MAX_PIXELS_PER_PASS:
        raise ValueError(f"{op}: {n_pixels} pixels per pass is more than {MAX_PIXELS_PER_PASS}; split the clip along T")
    if min_votes is None:
        min_votes = n_passes // 2 + 1
    elif isinstance(min_votes, bool) or not isinstance(min_votes, (int, np.integer)) or not 1 <= min_votes <= n_passes:
        raise ValueError(f"{op}: min_votes must be an integer in 1..N = 1..{n_passes}, got {min_votes!r}")
    return _VoteCall(n_passes, n_pixels, mask_shape, packed_in, int(min_votes))


# --- dispatch ------------------------------------------------------------------------------------------------------


def _run(op: str, x: Any, call: _VoteCall, pack_out: bool, backend: str | None, out_shape: tuple[int, ...]) -> Any:
    """Run the vote described by `call` on x (already validated) with the chosen backend."""
    kind = dispatch.array_kind(x, "input", op)
    chosen = dispatch.resolve_backend(backend, kind, op, GPU_PREFERENCE)
    if chosen == "reference":
        rows = call.rows_of(dispatch.to_numpy(x, kind))
        result = _vote_rows_reference(rows, call.n_pixels, call.packed_in, call.min_votes, pack_out)
        return dispatch.from_numpy(result if pack_out else result.reshape(out_shape), kind, like=x)

    import torch

    tensor = dispatch.to_torch(x, kind)
    with dispatch.on_device_of(tensor, kind):
        rows = call.rows_of(tensor.contiguous())
        if rows.dtype == torch.bool:
            rows = rows.view(torch.uint8)
        out = torch.empty((call.n_pixels + 7) // 8 if pack_out else call.n_pixels, dtype=torch.uint8,
                          device=rows.device)
        if chosen == "triton":
            from sparkle_fast.kernels import vote_pack as triton_vote_pack

            triton_vote_pack.vote(rows, call.n_pixels, call.packed_in, call.min_votes, out, pack_out)
        elif call.n_pixels > 0:
            launch = cuda_kernels().vote_packed if call.packed_in else cuda_kernels().vote_u8
            launch(rows.data_ptr(), call.n_passes, call.n_pixels, call.min_votes, out.data_ptr(), pack_out,
                   dispatch.current_stream_handle(rows))
    if not pack_out:
        out = out.view(torch.bool).reshape(out_shape)
    return dispatch.from_torch(out, kind)


# --- public ops ----------------------------------------------------------------------------------------------------


def vote_masks(passes: Any, min_votes: int | None = None, *, shape=None, backend: str | None = "auto") -> Any:
    """Pixel-wise vote over N tracking passes.

    passes: (N, T, H, W) bool or uint8 (nonzero = foreground), or bit-packed uint8 (N, ceil(T*H*W/8)) with
        shape=(T, H, W). N in 1..255. Any strides; numpy, torch (CPU/CUDA) or cupy.
    min_votes: a pixel is foreground iff at least this many passes say so; default N // 2 + 1 (strict majority).
    Returns bool (T, H, W), same array kind and device as passes.
    """
    call = _parse_vote_call("vote_masks", passes, min_votes, shape)
    return _run("vote_masks", passes, call, pack_out=False, backend=backend, out_shape=call.shape)


def vote_and_pack(passes: Any, min_votes: int | None = None, *, shape=None, backend: str | None = "auto") -> Any:
    """vote_masks fused with pack_bits: returns uint8 (ceil(T*H*W/8),) == np.packbits(vote_masks(...).ravel())."""
    call = _parse_vote_call("vote_and_pack", passes, min_votes, shape)
    return _run("vote_and_pack", passes, call, pack_out=True, backend=backend, out_shape=call.shape)


def pack_bits(mask: Any, *, backend: str | None = "auto") -> Any:
    """Bit-pack a mask of any shape: uint8 (ceil(mask.size/8),) equal to np.packbits(mask.ravel()).

    mask: bool or uint8 (nonzero = 1). Big-endian bit order; the last byte is zero-padded.
    """
    dispatch.array_kind(mask, "mask", "pack_bits")
    dispatch.check_dtype(mask, ("bool", "uint8"), "mask", "pack_bits")
    shape = tuple(int(d) for d in mask.shape)
    call = _VoteCall(1, math.prod(shape), shape, packed_in=False, min_votes=1)
    return _run("pack_bits", mask, call, pack_out=True, backend=backend, out_shape=shape)


def unpack_bits(packed: Any, shape, *, backend: str | None = "auto") -> Any:
    """Inverse of pack_bits: packed uint8 (ceil(prod(shape)/8),) -> bool array of `shape`."""
    dispatch.array_kind(packed, "packed", "unpack_bits")
    shape = _check_shape(shape, "unpack_bits", "shape", ndim=None)
    n_pixels = math.prod(shape)
    _check_packed_length(packed, n_pixels, "unpack_bits", "packed")
    call = _VoteCall(1, n_pixels, shape, packed_in=True, min_votes=1)
    return _run("unpack_bits", packed, call, pack_out=False, backend=backend, out_shape=shape)
