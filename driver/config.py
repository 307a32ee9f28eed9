"""The run's configuration: every threshold and size, Sparkle's values by default, from a TOML file and CLI overrides.

    [clip]        fps = 16, max_frames = 81 (trimmed down to 4k+1), width = 1280, height = 720 (Sparkle's);
                  aspect = "crop" (ours: how a source of another aspect ratio becomes width x height)
    [bait]        anchor_fps = 2.0, min_votes = 0 (0: strict majority of the passes), round1_anchor = false
    [canny]       low = 100, high = 200 (VideoX-Fun's Canny thresholds, not published by Sparkle), mask_dilate = 0
    [edges]       extractor = "canny" | "lineart" (the paper's sentence names both), lineart_coarse,
                  lineart_detect_resolution = 512, lineart_batch = 8
    [thresholds]  edit_frame0 = 8.0, foreground_removal = 8.5, edited_video = 8.0 (mean EditScore overall: Sparkle's),
                  camera_max_displacement_px, camera_pair_displacement_px, camera_reference_diagonal_px (stage 1's
                  coarse filter: ours, docs/CAMERA_CALIBRATION.md; Sparkle's Appendix A is not public)
    [run]         chunk_size, max_attempts, seed, themes, themes_file and prompts_file (our taxonomy and VLM prompts
                  replaced from files; "" = the packaged ones)
    [engines]     how each per-frame network runs (ours; docs/ENGINES.md): sam3, vae, lineart = "torch" | "compile" |
                  "tensorrt" | "onnxruntime"; precision = "bf16" (TensorRT engines); cache_dir = "" (the default cache)
    [scorer]      passes = 4 (EditScore passes averaged: Sparkle's, derived from its published records)
    [vlm]         where the VLM tasks and EditScore run (ours; docs/VLM_BACKENDS.md): backend = "transformers" |
                  "vllm" | "openai"; url, model, scorer_url, scorer_model, api_key_env (openai); concurrency;
                  merged_cache (vllm: EditScore's LoRA merged once)
    [i2v]         stage 3's Wan2.2 I2V: mode = "distilled" (Sparkle's 4-step LightX2V; needs the LoRAs) | "stock",
                  steps, guidance (stock), shift, boundary, negative_prompt, seed, experts_distilled, lora_high/low
    [control]     stage 5's Wan2.2 Fun-Control: mode = "stock" | "distilled", steps = 50, guidance = 6.0, shift = 5.0,
                  boundary = 0.9 (VideoX-Fun's; Sparkle's are not published), negative_prompt, seed, start_image,
                  reference_image, experts_distilled, lora_high/low
                  [i2v] and [control] also take the generation speed levers (ours, all off by default;
                  docs/GENERATION.md): cfg_batch, cache = "none" | "first_block", cache_threshold, fp8 = "none" |
                  "weight" | "dynamic", attention_backend, context_parallel, context_parallel_kind

    [memory]      gpu_memory_gib = 0 (the budget for resident models; 0 = the GPU's), plan_gpu, wan_placement =
                  "auto" | "resident" | "sequential_experts" | "model_offload", vae_tiling (ours)
    [batch]       samples per model call per slot: vlm, scorer, editor, sam3, i2v, control, camera (ours)

An unknown section or key, or a value of the wrong type, is an error naming the file and the key: a typo must not
silently leave a default in force. The resolved config is saved with the run and compared with the previous run's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ClipConfig:
    fps: int = 16
    max_frames: int = 81
    width: int = 1280
    height: int = 720
    # A source of another aspect ratio (ours; Sparkle's clips are all 16:9): "crop" scales it to cover width x height
    # and cuts the middle, "pad" scales it to fit inside and adds black bars, "stretch" resizes it to exactly
    # width x height. Recorded in stage 1's record.
    aspect: str = "crop"


@dataclass
class BaitConfig:
    anchor_fps: float = 2.0
    min_votes: int = 0  # 0: more than half of the passes
    # Also anchor BAIT on frame 0 with the round-1 boxes (found on that very frame) where round 2 has no usable box
    # there. Off in Sparkle; the demo turns it on because its random VLM rarely answers a box in round 2.
    round1_anchor: bool = False


@dataclass
class CannyConfig:
    low: int = 100  # VideoX-Fun's cv2.Canny(gray, 100, 200); the paper gives no thresholds
    high: int = 200
    mask_dilate: int = 0  # the BAIT mask's dilation before the composition, for either extractor


@dataclass
class EdgesConfig:
    # Stage 5's control edges. The paper: "we extract Canny edges from the source and background videos using
    # Lineart [5]" -- ambiguous, so both are offered: "canny" (cv2.Canny, [canny] thresholds; the default) or
    # "lineart" (ControlNet's line-art annotator, models/lineart.py, weights in the models folder's lineart/).
    extractor: str = "canny"
    lineart_coarse: bool = False  # the coarse model (sk_model2.pth) instead of sk_model.pth
    lineart_detect_resolution: int = 512  # ControlNet's default: the short side the generator sees
    lineart_batch: int = 8  # frames per generator forward


@dataclass
class ThresholdConfig:
    edit_frame0: float = 8.0  # stage 2: EditScore overall of the edited first frame
    foreground_removal: float = 8.5  # stage 3: EditScore overall of the foreground-removed frame
    edited_video: float = 8.0  # stage 5: mean overall over 4 frames
    # stage 1 (ours, calibrated: docs/CAMERA_CALIBRATION.md): max corner displacement of a static camera over the
    # clip and between consecutive 2-FPS frames, in pixels of a frame whose diagonal is camera_reference_diagonal_px
    # (the calibration clips' 288x384); scaled by the analysed frame's diagonal (0: absolute pixels, no scaling).
    camera_max_displacement_px: float = 2.0
    camera_pair_displacement_px: float = 1.5
    camera_reference_diagonal_px: float = 480.0


@dataclass
class RunConfig:
    chunk_size: int = 256  # samples per chunk: the steps of a chunk run model-major (driver/runner.py), so a model
    # that must be swapped out is loaded about once per chunk; bounded by the disk its intermediates need
    max_attempts: int = 2  # a failed stage is retried on later runs until it has failed this often
    seed: int = 0
    themes: list[str] = field(default_factory=lambda: ["location", "season", "time", "style"])
    themes_file: str = ""  # a taxonomy TOML replacing the packaged one (sparkle_fast/data/themes.toml); "" = packaged
    prompts_file: str = ""  # a TOML overriding VLM prompt templates (models/vlm.py PROMPTS); "" = ours as packaged
    # One part of the method swapped for the paper's baseline (sections 3.4-3.5), for `sparkle-fast eval` to compare:
    # "" (the full method), "single-pass" (stage 4: one tracking pass from the first anchor, no vote),
    # "foreground-only" (stage 5: source edges inside the mask, no background guidance), "copy-paste" (stage 5: the
    # source foreground pasted over the background video instead of the control model's video).
    ablation: str = ""


@dataclass
class ScorerSection:
    # EditScore passes averaged per score. Sparkle's released records are reproduced exactly by 4 passes ("average
    # _last", score range 25) and by no other count (tests/test_models_scorer.py); EditScore's own default is 1.
    passes: int = 4


@dataclass
class GenerationLeverKeys:
    # Speed levers of the Wan generators (ours, all off by default; sparkle_fast/models/levers.py, docs/GENERATION.md).
    cfg_batch: bool = False  # guidance > 1: conditional and unconditional pass in one batch-2 forward
    cache: str = "none"  # "first_block": diffusers' FirstBlockCache skips blocks 1.. when block 0 barely changed
    cache_threshold: float = 0.05  # its relative change threshold (diffusers' default; not tuned for Wan2.2)
    fp8: str = "none"  # "weight": torchao float8 block weights (memory); "dynamic": FP8 matmuls (sm >= 8.9: H100/H200)
    attention_backend: str = ""  # diffusers' attention dispatcher: "" (its default, SDPA), "_native_cudnn", "flash",
    #                             "_flash_3", "sage", ... (models/attention_backend.py lists them)
    context_parallel: int = 1  # GPUs per clip (diffusers' context parallelism; > 1 needs torchrun with that many ranks)
    context_parallel_kind: str = "ulysses"  # "ulysses" | "ring"


@dataclass
class I2VSection(GenerationLeverKeys):
    # Stage 3 (models/i2v.py). Sparkle: "a four-step distilled version [6]" (LightX2V) of Wan2.2-I2V-A14B.
    # "distilled" needs the LightX2V LoRAs (lora_high/lora_low, else MODELS/wan22_i2v/lightx2v/) or
    # experts_distilled = true; without them the run stops before any work. "stock": the undistilled schedule.
    mode: str = "distilled"
    steps: int = 40  # stock mode only (Wan2.2-I2V-A14B's own default); distilled: LightX2V's 4 sigmas
    guidance: float = 3.5  # stock mode only (Wan2.2's default); distilled: 1 (no unconditional pass)
    shift: float = 5.0
    boundary: float = 0.9  # high-noise expert for t >= boundary * 1000
    negative_prompt: str = ""
    seed: int = -1  # -1: run.seed
    experts_distilled: bool = False  # the folder's experts are distilled checkpoints (no LoRA needed)
    lora_high: str = ""  # "" = the model folder's lightx2v/high_noise_model.safetensors
    lora_low: str = ""
    lora_scale: float = 1.0


@dataclass
class ControlSection(GenerationLeverKeys):
    # Stage 5 (models/control.py), Wan2.2-Fun-A14B-Control. Defaults: VideoX-Fun's example (Euler, 50 steps,
    # guidance 6, shift 5, boundary 0.9); Sparkle's sampling settings are not published. The scheduler's shift is
    # this value whatever scheduler config the model folder holds.
    mode: str = "stock"  # "distilled": LightX2V 4-step schedule at guidance 1 (needs LoRAs as [i2v])
    steps: int = 50
    guidance: float = 6.0
    shift: float = 5.0
    boundary: float = 0.9
    negative_prompt: str = ""
    seed: int = -1  # -1: run.seed
    start_image: bool = True  # the edited frame 0 as the start image (inpaint channels)
    reference_image: bool = True  # ... and as the reference image through ref_conv (VideoX-Fun's ref example)
    experts_distilled: bool = False
    lora_high: str = ""  # "" = the model folder's lightx2v/ pair
    lora_low: str = ""
    lora_scale: float = 1.0


@dataclass
class RayConfig:
    """`sparkle-fast run --runner ray` (driver/ray_runner.py, docs/RAY.md): one actor pool per model slot, plus the
    CPU pool ("cpu") of the steps without a model."""

    actors_per_pool: int = 1  # actors per pool; each loads its slot's model once
    gpus_per_actor: float = 1.0  # for model pools, on clusters that have GPUs (fractions share a GPU); cpu pool: 0
    cpus_per_actor: float = 1.0
    actors: dict = field(default_factory=dict)  # per-pool override of actors_per_pool, e.g. {vlm = 2}
    gpus: dict = field(default_factory=dict)  # per-pool override of gpus_per_actor, e.g. {sam3 = 0.25}
    max_in_flight_per_actor: int = 2  # calls queued on an actor at once (back-pressure)
    status_seconds: float = 30.0  # how often the pool table is printed and the Ray metrics updated


WAN_PLACEMENTS = ("auto", "resident", "sequential_experts", "model_offload")


@dataclass
class MemorySection:
    """Which models the runner keeps resident (driver/runner.py SlotCache; ours). The runner loads a step's model
    slot when a step needs it and keeps loaded slots while their planned bytes fit the budget, evicting the slot
    needed furthest ahead first; a slot larger than the whole budget stops the run before any work."""

    gpu_memory_gib: float = 0.0  # the budget; 0 = the GPU's memory less the plan's reserve (none on a CPU: unbounded)
    plan_gpu: str = ""  # the GPU the plan sizes slots for ("" = H100), see `sparkle-fast plan`
    # How the Wan pipelines (i2v, control) hold their weights: "auto" (the plan's mode for the budget: resident when
    # everything fits, else one expert at a time, else model CPU offload), "resident", "sequential_experts" (one
    # expert on the GPU, the other on the host; swapped at the boundary step) or "model_offload" (diffusers).
    wan_placement: str = "auto"
    vae_tiling: bool = False  # Wan VAE encode/decode in tiles: less memory at 720p, a little slower


@dataclass
class BatchSection:
    """Samples per model call, per slot (ours; a VLM or EditScore call batches its rows with left padding, the
    editor its images). The tiny random models' near-tied logits can make a row's greedy answer depend on the padding
    of its batch, so the demo runs at 1; real runs start from these."""

    vlm: int = 8
    scorer: int = 8
    editor: int = 4
    sam3: int = 1  # one clip per call: a clip's passes already batch its frames
    i2v: int = 1  # one clip per call: a Wan call is a whole GPU's work at Sparkle's size
    control: int = 1
    camera: int = 16  # clips per camera-filter call (their decoded frames are held together: 16 = 3.6 GB at 720p)


ENGINE_CHOICES = ("torch", "compile", "tensorrt", "onnxruntime")  # = sparkle_fast.engines.ENGINE_CHOICES
ENGINE_PRECISIONS = ("bf16", "fp16", "fp32")


@dataclass
class EnginesConfig:
    """How each per-frame network runs (sparkle_fast.engines, docs/ENGINES.md): "torch" (eager PyTorch),
    "compile" (torch.compile), "tensorrt" (an engine from the cache, built on first use; needs the engines extra
    and a GPU), "onnxruntime" (the exported ONNX graph under onnxruntime, float32; for checking exports)."""

    sam3: str = "torch"  # SAM3's image encoder (stage 4)
    vae: str = "torch"  # the Wan VAE decoder (stages 3 and 5)
    lineart: str = "torch"  # the line-art generator (stage 5 with edges.extractor = "lineart")
    precision: str = "bf16"  # TensorRT engines: bf16 | fp16 | fp32 (strongly typed: the ONNX graph's type)
    cache_dir: str = ""  # "" = $SPARKLE_FAST_ENGINE_CACHE or ~/.cache/sparkle_fast/engines


VLM_BACKENDS = ("transformers", "vllm", "openai")  # = sparkle_fast.models.vlm_backends.BACKENDS


@dataclass
class VLMSection:
    """Where the VLM tasks and EditScore get their answers (models/vlm_backends; the fields of its BackendSettings).
    transformers: the models in the worker's process; vllm: vLLM's offline engine in the worker's process (GPU);
    openai: an OpenAI-compatible server (vLLM, SGLang) at url serving `model` (and `scorer_model`: EditScore's
    backbone with its LoRA merged)."""

    backend: str = "transformers"
    url: str = ""  # openai: e.g. "http://127.0.0.1:8000/v1"
    model: str = ""  # openai: the served name of the Qwen3-VL model
    scorer_url: str = ""  # openai: EditScore's server when it is another one ("" = url)
    scorer_model: str = ""  # openai: the served name of EditScore's (merged) backbone
    api_key_env: str = ""  # openai: the environment variable holding the API key ("" = none)
    concurrency: int = 32  # openai: requests in flight at once
    merged_cache: str = ""  # vllm: folder for EditScore's merged backbone ("" = <scorer folder>/merged)


@dataclass
class PipelineConfig:
    clip: ClipConfig = field(default_factory=ClipConfig)
    bait: BaitConfig = field(default_factory=BaitConfig)
    canny: CannyConfig = field(default_factory=CannyConfig)
    edges: EdgesConfig = field(default_factory=EdgesConfig)
    thresholds: ThresholdConfig = field(default_factory=ThresholdConfig)
    run: RunConfig = field(default_factory=RunConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    engines: EnginesConfig = field(default_factory=EnginesConfig)
    scorer: ScorerSection = field(default_factory=ScorerSection)
    i2v: I2VSection = field(default_factory=I2VSection)
    control: ControlSection = field(default_factory=ControlSection)
    vlm: VLMSection = field(default_factory=VLMSection)
    memory: MemorySection = field(default_factory=MemorySection)
    batch: BatchSection = field(default_factory=BatchSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short hash of the resolved values."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message names the source and the key."""


