"""Plug a runner into a model adapter: the adapter keeps its API, one PyTorch module call inside it is replaced.

    from sparkle_fast.engines.plug import use_engine
    use_engine(tracker, "tensorrt")            # a Sam3Tracker: the image encoder runs as a TensorRT engine
    use_engine(i2v_generator, "onnxruntime")   # a Wan generator (WanI2VGenerator, FunControlGenerator): VAE decode
    apply_engine_config(models, config.engines)  # a stage's loaded models, per the run config's [engines]

What is replaced, on that one model instance (an instance attribute shadows the class's method):
  sam3  Sam3TrackerVideoModel.get_image_features(pixel_values, ...) -> the same Sam3TrackerVideoVisionEncoderOutput
        fields the video tracker reads (fpn_hidden_states, fpn_position_encoding), computed by the runner. The
        tracker's shared feature cache, sessions and masks code are untouched.
  vae   AutoencoderKLWan.decode(z, return_dict=True) -> DecoderOutput(sample) / (sample,), computed latent frame by
        latent frame by the decoder_first / decoder_step graphs (sparkle_fast.engines.targets). VAE tiling and
        slicing settings are not used on this path (each call holds one latent frame's activations).
  lineart  LineartDetector.model / .model_coarse (called as model(x)) -> the runner of generator / generator_coarse;
        the host-side resizes stay as they are.
Choices: "torch" (nothing replaced), "compile" (the same graphs under torch.compile), "onnxruntime" (float32 ONNX
under onnxruntime: CPU, CI) and "tensorrt" (an engine from the cache, built on first use).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from sparkle_fast.engines.targets import (
    ENGINE_CHOICES,
    GraphSpec,
    lineart_graphs,
    sam3_graphs,
    vae_graphs,
)

log = logging.getLogger(__name__)


def make_runners(specs: list[GraphSpec], choice: str, *, precision: str = "bf16", cache_dir=None) -> list[Any]:
    """One runner per graph for `choice` (not "torch": that one replaces nothing)."""
    from sparkle_fast.engines import cache as engine_cache
    from sparkle_fast.engines.runtime import OnnxRuntimeGraph, TensorRTGraph, TorchGraph

    if choice == "compile":
        return [TorchGraph(spec.module, compile=True) for spec in specs]
    if choice == "onnxruntime":
        from sparkle_fast.engines.build import ensure_onnx

        directory = engine_cache.resolve_cache_dir(cache_dir)
        # float32: onnxruntime's CPU kernels for bf16 are few; this path checks exports, TensorRT is the fast one
        return [OnnxRuntimeGraph(ensure_onnx(spec, "fp32", directory)) for spec in specs]
    if choice == "tensorrt":
        from sparkle_fast.engines.build import ensure_engine

        return [TensorRTGraph(ensure_engine(spec, precision=precision, cache_dir=cache_dir)) for spec in specs]
    raise ValueError(f"engine choice must be one of {ENGINE_CHOICES[1:]} here, got {choice!r}")


# ------------------------------------------------------------------------------------------------------------------
# SAM3
# ------------------------------------------------------------------------------------------------------------------

class Sam3ImageFeatures:
    """Stands in for Sam3TrackerVideoModel.get_image_features: pixel_values (B, 3, S, S) -> an output with
    fpn_hidden_states and fpn_position_encoding (lists of 3 tensors (H_l * W_l, B, C_l))."""

    def __init__(self, runner):
        self.runner = runner

    def __call__(self, pixel_values: torch.Tensor, **kwargs: Any):
        from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
            Sam3TrackerVideoVisionEncoderOutput,
        )

        outputs = self.runner(pixel_values)
        return Sam3TrackerVideoVisionEncoderOutput(fpn_hidden_states=list(outputs[:3]),
                                                   fpn_position_encoding=list(outputs[3:6]))


def plug_sam3_model(model, runner) -> None:
    model.get_image_features = Sam3ImageFeatures(runner)


def unplug(module, attribute: str) -> None:
    module.__dict__.pop(attribute, None)


# ------------------------------------------------------------------------------------------------------------------
# Wan VAE decoder
# ------------------------------------------------------------------------------------------------------------------

class WanChunkedDecode:
    """Stands in for AutoencoderKLWan.decode: z (B, z_dim, T, h, w) -> video (B, 3, 1 + 4 (T - 1), H, W) in [-1, 1],
    in the VAE's dtype, from a decoder_first runner and a decoder_step runner."""

    def __init__(self, vae, first, step):
        self.vae, self.first, self.step = vae, first, step

    def __call__(self, z: torch.Tensor, return_dict: bool = True):
        from diffusers.models.autoencoders.vae import DecoderOutput

        if z.ndim != 5:
            raise ValueError(f"Wan VAE decode takes latents (B, C, T, h, w), got shape {tuple(z.shape)}")
        frames, *caches = self.first(z[:, :, :1])
        count = z.shape[2]
        dtype = self.vae.dtype
        video = torch.empty((frames.shape[0], frames.shape[1], 1 + 4 * (count - 1), *frames.shape[3:]),
                            dtype=dtype, device=z.device)
        video[:, :, :1] = frames
        for i in range(1, count):
            frames, *caches = self.step(z[:, :, i:i + 1], *caches)
            video[:, :, 1 + 4 * (i - 1):1 + 4 * i] = frames
        return DecoderOutput(sample=video) if return_dict else (video,)


def plug_wan_vae(vae, first, step) -> None:
    vae.decode = WanChunkedDecode(vae, first, step)


# ------------------------------------------------------------------------------------------------------------------
# Line-art generator
# ------------------------------------------------------------------------------------------------------------------

