"""TensorRT engine builds through TensorRT's Python API, into the engine cache.

    from sparkle_fast.engines.build import ensure_engine
    plan = ensure_engine(spec, precision="bf16", cache_dir=None)   # export (cached) + build (cached) -> .plan path

Precision. TensorRT 11 networks are strongly typed (its weak-typing builder flags FP16/BF16/FP8 are gone; on
TensorRT 10 we ask for a strongly typed network explicitly): an engine runs in the types its ONNX graph has. So
"bf16" / "fp16" are exported as bf16 / fp16 graphs (weights and inputs cast before export) and built as they are;
"fp32" builds a float32 engine (TF32 allowed where TensorRT has the flag). FP8 needs explicit quantisation (Q/DQ
nodes from a calibration pass, e.g. NVIDIA ModelOpt) and is not done here yet: asking for it is an error saying so.

Profiles: one optimisation profile per graph, from GraphSpec.dims (min/opt/max of batch and, for the VAE, latent h
and w). The timing cache (one file per GPU and TensorRT version) is loaded before and saved after every build, so
rebuilding for another shape reuses the measured tactics.

TensorRT is imported lazily: without it (or without a CUDA GPU) `EngineUnavailable` names the extra to install.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from sparkle_fast.engines import cache as engine_cache
from sparkle_fast.engines.export import PRECISIONS, export_graph
from sparkle_fast.engines.targets import EngineUnavailable, GraphSpec

log = logging.getLogger(__name__)

TENSORRT_EXTRA = ("pip install -e '.[engines]' (TensorRT for CUDA 13: tensorrt-cu13; onnxruntime-gpu) on a node "
                  "with an NVIDIA GPU")


def import_tensorrt():
    """The tensorrt module, or EngineUnavailable naming the extra to install."""
    try:
        import tensorrt
    except ImportError as exc:
        raise EngineUnavailable(f"TensorRT is not installed: {TENSORRT_EXTRA}") from exc
    return tensorrt


def tensorrt_ready() -> str | None:
    """None when an engine can be built here, else the reason it cannot (no TensorRT, no CUDA GPU)."""
    try:
        import_tensorrt()
    except EngineUnavailable as exc:
        return str(exc)
    if not torch.cuda.is_available():
        return "building a TensorRT engine needs a CUDA GPU, and torch sees none on this machine"
    return None


def check_precision(precision: str) -> torch.dtype:
    if precision == "fp8":
        raise EngineUnavailable("precision fp8: TensorRT 11 builds FP8 only from explicitly quantised graphs "
                                "(Q/DQ nodes from a calibration pass); sparkle_fast.engines does not quantise yet. "
                                "Use bf16 or fp16.")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def ensure_onnx(spec: GraphSpec, precision: str, cache_dir: Path, weights: str | None = None) -> Path:
    """The cached ONNX file of `spec` in `precision`, exported now when missing."""
    dtype = check_precision(precision)
    weights = weights or engine_cache.weights_hash(spec.weights)
    path = engine_cache.onnx_path(cache_dir, spec, precision, weights)
    if not path.is_file():
        log.info("exporting %s (%s) to %s", spec.full_name, precision, path)
        export_graph(spec, path, dtype=dtype)
    return path


def build_engine(onnx_file: Path, spec: GraphSpec, plan_path: Path, timing_cache: Path, *,
                 workspace_gib: float = 8.0, opt_level: int = 3) -> Path:
    """Parse `onnx_file`, build one engine with one profile (spec.dims) and write it to plan_path atomically."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # required on 10.x, default on 11.x
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_file}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    config.builder_optimization_level = opt_level
    if hasattr(trt.BuilderFlag, "TF32"):
        config.set_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    low, opt, high = (spec.shapes_for(which) for which in ("min", "opt", "max"))
    for name in spec.input_names:
        profile.set_shape(name, low[name], opt[name], high[name])
    config.add_optimization_profile(profile)
    timing = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_file} (see the TensorRT log above)")
    engine_cache.write_atomically(plan_path, bytes(serialized))
    engine_cache.write_atomically(timing_cache, bytes(config.get_timing_cache().serialize()))
    log.info("built %s in %.1f s", plan_path, time.perf_counter() - started)
    return plan_path


def ensure_engine(spec: GraphSpec, *, precision: str = "bf16", cache_dir=None, weights: str | None = None) -> Path:
    """The cached engine of `spec` for this GPU and TensorRT version, exported and built when missing."""
    reason = tensorrt_ready()
    if reason is not None:
        raise EngineUnavailable(reason)
    trt = import_tensorrt()
    cache_dir = engine_cache.resolve_cache_dir(cache_dir)
    weights = weights or engine_cache.weights_hash(spec.weights)
    gpu = engine_cache.gpu_name()
    plan = engine_cache.engine_path(cache_dir, spec, precision, weights, gpu, trt.__version__)
    if plan.is_file():
        return plan
    onnx_file = ensure_onnx(spec, precision, cache_dir, weights)
    build_engine(onnx_file, spec, plan, engine_cache.timing_cache_path(cache_dir, gpu, trt.__version__))
    fields = engine_cache.engine_key_fields(spec, precision, weights, gpu, trt.__version__)
    plan.with_suffix(".json").write_text(json.dumps({**fields, "onnx": str(onnx_file)}, indent=2))
    return plan