def _coerce(value: Any, default: Any, where: str) -> Any:
    """value checked against the type of the default (ints are accepted where floats are expected)."""
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{where}: expected {type(default).__name__}, got {value!r}")
    return value


def apply_values(config: PipelineConfig, values: dict, source: str) -> PipelineConfig:
    """Apply {section: {key: value}} to config (in place) and return it."""
    for section_name, section_values in values.items():
        section = getattr(config, section_name, None)
        if section is None or not dataclasses.is_dataclass(section):
            known = ", ".join(f.name for f in dataclasses.fields(config))
            raise ConfigError(f"{source}: unknown section [{section_name}] (known: {known})")
        if not isinstance(section_values, dict):
            raise ConfigError(f"{source}: [{section_name}] must be a table of keys")
        for key, value in section_values.items():
            if not hasattr(section, key):
                known = ", ".join(f.name for f in dataclasses.fields(section))
                raise ConfigError(f"{source}: unknown key {section_name}.{key} (known: {known})")
            setattr(section, key, _coerce(value, getattr(section, key), f"{source}: {section_name}.{key}"))
    return config


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Sparkle's defaults, then the TOML file at `path` (if any), then overrides {"section.key": value}."""
    config = PipelineConfig()
    if path is not None:
        path = Path(path)
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: config file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
        apply_values(config, values, str(path))
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"override {dotted!r}: expected section.key")
        apply_values(config, {section: {key: value}}, "command line")
    check_config(config)
    note = kiwi_crop_note(config)
    if note:
        warnings.warn(note, KiwiCropWarning, stacklevel=2)
    return config


