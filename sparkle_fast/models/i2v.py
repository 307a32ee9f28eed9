"""Stage 3's background video: Wan2.2-I2V-A14B distilled to 4 steps (LightX2V), on diffusers' WanImageToVideoPipeline.

The input is the foreground-removed edited frame 0, the prompt the background caption; the output is Sparkle's
edited_background_video (81 frames, 1280x720, 16 fps by default).

Wan2.2-A14B has two experts: `transformer` (high-noise expert) runs the steps with t >= boundary_ratio * 1000 and
`transformer_2` (low-noise expert) the rest; boundary_ratio is 0.9 for I2V.

The LightX2V schedule (the trap this module exists to avoid): 4 Euler steps at t = 1000, 937.5, 833.3, 625, i.e. the
sigmas (1, .75, .5, .25) after the shift-5 map s -> 5s / (1 + 4s). FlowMatchEulerDiscreteScheduler(shift=5)
.set_timesteps(4) spaces the 4 sigmas over [1, 1/1000] and gives t = 1000, 910, 717, 24 instead, and the pipeline only
passes num_inference_steps to set_timesteps, so `PinnedSigmasScheduler` pins the sigmas. With 4 steps the high-noise
expert runs steps 1-2 (t = 1000, 937.5 >= 900) and the low-noise expert steps 3-4. Guidance 1.0: no unconditional
pass (the pipeline runs classifier-free guidance only when guidance_scale > 1).

The distillation comes either as LoRAs in LightX2V's key layout (one per expert: high_noise_model.safetensors,
low_noise_model.safetensors), loaded into both experts and fused (`fuse_lightx2v_loras`), or as distilled transformer
checkpoints in the model folder itself (then pass no LoRA).

Speed knobs (`SpeedOptions`, applied by `apply_speed_options`, each switchable; bench/generation.py measures them):
bf16 weights, torch.compile of the transformers' repeated blocks, the attention backend (SDPA = "native",
FlashAttention-3 = "_flash_3" where installed), VAE tiling, model CPU offload (GPUs below 80 GB) and sequential expert
residency (only one 14B expert on the GPU at a time).

Generation levers (`levers.GenerationLevers`, from the run config's [i2v] / [control] keys, applied by use_run_config
and recorded under "levers" in the sample's record; one module each, docs/GENERATION.md): cfg_batch (both guidance
passes in one forward), cache (diffusers' FirstBlockCache), fp8 (torchao float8 weights), attention_backend
(diffusers' dispatcher), context_parallel (one clip over several GPUs). Distilled sampling is the `mode` above.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sparkle_fast.models.base import TaskResult, free_memory, pick_device, pick_dtype, to_pil
from sparkle_fast.models.levers import GenerationLevers, LeverState, levers_from_section
from sparkle_fast.models.slots import ModelFolderError, ModelLoadError, check_model_folder

LIGHTX2V_SIGMAS = (1.0, 0.75, 0.5, 0.25)
LIGHTX2V_SHIFT = 5.0
# The timesteps the pinned sigmas give (num_train_timesteps 1000): what the distilled weights were trained on.
LIGHTX2V_TIMESTEPS = (1000.0, 937.5, 2500.0 / 3.0, 625.0)
I2V_BOUNDARY_RATIO = 0.9
# File names of the LightX2V Wan2.2 LoRA releases (one LoRA per expert).
LIGHTX2V_HIGH_FILE = "high_noise_model.safetensors"
LIGHTX2V_LOW_FILE = "low_noise_model.safetensors"


# ----------------------------------------------------------------------------------------------------------------
# Scheduler
# ----------------------------------------------------------------------------------------------------------------

def pinned_sigmas_scheduler(sigmas=LIGHTX2V_SIGMAS, shift: float = LIGHTX2V_SHIFT, num_train_timesteps: int = 1000):
    """A FlowMatchEulerDiscreteScheduler whose set_timesteps always uses `sigmas` (shifted by `shift`).

    The Wan pipelines call scheduler.set_timesteps(num_inference_steps, device=...) only; this scheduler answers that
    call with the pinned sigmas and raises ValueError when num_inference_steps asks for another number of steps (a
    silent mismatch would run the distilled weights off their schedule).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    class PinnedSigmasScheduler(FlowMatchEulerDiscreteScheduler):
        """FlowMatchEulerDiscreteScheduler with pinned sigmas (see pinned_sigmas_scheduler)."""

        pinned_sigmas: tuple[float, ...] = ()

        def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None):
            pinned = list(self.pinned_sigmas)
            if num_inference_steps is not None and num_inference_steps != len(pinned):
                raise ValueError(f"this scheduler is pinned to {len(pinned)} steps (sigmas {pinned}); "
                                 f"num_inference_steps={num_inference_steps} asks for another schedule: pass "
                                 f"num_inference_steps={len(pinned)} or use the stock scheduler")
            return super().set_timesteps(sigmas=pinned, device=device, mu=mu)

    sigmas = tuple(float(s) for s in sigmas)
    if not sigmas or any(not 0.0 < s <= 1.0 for s in sigmas) or list(sigmas) != sorted(sigmas, reverse=True):
        raise ValueError(f"sigmas must be a non-empty decreasing sequence in (0, 1], got {sigmas}")
    scheduler = PinnedSigmasScheduler(num_train_timesteps=num_train_timesteps, shift=shift)
    scheduler.pinned_sigmas = sigmas
    return scheduler


