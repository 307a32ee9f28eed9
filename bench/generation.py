"""Benchmark video generation: stage 3's Wan2.2 I2V and stage 5's Fun-Control, with each speed lever on and off.

Real weights cannot be downloaded here, so the GPU run uses RANDOMLY INITIALISED full-size models: two Wan2.2-A14B
experts (dim 5120, 40 heads, 40 layers, FFN 13824; 36 input channels for I2V, 52 for Fun-Control) and the real Wan
VAE config: the same shapes and FLOPs as the real models. The text encoder is a small random UMT5 (its cost is one
forward per clip, negligible next to the transformers); say so when quoting the figures. Random weights say nothing
about quality, and nothing about how often the step cache skips on real weights (its skip counts are recorded per
row: they are the random model's).

Cases: pipeline (i2v, fun) x schedule:
  distilled-4step       LightX2V schedule, guidance 1 (4 transformer calls): stage 3's default, stage 5's distilled
  stock-cfg             the undistilled schedule with classifier-free guidance (stage 5's default: 50 steps,
                        guidance 6); on a GPU measured with STOCK_MEASURED_STEPS steps and extrapolated to 50 in
                        `extrapolated_50_step_s` (per-step cost is constant; VAE and text costs are scaled too, so
                        the extrapolation slightly overestimates)
Rows (impl), each a set of levers (sparkle_fast/models/levers.py) and placement knobs (i2v.SpeedOptions):
  baseline              bf16 (GPU) / float32 (CPU), diffusers' default attention (SDPA)
  +attn-cudnn / +attn-fa3 / +attn-sage / +attn-math   attention_backend _native_cudnn / _flash_3 / sage / _native_math
  +compile              torch.compile of the experts' repeated blocks (the warm-up call absorbs compilation)
  +fp8-weight           torchao float8 weight-only block linears (memory, no matmul speed-up)
  +fp8-dynamic          torchao float8 weights and activations (FP8 tensor cores; compute capability >= 8.9)
  +fp8-dynamic+compile(+fa3)   the fastest single-GPU combination we offer
  +sequential-experts / +cpu-offload / +vae-tiling     placement and memory knobs
  +cfg-batch            (stock-cfg) both guidance passes in one batch-2 forward
  +cache                (stock-cfg) FirstBlockCache, threshold 0.05 (diffusers' default)
  +cfg-batch+cache(+fp8-weight | +fp8-dynamic)         combinations
  +context-parallel-N   only under `torchrun --nproc-per-node N bench/generation.py --context-parallel N`: one clip
                        split over N GPUs (rank 0 records)

GPU rows record seconds per clip (median), seconds per transformer step (clip / steps: includes the VAE and text
encoder, an overestimate) and peak GPU memory. Anchor: LightX2V reports 44 s for 4-step Wan2.1-I2V-14B at 720p on an
H200. The GPU path has not been run yet (no GPU in the session that wrote it).

    python bench/generation.py             # GPU (full size) if torch sees one
    python bench/generation.py --quick     # tiny random models on CPU: proves the script runs; NOT a speed figure
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
from harness import Bench

from sparkle_fast.models.control import FunControlConfig, FunControlGenerator
from sparkle_fast.models.i2v import I2VConfig, SpeedOptions, WanI2VGenerator, apply_speed_options
from sparkle_fast.models.levers import GenerationLevers

FULL = dict(num_frames=81, height=720, width=1280)
QUICK = dict(num_frames=5, height=32, width=32)
A14B = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, out_channels=16, text_dim=4096,
            freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
            eps=1e-6, rope_max_seq_len=1024)
STOCK_STEPS = 50  # VideoX-Fun's Fun-Control default (Wan2.2 I2V stock: 40)
STOCK_GUIDANCE = {"i2v": 3.5, "fun": 6.0}  # Wan2.2 I2V's and VideoX-Fun's defaults
STOCK_MEASURED_STEPS = 6  # GPU: steps actually run for the stock rows (both experts run: boundary 0.9)
QUICK_STOCK_STEPS = 4


def full_size_pipeline(kind: str, device: str):
    """Random full-size two-expert pipeline in bf16, experts built directly on `device` (normal noise weights)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline
    from transformers import UMT5Config, UMT5EncoderModel

    from sparkle_fast.models.control import WanFunControlPipeline, WanFunControlTransformer3DModel
    from sparkle_fast.models.tiny import tiny_wan_tokenizer

    def expert(in_channels):
        extra = {} if kind == "i2v" else {"add_ref_conv": True, "in_dim_ref_conv": 16}
        with torch.device("meta"):
            model = WanFunControlTransformer3DModel(in_channels=in_channels, **A14B, **extra)
        model = model.to_empty(device=device).to(torch.bfloat16)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.02)
            model.rope = type(model.rope)(128, (1, 2, 2), 1024).to(device)  # its buffers were left empty
            # As from_pretrained(dtype=bf16) loads the real experts: the norms, time embedder and modulation table
            # stay in float32 (diffusers' _keep_in_fp32_modules).
            keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
            for name, module in model.named_modules():
                if keep.intersection(name.split(".")):
                    module.float()
        return model.eval()

    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=64, d_model=4096, d_kv=64, d_ff=256, num_layers=1,
                                               num_heads=8)).to(torch.bfloat16).eval()
    parts = dict(tokenizer=tiny_wan_tokenizer(), text_encoder=text_encoder, vae=AutoencoderKLWan().eval(),
                 scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))
    channels = 36 if kind == "i2v" else 52
    if kind == "i2v":
        pipe = WanImageToVideoPipeline(**parts, transformer=expert(channels), transformer_2=expert(channels),
                                       image_encoder=None, image_processor=None, boundary_ratio=0.9)
    else:
        pipe = WanFunControlPipeline(**parts, transformer=expert(channels), transformer_2=expert(channels))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_pipeline(kind: str):
    from sparkle_fast.models.tiny import tiny_wan_fun_control, tiny_wan_i2v

    pipe = tiny_wan_i2v() if kind == "i2v" else tiny_wan_fun_control()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_generator(kind: str, pipe, geometry: dict, distilled: bool, steps: int, guidance: float,
                   levers: GenerationLevers):
    common = dict(**geometry, distilled=distilled, num_inference_steps=steps, guidance_scale=guidance,
                  max_sequence_length=16, levers=levers)
    if kind == "i2v":
        return WanI2VGenerator(pipe, I2VConfig(**common), device=pipe.device)
    return FunControlGenerator(pipe, FunControlConfig(**common), device=pipe.device)