class KiwiCropWarning(UserWarning):
    """The clip size is not a multiple of 32: Kiwi-Edit's readers will crop it (not an error: Sparkle's is 720)."""


KIWI_MULTIPLE = 32  # Kiwi-Edit (and Sparkle's bench scripts) floor H and W to multiples of 32 when they read a clip


def kiwi_crop_note(config: PipelineConfig) -> str | None:
    """A sentence when clip.width x clip.height is not a multiple of 32 in both sides (Sparkle's own 1280x720 is
    not: Kiwi-Edit trains on 1280x704), else None."""
    width, height = config.clip.width, config.clip.height
    fit_w, fit_h = width // KIWI_MULTIPLE * KIWI_MULTIPLE, height // KIWI_MULTIPLE * KIWI_MULTIPLE
    if (fit_w, fit_h) == (width, height):
        return None
    return (f"clip size {width}x{height} is not a multiple of {KIWI_MULTIPLE}: Kiwi-Edit's training and inference "
            f"readers floor height and width to multiples of {KIWI_MULTIPLE}, so at this size they read "
            f"{fit_w}x{fit_h} (as Sparkle's own 1280x720 clips are read at 1280x704)")


ASPECT_MODES = ("crop", "pad", "stretch")
EDGE_EXTRACTORS = ("canny", "lineart")