def expert_for_timestep(t: float, boundary_ratio: float, num_train_timesteps: int = 1000) -> str:
    """'high' (transformer) when t >= boundary_ratio * num_train_timesteps, else 'low' (transformer_2): the rule of
    diffusers' Wan pipelines and VideoX-Fun's (whose names are swapped)."""
    return "high" if float(t) >= boundary_ratio * num_train_timesteps else "low"


# ----------------------------------------------------------------------------------------------------------------
# LightX2V LoRAs
# ----------------------------------------------------------------------------------------------------------------

def _load_lora_source(source) -> dict:
    """A LoRA state dict from a dict or a .safetensors path (FileNotFoundError naming the file)."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"LightX2V LoRA {path}: no such file (expected a .safetensors LoRA, e.g. "
                                f"{LIGHTX2V_HIGH_FILE} for the high-noise expert)")
    from safetensors.torch import load_file

    return load_file(str(path))


def fuse_lightx2v_loras(pipeline, high, low, *, scale: float = 1.0, scale_low: float | None = None) -> None:
    """Load a LoRA into each expert (high -> pipeline.transformer, low -> pipeline.transformer_2), fuse and unload.

    `high`/`low`: a state dict or a .safetensors path, in LightX2V's layout (diffusion_model.blocks.N.self_attn.q.
    lora_down.weight, ... with alpha keys) or diffusers' (diffusers converts on load). Keys for modules Wan2.2 lacks
    (the Wan2.1 I2V k_img / v_img) are ignored by diffusers with a warning. After this the experts hold the fused
    weights and no PEFT layers remain (no per-call LoRA overhead).
    """
    pipeline.load_lora_weights(_load_lora_source(high), adapter_name="lightx2v_high")
    pipeline.load_lora_weights(_load_lora_source(low), adapter_name="lightx2v_low", load_into_transformer_2=True)
    pipeline.set_adapters(["lightx2v_high", "lightx2v_low"],
                          adapter_weights=[scale, scale if scale_low is None else scale_low])
    pipeline.fuse_lora(components=["transformer", "transformer_2"], lora_scale=1.0)
    pipeline.unload_lora_weights()


# ----------------------------------------------------------------------------------------------------------------
# Speed knobs
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpeedOptions:
    """Each generation speed knob, switchable. Defaults are the fast settings for one 80 GB GPU.

    compile:            torch.compile the transformers' repeated blocks (compile_repeated_blocks, fullgraph)
    attention_backend:  diffusers attention backend for the transformers: "native" (SDPA), "_flash_3"
                        (FlashAttention-3, needs flash_attn_interface), "flash" (FlashAttention-2) ... None: leave as is
    vae_tiling:         decode/encode the VAE in tiles (less memory at 720p, a little slower)
    cpu_offload:        diffusers model CPU offload (one component on the GPU at a time): GPUs below 80 GB
    sequential_experts: keep only the expert that is running on the GPU, the other on the host
    """

    compile: bool = False
    attention_backend: str | None = None
    vae_tiling: bool = False
    cpu_offload: bool = False
    sequential_experts: bool = False


class ExpertSwapper:
    """Keeps one of the two experts on `device` and the other on `offload_device`, swapping on the first call of the
    other (forward pre-hooks). `moves` records every swap as (expert name, device) for tests and logs."""

    def __init__(self, experts: dict, device, offload_device="cpu"):
        self.experts = dict(experts)
        self.device, self.offload_device = torch.device(device), torch.device(offload_device)
        self.resident: str | None = None
        self.moves: list[tuple[str, str]] = []
        self.handles = [module.register_forward_pre_hook(self._hook(name)) for name, module in self.experts.items()]
        for name, module in self.experts.items():
            module.to(self.offload_device)
            self.moves.append((name, str(self.offload_device)))

    def _hook(self, name):
        def pre_hook(module, args):
            if self.resident == name:
                return None
            for other, other_module in self.experts.items():
                if other != name and other == self.resident:
                    other_module.to(self.offload_device)
                    self.moves.append((other, str(self.offload_device)))
            free_memory(self.device)
            module.to(self.device)
            self.moves.append((name, str(self.device)))
            self.resident = name
            return None

        return pre_hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def apply_speed_options(pipeline, options: SpeedOptions, device) -> object:
    """Apply `options` to a Wan pipeline (transformer + transformer_2 + vae) and place it on `device`. Returns the
    ExpertSwapper when sequential_experts is on (keep it alive), else None."""
    device = torch.device(device)
    experts = {name: getattr(pipeline, name, None) for name in ("transformer", "transformer_2")}
    experts = {name: module for name, module in experts.items() if module is not None}
    if options.attention_backend:
        for module in experts.values():
            module.set_attention_backend(options.attention_backend)
    if options.vae_tiling:
        pipeline.vae.enable_tiling()
    if options.cpu_offload and options.sequential_experts:
        raise ValueError("SpeedOptions: cpu_offload already keeps one model on the GPU at a time; "
                         "turn sequential_experts off when cpu_offload is on")
    swapper = None
    if options.cpu_offload:
        if device.type != "cuda":
            raise ValueError(f"SpeedOptions.cpu_offload needs a CUDA device, got {device}")
        pipeline.enable_model_cpu_offload(device=device)
    elif options.sequential_experts:
        for name, module in pipeline.components.items():
            if isinstance(module, torch.nn.Module) and name not in experts:
                module.to(device)
        swapper = ExpertSwapper(experts, device)
    else:
        pipeline.to(device)
    if options.compile:
        for module in experts.values():
            module.compile_repeated_blocks(fullgraph=True)
    return swapper


# ----------------------------------------------------------------------------------------------------------------
# Shared input checks and conversions (also used by control.py)
# ----------------------------------------------------------------------------------------------------------------

def check_video_geometry(num_frames: int, height: int, width: int, multiple: int = 16, temporal: int = 4) -> None:
    """ValueError unless num_frames = 4k+1 and height/width are positive multiples of `multiple` (VAE 8 x patch 2)."""
    if num_frames < 1 or (num_frames - 1) % temporal:
        raise ValueError(f"num_frames must be {temporal}k+1 (e.g. 81), got {num_frames}")
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise ValueError(f"height and width must be positive multiples of {multiple}, got {height}x{width} "
                         f"(720x1280 works; Kiwi-Edit floors to multiples of 32)")


def check_prompt_length(tokenizer, prompt: str, max_sequence_length: int, what: str = "prompt") -> None:
    """ValueError when `prompt` has more tokens than the text encoder reads (it would be cut silently)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{what} must be a non-empty string, got {prompt!r}")
    n_tokens = len(tokenizer(prompt, add_special_tokens=True).input_ids)
    if n_tokens > max_sequence_length:
        raise ValueError(f"{what} is {n_tokens} tokens, longer than max_sequence_length={max_sequence_length}: "
                         f"shorten it (the text encoder would cut it off)")