def runner(kind: str, gen, geometry: dict):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (geometry["height"], geometry["width"], 3), dtype=np.uint8)
    control = ((rng.random((geometry["num_frames"], geometry["height"], geometry["width"], 1)) > 0.9)
               * np.uint8(255)).repeat(3, axis=3)
    if kind == "i2v":
        return lambda: gen.generate(image, "a dog runs in the park")
    return lambda: gen.generate(control, image, "a dog runs in the park")


def installed(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def fp8_dynamic_ok(device: str) -> bool:
    return device.startswith("cuda") and torch.cuda.get_device_capability(device) >= (8, 9)


def distilled_rows(on_gpu: bool, device: str) -> list[tuple[str, SpeedOptions, GenerationLevers]]:
    """(impl, placement knobs, levers) for the distilled-4step case."""
    off, none = SpeedOptions(), GenerationLevers()
    if not on_gpu:
        return [("baseline", off, none), ("+attn-math", off, GenerationLevers(attention_backend="_native_math")),
                ("+fp8-weight", off, GenerationLevers(fp8="weight")),
                ("+sequential-experts", SpeedOptions(sequential_experts=True), none),
                ("+vae-tiling", SpeedOptions(vae_tiling=True), none)]
    rows = [("baseline", off, none), ("+attn-cudnn", off, GenerationLevers(attention_backend="_native_cudnn"))]
    fa3 = installed("flash_attn_interface")
    if fa3:
        rows.append(("+attn-fa3", off, GenerationLevers(attention_backend="_flash_3")))
    else:
        print("FlashAttention-3 (flash_attn_interface) not installed: +attn-fa3 skipped", file=sys.stderr)
    if installed("sageattention"):
        rows.append(("+attn-sage", off, GenerationLevers(attention_backend="sage")))
    rows += [("+compile", SpeedOptions(compile=True), none), ("+fp8-weight", off, GenerationLevers(fp8="weight"))]
    if fp8_dynamic_ok(device):
        best = GenerationLevers(fp8="dynamic", attention_backend="_flash_3" if fa3 else "_native_cudnn")
        rows += [("+fp8-dynamic", off, GenerationLevers(fp8="dynamic")),
                 ("+fp8-dynamic+compile" + ("+fa3" if fa3 else "+cudnn"), SpeedOptions(compile=True), best)]
    else:
        print("no FP8 tensor cores (compute capability < 8.9): +fp8-dynamic rows skipped", file=sys.stderr)
    rows += [("+sequential-experts", SpeedOptions(sequential_experts=True), none),
             ("+cpu-offload", SpeedOptions(cpu_offload=True), none),
             ("+vae-tiling", SpeedOptions(vae_tiling=True), none)]
    return rows


def stock_rows(on_gpu: bool, device: str) -> list[tuple[str, SpeedOptions, GenerationLevers]]:
    off = SpeedOptions()
    cache = dict(cache="first_block", cache_threshold=0.05)
    rows = [("baseline", off, GenerationLevers()), ("+cfg-batch", off, GenerationLevers(cfg_batch=True)),
            ("+cache", off, GenerationLevers(**cache)), ("+cfg-batch+cache", off, GenerationLevers(cfg_batch=True,
                                                                                                   **cache))]
    if on_gpu and fp8_dynamic_ok(device):
        rows.append(("+cfg-batch+cache+fp8-dynamic", off, GenerationLevers(cfg_batch=True, fp8="dynamic", **cache)))
    else:
        rows.append(("+cfg-batch+cache+fp8-weight", off, GenerationLevers(cfg_batch=True, fp8="weight", **cache)))
    return rows


def context_parallel_setup(degree: int) -> int:
    """Under torchrun: join the process group, pin this rank's GPU; returns the rank (0 without torchrun)."""
    if degree <= 1:
        return 0
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) != degree:
        raise SystemExit(f"--context-parallel {degree}: run under torchrun --nproc-per-node {degree}")
    dist.init_process_group("nccl")
    rank = dist.get_rank()
    torch.cuda.set_device(rank)
    return rank


