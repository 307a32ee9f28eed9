"""VIVID-10M's mask augmentations, per frame: expand, convex hull, bounding box, hull + expand, box + expand.

Local-editing data is more robust when the edit mask is coarser than the object: VIVID-10M trains with the object
mask dilated, replaced by its convex hull or its bounding box, or both. Sparkle's BAIT masks feed these directly.

Public ops (numpy / torch (CPU or CUDA) / cupy in, the same kind out):
  dilate_mask(mask, k)            bool (T, H, W): square (2k+1) x (2k+1) dilation, outside the frame = background
  augment_mask(mask, mode, k=0)   bool (T, H, W); mode in MODES:
      "expand"       dilate_mask(mask, k)
      "hull"         the filled convex hull of each frame's foreground pixels
      "bbox"         the filled axis-aligned bounding box of each frame's foreground
      "hull_expand"  dilate_mask(hull, k)
      "box_expand"   dilate_mask(bbox, k) (the box grown by k on every side, clipped to the frame)
  An empty frame stays empty. mask: bool or uint8 (T, H, W), nonzero = foreground, or bit-packed uint8
  (ceil(T*H*W/8),) with shape=(T, H, W) (Sparkle's npz format).

The *_reference functions are the definition: dilation is cv2.dilate with a square kernel; the hull is exact
geometry: the pixels whose centres lie in the closed convex hull of the foreground pixel centres (every foreground
pixel is in it; a frame whose foreground is one pixel or collinear pixels gets the segment between the extremes).
GPU (backend "triton"): dilation is a separable Triton kernel, boxes are two torch reductions on the device. The hull
takes each row's leftmost and rightmost foreground pixel on the device (the hull's vertices are among them), copies
those 2 x H integers per frame to the host, where cv2.convexHull orders the few vertices, and fills the polygons
with a Triton kernel (a pixel is inside iff it is on the inner side of every edge, in exact integer arithmetic), so
both backends agree bit for bit and no full mask crosses the bus.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sparkle_fast.ops import _dispatch as dispatch
from sparkle_fast.ops.vote_pack import unpack_bits

MODES = ("expand", "hull", "bbox", "hull_expand", "box_expand")
GPU_PREFERENCE = ("triton",)
MAX_DILATE = 4096


# --- the definition ------------------------------------------------------------------------------------------------


def _cv2():
    import cv2

    return cv2


def dilate_mask_reference(mask: np.ndarray, k: int) -> np.ndarray:
    """cv2.dilate of each frame with a (2k+1) x (2k+1) square of ones; bool (T, H, W) -> bool (T, H, W)."""
    mask = np.asarray(mask) != 0
    if k == 0 or mask.size == 0:
        return mask.copy()
    cv2 = _cv2()
    kernel = np.ones((2 * k + 1, 2 * k + 1), np.uint8)
    return np.stack([cv2.dilate(frame.astype(np.uint8), kernel) != 0 for frame in mask]).reshape(mask.shape)


def bbox_mask_reference(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask) != 0
    out = np.zeros_like(mask)
    for t, frame in enumerate(mask):
        rows, cols = np.flatnonzero(frame.any(axis=1)), np.flatnonzero(frame.any(axis=0))
        if rows.size:
            out[t, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
    return out


def row_extremes_numpy(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leftmost and rightmost foreground column of every row: int64 (T, H) each, -1 for empty rows."""
    fg = np.asarray(mask) != 0
    width = fg.shape[-1]
    any_fg = fg.any(axis=-1)
    left = np.where(any_fg, fg.argmax(axis=-1), -1)
    right = np.where(any_fg, width - 1 - fg[..., ::-1].argmax(axis=-1), -1)
    return left.astype(np.int64), right.astype(np.int64)


def hull_polygons(left: np.ndarray, right: np.ndarray) -> list[np.ndarray]:
    """Per frame, the convex hull of the foreground pixel centres as int64 (V, 2) (x, y) vertices ordered so that
    the inside is where cross(edge, point - edge start) >= 0 (V = 0 for an empty frame, 1 or 2 when degenerate).
    left, right: row extremes from row_extremes_numpy (the hull's vertices are among them)."""
    cv2 = _cv2()
    polygons = []
    for frame_left, frame_right in zip(np.asarray(left), np.asarray(right), strict=True):
        rows = np.flatnonzero(frame_left >= 0)
        if rows.size == 0:
            polygons.append(np.zeros((0, 2), np.int64))
            continue
        points = np.concatenate([np.stack([frame_left[rows], rows], 1), np.stack([frame_right[rows], rows], 1)])
        hull = cv2.convexHull(points.astype(np.int32)).reshape(-1, 2).astype(np.int64)
        x, y = hull[:, 0], hull[:, 1]
        if np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) < 0:  # make the signed area positive
            hull = hull[::-1]
        polygons.append(hull)
    return polygons