def check_image_size(image: Image.Image, height: int, width: int, resize: bool, what: str = "image") -> Image.Image:
    """The image at (height, width): resized (bicubic) when `resize`, else ValueError naming both sizes."""
    if image.size == (width, height):
        return image
    if not resize:
        raise ValueError(f"{what} is {image.size[0]}x{image.size[1]} (WxH) but the video is {width}x{height}: "
                         f"pass an image of the video's size, or resize_inputs=True to resize it")
    return image.resize((width, height), Image.Resampling.BICUBIC)


def frames_to_uint8(frames) -> np.ndarray:
    """Pipeline output (np float in [0, 1], (1, T, H, W, 3) or (T, H, W, 3)) -> uint8 (T, H, W, 3)."""
    array = np.asarray(frames)
    if array.ndim == 5:
        array = array[0]
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# The stage-3 generator
# ----------------------------------------------------------------------------------------------------------------

def distillation_loras(folder: Path, lora_high=None, lora_low=None) -> tuple | None:
    """The 4-step LoRAs to fuse: the ones given (paths or state dicts), else the model folder's lightx2v/ pair if it
    has one, else None. ValueError when only one of the two is given; FileNotFoundError for a named file missing."""
    if not lora_high and not lora_low and (folder / "lightx2v").is_dir():
        lora_high, lora_low = folder / "lightx2v" / LIGHTX2V_HIGH_FILE, folder / "lightx2v" / LIGHTX2V_LOW_FILE
    if bool(lora_high) != bool(lora_low):
        raise ValueError("pass both lora_high and lora_low (one LoRA per expert) or neither")
    if not lora_high:
        return None
    for lora in (lora_high, lora_low):
        if not isinstance(lora, Mapping) and not Path(lora).is_file():
            raise FileNotFoundError(f"LightX2V LoRA {lora}: no such file (one .safetensors LoRA per expert: "
                                    f"{LIGHTX2V_HIGH_FILE}, {LIGHTX2V_LOW_FILE})")
    return lora_high, lora_low


