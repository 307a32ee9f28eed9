"""What this installation was built with and what it can run on: `sparkle_fast.build_info()`."""

from __future__ import annotations

import importlib
import importlib.metadata
from functools import lru_cache
from types import ModuleType

from sparkle_fast._version import __version__


@lru_cache(maxsize=1)
def _load_extension() -> tuple[ModuleType | None, str | None]:
    """sparkle_fast._C, or None and the reason it did not import (the package works without it)."""
    try:
        return importlib.import_module("sparkle_fast._C"), None
    except ImportError as exc:  # not built (e.g. a source checkout without `pip install -e .`)
        return None, f"{type(exc).__name__}: {exc}"


def extension() -> ModuleType | None:
    """The compiled module sparkle_fast._C, or None when it is not built."""
    return _load_extension()[0]


def cuda_kernels() -> ModuleType | None:
    """sparkle_fast._C when it was compiled with CUDA, else None."""
    ext = extension()
    return ext if ext is not None and ext.build_info()["cuda"] else None


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def build_info() -> dict:
    """A JSON-serialisable report: package version, how _C was built, the CUDA driver and GPUs it sees, and the
    versions of the libraries the ops use. Never raises: what is missing is reported as None or with a reason."""
    ext, error = _load_extension()
    info: dict = {"version": __version__, "extension": None, "extension_error": error}
    if ext is not None:
        info["extension"] = dict(ext.build_info())
        if info["extension"]["cuda"]:
            info["cuda_runtime_version"] = ext.cuda_runtime_version()
            info["cuda_driver_version"] = ext.cuda_driver_version()
            info["cuda_devices"] = [ext.cuda_device_info(i) for i in range(ext.cuda_device_count())]
    info["libraries"] = {
        name: _dist_version(name) for name in ("numpy", "torch", "triton", "cupy-cuda13x", "cupy-cuda12x")
    }
    return info