def _check_files(config: PipelineConfig) -> list[str]:
    """The taxonomy and prompt files a config names, loaded and validated now (a bad one fails before any work)."""
    problems = []
    if config.run.themes_file:
        from sparkle_fast.themes import ThemeFileError, load_themes

        try:
            load_themes(config.run.themes_file)
        except ThemeFileError as exc:
            problems.append(f"run.themes_file: {exc}")
    if config.run.prompts_file:
        from sparkle_fast.models.vlm import PromptFileError, load_prompts

        try:
            load_prompts(config.run.prompts_file)
        except PromptFileError as exc:
            problems.append(f"run.prompts_file: {exc}")
    return problems


def _check_vlm(config: PipelineConfig) -> list[str]:
    vlm = config.vlm
    problems = []
    if vlm.backend not in VLM_BACKENDS:
        problems.append(f"vlm.backend must be one of {', '.join(repr(b) for b in VLM_BACKENDS)}, got {vlm.backend!r}")
    elif vlm.backend == "openai" and not (vlm.url and vlm.model):
        problems.append("vlm.backend = \"openai\" needs vlm.url (the server, e.g. http://127.0.0.1:8000/v1) and "
                        "vlm.model (its served model name)")
    if vlm.concurrency < 1:
        problems.append(f"vlm.concurrency must be >= 1, got {vlm.concurrency}")
    return problems


