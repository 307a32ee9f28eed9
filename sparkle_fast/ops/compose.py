"""Sparkle's decoupled edge guidance: source edges inside the BAIT mask, background edges outside; and the paper's
ablation baselines.

Public ops (numpy / torch (CPU or CUDA) / cupy in, the same kind out):
  compose_edges(src_edges, bg_edges, mask, *, dilate=0)          -> uint8 (T, H, W, 3)
  foreground_only_control(src_edges, mask, *, dilate=0)          -> uint8 (T, H, W, 3)  (OpenVE-3M style: nothing
                                                                    outside the mask)
  copy_paste_composite(src_video, bg_video, mask, *, dilate=0)   -> uint8 (T, H, W, 3)  (source pixels inside the
                                                                    mask over the background video)
  control_video(src_video, bg_video, mask, low=100, high=200, *, dilate=0)
                                                                 -> uint8 (T, H, W, 3)  the fused stage-5 path: two
                                                                    videos in, control video out

Arguments:
  src_edges, bg_edges: uint8 (T, H, W) (Canny output, 0/255; any values are copied as they are).
  src_video, bg_video: uint8 (T, H, W, 3) RGB, or (T, H, W) gray for control_video.
  mask: bool/uint8 (T, H, W), nonzero = foreground (the source side), or Sparkle's bit-packed form: uint8
      (ceil(T*H*W/8),) in np.packbits order, whose shape is the source's (T, H, W). A packed mask is read bit by bit
      on the GPU, never unpacked (unless dilate > 0, which unpacks it on the device first).
  dilate: the mask is first dilated by this many pixels with a (2k+1) square (ops.mask_augment.dilate_mask).
The outputs replicate edges to 3 channels, as control models expect.

Sizes: the frame counts of source, background and mask must be equal (an error names them). A background video of
another frame size is resized to the source's with cv2.resize(frame, (W, H), interpolation=cv2.INTER_LINEAR)
(bilinear, half-pixel centres) before edge extraction or pasting. That resize runs on the host for every backend
(GPU inputs are copied there and back): Sparkle's background videos are generated at the source size, so it is the
exception, and doing it with OpenCV keeps every backend bit-exact with the reference. Edge maps given to
compose_edges must already have equal sizes.

The *_reference functions are the definition. GPU (backend "triton"): kernels/compose.py writes the control video in
one pass; control_video runs Canny for both videos as one batch (kernels/canny.py) and composes straight from the
Canny state and union-find labels, so neither edge map is written to global memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparkle_fast.ops import _dispatch as dispatch
from sparkle_fast.ops import edges as canny_ops
from sparkle_fast.ops import mask_augment

GPU_PREFERENCE = ("triton",)


# --- the definition ------------------------------------------------------------------------------------------------


def resize_video_reference(video: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR) per frame; uint8 (T, h, w[, 3])."""
    video = np.asarray(video)
    if video.shape[1:3] == (height, width):
        return video
    import cv2

    if video.shape[0] == 0 or video.shape[1] == 0 or video.shape[2] == 0 or height == 0 or width == 0:
        raise ValueError(f"cannot resize frames of {video.shape[1:3]} to {(height, width)}: empty")
    return np.stack([cv2.resize(np.ascontiguousarray(f), (width, height), interpolation=cv2.INTER_LINEAR)
                     for f in video]).reshape((video.shape[0], height, width) + video.shape[3:])


def _select(mask: np.ndarray, inside: np.ndarray, outside: np.ndarray | None) -> np.ndarray:
    """(T, H, W, 3) uint8: `inside` where mask, `outside` (or 0) elsewhere; 1-channel maps replicated."""
    if inside.ndim == 3:
        inside = inside[..., None]
    if outside is None:
        outside = np.zeros_like(inside)
    elif outside.ndim == 3:
        outside = outside[..., None]
    out = np.where(mask[..., None], inside, outside).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(out, mask.shape + (3,)))


def compose_edges_reference(src_edges, bg_edges, mask, *, dilate: int = 0) -> np.ndarray:
    """Definition of compose_edges on host arrays; mask bool/uint8 (T, H, W) (unpacked)."""
    mask = mask_augment.dilate_mask_reference(np.asarray(mask) != 0, dilate)
    return _select(mask, np.asarray(src_edges), None if bg_edges is None else np.asarray(bg_edges))


