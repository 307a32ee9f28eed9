"""The GPU-memory plan and cost model of a run, from configs and safetensors headers (no weight is loaded).

    plan = make_plan("models/", gpu="H100")   # or gpu_memory_bytes=...
    plan.fits, plan.peak_bytes, plan.slots["vlm"].mode, plan.to_dict()

What it decides, per model slot (sparkle_fast.models.slots):
  weight_bytes   the sum of the folder's safetensors tensors (sparkle_fast.models.weights)
  mode           how the slot is held, the first of these whose resident bytes plus one batch item's working memory
                 fit the usable memory (the GPU's minus a reserve for the CUDA context, allocator slack and kernels):
                   "resident"            every component on the GPU
                   "sequential_experts"  (two-expert Wan folders) the text encoder is dropped after encoding the
                                         prompt and one expert is resident at a time, with the VAE
                   "model_offload"       one component on the GPU at a time (diffusers enable_model_cpu_offload)
                   "sequential_offload"  one block at a time (diffusers enable_sequential_cpu_offload; slow)
  batch_size     how many batch items fit beside the resident weights, capped per kind of model
If a slot fits in no mode, the plan says so (`fits` false, `problems` naming the slot, its bytes and the GPU's).

The schedule is model-major (driver/step_graph.py): per chunk of samples one slot is resident at a time and runs
every ready step that uses it, so the peak is the largest phase, not the sum of a stage's models.

Cost model (the project's estimate, not a measurement): dense transformer FLOPs are 2 x parameters x tokens plus
4 x layers x tokens^2 x width for attention; VLM decoding streams the weights once per generated token per batch;
utilisations: diffusion and prefill at 60% / 50% of the GPU's dense BF16 peak, decoding at 70% of its memory
bandwidth. Model loads read weights at `load_gbps` (default 2 GB/s). Keep rates default to Sparkle's published
funnel (940K -> 260K coarse -> 224K after the VLM check -> about 140K kept); how the 224K -> 140K loss splits over
stages 2-5 is not published, so the split is ours.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sparkle_fast.models.slots import PIPELINE_SLOTS, SLOTS
from sparkle_fast.models.weights import FolderWeights, folder_weights

from .step_graph import StepSpec, model_major_phases, step_graph

GIB = 1 << 30


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_bytes: int
    bf16_tflops: float  # dense peak
    hbm_tbps: float


# Public spec-sheet figures (SXM parts, dense BF16 without sparsity). Memory as torch reports it, rounded.
GPUS = {
    "H100": GpuSpec("H100 SXM 80GB", 80 * GIB, 989.4, 3.35),
    "H200": GpuSpec("H200 SXM 141GB", 140 * GIB, 989.4, 4.8),
    "A100": GpuSpec("A100 SXM 80GB", 80 * GIB, 312.0, 2.04),
    "L40S": GpuSpec("L40S 48GB", 45 * GIB, 362.0, 0.864),
}

# Our planning assumptions (stated in the module docstring and printed with the plan).
RESERVE_FRACTION = 0.07  # CUDA context, allocator fragmentation, kernels' scratch
UTIL_DIFFUSION = 0.60
UTIL_PREFILL = 0.50
UTIL_BANDWIDTH = 0.70
ACTIVATION_FACTOR = 12  # live activation bytes per token and hidden unit in a transformer forward (bf16, flash attn)
MAX_BATCH = {"vlm": 64, "diffusion": 8, "tracker": 1}
DEFAULT_KEEP = {"coarse": 260 / 940, "fine": 224 / 260, 2: 0.85, 3: 0.85, 4: 0.98, 5: 0.88}


class PlanError(ValueError):
    """A plan that cannot be made (unknown GPU, unreadable folder); the message says what to pass instead."""


@dataclass
class SlotPlan:
    slot: str
    kind: str
    weight_bytes: int
    parameters: int
    components: dict[str, int]
    mode: str | None = None
    resident_bytes: int = 0
    working_bytes_per_item: int = 0
    batch_size: int = 0
    load_seconds: float = 0.0
    denoiser_parameters: int = 0  # diffusion: one expert's (the transformer/ component's) parameters
    notes: list[str] = field(default_factory=list)


@dataclass
class StepPlan:
    stage: int
    name: str
    slot: str | None
    phase: int
    calls_per_sample: float
    gpu_seconds_per_call: float
    reach: float  # fraction of stage-1 inputs that reach this step

    @property
    def gpu_seconds_per_sample(self) -> float:
        return self.calls_per_sample * self.gpu_seconds_per_call


@dataclass
class Plan:
    gpu: GpuSpec
    gpu_memory_bytes: int
    usable_bytes: int
    slots: dict[str, SlotPlan]
    steps: list[StepPlan]
    phases: list[tuple[str | None, list[str]]]
    chunk_size: int
    keep_rates: dict
    problems: list[str]

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def peak_bytes(self) -> int:
        used = [p.resident_bytes + p.working_bytes_per_item * max(p.batch_size, 1)
                for p in self.slots.values() if p.mode is not None]
        return max(used, default=0)

    def loads_per_chunk(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for slot, _ in self.phases:
            if slot is not None:
                counts[slot] = counts.get(slot, 0) + 1
        return counts

    def gpu_hours_per_1000_kept(self) -> dict[str, float]:
        kept = self.keep_rates["coarse"] * self.keep_rates["fine"]
        for stage in (2, 3, 4, 5):
            kept *= self.keep_rates[stage]
        compute = sum(s.gpu_seconds_per_sample * s.reach for s in self.steps)
        load_per_chunk = sum(self.slots[slot].load_seconds * n for slot, n in self.loads_per_chunk().items())
        # One chunk holds chunk_size samples that entered stage 2 (stage 1 is a cheap filter run over all inputs).
        load_per_input = load_per_chunk / self.chunk_size * self.keep_rates["coarse"] * self.keep_rates["fine"]
        per_kept = 1000 / kept / 3600
        return {"compute": compute * per_kept, "model_loads": load_per_input * per_kept,
                "total": (compute + load_per_input) * per_kept, "kept_fraction_of_inputs": kept}

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": asdict(self.gpu),
            "gpu_memory_bytes": self.gpu_memory_bytes,
            "usable_bytes": self.usable_bytes,
            "peak_bytes": self.peak_bytes,
            "fits": self.fits,
            "problems": list(self.problems),
            "slots": {name: asdict(p) for name, p in self.slots.items()},
            "steps": [{**asdict(s), "gpu_seconds_per_sample": s.gpu_seconds_per_sample} for s in self.steps],
            "phases": [{"slot": slot, "steps": names} for slot, names in self.phases],
            "loads_per_chunk": self.loads_per_chunk(),
            "chunk_size": self.chunk_size,
            "keep_rates": {str(k): v for k, v in self.keep_rates.items()},
            "gpu_hours_per_1000_kept": self.gpu_hours_per_1000_kept(),
            "assumptions": {"reserve_fraction": RESERVE_FRACTION, "util_diffusion": UTIL_DIFFUSION,
                            "util_prefill": UTIL_PREFILL, "util_bandwidth": UTIL_BANDWIDTH,
                            "activation_factor": ACTIVATION_FACTOR},
        }


# --- reading the folders -------------------------------------------------------------------------------------------

def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _llm_shape(config: dict) -> dict:
    """layers, width, kv width of a transformers LLM/VLM config (Qwen3-VL keeps them under text_config)."""
    text = config.get("text_config") or config
    layers = int(text.get("num_hidden_layers", 0) or 0)
    width = int(text.get("hidden_size", 0) or 0)
    heads = int(text.get("num_attention_heads", 0) or 1)
    head_dim = int(text.get("head_dim", 0) or (width // heads if heads else 0))
    kv_heads = int(text.get("num_key_value_heads", 0) or heads)
    return {"layers": layers, "width": width, "kv_width": kv_heads * head_dim}


def _dit_shape(config: dict) -> dict:
    """layers and width of a diffusers transformer config (Wan: num_layers; FLUX.2: num_layers + single layers)."""
    layers = int(config.get("num_layers", 0) or 0) + int(config.get("num_single_layers", 0) or 0)
    width = int(config.get("num_attention_heads", 0) or 0) * int(config.get("attention_head_dim", 0) or 0)
    return {"layers": layers, "width": width or int(config.get("hidden_size", 0) or 0)}


def _slot_kind(slot: str) -> str:
    return {"vlm": "vlm", "scorer": "vlm", "editor": "diffusion", "i2v": "diffusion", "control": "diffusion",
            "vace": "diffusion", "sam3": "tracker"}[slot]


def _slot_folder(models: Path, slot: str) -> Path:
    folder = models / SLOTS[slot].subdir
    return folder / "backbone" if slot == "scorer" else folder


# --- memory ---------------------------------------------------------------------------------------------------------

def _tokens(step: StepSpec, width: int, height: int) -> int:
    """Transformer tokens of one diffusion forward: 16-px tokens per frame (VAE 8x, patch 2x2), Wan's 4x temporal
    compression for videos, plus the references' tokens."""
    per_frame = math.ceil(width / 16) * math.ceil(height / 16)
    latent_frames = 1 if step.frames <= 1 else (step.frames - 1) // 4 + 1
    return per_frame * (latent_frames + step.references)