def fill_polygons_numpy(polygons: list[np.ndarray], shape: tuple[int, int, int]) -> np.ndarray:
    """bool (T, H, W): pixel centres on the inner side of every edge of their frame's polygon and inside its
    vertices' bounding box (which makes 1- and 2-vertex polygons a point and a segment)."""
    out = np.zeros(shape, bool)
    for t, polygon in enumerate(polygons):
        if len(polygon) == 0:
            continue
        (x0, y0), (x1, y1) = polygon.min(axis=0), polygon.max(axis=0)
        ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1]
        inside = np.ones(ys.shape, bool)
        for (ax, ay), (bx, by) in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
            inside &= (bx - ax) * (ys - ay) - (by - ay) * (xs - ax) >= 0
        out[t, y0:y1 + 1, x0:x1 + 1] = inside
    return out


def hull_mask_reference(mask: np.ndarray) -> np.ndarray:
    """Definition of the "hull" mode: bool (T, H, W) -> bool (T, H, W) (see the module docstring)."""
    mask = np.asarray(mask) != 0
    return fill_polygons_numpy(hull_polygons(*row_extremes_numpy(mask)), mask.shape)


def augment_mask_reference(mask: np.ndarray, mode: str, k: int = 0) -> np.ndarray:
    """Definition of augment_mask on a (T, H, W) mask (see the module docstring)."""
    mask = np.asarray(mask) != 0
    if mode == "expand":
        return dilate_mask_reference(mask, k)
    if mode in ("hull", "hull_expand"):
        hull = hull_mask_reference(mask)
        return dilate_mask_reference(hull, k) if mode == "hull_expand" else hull
    box = bbox_mask_reference(mask)
    return dilate_mask_reference(box, k) if mode == "box_expand" else box


# --- argument checks -----------------------------------------------------------------------------------------------


def check_mask(mask: Any, shape, op: str, name: str = "mask") -> tuple[tuple[int, int, int], bool]:
    """((T, H, W), packed) for a (T, H, W) bool/uint8 mask or a packed uint8 (ceil(T*H*W/8),) one with `shape`."""
    dispatch.array_kind(mask, name, op)
    if mask.ndim == 1:
        dispatch.check_dtype(mask, ("uint8",), f"{name} (bit-packed)", op)
        if shape is None:
            raise ValueError(f"{op}: {name} is 1-D, i.e. bit-packed: also pass its shape (T, H, W)")
        dims = tuple(int(d) for d in shape)
        if len(dims) != 3 or any(d < 0 for d in dims):
            raise ValueError(f"{op}: the shape of a bit-packed {name} must be (T, H, W), got {shape!r}")
        need = (math.prod(dims) + 7) // 8
        if mask.shape[0] != need:
            raise ValueError(f"{op}: bit-packed {name} has {mask.shape[0]} bytes but shape {dims} needs {need}")
        return dims, True
    dispatch.check_dtype(mask, ("bool", "uint8"), name, op)
    if mask.ndim != 3:
        raise ValueError(f"{op}: {name} must be (T, H, W) bool/uint8 or bit-packed 1-D uint8, got shape "
                         f"{tuple(mask.shape)}")
    dims = tuple(int(d) for d in mask.shape)
    if shape is not None and tuple(int(d) for d in shape) != dims:
        raise ValueError(f"{op}: {name} has shape {dims} but shape={tuple(shape)} was given")
    return dims, False


def check_dilate(k: Any, op: str, name: str = "dilate") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= MAX_DILATE:
        raise ValueError(f"{op}: {name} must be an integer in 0..{MAX_DILATE} (pixels), got {k!r}")
    return int(k)


def mask_to_numpy(mask: Any, shape, packed: bool, kind: dispatch.ArrayKind) -> np.ndarray:
    host = dispatch.to_numpy(mask, kind)
    if packed:
        return np.unpackbits(host, count=math.prod(shape)).reshape(shape).astype(bool)
    return host != 0