def foreground_only_control_reference(src_edges, mask, *, dilate: int = 0) -> np.ndarray:
    return compose_edges_reference(src_edges, None, mask, dilate=dilate)


def copy_paste_composite_reference(src_video, bg_video, mask, *, dilate: int = 0) -> np.ndarray:
    src_video = np.asarray(src_video)
    bg_video = resize_video_reference(bg_video, *src_video.shape[1:3])
    return compose_edges_reference(src_video, bg_video, mask, dilate=dilate)


def control_video_reference(src_video, bg_video, mask, low: float = 100, high: float = 200, *,
                            dilate: int = 0) -> np.ndarray:
    """Definition of control_video: compose_edges(canny(src), canny(resized bg), mask)."""
    src_video = np.asarray(src_video)
    bg_video = resize_video_reference(bg_video, *src_video.shape[1:3])
    return compose_edges_reference(canny_ops.canny_reference(src_video, low, high),
                                   canny_ops.canny_reference(bg_video, low, high), mask, dilate=dilate)


# --- argument checks -----------------------------------------------------------------------------------------------


def _check_frames(x: Any, op: str, name: str, channels: tuple[int, ...]) -> tuple[int, int, int]:
    dispatch.array_kind(x, name, op)
    dispatch.check_dtype(x, ("uint8",), name, op)
    ok = (x.ndim == 3 and 1 in channels) or (x.ndim == 4 and 3 in channels and x.shape[-1] == 3)
    if not ok:
        want = " or ".join({1: "(T, H, W)", 3: "(T, H, W, 3)"}[c] for c in channels)
        raise ValueError(f"{op}: {name} must be uint8 {want}, got shape {tuple(x.shape)}")
    return tuple(int(d) for d in x.shape[:3])


def _check_frame_counts(op: str, **counts: int) -> None:
    if len(set(counts.values())) > 1:
        names = ", ".join(f"{name} has {n} frames" for name, n in counts.items())
        raise ValueError(f"{op}: frame counts differ: {names}")


def _check_sizes(op: str, a: str, a_shape, b: str, b_shape) -> None:
    if tuple(a_shape[1:3]) != tuple(b_shape[1:3]):
        raise ValueError(f"{op}: {a} frames are {tuple(a_shape[1:3])} but {b} frames are {tuple(b_shape[1:3])} "
                         "(H, W)")


def _check_mask_for(mask: Any, src_shape, op: str) -> bool:
    """Validate mask against the source (T, H, W); returns packed."""
    if mask.ndim == 1:
        _, packed = mask_augment.check_mask(mask, src_shape, op)
        return packed
    dims, packed = mask_augment.check_mask(mask, None, op)
    _check_frame_counts(op, source=src_shape[0], mask=dims[0])
    _check_sizes(op, "source", src_shape, "mask", dims)
    return packed


# --- dispatch ------------------------------------------------------------------------------------------------------


def _gpu_mask(mask: Any, shape, packed: bool, dilate: int, kind: dispatch.ArrayKind, device):
    """(tensor, packed) on `device` ready for the compose kernel: packed bits as they are when no dilation is asked.
    A mask of another kind or device than the video (e.g. a numpy mask with CUDA frames) is copied over."""
    import torch

    tensor = dispatch.to_torch(mask, kind).to(device)
    if packed and dilate == 0:
        return tensor.contiguous(), True
    m = mask_augment.mask_to_torch_bytes(tensor, shape, packed, dispatch.ArrayKind("torch", tensor.is_cuda))
    if dilate:
        m = mask_augment.dilate_torch(m, dilate)
    return (m.view(torch.uint8) if m.dtype == torch.bool else m), False


