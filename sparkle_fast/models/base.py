"""What every model adapter shares: the result object a task returns, device/dtype choice, image conversion, and
releasing a model so that its memory (GPU or host) is really returned before the driver loads the next stage's."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image


@dataclass
class TaskResult:
    """The outcome of one model task on one sample. Stages record it; it never raises.

    ok:       whether `value` holds a usable answer
    value:    the task's answer (str, dict, list ...), None when not ok
    reason:   why the task failed (empty when ok); for a partial success, what was degraded
    answers:  the raw model answers, one per attempt, for the manifest and the report
    attempts: how many generations were made
    """

    ok: bool
    value: Any = None
    reason: str = ""
    answers: list[str] = field(default_factory=list)
    attempts: int = 0


def pick_device(device: str | torch.device | None) -> torch.device:
    """cuda when available and not told otherwise, else cpu."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(device: torch.device, dtype: torch.dtype | None) -> torch.dtype:
    """bf16 on GPU (the real models' dtype), fp32 on CPU (bf16 matmuls on CPU are slow and some ops lack kernels)."""
    if dtype is not None:
        return dtype
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def to_pil(image: Any) -> Image.Image:
    """A PIL RGB image from PIL, a uint8 numpy (H, W, 3) array, or a uint8 torch (H, W, 3) / (3, H, W) tensor."""
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu()
        if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
            array = array.permute(1, 2, 0)
        image = array.numpy()
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {array.dtype} with shape {array.shape}")
    return Image.fromarray(array)


def free_memory(device: torch.device | None = None) -> None:
    """Collect garbage and hand cached CUDA blocks back to the driver (so the next model can use them)."""
    gc.collect()
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        torch.cuda.empty_cache()


def live_tensor_bytes() -> int:
    """Bytes of all distinct tensor storages reachable from gc-tracked objects (host and device): a CPU stand-in
    for torch.cuda.memory_allocated when checking that a released model left nothing behind."""
    gc.collect()
    seen, total = set(), 0
    for obj in gc.get_objects():
        try:
            if not issubclass(type(obj), torch.Tensor) or obj.is_meta:
                continue
            storage = obj.untyped_storage()
            key = (storage.data_ptr(), obj.device.type)
            if key in seen or storage.data_ptr() == 0:
                continue
            seen.add(key)
            total += storage.nbytes()
        except (RuntimeError, ReferenceError, NotImplementedError):
            continue
    return total