def main(argv=None) -> int:
    bench, args = Bench.from_args("generation", argv, description=__doc__.splitlines()[0], extra=lambda p: (
        p.add_argument("--context-parallel", type=int, default=1, help="GPUs per clip (under torchrun)"),
        p.add_argument("--pipelines", default="i2v,fun", help="comma-separated: i2v, fun")))
    rank = context_parallel_setup(args.context_parallel)
    device = f"cuda:{rank}" if args.context_parallel > 1 else bench.device
    on_gpu = device.startswith("cuda")
    if not on_gpu and not bench.quick:
        raise SystemExit("bench/generation.py: full-size generation needs a GPU; use --quick on CPU")
    if bench.quick:  # a check that the script runs (every row once, no warm-up): keeps it near 30 CPU-seconds
        bench.warmup, bench.repeat = 0, 1
    geometry = QUICK if bench.quick else FULL
    label = "tiny random models on CPU: checks the script, NOT a speed figure" if not on_gpu else \
        "random-init full-size A14B experts (same shapes/FLOPs as the real weights)"
    clip = f"{geometry['num_frames']}x{geometry['height']}x{geometry['width']}"
    stock_steps = QUICK_STOCK_STEPS if bench.quick else STOCK_MEASURED_STEPS

    def measure(kind, schedule, impl, options, levers, distilled, steps, guidance):
        pipe = full_size_pipeline(kind, device) if not bench.quick else tiny_pipeline(kind)
        swapper = apply_speed_options(pipe, options, device)
        gen = make_generator(kind, pipe, geometry, distilled, steps, guidance, levers)
        if gen.setup_error or (gen.lever_state.levers != levers):
            print(f"{kind} {schedule} {impl}: skipped, the levers did not apply", file=sys.stderr)
            return
        if on_gpu:
            torch.cuda.reset_peak_memory_stats(device)
        case = {"pipeline": kind, "schedule": schedule, "clip": clip}
        row = bench.measure(impl, runner(kind, gen, geometry), case, note=label,
                            repeat=None if bench.quick else 1)
        row["steps"] = steps
        row["s_per_step"] = row["median_s"] / steps
        row["levers"] = gen.settings()["levers"]
        if on_gpu:
            row["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        if schedule == "stock-cfg":
            row["extrapolated_50_step_s"] = row["s_per_step"] * STOCK_STEPS
        if rank != 0:
            bench.rows.pop()
        if swapper is not None:
            swapper.remove()
        del gen, pipe
        if on_gpu:
            torch.cuda.empty_cache()

    for kind in args.pipelines.split(","):
        if args.context_parallel > 1:
            levers = GenerationLevers(context_parallel=args.context_parallel, attention_backend="_native_cudnn")
            measure(kind, "distilled-4step", f"+context-parallel-{args.context_parallel}", SpeedOptions(), levers,
                    True, 4, 1.0)
            continue
        for impl, options, levers in distilled_rows(on_gpu, device):
            measure(kind, "distilled-4step", impl, options, levers, True, 4, 1.0)
        for impl, options, levers in stock_rows(on_gpu, device):
            measure(kind, "stock-cfg", impl, options, levers, False, stock_steps, STOCK_GUIDANCE[kind])
    bench.compare_to("baseline")
    if rank == 0:
        bench.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