def distillation_problem(slot: str, folder: Path, config: WanSamplingConfig) -> str | None:
    """Why the distilled schedule cannot run from `folder` with `config` (None when it can, or in stock mode): the
    LightX2V 4-step schedule on undistilled experts silently gives blurred videos, so it needs the LoRAs (given or
    in folder/lightx2v/) or experts declared distilled (config.experts_distilled)."""
    if not config.distilled:
        return None
    try:
        loras = distillation_loras(folder, config.lora_high or None, config.lora_low or None)
    except (ValueError, FileNotFoundError) as exc:
        return f"[{slot}] {exc}"
    if loras is None and not config.experts_distilled:
        return (f"[{slot}] {folder}: mode 'distilled' runs the LightX2V 4-step schedule, which needs the distillation "
                f"LoRAs: none given and no {folder / 'lightx2v'}/{{{LIGHTX2V_HIGH_FILE},{LIGHTX2V_LOW_FILE}}}. Add "
                f"them (or set lora_high/lora_low), set experts_distilled = true if the experts are distilled "
                f"checkpoints, or set mode = \"stock\" for the undistilled schedule")
    return None


def fuse_distillation(pipeline, slot: str, folder: Path, config: WanSamplingConfig) -> tuple | None:
    """In distilled mode: fuse the 4-step LoRAs (distillation_loras) into both experts and return them; raise
    ModelLoadError (distillation_problem's message) when there are none and the experts are not declared distilled.
    In stock mode: nothing (a folder's lightx2v/ LoRAs are not fused: they belong to the 4-step schedule)."""
    if not config.distilled:
        return None
    problem = distillation_problem(slot, folder, config)
    if problem:
        raise ModelLoadError(problem)
    loras = distillation_loras(folder, config.lora_high or None, config.lora_low or None)
    if loras is not None:
        fuse_lightx2v_loras(pipeline, *loras, scale=config.lora_scale)
    return loras


