"""The engine cache: where exported ONNX files and built engines live, and the keys that say when one can be reused.

    CACHE/onnx/<graph>-<onnx key>.onnx        (+ .json, + .onnx.data for weights over 2 GB)
    CACHE/engines/<graph>-<engine key>.plan   (+ .json: everything the key was made of)
    CACHE/timing/<gpu slug>-trt<version>.cache

An ONNX file is keyed by the graph, its precision, the torch version and a hash of the weights it was exported
from; an engine additionally by the GPU name, the TensorRT version and the profile's input shapes (min/opt/max).
Changing any of them (new weights, a LoRA fused into a model, another GPU, another TensorRT) gives a new key, so a
stale engine is never loaded. CACHE defaults to $SPARKLE_FAST_ENGINE_CACHE or ~/.cache/sparkle_fast/engines.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch

from sparkle_fast.engines.targets import GraphSpec


def default_cache_dir() -> Path:
    env = os.environ.get("SPARKLE_FAST_ENGINE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "sparkle_fast" / "engines"


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir) if cache_dir else default_cache_dir()


def weights_hash(modules: list[torch.nn.Module]) -> str:
    """sha256 over every parameter and buffer of `modules` (names, dtypes, shapes and bytes), 16 hex digits.
    Modules shared between graphs (the same decoder in two Wan graphs) hash the same."""
    digest = hashlib.sha256()
    for module in modules:
        tensors = dict(module.named_parameters())
        tensors.update(dict(module.named_buffers()))
        for name in sorted(tensors):
            tensor = tensors[name].detach()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            cpu = tensor.to("cpu").contiguous()
            if cpu.dtype == torch.bfloat16:
                cpu = cpu.view(torch.int16)
            digest.update(cpu.numpy().tobytes())
    return digest.hexdigest()[:16]


def gpu_name(device: torch.device | str | None = None) -> str:
    if not torch.cuda.is_available():
        return "no-gpu"
    return torch.cuda.get_device_name(torch.device(device) if device is not None else None)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "unknown"


def _key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def onnx_key_fields(spec: GraphSpec, precision: str, weights: str) -> dict:
    return {"graph": spec.full_name, "precision": precision, "weights": weights, "torch": torch.__version__,
            "inputs": [list(map(str, s)) for s in spec.input_shapes]}


def onnx_path(cache_dir: Path, spec: GraphSpec, precision: str, weights: str) -> Path:
    return cache_dir / "onnx" / f"{spec.full_name}-{precision}-{_key(onnx_key_fields(spec, precision, weights))}.onnx"


def engine_key_fields(spec: GraphSpec, precision: str, weights: str, gpu: str, trt_version: str) -> dict:
    shapes = {which: {k: list(v) for k, v in spec.shapes_for(which).items()} for which in ("min", "opt", "max")}
    return {**onnx_key_fields(spec, precision, weights), "gpu": gpu, "tensorrt": trt_version, "profile": shapes}


def engine_path(cache_dir: Path, spec: GraphSpec, precision: str, weights: str, gpu: str, trt_version: str) -> Path:
    key = _key(engine_key_fields(spec, precision, weights, gpu, trt_version))
    return cache_dir / "engines" / f"{spec.full_name}-{precision}-{slug(gpu)}-{key}.plan"


def timing_cache_path(cache_dir: Path, gpu: str, trt_version: str) -> Path:
    return cache_dir / "timing" / f"{slug(gpu)}-trt{trt_version}.cache"


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
