"""Benchmark video generation: stage 3's 4-step Wan2.2-I2V and stage 5's Fun-Control, with each speed knob on and off.

Real weights cannot be downloaded here, so the GPU run uses RANDOMLY INITIALISED full-size models: two Wan2.2-A14B
experts (dim 5120, 40 heads, 40 layers, FFN 13824; 36 input channels for I2V, 52 for Fun-Control) and the real Wan
VAE config: the same shapes and FLOPs as the real models. The text encoder is a small random UMT5 (its cost is one
forward per clip, negligible next to the transformers); say so when quoting the figures.

Rows (case = pipeline + 81x720x1280 clip; impl = settings), seconds per clip:
  i2v-4step / fun-4step     LightX2V schedule, guidance 1, bf16, SDPA: the baseline of the knobs
  +compile                  torch.compile of the experts' repeated blocks (warm-up call absorbs compilation)
  +fa3                      attention backend "_flash_3" (FlashAttention-3; skipped when not installed)
  +vae-tiling               VAE tiling on
  +cpu-offload              diffusers model CPU offload (for GPUs below 80 GB)
  +sequential-experts       only one expert resident on the GPU at a time
  stock-50step-cfg          the stock diffusers settings (50 steps, guidance 5: 100 transformer calls), measured
                            with 2 steps and scaled to 50 (note says so): a full run would take ~15-20 minutes

Anchor: LightX2V reports 44 s for 4-step Wan2.1-I2V-14B at 720p on an H200. Target: under 40 s on an H100.

    python bench/generation.py             # GPU (full size) if torch sees one
    python bench/generation.py --quick     # tiny random models on CPU: proves the script runs; NOT a speed figure
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from harness import Bench

from sparkle_fast.models.control import FunControlConfig, FunControlGenerator
from sparkle_fast.models.i2v import I2VConfig, SpeedOptions, WanI2VGenerator, apply_speed_options

FULL = dict(num_frames=81, height=720, width=1280)
QUICK = dict(num_frames=5, height=32, width=32)
A14B = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, out_channels=16, text_dim=4096,
            freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
            eps=1e-6, rope_max_seq_len=1024)


def full_size_pipeline(kind: str, device: str):
    """Random full-size two-expert pipeline in bf16 on `device` (weights filled with small normal noise)."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    from sparkle_fast.models.control import WanFunControlPipeline
    from sparkle_fast.models.tiny import tiny_wan_tokenizer

    def expert(in_channels):
        with torch.device("meta"):
            model = WanTransformer3DModel(in_channels=in_channels, **A14B)
        model = model.to_empty(device="cpu").to(torch.bfloat16)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.02)
        model.rope = type(model.rope)(128, (1, 2, 2), 1024)
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


def make_generator(kind: str, pipe, geometry: dict, distilled: bool, steps: int, guidance: float):
    if kind == "i2v":
        cfg = I2VConfig(**geometry, distilled=distilled, num_inference_steps=steps, guidance_scale=guidance,
                        max_sequence_length=16)
        return WanI2VGenerator(pipe, cfg, device=pipe.device)
    cfg = FunControlConfig(**geometry, distilled=distilled, num_inference_steps=steps, guidance_scale=guidance,
                           max_sequence_length=16)
    return FunControlGenerator(pipe, cfg, device=pipe.device)


def runner(kind: str, gen, geometry: dict):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (geometry["height"], geometry["width"], 3), dtype=np.uint8)
    control = ((rng.random((geometry["num_frames"], geometry["height"], geometry["width"], 1)) > 0.9)
               * np.uint8(255)).repeat(3, axis=3)
    if kind == "i2v":
        return lambda: gen.generate(image, "a dog runs in the park")
    return lambda: gen.generate(control, image, "a dog runs in the park")


def flash3_available() -> bool:
    try:
        import flash_attn_interface  # noqa: F401
        return True
    except ImportError:
        return False


def main(argv=None) -> int:
    bench, args = Bench.from_args("generation", argv, description=__doc__.splitlines()[0])
    device = bench.device
    on_gpu = device.startswith("cuda")
    if not on_gpu and not bench.quick:
        raise SystemExit("bench/generation.py: full-size generation needs a GPU; use --quick on CPU")
    geometry = QUICK if bench.quick else FULL
    label = "tiny random models on CPU: checks the script, NOT a speed figure" if not on_gpu else \
        "random-init full-size A14B experts (same shapes/FLOPs as the real weights)"
    case_geometry = f"{geometry['num_frames']}x{geometry['height']}x{geometry['width']}"

    knobs = [("baseline", SpeedOptions(attention_backend="native" if on_gpu else None))]
    if on_gpu:
        knobs += [("+compile", SpeedOptions(attention_backend="native", compile=True)),
                  ("+vae-tiling", SpeedOptions(attention_backend="native", vae_tiling=True)),
                  ("+cpu-offload", SpeedOptions(attention_backend="native", cpu_offload=True)),
                  ("+sequential-experts", SpeedOptions(attention_backend="native", sequential_experts=True))]
        if flash3_available():
            knobs.append(("+fa3", SpeedOptions(attention_backend="_flash_3")))
        else:
            print("FlashAttention-3 (flash_attn_interface) not installed: +fa3 skipped", file=sys.stderr)
    else:
        knobs += [("+vae-tiling", SpeedOptions(vae_tiling=True)),
                  ("+sequential-experts", SpeedOptions(sequential_experts=True))]

    for kind in ("i2v", "fun"):
        case = {"pipeline": f"{kind}-4step", "clip": case_geometry}
        for name, options in knobs:
            pipe = full_size_pipeline(kind, device) if not bench.quick else tiny_pipeline(kind)
            swapper = apply_speed_options(pipe, options, device)
            gen = make_generator(kind, pipe, geometry, distilled=True, steps=4, guidance=1.0)
            bench.measure(name, runner(kind, gen, geometry), case, note=label,
                          repeat=None if bench.quick else 1)
            if swapper is not None:
                swapper.remove()
            del gen, pipe
            torch.cuda.empty_cache() if on_gpu else None

        # Stock settings: 2 steps with guidance measured, scaled to 50 steps (per-step cost is constant).
        pipe = full_size_pipeline(kind, device) if not bench.quick else tiny_pipeline(kind)
        pipe.set_progress_bar_config(disable=True)
        apply_speed_options(pipe, knobs[0][1], device)
        gen = make_generator(kind, pipe, geometry, distilled=False, steps=2, guidance=5.0)
        row = bench.measure("stock-2step-cfg", runner(kind, gen, geometry), case,
                            note=label + "; 2 of 50 steps with guidance 5", repeat=None if bench.quick else 1)
        row["extrapolated_50_step_s"] = row["median_s"] * 25
        print(f"  stock 50 steps + CFG extrapolated: {row['extrapolated_50_step_s']:.2f} s "
              f"(from 2 measured steps; includes VAE/text costs 25x, an overestimate)")
        del gen, pipe
    bench.compare_to("baseline")
    bench.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
