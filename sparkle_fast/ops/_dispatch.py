"""How an op call reaches an implementation: array kinds in and out, the backend choice, and the errors users see.

Every public op accepts numpy arrays, torch tensors (CPU or CUDA) and cupy arrays, and returns the kind it was given,
on the same device. Backends:

  reference  the op's numpy definition; runs on the host (CUDA inputs are copied there and back)
  triton     sparkle_fast.kernels; CUDA inputs, or CPU tensors under the Triton interpreter (TRITON_INTERPRET=1)
  cuda       sparkle_fast._C built with nvcc; CUDA inputs
  auto       CPU inputs -> reference; CUDA inputs -> the fastest GPU backend present (the op's preference order)

The environment variable SPARKLE_FAST_BACKEND replaces "auto" (the default of every op), so a whole pipeline can be
pinned to one backend; a backend named explicitly in a call wins over it. An op that has no implementation of the
pinned GPU backend (e.g. find_homographies has no Triton kernel) resolves as "auto" instead.

record_backends() tells a caller (a pipeline stage) which implementation each op call inside a block reached.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparkle_fast._build import cuda_kernels

BACKENDS = ("auto", "reference", "triton", "cuda")
ENV_BACKEND = "SPARKLE_FAST_BACKEND"


class BackendUnavailableError(RuntimeError):
    """The requested backend is not part of this build or cannot run on this machine."""


@dataclass(frozen=True)
class ArrayKind:
    """Which library an input came from and whether it lives on a GPU."""

    library: str  # "numpy" | "torch" | "cupy"
    is_cuda: bool

    def describe(self) -> str:
        return f"{self.library} array on {'the GPU' if self.is_cuda else 'the host'}"


def _torch():
    import torch

    return torch


def _is_torch_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")  # no torch import unless the caller already has tensors
    return torch is not None and isinstance(x, torch.Tensor)


def _is_cupy_array(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "cupy" and hasattr(x, "__cuda_array_interface__")


def array_kind(x: Any, name: str, op: str) -> ArrayKind:
    """Classify an input; a TypeError names the argument when it is not an array we accept."""
    if isinstance(x, np.ndarray):
        return ArrayKind("numpy", False)
    if _is_torch_tensor(x):
        if x.device.type not in ("cpu", "cuda"):
            raise ValueError(f"{op}: {name} is a torch tensor on {x.device}; only CPU and CUDA tensors are supported")
        return ArrayKind("torch", x.device.type == "cuda")
    if _is_cupy_array(x):
        return ArrayKind("cupy", True)
    raise TypeError(f"{op}: {name} must be a numpy array, torch tensor or cupy array, got {type(x).__name__}")


def dtype_name(x: Any) -> str:
    """'uint8', 'bool', 'float32', ... for numpy, torch and cupy alike."""
    return str(x.dtype).removeprefix("torch.")


def check_dtype(x: Any, allowed: Sequence[str], name: str, op: str) -> str:
    dtype = dtype_name(x)
    if dtype not in allowed:
        raise TypeError(f"{op}: {name} must have dtype {' or '.join(allowed)}, got {dtype}")
    return dtype


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpreter() -> bool:
    """True when Triton kernels run on CPU tensors through its interpreter (set before triton is imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _backend_unavailable_reason(backend: str) -> str | None:
    if backend == "cuda" and cuda_kernels() is None:
        return (
            "sparkle_fast._C was built without CUDA (nvcc was not found, or SPARKLE_FAST_CUDA=0); reinstall with "
            "nvcc on PATH (see README), or use backend='triton' or 'reference'"
        )
    if backend == "triton" and not triton_available():
        return "triton is not installed; install it (pip install triton) or use backend='cuda' or 'reference'"
    return None


# The open record_backends() logs (innermost last); every resolved op call is noted in each.
_BACKEND_LOGS: contextvars.ContextVar[tuple[dict[str, str], ...]] = contextvars.ContextVar("sparkle_fast_backend_logs",
                                                                                          default=())


@contextlib.contextmanager
def record_backends() -> Iterator[dict[str, str]]:
    """Yields a dict filled, as op calls inside the block resolve, with op name -> the backend it ran on
    ("reference", "triton", "cuda"; "reference+triton" when calls of one op went to both). Blocks nest."""
    log: dict[str, str] = {}
    token = _BACKEND_LOGS.set(_BACKEND_LOGS.get() + (log,))
    try:
        yield log
    finally:
        _BACKEND_LOGS.reset(token)


def resolve_backend(backend: str | None, kind: ArrayKind, op: str, gpu_preference: Sequence[str]) -> str:
    """The concrete backend ('reference', 'triton' or 'cuda') for this call, or a clear error; noted in every open
    record_backends() log.

    gpu_preference: the op's GPU backends, fastest first (by bench/); auto picks the first one present.
    """
    chosen = _resolve_backend(backend, kind, op, gpu_preference)
    for log in _BACKEND_LOGS.get():
        seen = set(log[op].split("+")) if op in log else set()
        log[op] = "+".join(sorted(seen | {chosen}))
    return chosen


def _resolve_backend(backend: str | None, kind: ArrayKind, op: str, gpu_preference: Sequence[str]) -> str:
    source = "backend argument"
    if backend is None or backend == "auto":
        env = os.environ.get(ENV_BACKEND, "").strip()
        if env and env not in ("reference", "auto") and env in BACKENDS and env not in gpu_preference:
            backend = "auto"  # a run pinned to a GPU backend this op does not implement: the op's own choice
        elif env:
            backend, source = env, f"environment variable {ENV_BACKEND}"
        else:
            backend = "auto"
    if backend not in BACKENDS:
        raise ValueError(f"{op}: unknown backend {backend!r} from the {source}; expected one of {', '.join(BACKENDS)}")
    if backend not in ("auto", "reference") and backend not in gpu_preference:
        raise BackendUnavailableError(f"{op} has no {backend!r} implementation (it has: reference, "
                                      f"{', '.join(gpu_preference)}); use one of those or 'auto'")

    if backend == "auto":
        if not kind.is_cuda:
            return "reference"
        for candidate in gpu_preference:
            if _backend_unavailable_reason(candidate) is None:
                return candidate
        raise BackendUnavailableError(
            f"{op}: no GPU backend is available for a {kind.describe()}: "
            + "; ".join(f"{b}: {_backend_unavailable_reason(b)}" for b in gpu_preference)
        )
    if backend == "reference":
        return backend

    reason = _backend_unavailable_reason(backend)
    if reason is not None:
        raise BackendUnavailableError(f"{op}: backend {backend!r} (from the {source}) is unavailable: {reason}")
    if not kind.is_cuda and not (backend == "triton" and triton_interpreter()):
        raise ValueError(
            f"{op}: backend {backend!r} (from the {source}) needs GPU input, got a {kind.describe()}; move it to the "
            "GPU (e.g. tensor.cuda()), or use backend='reference'"
            + (" (or set TRITON_INTERPRET=1 before importing triton to run Triton on the CPU)"
               if backend == "triton" else "")
        )
    return backend


# --- moving between array kinds ------------------------------------------------------------------------------------


def to_numpy(x: Any, kind: ArrayKind) -> np.ndarray:
    """A numpy view (host inputs) or host copy (GPU inputs) of x."""
    if kind.library == "numpy":
        return x
    if kind.library == "torch":
        return x.detach().cpu().numpy()
    return x.get()  # cupy


def from_numpy(result: np.ndarray, kind: ArrayKind, like: Any) -> Any:
    """`result` as the same kind of array as `like`, on its device."""
    if kind.library == "numpy":
        return result
    if kind.library == "torch":
        return _torch().from_numpy(np.ascontiguousarray(result)).to(like.device)
    import cupy

    with cupy.cuda.Device(like.device.id):
        return cupy.asarray(result)


def to_torch(x: Any, kind: ArrayKind):
    """A torch tensor sharing memory with x (numpy and cupy inputs are wrapped, not copied, except numpy views with
    negative strides, which torch cannot represent)."""
    torch = _torch()
    if kind.library == "torch":
        return x.detach()
    if kind.library == "numpy":
        if any(stride < 0 for stride in x.strides):  # torch cannot view negative strides: copy those views
            x = np.ascontiguousarray(x)
        return torch.as_tensor(x)
    return torch.from_dlpack(x)  # cupy, zero-copy


def from_torch(result, kind: ArrayKind) -> Any:
    """A torch result converted back to the caller's kind (zero-copy for cupy; numpy results come from the host)."""
    if kind.library == "torch":
        return result
    if kind.library == "numpy":
        return result.cpu().numpy()
    import cupy

    return cupy.from_dlpack(result)


@contextlib.contextmanager
def on_device_of(tensor, kind: ArrayKind) -> Iterator[None]:
    """Make the tensor's GPU current, and for cupy inputs also cupy's current stream, so kernels launched inside
    (Triton on torch's current stream, CUDA on the stream we pass) are ordered with the caller's work."""
    if not tensor.is_cuda:
        yield
        return
    torch = _torch()
    with torch.cuda.device(tensor.device):
        if kind.library == "cupy":
            import cupy

            stream = torch.cuda.ExternalStream(cupy.cuda.get_current_stream().ptr, device=tensor.device)
            with torch.cuda.stream(stream):
                yield
        else:
            yield


def current_stream_handle(tensor) -> int:
    """The cudaStream_t (as an int) that torch would launch on for this tensor's device."""
    return _torch().cuda.current_stream(tensor.device).cuda_stream