def _check_model_settings(config: PipelineConfig) -> list[str]:
    """[scorer], [i2v], [control]: values the models cannot run with."""
    problems = []
    if config.scorer.passes < 1:
        problems.append(f"scorer.passes must be >= 1, got {config.scorer.passes}")
    for name in ("i2v", "control"):
        section = getattr(config, name)
        if section.mode not in ("distilled", "stock"):
            problems.append(f"{name}.mode must be \"distilled\" or \"stock\", got {section.mode!r}")
        if section.steps < 1 or section.guidance < 0 or section.shift <= 0 or not 0 < section.boundary < 1:
            problems.append(f"{name}: steps must be >= 1, guidance >= 0, shift > 0 and 0 < boundary < 1")
        if bool(section.lora_high) != bool(section.lora_low):
            problems.append(f"{name}: set both lora_high and lora_low (one LoRA per expert) or neither")
        if any(getattr(section, f.name) != f.default for f in dataclasses.fields(GenerationLeverKeys)):
            from sparkle_fast.models.levers import levers_from_section  # imports torch: only when a lever is set

            try:
                levers_from_section(section)
            except ValueError as exc:
                problems.append(f"{name}: {exc}")
    return problems


ABLATIONS = ("", "single-pass", "foreground-only", "copy-paste")