def scheduler_with_shift(scheduler, shift: float):
    """The same scheduler class and config with its flow shift set to `shift` ("shift" of FlowMatchEuler,
    "flow_shift" of UniPC / DPM with flow sigmas); dynamic shifting off. ValueError for a scheduler without one."""
    config = dict(scheduler.config)
    if "shift" in config:
        overrides = {"shift": float(shift)}
        if "use_dynamic_shifting" in config:
            overrides["use_dynamic_shifting"] = False
    elif "flow_shift" in config:
        overrides = {"flow_shift": float(shift)}
    else:
        raise ValueError(f"scheduler {type(scheduler).__name__} has no flow shift to set")
    return type(scheduler).from_config(config, **overrides)


def scheduler_shift(scheduler) -> float | None:
    """The flow shift a scheduler will use (pinned, Euler or UniPC-style), or None."""
    config = scheduler.config
    return config.get("shift", config.get("flow_shift"))


@dataclass(frozen=True)
class WanSamplingConfig:
    """Settings shared by the Wan generators (stage 3's I2V, stage 5's Fun-Control). distilled=True: the LightX2V
    4-step schedule (`sigmas`, `shift`) at guidance 1, which needs the distillation LoRAs (lora_high/lora_low, else
    the folder's lightx2v/ pair) or experts_distilled; False: the stock schedule with num_inference_steps,
    guidance_scale and `shift` (the undistilled models' settings)."""

    num_frames: int = 81
    height: int = 720
    width: int = 1280
    fps: int = 16
    distilled: bool = True
    num_inference_steps: int = 4
    guidance_scale: float = 1.0
    boundary_ratio: float = I2V_BOUNDARY_RATIO
    max_sequence_length: int = 512
    negative_prompt: str = ""
    resize_inputs: bool = False
    seed: int = 0
    sigmas: tuple[float, ...] = LIGHTX2V_SIGMAS
    shift: float = LIGHTX2V_SHIFT
    experts_distilled: bool = False
    lora_high: str = ""
    lora_low: str = ""
    lora_scale: float = 1.0
    speed: SpeedOptions = field(default_factory=SpeedOptions)
    levers: GenerationLevers = field(default_factory=GenerationLevers)


def settings_from_section(section, base: WanSamplingConfig, run_seed: int = 0) -> WanSamplingConfig:
    """`base` with the run config's [i2v] / [control] section applied: mode ("distilled" | "stock"), steps,
    guidance (stock mode), shift, boundary, negative_prompt, seed (-1: the run's seed), experts_distilled,
    lora_high, lora_low, lora_scale, and the generation levers (levers.LEVER_KEYS: cfg_batch, cache, cache_threshold,
    fp8, attention_backend, context_parallel, context_parallel_kind)."""
    if section.mode not in ("distilled", "stock"):
        raise ValueError(f"mode must be 'distilled' or 'stock', got {section.mode!r}")
    return dataclasses.replace(
        base, distilled=section.mode == "distilled", num_inference_steps=int(section.steps),
        guidance_scale=float(section.guidance), shift=float(section.shift), boundary_ratio=float(section.boundary),
        negative_prompt=str(section.negative_prompt), seed=int(section.seed) if section.seed >= 0 else int(run_seed),
        experts_distilled=bool(section.experts_distilled), lora_high=str(section.lora_high),
        lora_low=str(section.lora_low), lora_scale=float(section.lora_scale),
        levers=levers_from_section(section, base.levers))


def sampling_settings(config: WanSamplingConfig, loras=None) -> dict:
    """What a generation runs with, for the stage's record: the effective steps and guidance of the mode."""
    distilled = config.distilled
    return {"mode": "distilled" if distilled else "stock",
            "steps": len(config.sigmas) if distilled else config.num_inference_steps,
            "guidance": 1.0 if distilled else config.guidance_scale, "shift": config.shift,
            "sigmas": list(config.sigmas) if distilled else None, "boundary": config.boundary_ratio,
            "negative_prompt": config.negative_prompt, "seed": config.seed,
            "distillation": ([str(p) if not isinstance(p, Mapping) else "<state dict>" for p in loras] if loras
                             else "experts_distilled" if distilled and config.experts_distilled
                             else "tiny stand-in" if distilled else None)}