class GeneratorCall:
    """Stands in for a LineartGenerator called as model(x): x (B, 3, H, W) -> runner(x)[0] (B, 1, H, W)."""

    def __init__(self, runner, module: torch.nn.Module):
        self.runner, self.module = runner, module

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner(x)[0]


def torch_lineart_models(detector) -> tuple[Any, Any]:
    """The detector's own (fine, coarse) generator modules, also after a plug replaced them."""
    return tuple(m.module if isinstance(m, GeneratorCall) else m for m in (detector.model, detector.model_coarse))


def plug_lineart(detector, runners: dict[str, Any]) -> None:
    fine, coarse = torch_lineart_models(detector)
    detector.model = GeneratorCall(runners["generator"], fine) if "generator" in runners else fine
    detector.model_coarse = (GeneratorCall(runners["generator_coarse"], coarse) if "generator_coarse" in runners
                             else coarse)


def _lineart_specs(detector, frame_hw: tuple[int, int] | None, max_batch: int) -> list[GraphSpec]:
    from types import SimpleNamespace

    from sparkle_fast.models.lineart import detect_size

    fine, coarse = torch_lineart_models(detector)
    view = SimpleNamespace(model=fine, model_coarse=coarse, batch_size=detector.batch_size)
    height, width = frame_hw or (720, 1280)
    return lineart_graphs(view, detect_hw=detect_size(height, width, detector.detect_resolution),
                          max_batch=max(max_batch, detector.batch_size))


# ------------------------------------------------------------------------------------------------------------------
# Adapters
# ------------------------------------------------------------------------------------------------------------------

def _latent_hw(adapter) -> tuple[int, int]:
    pipeline = adapter.pipeline
    factor = int(getattr(pipeline, "vae_scale_factor_spatial", 0) or pipeline.vae.spatial_compression_ratio)
    return adapter.config.height // factor, adapter.config.width // factor


def target_of(adapter) -> str | None:
    """'sam3' for a Sam3Tracker, 'vae' for an adapter holding a Wan pipeline with a VAE, 'lineart' for the
    line-art generator, None for anything else."""
    from sparkle_fast.models.tracker import Sam3Tracker

    if isinstance(adapter, Sam3Tracker):
        return "sam3"
    pipeline = getattr(adapter, "pipeline", None)
    vae = getattr(pipeline, "vae", None)
    if vae is not None and type(vae).__name__ == "AutoencoderKLWan":
        return "vae"
    if type(adapter).__name__ == "LineartDetector" and type(adapter).__module__ == "sparkle_fast.models.lineart":
        return "lineart"
    return None


def use_engine(adapter, choice: str, *, precision: str = "bf16", cache_dir=None, max_batch: int = 8,
               frame_hw: tuple[int, int] | None = None) -> str | None:
    """Run `adapter`'s per-frame network as `choice`; returns the target replaced (None: nothing to replace).
    frame_hw: the clip's (height, width), for the line-art profile (default 720x1280).
    Raises EngineUnavailable when the choice cannot run here (e.g. tensorrt without TensorRT or a GPU)."""
    if choice not in ENGINE_CHOICES:
        raise ValueError(f"engine choice must be one of {ENGINE_CHOICES}, got {choice!r}")
    target = target_of(adapter)
    if target is None:
        return None
    if choice == "torch":  # back to the adapter's own module (undo an earlier plug)
        if target == "sam3":
            unplug(adapter.model, "get_image_features")
        elif target == "vae":
            unplug(adapter.pipeline.vae, "decode")
        else:
            plug_lineart(adapter, {})
        return target
    if target == "sam3":
        runner, = make_runners(sam3_graphs(adapter.model, max_batch=max_batch), choice, precision=precision,
                               cache_dir=cache_dir)
        plug_sam3_model(adapter.model, runner)
    elif target == "vae":
        vae = adapter.pipeline.vae
        first, step = make_runners(vae_graphs(vae, latent_hw=_latent_hw(adapter)), choice, precision=precision,
                                   cache_dir=cache_dir)
        plug_wan_vae(vae, first, step)
    else:
        specs = _lineart_specs(adapter, frame_hw, max_batch)
        runners = make_runners(specs, choice, precision=precision, cache_dir=cache_dir)
        plug_lineart(adapter, {spec.name: runner for spec, runner in zip(specs, runners, strict=True)})
    log.info("%s runs as %s", target, choice)
    return target


def use_run_config_engines(adapter, run_config) -> str | None:
    """The adapters' use_run_config hook: run `adapter`'s per-frame network as the run config's [engines] says.
    Returns the target switched, None when the config has no [engines] section or the adapter has no target."""
    section = getattr(run_config, "engines", None)
    target = target_of(adapter)
    if section is None or target is None:
        return None
    clip = getattr(run_config, "clip", None)
    frame_hw = (clip.height, clip.width) if clip is not None else None
    return use_engine(adapter, getattr(section, target), precision=section.precision,
                      cache_dir=section.cache_dir or None, frame_hw=frame_hw)


def apply_engine_config(models: dict[str, Any] | None, engines_config) -> dict[str, str]:
    """Apply the run config's [engines] choices to a stage's loaded models (slot -> adapter). Returns
    {slot: "target=choice"} for what was switched. `engines_config`: driver.config.EnginesConfig."""
    applied = {}
    for slot, adapter in (models or {}).items():
        target = target_of(adapter)
        if target is None:
            continue
        choice = getattr(engines_config, target)
        if choice != "torch":
            use_engine(adapter, choice, precision=engines_config.precision,
                       cache_dir=engines_config.cache_dir or None)
            applied[slot] = f"{target}={choice}"
    return applied
