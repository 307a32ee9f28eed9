"""What the judge-free metrics share: inputs as float tensors on one device, luma, and square erosion / dilation.

Every metric takes numpy arrays or torch tensors (CPU or CUDA) and computes in torch on `device` (default: the
input's device for tensors, else CUDA when present, else CPU), so a GPU node evaluates a bench on the GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# ITU-R BT.601 luma weights (as OpenCV's RGB2GRAY, but in float: no rounding to uint8).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def pick_device(device: Any, *arrays: Any) -> torch.device:
    """`device` when given; else the device of the first torch tensor among `arrays`; else CUDA when present."""
    if device is not None:
        return torch.device(device)
    for array in arrays:
        if isinstance(array, torch.Tensor):
            return array.device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def as_frames(video: Any, name: str, op: str, device: torch.device) -> torch.Tensor:
    """float32 (T, H, W, C) on `device` from uint8 (T, H, W, 3) RGB or (T, H, W) gray (C = 1)."""
    tensor = video if isinstance(video, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(video))
    if tensor.dtype != torch.uint8:
        raise ValueError(f"{op}: {name} must be uint8 video frames, got {tensor.dtype}")
    if tensor.ndim == 3:
        tensor = tensor[..., None]
    if tensor.ndim != 4 or tensor.shape[-1] not in (1, 3) or min(tensor.shape[:3]) < 1:
        raise ValueError(f"{op}: {name} must be (T, H, W, 3) RGB or (T, H, W) gray with T, H, W >= 1, got shape "
                         f"{tuple(video.shape)}")
    return tensor.to(device=device, dtype=torch.float32)


def as_mask(mask: Any, shape: tuple[int, int, int], name: str, op: str, device: torch.device) -> torch.Tensor:
    """bool (T, H, W) on `device` from bool / uint8 (T, H, W) (nonzero = foreground); its shape must be `shape`."""
    tensor = mask if isinstance(mask, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(mask))
    if tensor.dtype not in (torch.bool, torch.uint8):
        raise ValueError(f"{op}: {name} must be bool or uint8 (T, H, W), got {tensor.dtype}")
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} has shape {tuple(tensor.shape)} but the video frames are {tuple(shape)} "
                         "(T, H, W)")
    return tensor.to(device) != 0


def check_same_shape(op: str, a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str) -> None:
    if a.shape[:3] != b.shape[:3]:
        raise ValueError(f"{op}: {a_name} is {tuple(a.shape[:3])} but {b_name} is {tuple(b.shape[:3])} (T, H, W); "
                         "resize or trim one first")


def luma(frames: torch.Tensor) -> torch.Tensor:
    """float32 (T, H, W) luma of float (T, H, W, C) frames (C = 1 is already gray)."""
    if frames.shape[-1] == 1:
        return frames[..., 0]
    weights = torch.tensor(LUMA_WEIGHTS, dtype=frames.dtype, device=frames.device)
    return frames @ weights


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """bool (T, H, W) dilated by a (2r+1) square; r = 0 returns the mask. Outside the frame counts as background."""
    if radius <= 0:
        return mask
    x = mask[:, None].to(torch.float32)
    return torch.nn.functional.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)[:, 0] > 0


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """bool (T, H, W) eroded by a (2r+1) square (a pixel stays when its whole square is foreground); outside the
    frame does not erode (a subject cut by the frame edge keeps its edge pixels)."""
    if radius <= 0:
        return mask
    return ~dilate(~mask, radius)