class WanGeneratorSetup:
    """What both Wan generators share: applying sampling settings (scheduler, boundary, the distillation LoRAs)
    once, eagerly when a config is given at load, else at use_run_config or the first generate."""

    SLOT = "i2v"
    SECTION = "i2v"

    def _init_setup(self, folder: Path | None) -> None:
        self.folder = folder  # None: tiny stand-in experts (the distilled schedule needs no LoRA)
        self.loras: tuple | None = None
        self.setup_error: str | None = None
        self._ready = False
        self.lever_state = LeverState()

    def _apply(self, config: WanSamplingConfig) -> None:
        """Fuse the distillation LoRAs if the mode needs them and set the scheduler and boundary; ModelLoadError
        when the folder cannot run `config`'s mode."""
        if self.folder is not None:
            if config.distilled and self.loras is None:
                if self.lever_state.levers.fp8 != "none":
                    raise ModelLoadError(f"[{self.SLOT}] {self.folder}: the experts already hold float8 weights "
                                         f"(fp8 = {self.lever_state.levers.fp8!r}), so the distillation LoRAs cannot "
                                         f"be fused; load the model again")
                self.loras = fuse_distillation(self.pipeline, self.SLOT, self.folder, config)
            elif not config.distilled and self.loras is not None:
                raise ModelLoadError(f"[{self.SLOT}] {self.folder}: the distillation LoRAs are already fused into the "
                                     f"experts, so the stock schedule cannot run; load the model again")
        configure_wan_pipeline(self.pipeline, config.boundary_ratio, config.distilled, config.sigmas, config.shift)
        self.config = config
        self.lever_state.apply(self.pipeline, config.levers, self.device)  # after the LoRAs: fp8 freezes the weights
        self._ready = True

    def _section_config(self, section, run_config) -> WanSamplingConfig:
        return settings_from_section(section, self.config, run_config.run.seed)

    def use_run_config(self, run_config) -> None:
        """Take the run config's [i2v] / [control] sampling settings. Never raises: a setting that cannot be applied
        (e.g. distilled mode without LoRAs) is kept in setup_error and every generate fails with it, so the stage
        records the reason per sample."""
        section = getattr(run_config, self.SECTION, None)
        if section is None:
            return
        try:
            self._apply(self._section_config(section, run_config))
            self.setup_error = None
            from sparkle_fast.engines.plug import use_run_config_engines  # [engines] vae: how the VAE decodes

            use_run_config_engines(self, run_config)
        except Exception as exc:  # noqa: BLE001 - recorded per sample by try_generate
            self.setup_error = f"{type(exc).__name__}: {exc}"

    def _ensure_ready(self) -> None:
        if self.setup_error:
            raise ModelLoadError(f"[{self.SLOT}] the run's [{self.SECTION}] settings could not be applied: "
                                 f"{self.setup_error}")
        if not self._ready:
            self._apply(self.config)

    def settings(self) -> dict:
        """The sampling settings and generation levers in force (with the last clip's lever counts), for the
        stage's record."""
        out = sampling_settings(self.config, self.loras)
        out["levers"] = self.lever_state.settings()
        return out

    def _guided_call(self, guidance: float, encode):
        """Prepare the levers for one clip; returns the pipeline keyword arguments that replace the prompt
        (precomputed embeddings, the same objects the batching hooks match) or {} when none are needed.
        `encode()` -> (prompt embeddings, negative embeddings) in the experts' dtype."""
        if self.lever_state.wants_embeddings and guidance > 1.0:
            positive, negative = encode()
            self.lever_state.before_generate(self.pipeline, positive, negative)
            return {"prompt_embeds": positive, "negative_prompt_embeds": negative}
        self.lever_state.before_generate(self.pipeline)
        return {}