def _working_bytes(kind: str, shape: dict, steps: list[StepSpec], width: int, height: int) -> int:
    """Working memory of one batch item (ours; see ACTIVATION_FACTOR): KV cache and activations for a VLM call,
    transformer activations (doubled with CFG) plus a VAE decode of 4 frames at full size for a generator, the
    81-frame feature cache and an encoder forward for SAM3."""
    if kind == "vlm":
        seq = max((s.input_tokens + s.output_tokens for s in steps), default=2048)
        kv = 2 * shape.get("layers", 0) * shape.get("kv_width", 0) * seq * 2
        return kv + seq * shape.get("width", 0) * 2 * ACTIVATION_FACTOR
    if kind == "diffusion":
        worst = 0
        for s in steps:
            tokens = _tokens(s, width, height)
            act = tokens * shape.get("width", 0) * 2 * ACTIVATION_FACTOR * (2 if s.extra.get("cfg") else 1)
            vae = 4 * width * height * 128 * 2 * 4 if s.frames > 1 else width * height * 128 * 2 * 4
            worst = max(worst, act + vae)
        return worst
    frames = max((s.frames for s in steps), default=81)
    return frames * 256 * 72 * 72 * 4 * 3 + 2 * GIB


def _choose_mode(plan: SlotPlan, weights: FolderWeights, usable: int) -> None:
    comps = {name: c.bytes for name, c in weights.components.items()}
    options: list[tuple[str, int]] = [("resident", sum(comps.values()))]
    experts = [comps[n] for n in ("transformer", "transformer_2") if n in comps]
    if len(experts) == 2:
        others = sum(v for n, v in comps.items() if n not in ("transformer", "transformer_2", "text_encoder"))
        options.append(("sequential_experts", max(max(experts) + others, comps.get("text_encoder", 0))))
    if len(comps) > 1:
        options.append(("model_offload", max(comps.values())))
    largest_block = max((c.largest_block_bytes for c in weights.components.values()), default=0)
    options.append(("sequential_offload", largest_block))
    for mode, resident in options:
        if resident + plan.working_bytes_per_item <= usable:
            plan.mode, plan.resident_bytes = mode, resident
            room = usable - resident
            plan.batch_size = max(1, min(MAX_BATCH[plan.kind], room // max(plan.working_bytes_per_item, 1)))
            if mode != "resident":
                plan.notes.append(f"{mode}: the resident set ({resident / GIB:.1f} GiB) fits where all "
                                  f"{plan.weight_bytes / GIB:.1f} GiB do not")
            return
    plan.mode = None


# --- cost -----------------------------------------------------------------------------------------------------------

def _call_seconds(step: StepSpec, slot: SlotPlan, shape: dict, gpu: GpuSpec, width: int, height: int,
                  steps_override: dict) -> float:
    flops_peak = gpu.bf16_tflops * 1e12
    params = slot.parameters
    if step.kind == "vlm":
        prefill = 2 * params * step.input_tokens + 4 * shape["layers"] * step.input_tokens ** 2 * shape["width"]
        batch = max(slot.batch_size, 1)
        per_token = max(slot.weight_bytes / (gpu.hbm_tbps * 1e12 * UTIL_BANDWIDTH) / batch,
                        2 * params / (flops_peak * UTIL_PREFILL))
        return prefill / (flops_peak * UTIL_PREFILL) + step.output_tokens * per_token
    if step.kind == "diffusion":
        expert_params = slot.denoiser_parameters or params
        tokens = _tokens(step, width, height)
        forward = 2 * expert_params * tokens + 4 * shape["layers"] * tokens ** 2 * shape["width"]
        n_steps = steps_override.get(step.name, step.extra.get("steps", 4))
        cfg = steps_override.get(step.name + ".cfg", step.extra.get("cfg", False))
        return forward * n_steps * (2 if cfg else 1) / (flops_peak * UTIL_DIFFUSION)
    if step.kind == "tracker":
        encoder = 2 * params * 5184 * step.frames  # 72x72 tokens per 1008-px frame, once per frame (shared cache)
        passes = step.extra.get("passes", 1) * step.frames * 0.1 * 2 * params * 5184  # ours: 10% of an encoder call
        return (encoder + passes) / (flops_peak * UTIL_PREFILL)
    return 0.0


def _reach(stage: int, name: str, keep: dict) -> float:
    if name == "camera_filter":
        return 1.0
    reach = keep["coarse"]
    if stage >= 2:
        reach *= keep["fine"]
    for s in range(2, stage):
        reach *= keep[s]
    return reach


# --- the plan -------------------------------------------------------------------------------------------------------

def resolve_gpu(gpu: str | None, gpu_memory_gib: float | None) -> tuple[GpuSpec, int]:
    """The GPU named (H100 by default) and its memory, replaced by --gpu-memory when given."""
    key = (gpu or "H100").upper().replace(" ", "").split("SXM")[0].split("-")[0]
    if key not in GPUS:
        raise PlanError(f"--gpu {gpu!r}: unknown GPU; known: {', '.join(GPUS)} (or give --gpu-memory GIB)")
    spec = GPUS[key]
    memory = int(gpu_memory_gib * GIB) if gpu_memory_gib is not None else spec.memory_bytes
    if memory <= 0:
        raise PlanError(f"--gpu-memory {gpu_memory_gib}: must be positive")
    return spec, memory


def make_plan(models: str | os.PathLike, *, gpu: str | None = None, gpu_memory_gib: float | None = None,
              slots: tuple[str, ...] = PIPELINE_SLOTS, chunk_size: int = 256, width: int = 1280,
              height: int = 720, frames: int = 81, scorer_passes: int = 4, keep_rates: dict | None = None,
              load_gbps: float = 2.0, steps_override: dict | None = None) -> Plan:
    """Plan a run over the model folders under `models` (the --models DIR layout). steps_override maps a step name
    to its sampling steps and "<name>.cfg" to whether it runs classifier-free guidance (e.g. a distilled stage 5:
    {"render": 4, "render.cfg": False})."""
    models = Path(models)
    spec, memory = resolve_gpu(gpu, gpu_memory_gib)
    usable = int(memory * (1 - RESERVE_FRACTION))
    keep = dict(DEFAULT_KEEP, **(keep_rates or {}))
    graph = [s for s in step_graph(clip_frames=frames, scorer_passes=scorer_passes)
             if s.slot is None or s.slot in slots]
    problems: list[str] = []
    slot_plans: dict[str, SlotPlan] = {}
    shapes: dict[str, dict] = {}
    for slot in dict.fromkeys(s.slot for s in graph if s.slot is not None):
        folder = _slot_folder(models, slot)
        if not folder.is_dir():
            problems.append(f"[{slot}] {folder}: missing folder ({SLOTS[slot].description})")
            continue
        weights = folder_weights(folder, skip=("lightx2v", "lora"))
        if weights.total_bytes == 0:
            problems.append(f"[{slot}] {folder}: no *.safetensors weights to size")
            continue
        kind = _slot_kind(slot)
        config = _json(folder / "config.json") if kind != "diffusion" else _json(folder / "transformer" / "config.json")
        shapes[slot] = _llm_shape(config) if kind == "vlm" else _dit_shape(config)
        plan = SlotPlan(slot, kind, weights.total_bytes, weights.parameters,
                        {name: c.bytes for name, c in weights.components.items()},
                        load_seconds=weights.total_bytes / (load_gbps * 1e9))
        if "transformer" in weights.components:
            plan.denoiser_parameters = weights.components["transformer"].parameters
        plan.working_bytes_per_item = _working_bytes(kind, shapes[slot], [s for s in graph if s.slot == slot],
                                                     width, height)
        _choose_mode(plan, weights, usable)
        if plan.mode is None:
            problems.append(f"[{slot}] {folder}: {plan.weight_bytes / GIB:.1f} GiB of weights (largest block "
                            f"{max(c.largest_block_bytes for c in weights.components.values()) / GIB:.2f} GiB) plus "
                            f"{plan.working_bytes_per_item / GIB:.1f} GiB working memory do not fit the "
                            f"{spec.name}'s {memory / GIB:.1f} GiB ({usable / GIB:.1f} GiB usable) even with "
                            "sequential CPU offload")
        slot_plans[slot] = plan
    phases = model_major_phases(graph)
    phase_of = {name: i for i, (_, names) in enumerate(phases) for name in names}
    steps = []
    for s in graph:
        slot_plan = slot_plans.get(s.slot) if s.slot else None
        seconds = 0.0
        if slot_plan is not None and slot_plan.mode is not None:
            seconds = _call_seconds(s, slot_plan, shapes[s.slot], spec, width, height, steps_override or {})
        steps.append(StepPlan(s.stage, s.name, s.slot, phase_of[s.name], s.calls, seconds, _reach(s.stage, s.name,
                                                                                                  keep)))
    return Plan(spec, memory, usable, slot_plans, steps, phases, chunk_size, keep, problems)


def format_plan(plan: Plan) -> str:
    """The plan as text: slots, the schedule, per-step cost, and the cost per 1,000 kept clips."""
    lines = [f"GPU: {plan.gpu.name}, {plan.gpu_memory_bytes / GIB:.1f} GiB ({plan.usable_bytes / GIB:.1f} GiB "
             f"usable after a {RESERVE_FRACTION:.0%} reserve)", "",
             f"{'slot':<9} {'weights GiB':>11} {'mode':<19} {'resident GiB':>12} {'item GiB':>8} {'batch':>5} "
             f"{'load s':>6}"]
    for p in plan.slots.values():
        lines.append(f"{p.slot:<9} {p.weight_bytes / GIB:>11.2f} {p.mode or 'DOES NOT FIT':<19} "
                     f"{p.resident_bytes / GIB:>12.2f} {p.working_bytes_per_item / GIB:>8.2f} {p.batch_size:>5} "
                     f"{p.load_seconds:>6.0f}")
    lines += ["", f"peak {plan.peak_bytes / GIB:.1f} GiB of {plan.gpu_memory_bytes / GIB:.1f} GiB: "
              + ("fits" if plan.fits else "DOES NOT FIT"), "", "schedule per chunk (model-major):"]
    for i, (slot, names) in enumerate(plan.phases):
        lines.append(f"  {i:>2}. {slot or 'kernels':<8} {', '.join(names)}")
    lines += ["", f"{'stage':>5} {'step':<19} {'slot':<8} {'calls':>5} {'GPU s/call':>10} {'GPU s/sample':>12} "
              f"{'reach':>6}"]
    for s in plan.steps:
        lines.append(f"{s.stage:>5} {s.name:<19} {s.slot or '-':<8} {s.calls_per_sample:>5g} "
                     f"{s.gpu_seconds_per_call:>10.2f} {s.gpu_seconds_per_sample:>12.2f} {s.reach:>6.3f}")
    cost = plan.gpu_hours_per_1000_kept()
    lines += ["", f"GPU-hours per 1,000 kept clips: {cost['total']:.1f} (compute {cost['compute']:.1f}, model loads "
              f"{cost['model_loads']:.2f} at chunks of {plan.chunk_size}); kept fraction of inputs "
              f"{cost['kept_fraction_of_inputs']:.3f}",
              "Estimates from FLOPs and bytes (driver/plan.py states its utilisation assumptions), not measured."]
    lines += [f"problem: {p}" for p in plan.problems]
    return "\n".join(lines)
