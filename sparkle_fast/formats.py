"""The Sparkle dataset's file formats.

Mask npz (intermediate_data/{theme}/source_video_mask/{id}.npz), as released by Sparkle:
  "mask":  uint8, np.packbits of the flattened bool (T, H, W) mask (big-endian bits, last byte zero-padded)
  "shape": the integers (T, H, W)
Sparkle's README loads it with np.unpackbits(mask)[:T*H*W].reshape(shape).astype(bool); every file written here
loads that way. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from sparkle_fast._io import atomic_write
from sparkle_fast.ops import _dispatch as dispatch
from sparkle_fast.ops.vote_pack import pack_bits, unpack_bits


class MaskFileError(ValueError):
    """A mask npz that is missing, unreadable or not in Sparkle's format; the message names the file."""


def save_packed_mask(path: str | os.PathLike, packed: Any, shape, *, compress: bool = True) -> Path:
    """Write already-packed bits (e.g. the output of ops.vote_and_pack) as a Sparkle mask npz.

    packed: uint8 (ceil(T*H*W/8),), numpy / torch / cupy (copied to the host). shape: (T, H, W).
    compress: zip-deflate the arrays (np.savez_compressed); masks are long runs, so files shrink many times.
    """
    kind = dispatch.array_kind(packed, "packed", "save_packed_mask")
    packed = dispatch.to_numpy(packed, kind)
    dims = tuple(int(d) for d in shape)
    if len(dims) != 3 or any(d < 0 for d in dims):
        raise ValueError(f"save_packed_mask({path}): shape must be (T, H, W), got {shape!r}")
    if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != (math.prod(dims) + 7) // 8:
        raise ValueError(f"save_packed_mask({path}): packed must be uint8 of length ceil(T*H*W/8) = "
                         f"{(math.prod(dims) + 7) // 8}, got {packed.dtype} {packed.shape}")
    writer = np.savez_compressed if compress else np.savez
    with atomic_write(path) as handle:
        writer(handle, mask=packed, shape=np.asarray(dims, dtype=np.int64))
    return Path(path)


def save_mask(path: str | os.PathLike, mask: Any, *, compress: bool = True) -> Path:
    """Write a (T, H, W) bool/uint8 mask (nonzero = foreground) as a Sparkle mask npz. Packing runs on the mask's
    device (ops.pack_bits), so a GPU mask crosses to the host already 8x smaller."""
    dispatch.array_kind(mask, "mask", "save_mask")
    if mask.ndim != 3:
        raise ValueError(f"save_mask({path}): mask must be (T, H, W), got shape {tuple(mask.shape)}")
    return save_packed_mask(path, pack_bits(mask), tuple(mask.shape), compress=compress)


def load_packed_mask(path: str | os.PathLike) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Read a Sparkle mask npz without unpacking it: (packed uint8 (ceil(T*H*W/8),), (T, H, W)).

    Raises MaskFileError naming the file for a missing file, a file that is not an npz, a missing "mask" or "shape"
    key, a wrong dtype, or a byte count that does not match the shape.
    """
    path = Path(path)
    if not path.is_file():
        raise MaskFileError(f"{path}: no such mask file")
    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        data = np.load(path, allow_pickle=False)
    except unreadable as exc:
        raise MaskFileError(f"{path}: not a readable npz file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise MaskFileError(f"{path}: a single .npy array, not an npz archive with 'mask' and 'shape'")
    with data:
        missing = [key for key in ("mask", "shape") if key not in data.files]
        if missing:
            raise MaskFileError(f"{path}: missing key(s) {missing} (a Sparkle mask npz has 'mask' and 'shape'; "
                                f"found {data.files})")
        try:
            packed, shape = data["mask"], data["shape"]
        except unreadable as exc:
            raise MaskFileError(f"{path}: a corrupt npz member ({type(exc).__name__}: {exc})") from exc
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise MaskFileError(f"{path}: 'mask' must be a 1-D uint8 array of packed bits, got {packed.dtype} with shape "
                            f"{packed.shape}")
    if shape.ndim != 1 or shape.size != 3 or not np.issubdtype(shape.dtype, np.integer) or (shape < 0).any():
        raise MaskFileError(f"{path}: 'shape' must be three non-negative integers (T, H, W), got {shape!r}")
    dims = tuple(int(d) for d in shape)
    expected = (math.prod(dims) + 7) // 8
    if packed.size != expected:
        raise MaskFileError(f"{path}: 'mask' has {packed.size} bytes but shape {dims} needs ceil(T*H*W/8) = "
                            f"{expected}; the file is truncated or its shape is wrong")
    return packed, dims


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a Sparkle mask npz as a bool (T, H, W) numpy array (errors as in load_packed_mask)."""
    packed, dims = load_packed_mask(path)
    return unpack_bits(packed, dims)