@dataclass(frozen=True)
class I2VConfig(WanSamplingConfig):
    """Stage 3's background video: 4-step distilled Wan2.2-I2V by default (WanSamplingConfig's defaults; Sparkle
    "employ[s] a four-step distilled version [6]", i.e. LightX2V). Stock mode: Wan2.2-I2V-A14B's own 40 steps,
    guidance 3.5, shift 5 (the run config's [i2v] section)."""


class WanI2VGenerator(WanGeneratorSetup):
    """generate(image, prompt) -> uint8 (T, H, W, 3) on a two-expert WanImageToVideoPipeline."""

    def __init__(self, pipeline, config: I2VConfig | None = None, *, device=None, folder: Path | None = None):
        self.config = config or I2VConfig()
        self.pipeline = pipeline
        self.device = pick_device(device) if device is not None else pipeline.device
        self._swapper = None
        self._init_setup(folder)
        if folder is None:
            self._apply(self.config)

    @classmethod
    def from_pretrained(cls, folder, *, device=None, dtype=None, config: I2VConfig | None = None,
                        lora_high=None, lora_low=None, lora_scale: float | None = None,
                        speed: SpeedOptions | None = None):
        """Load the i2v slot folder (checked first: ModelFolderError names the slot and the missing file).

        With a config (or LoRAs) the settings are applied now: distilled mode fuses the LoRAs (explicit
        lora_high/lora_low, else config.lora_high/low, else folder/lightx2v/) and raises ModelLoadError without
        them unless config.experts_distilled. Without one they are applied by use_run_config (the stages) or the
        first generate. Other load failures are ModelLoadError naming the folder.
        """
        from diffusers import WanImageToVideoPipeline

        folder = check_model_folder("i2v", folder)
        eager = config is not None or lora_high is not None or lora_low is not None
        config = config or I2VConfig()
        if lora_high is not None or lora_low is not None or lora_scale is not None:
            config = dataclasses.replace(config, lora_high=str(lora_high or ""), lora_low=str(lora_low or ""),
                                         lora_scale=config.lora_scale if lora_scale is None else lora_scale)
        device = pick_device(device)
        try:
            pipeline = WanImageToVideoPipeline.from_pretrained(folder, dtype=pick_dtype(device, dtype))
        except Exception as exc:  # noqa: BLE001 - named, with the folder, for the stage's failure record
            raise ModelLoadError(f"[i2v] {folder}: could not load Wan2.2 I2V: {type(exc).__name__}: {exc}") from exc
        pipeline.set_progress_bar_config(disable=True)
        generator = cls(pipeline, config, device=device, folder=folder)
        if eager:
            generator._apply(config)
        # speed: where the weights live (the runner passes the plan's placement) without applying the settings now
        generator._swapper = apply_speed_options(pipeline, speed or config.speed, device)
        return generator

    @classmethod
    def tiny(cls, *, seed: int = 0, config: I2VConfig | None = None):
        """Tiny random two-expert pipeline (tiny.tiny_wan_i2v) at 9 frames of 32x32 unless config says otherwise;
        its random experts stand in for distilled ones (no LoRA needed)."""
        from sparkle_fast.models.tiny import tiny_wan_i2v

        pipeline = tiny_wan_i2v(seed)
        pipeline.set_progress_bar_config(disable=True)
        config = config or I2VConfig(num_frames=9, height=32, width=32, max_sequence_length=16)
        return cls(pipeline, config, device="cpu")

    def release(self) -> None:
        if self._swapper is not None:
            self._swapper.remove()
            self._swapper = None
        self.pipeline = None
        free_memory(self.device)

    def generate(self, image, prompt: str, *, seed: int | None = None, num_frames: int | None = None,
                 height: int | None = None, width: int | None = None) -> np.ndarray:
        """The background video, uint8 RGB (T, H, W, 3). `image`: PIL or uint8 (H, W, 3), the video's size (or
        config.resize_inputs). Raises ValueError for bad geometry, a wrong-size image or a too-long prompt, and
        ModelLoadError when the settings cannot run (distilled mode without its LoRAs)."""
        self._ensure_ready()
        cfg = self.config
        num_frames, height, width = num_frames or cfg.num_frames, height or cfg.height, width or cfg.width
        check_video_geometry(num_frames, height, width)
        check_prompt_length(self.pipeline.tokenizer, prompt, cfg.max_sequence_length)
        image = check_image_size(to_pil(image), height, width, cfg.resize_inputs)
        generator = torch.Generator(device="cpu").manual_seed(cfg.seed if seed is None else seed)
        guidance = 1.0 if cfg.distilled else cfg.guidance_scale
        with torch.inference_mode():
            embeds = self._guided_call(guidance, lambda: self._encode(prompt))
            texts = {"prompt": None} if embeds else {"prompt": prompt, "negative_prompt": cfg.negative_prompt or None}
            try:
                frames = self.pipeline(
                    image=image, **texts, **embeds, height=height, width=width, num_frames=num_frames,
                    num_inference_steps=len(cfg.sigmas) if cfg.distilled else cfg.num_inference_steps,
                    guidance_scale=guidance, max_sequence_length=cfg.max_sequence_length, output_type="np",
                    generator=generator).frames
            finally:
                self.lever_state.after_generate()
        return frames_to_uint8(frames)

    def _encode(self, prompt: str):
        """(prompt, negative prompt) UMT5 embeddings as the pipeline computes them, in the experts' dtype."""
        positive, negative = self.pipeline.encode_prompt(
            prompt, self.config.negative_prompt or None, do_classifier_free_guidance=True,
            max_sequence_length=self.config.max_sequence_length, device=self.pipeline._execution_device)
        dtype = self.pipeline.transformer.dtype
        return positive.to(dtype), negative.to(dtype)

    def generate_to_file(self, path: str | os.PathLike, image, prompt: str, **kwargs) -> Path:
        """generate() and write the frames as an H.264 mp4 (Sparkle's edited_background_video), atomically."""
        from sparkle_fast.video import write_video

        return write_video(path, self.generate(image, prompt, **kwargs), fps=self.config.fps)

    def try_generate(self, image, prompt: str, **kwargs) -> TaskResult:
        """generate() as a TaskResult: bad input or a model error is a recorded reason, not an exception."""
        try:
            return TaskResult(ok=True, value=self.generate(image, prompt, **kwargs), attempts=1)
        except Exception as exc:  # noqa: BLE001
            return TaskResult(ok=False, reason=f"Wan2.2 I2V failed: {type(exc).__name__}: {exc}", attempts=1)