def mask_to_torch_bytes(mask: Any, shape, packed: bool, kind: dispatch.ArrayKind):
    """The mask as a contiguous torch uint8 (T, H, W) tensor (0/nonzero) on its device; packed masks are unpacked
    with unpack_bits on the same backend family."""
    import torch

    tensor = dispatch.to_torch(mask, kind)
    if packed:
        return unpack_bits(tensor.contiguous(), shape).view(torch.uint8)
    tensor = tensor.contiguous()
    return tensor.view(torch.uint8) if tensor.dtype == torch.bool else tensor


def dilate_torch(mask_u8, k: int):
    """Square dilation by k of a contiguous torch uint8 (T, H, W) mask with the Triton kernel -> uint8 0/1."""
    import torch

    from sparkle_fast.kernels import mask_augment as kernels

    out = torch.empty_like(mask_u8)
    if k == 0:
        return out.copy_(mask_u8 != 0)
    return kernels.dilate(mask_u8, k, out)


def hull_torch(mask_u8):
    """Filled convex hulls of a contiguous torch uint8 (T, H, W) mask -> uint8 0/1 on its device (module docstring)."""
    import torch

    from sparkle_fast.kernels import mask_augment as kernels

    T, H, W = (int(d) for d in mask_u8.shape)
    out = torch.zeros_like(mask_u8)
    if T * H * W == 0:
        return out
    fg = mask_u8 != 0
    cols = torch.arange(W, device=mask_u8.device)
    any_fg = fg.any(dim=2)
    left = torch.where(fg, cols, W).amin(dim=2)
    right = torch.where(fg, cols, -1).amax(dim=2)
    left = torch.where(any_fg, left, -1)
    polygons = hull_polygons(left.cpu().numpy(), right.cpu().numpy())  # 2 x H integers per frame cross the bus
    n_vertices = max(1, max(len(p) for p in polygons))
    vertices = np.zeros((T, n_vertices, 2), np.int32)
    counts = np.zeros(T, np.int32)
    for t, polygon in enumerate(polygons):
        vertices[t, :len(polygon)] = polygon
        counts[t] = len(polygon)
    return kernels.fill_polygons(torch.from_numpy(vertices).to(mask_u8.device),
                                 torch.from_numpy(counts).to(mask_u8.device), out)


# --- public ops ----------------------------------------------------------------------------------------------------


def dilate_mask(mask: Any, k: int, *, shape=None, backend: str | None = "auto") -> Any:
    """Square (2k+1) x (2k+1) dilation per frame (outside the frame is background): bool (T, H, W) out."""
    return augment_mask(mask, "expand", k, shape=shape, backend=backend)


def augment_mask(mask: Any, mode: str, k: int = 0, *, shape=None, backend: str | None = "auto") -> Any:
    """VIVID-10M mask augmentation per frame (see the module docstring for the modes).

    mask: bool/uint8 (T, H, W) or bit-packed uint8 (ceil(T*H*W/8),) with shape=(T, H, W). k: dilation in pixels
    (used by "expand", "hull_expand", "box_expand"). Returns bool (T, H, W), same array kind and device as mask.
    """
    op = "augment_mask"
    if mode not in MODES:
        raise ValueError(f"{op}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    k = check_dilate(k, op, "k")
    kind = dispatch.array_kind(mask, "mask", op)
    dims, packed = check_mask(mask, shape, op)
    chosen = dispatch.resolve_backend(backend, kind, op, GPU_PREFERENCE)
    if chosen == "reference":
        result = augment_mask_reference(mask_to_numpy(mask, dims, packed, kind), mode, k)
        return dispatch.from_numpy(result, kind, like=mask)

    import torch

    from sparkle_fast.kernels import mask_augment as kernels

    tensor = dispatch.to_torch(mask, kind)
    with dispatch.on_device_of(tensor, kind):
        m = mask_to_torch_bytes(mask, dims, packed, kind)
        if mode in ("hull", "hull_expand"):
            m = hull_torch(m)
        elif mode in ("bbox", "box_expand"):
            m = kernels.bounding_boxes(m, torch.empty_like(m))
        out = dilate_torch(m, k if mode in ("expand", "hull_expand", "box_expand") else 0)
    return dispatch.from_torch(out.view(torch.bool), kind)
