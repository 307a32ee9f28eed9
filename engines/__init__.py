"""Engines for the per-frame networks (installed as sparkle_fast.engines): ONNX export, TensorRT builds into a
cache, and runners that drop in for the PyTorch module they replace inside a model adapter.

  targets.py  what is exported: SAM3's image encoder, the Wan VAE decoder (per latent frame), the line-art hook
  export.py   torch.onnx.export with the dynamo exporter (TorchScript only as a recorded fallback)
  cache.py    the engine cache and its keys (GPU, TensorRT version, input shapes, weights hash)
  build.py    TensorRT builds through its Python API (strongly typed bf16/fp16, profiles, timing cache)
  runtime.py  runners: TensorRTGraph (current CUDA stream), OnnxRuntimeGraph (CPU), TorchGraph (eager / compile)
  plug.py     use_engine(adapter, choice) and apply_engine_config(models, config.engines)

TensorRT and onnxruntime are imported only when used; without them the error names the extra to install
(`pip install -e '.[engines]'`). docs/ENGINES.md has the commands, the cache layout and what was measured.
"""

from sparkle_fast.engines.targets import ENGINE_CHOICES, TARGETS, EngineUnavailable, GraphSpec

__all__ = ["ENGINE_CHOICES", "TARGETS", "EngineUnavailable", "GraphSpec"]