def configure_wan_pipeline(pipeline, boundary_ratio: float, distilled: bool, sigmas=LIGHTX2V_SIGMAS,
                           shift: float = LIGHTX2V_SHIFT) -> None:
    """Set the expert boundary and the scheduler on a Wan pipeline: for distilled weights the pinned-sigma
    scheduler; otherwise the pipeline's own scheduler with its flow shift set to `shift` (whatever its config held)."""
    if getattr(pipeline, "transformer_2", None) is None:
        raise ValueError("a Wan2.2 A14B pipeline needs both experts: transformer (high noise) and transformer_2 "
                         "(low noise); transformer_2 is missing")
    pipeline.register_to_config(boundary_ratio=boundary_ratio)
    num_train = pipeline.scheduler.config.get("num_train_timesteps", 1000)
    if distilled:
        pipeline.scheduler = pinned_sigmas_scheduler(sigmas, shift, num_train)
    elif getattr(pipeline.scheduler, "pinned_sigmas", None):
        # Back from a distilled setting: the stock Euler schedule with the configured shift.
        from diffusers import FlowMatchEulerDiscreteScheduler

        pipeline.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train, shift=shift)
    else:
        pipeline.scheduler = scheduler_with_shift(pipeline.scheduler, shift)


__all__ = ["I2VConfig", "LIGHTX2V_SIGMAS", "LIGHTX2V_TIMESTEPS", "ModelFolderError", "ModelLoadError", "SpeedOptions",
           "WanI2VGenerator", "WanSamplingConfig", "apply_speed_options", "distillation_problem",
           "expert_for_timestep", "fuse_distillation", "fuse_lightx2v_loras", "pinned_sigmas_scheduler",
           "scheduler_with_shift"]