def _check_engines(config: PipelineConfig) -> list[str]:
    engines = config.engines
    problems = [f"engines.{name} must be one of {', '.join(repr(c) for c in ENGINE_CHOICES)}, got {value!r}"
                for name, value in (("sam3", engines.sam3), ("vae", engines.vae), ("lineart", engines.lineart))
                if value not in ENGINE_CHOICES]
    if engines.precision not in ENGINE_PRECISIONS:
        problems.append(f"engines.precision must be one of {', '.join(ENGINE_PRECISIONS)}, got {engines.precision!r}")
    return problems


def check_config(config: PipelineConfig) -> None:
    """Values that are well-typed but meaningless."""
    problems = []
    if config.clip.max_frames < 1 or (config.clip.max_frames - 1) % 4:
        problems.append(f"clip.max_frames must be 4k+1 (e.g. 81), got {config.clip.max_frames}")
    if config.clip.fps <= 0 or config.clip.width <= 0 or config.clip.height <= 0:
        problems.append("clip.fps, clip.width and clip.height must be positive")
    if config.bait.anchor_fps <= 0 or config.bait.min_votes < 0:
        problems.append("bait.anchor_fps must be positive and bait.min_votes >= 0")
    if config.run.chunk_size < 1 or config.run.max_attempts < 1:
        problems.append("run.chunk_size and run.max_attempts must be >= 1")
    small = [f"batch.{k}" for k, v in dataclasses.asdict(config.batch).items() if v < 1]
    if small:
        problems.append(f"{', '.join(small)} must be >= 1")
    if config.memory.wan_placement not in WAN_PLACEMENTS:
        problems.append(f"memory.wan_placement must be one of {', '.join(WAN_PLACEMENTS)}, got "
                        f"{config.memory.wan_placement!r}")
    if config.memory.gpu_memory_gib < 0:
        problems.append(f"memory.gpu_memory_gib must be >= 0 (0: the GPU's), got {config.memory.gpu_memory_gib}")
    if config.run.ablation not in ABLATIONS:
        problems.append(f"run.ablation must be one of {', '.join(repr(a) for a in ABLATIONS)}, got "
                        f"{config.run.ablation!r}")
    unknown = [t for t in config.run.themes if t not in ("location", "season", "time", "style", "openve3m")]
    if unknown:
        problems.append(f"run.themes has unknown themes {unknown}")
    if config.clip.aspect not in ASPECT_MODES:
        problems.append(f"clip.aspect must be one of {', '.join(ASPECT_MODES)}, got {config.clip.aspect!r}")
    if config.edges.extractor not in EDGE_EXTRACTORS:
        problems.append(f"edges.extractor must be one of {', '.join(EDGE_EXTRACTORS)}, got {config.edges.extractor!r}")
    if config.edges.lineart_detect_resolution < 64 or config.edges.lineart_batch < 1:
        problems.append("edges.lineart_detect_resolution must be >= 64 and edges.lineart_batch >= 1")
    if min(config.thresholds.camera_max_displacement_px, config.thresholds.camera_pair_displacement_px,
           config.thresholds.camera_reference_diagonal_px) < 0:
        problems.append("thresholds.camera_* must be >= 0")
    problems += _check_model_settings(config)
    problems += _check_files(config)
    problems += _check_vlm(config)
    problems += _check_engines(config)
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