def _compose(op: str, src: Any, bg: Any | None, mask: Any, dilate: int, backend: str | None,
             rgb: bool) -> Any:
    """Shared body of compose_edges, foreground_only_control and copy_paste_composite (inputs validated)."""
    kind = dispatch.array_kind(src, "source", op)
    shape = tuple(int(d) for d in src.shape[:3])
    packed = _check_mask_for(mask, shape, op)
    chosen = dispatch.resolve_backend(backend, kind, op, GPU_PREFERENCE)
    if chosen == "reference":
        host_mask = mask_augment.mask_to_numpy(mask, shape, packed, dispatch.array_kind(mask, "mask", op))
        host_bg = None if bg is None else dispatch.to_numpy(bg, dispatch.array_kind(bg, "background", op))
        if rgb and host_bg is not None:
            host_bg = resize_video_reference(host_bg, *shape[1:3])
        result = compose_edges_reference(dispatch.to_numpy(src, kind), host_bg, host_mask, dilate=dilate)
        return dispatch.from_numpy(result, kind, like=src)

    import torch

    from sparkle_fast.kernels import compose as kernels

    tensor = dispatch.to_torch(src, kind)
    with dispatch.on_device_of(tensor, kind):
        bg_tensor = None
        if bg is not None:
            bg_kind = dispatch.array_kind(bg, "background", op)
            if rgb and tuple(bg.shape[1:3]) != shape[1:3]:
                resized = resize_video_reference(dispatch.to_numpy(bg, bg_kind), *shape[1:3])
                bg_tensor = torch.from_numpy(resized).to(tensor.device)
            else:
                bg_tensor = dispatch.to_torch(bg, bg_kind).to(tensor.device).contiguous()
        m, m_packed = _gpu_mask(mask, shape, packed, dilate, dispatch.array_kind(mask, "mask", op), tensor.device)
        out = torch.empty(shape + (3,), dtype=torch.uint8, device=tensor.device)
        kernels.compose(tensor.contiguous(), bg_tensor, m, m_packed, out, channels_in=3 if rgb else 1,
                        has_bg=bg_tensor is not None)
    return dispatch.from_torch(out, kind)


# --- public ops ----------------------------------------------------------------------------------------------------


def compose_edges(src_edges: Any, bg_edges: Any, mask: Any, *, dilate: int = 0, backend: str | None = "auto") -> Any:
    """Source edges where the (optionally dilated) mask is set, background edges elsewhere, as 3 channels.

    src_edges, bg_edges: uint8 (T, H, W) of equal shape. mask: bool/uint8 (T, H, W) or packed uint8
    (ceil(T*H*W/8),). dilate: pixels (square). Returns uint8 (T, H, W, 3), same kind and device as src_edges.
    """
    op = "compose_edges"
    dilate = mask_augment.check_dilate(dilate, op)
    s = _check_frames(src_edges, op, "src_edges", (1,))
    b = _check_frames(bg_edges, op, "bg_edges", (1,))
    _check_frame_counts(op, src_edges=s[0], bg_edges=b[0])
    _check_sizes(op, "src_edges", s, "bg_edges", b)
    return _compose(op, src_edges, bg_edges, mask, dilate, backend, rgb=False)


def foreground_only_control(src_edges: Any, mask: Any, *, dilate: int = 0, backend: str | None = "auto") -> Any:
    """Ablation baseline (OpenVE-3M style): source edges inside the mask, nothing outside. uint8 (T, H, W, 3)."""
    op = "foreground_only_control"
    dilate = mask_augment.check_dilate(dilate, op)
    _check_frames(src_edges, op, "src_edges", (1,))
    return _compose(op, src_edges, None, mask, dilate, backend, rgb=False)


def copy_paste_composite(src_video: Any, bg_video: Any, mask: Any, *, dilate: int = 0,
                         backend: str | None = "auto") -> Any:
    """Ablation baseline: source RGB pixels inside the mask pasted over the background video (resized to the
    source size with cv2.INTER_LINEAR when it differs). uint8 (T, H, W, 3) in and out."""
    op = "copy_paste_composite"
    dilate = mask_augment.check_dilate(dilate, op)
    s = _check_frames(src_video, op, "src_video", (3,))
    b = _check_frames(bg_video, op, "bg_video", (3,))
    _check_frame_counts(op, src_video=s[0], bg_video=b[0])
    return _compose(op, src_video, bg_video, mask, dilate, backend, rgb=True)


def control_video(src_video: Any, bg_video: Any, mask: Any, low: float = 100, high: float = 200, *,
                  dilate: int = 0, backend: str | None = "auto") -> Any:
    """Stage 5's control video: Canny edges of the source inside the mask, of the background outside, 3 channels.

    src_video: uint8 (T, H, W, 3) RGB or (T, H, W) gray; bg_video: the same layout, any frame size (resized to the
    source's with cv2.INTER_LINEAR). mask: bool/uint8 (T, H, W) or packed uint8 (ceil(T*H*W/8),). low, high: as
    canny. Equal to compose_edges(canny(src), canny(resize(bg)), mask, dilate=dilate). Returns uint8 (T, H, W, 3).
    """
    op = "control_video"
    dilate = mask_augment.check_dilate(dilate, op)
    s = _check_frames(src_video, op, "src_video", (1, 3))
    b = _check_frames(bg_video, op, "bg_video", (1, 3))
    if src_video.ndim != bg_video.ndim:
        raise ValueError(f"{op}: src_video is {'RGB' if src_video.ndim == 4 else 'gray'} but bg_video is "
                         f"{'RGB' if bg_video.ndim == 4 else 'gray'}; give both in the same layout")
    _check_frame_counts(op, src_video=s[0], bg_video=b[0])
    low, high = canny_ops._check_thresholds(low, high, op)
    kind = dispatch.array_kind(src_video, "src_video", op)
    packed = _check_mask_for(mask, s, op)
    chosen = dispatch.resolve_backend(backend, kind, op, GPU_PREFERENCE)
    if chosen == "reference":
        host_mask = mask_augment.mask_to_numpy(mask, s, packed, dispatch.array_kind(mask, "mask", op))
        bg_host = dispatch.to_numpy(bg_video, dispatch.array_kind(bg_video, "bg_video", op))
        result = control_video_reference(dispatch.to_numpy(src_video, kind), bg_host, host_mask, low, high,
                                         dilate=dilate)
        return dispatch.from_numpy(result, kind, like=src_video)

    import torch

    from sparkle_fast.kernels import canny as canny_kernels
    from sparkle_fast.kernels import compose as compose_kernels

    low_i, high_i = canny_ops.opencv_thresholds(low, high)
    is_rgb = src_video.ndim == 4
    tensor = dispatch.to_torch(src_video, kind)
    with dispatch.on_device_of(tensor, kind):
        bg_kind = dispatch.array_kind(bg_video, "bg_video", op)
        if tuple(bg_video.shape[1:3]) != s[1:3]:
            bg_tensor = torch.from_numpy(resize_video_reference(dispatch.to_numpy(bg_video, bg_kind), *s[1:3]))
            bg_tensor = bg_tensor.to(tensor.device)
        else:
            bg_tensor = dispatch.to_torch(bg_video, bg_kind).to(tensor.device)
        m, m_packed = _gpu_mask(mask, s, packed, dilate, dispatch.array_kind(mask, "mask", op), tensor.device)
        out = torch.empty(s + (3,), dtype=torch.uint8, device=tensor.device)
        T, H, W = s
        # Labels are 30-bit indices over the 2T-frame batch: split long clips along frames.
        per_chunk = max(1, canny_kernels.MAX_BATCH_PIXELS // max(1, 2 * H * W))
        if m_packed and per_chunk < T:  # chunks would start mid-byte: unpack once on the device
            m = mask_augment.mask_to_torch_bytes(m, s, True, dispatch.ArrayKind("torch", m.is_cuda))
            m_packed = False
        for start in range(0, T, per_chunk):
            stop = min(T, start + per_chunk)
            n = stop - start
            state = torch.empty((2 * n, H, W), dtype=torch.uint8, device=tensor.device)
            label = torch.empty((2 * n, H, W), dtype=torch.int32, device=tensor.device)
            # One batch: source frames 0..n-1, background frames n..2n-1; one hysteresis over both.
            canny_kernels.nms_threshold(tensor[start:stop], is_rgb, low_i, high_i, state, label, frame_offset=0)
            canny_kernels.nms_threshold(bg_tensor[start:stop], is_rgb, low_i, high_i, state, label, frame_offset=n)
            canny_kernels.hysteresis_links(state, label)
            chunk_mask = m if m_packed else m[start:stop]
            compose_kernels.compose(None, None, chunk_mask, m_packed, out[start:stop], state=state, label=label)
    return dispatch.from_torch(out, kind)
