"""Benchmark the per-frame networks as PyTorch eager, torch.compile and TensorRT engines: ms per frame.

Targets (sparkle_fast.engines.targets): SAM3's image encoder (one frame per call, as BAIT calls it, and batches of
8), the Wan VAE decoder (a whole clip: 21 latent frames -> 81 video frames, per video frame), the line-art generator
(batches of 8 frames at the detect size). Every implementation's output is compared with eager's before it is timed
(max |diff| in the row); engine builds are not timed (their seconds are in the row's note).

On GPU: FULL-SIZE models with RANDOM weights (real weights cannot be downloaded here; same shapes and cost):
transformers' default Sam3TrackerVideoConfig (1008 px, ViT-L/14 32 layers), diffusers' default AutoencoderKLWan
(Wan2.1's VAE) at 720x1280, the line-art generator at ControlNet's size (width 64, 3 blocks) at 512x896; eager and
compile run in bf16 (the adapters' GPU dtype), TensorRT engines in bf16 (strongly typed bf16 graphs).
On CPU: the TINY random models, eager against onnxruntime (float32), labelled CPU and tiny: no claim about speed.

    python bench/engines.py                 # GPU if torch sees one, else CPU (tiny)
    python bench/engines.py --quick         # tiny models and shapes, to check the script runs
    python bench/engines.py --targets sam3,vae --cache DIR
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from harness import QUICK_RESULTS_DIR, Bench

from sparkle_fast.engines import targets
from sparkle_fast.engines.plug import WanChunkedDecode, make_runners
from sparkle_fast.engines.runtime import TorchGraph


def extra(parser) -> None:
    parser.add_argument("--targets", default="sam3,vae,lineart", help="comma-separated: sam3, vae, lineart")
    parser.add_argument("--cache", type=Path, default=None, help="engine cache (default: a fresh temporary folder)")
    parser.add_argument("--impls", default=None,
                        help="comma-separated subset of eager, compile, tensorrt, onnxruntime (default: all that "
                             "apply to the device)")


# ------------------------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------------------------

def sam3_model(full: bool, device: str, dtype: torch.dtype):
    if not full:
        from sparkle_fast.models.tiny import tiny_sam3_tracker

        return tiny_sam3_tracker(0)[0].to(device, dtype).eval()
    from transformers import Sam3TrackerVideoConfig, Sam3TrackerVideoModel

    torch.manual_seed(0)
    return Sam3TrackerVideoModel(Sam3TrackerVideoConfig()).to(device, dtype).eval()


def wan_vae(full: bool, device: str, dtype: torch.dtype):
    if not full:
        from sparkle_fast.models.tiny import tiny_wan_parts

        return tiny_wan_parts(0)[2].to(device, dtype).eval()
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    return AutoencoderKLWan().to(device, dtype).eval()


def lineart_detector(full: bool, device: str, dtype: torch.dtype):
    from sparkle_fast.models.lineart import LineartDetector

    return LineartDetector.tiny(seed=0, width=64 if full else 4, blocks=3 if full else 1, device=device, dtype=dtype)


# ------------------------------------------------------------------------------------------------------------------
# Rows
# ------------------------------------------------------------------------------------------------------------------

def max_diff(a, b) -> float:
    a = a if isinstance(a, (tuple, list)) else (a,)
    b = b if isinstance(b, (tuple, list)) else (b,)
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b, strict=True))


def runners_for(specs, impl: str, precision: str, cache: Path):
    """(runners, build seconds) for one implementation: eager, compile, tensorrt or onnxruntime."""
    started = time.perf_counter()
    if impl == "eager":
        runners = [TorchGraph(spec.module) for spec in specs]
    else:
        runners = make_runners(specs, impl, precision=precision, cache_dir=cache)
    return runners, time.perf_counter() - started


def timed(bench: Bench, impl: str, fn, reference, case: dict, frames: int, note: str, repeat: int):
    """Check fn() against the eager output, then time it; the row gets ms_per_frame and the difference."""
    with torch.inference_mode():
        diff = max_diff(fn(), reference) if reference is not None else 0.0
    row = bench.measure(impl, fn, case, note=note, repeat=repeat)
    row["frames_per_call"] = frames
    row["ms_per_frame"] = row["median_s"] * 1e3 / frames
    row["max_abs_diff_vs_eager"] = diff
    print(f"    -> {row['ms_per_frame']:.3f} ms per frame, max |diff| vs eager {diff:.3g}", flush=True)
    return row


def bench_sam3(bench, impls, full, dtype, precision, cache, label, repeat):
    model = sam3_model(full, bench.device, dtype)
    size = int(model.config.image_size)
    for batch in ((1,) if bench.quick else (1, 8)):
        specs = targets.sam3_graphs(model, max_batch=8, opt_batch=batch)
        pixels = torch.randn(batch, 3, size, size, device=bench.device, dtype=dtype)
        case = {"target": "sam3_image_encoder", "batch": batch, "size": size}
        reference = None
        for impl in impls:
            (runner,), build_s = runners_for(specs, impl, precision, cache)
            with torch.inference_mode():
                out = runner(pixels)
            reference = reference if reference is not None else out
            timed(bench, impl, lambda runner=runner: runner(pixels), reference, case, batch,
                  f"{label}; setup {build_s:.1f} s", repeat)


def bench_vae(bench, impls, full, dtype, precision, cache, label, repeat, latent_frames, latent_hw):
    vae = wan_vae(full, bench.device, dtype)
    z = torch.randn(1, vae.config.z_dim, latent_frames, *latent_hw, device=bench.device, dtype=dtype)
    frames = 1 + 4 * (latent_frames - 1)
    case = {"target": "vae_decode", "latent": list(z.shape), "video_frames": frames}
    specs = targets.vae_graphs(vae, latent_hw=latent_hw, max_batch=1)
    reference = None
    for impl in impls:
        if impl == "eager":  # the adapters' own path: diffusers' decode
            decode, build_s = (lambda: vae.decode(z, return_dict=False)[0]), 0.0
        else:
            (first, step), build_s = runners_for(specs, impl, precision, cache)
            chunked = WanChunkedDecode(vae, first, step)
            decode = (lambda chunked=chunked: chunked(z, return_dict=False)[0])
        with torch.inference_mode():
            out = decode()
        reference = reference if reference is not None else out
        timed(bench, impl, decode, reference, case, frames, f"{label}; setup {build_s:.1f} s", repeat)


def bench_lineart(bench, impls, full, dtype, precision, cache, label, repeat, hw):
    detector = lineart_detector(full, bench.device, dtype)
    batch = 2 if bench.quick else 8
    specs = targets.lineart_graphs(detector, detect_hw=hw, max_batch=batch)[:1]  # the fine generator
    x = torch.rand(batch, 3, *hw, device=bench.device, dtype=dtype)
    case = {"target": "lineart_generator", "batch": batch, "size": list(hw)}
    reference = None
    for impl in impls:
        (runner,), build_s = runners_for(specs, impl, precision, cache)
        with torch.inference_mode():
            out = runner(x)
        reference = reference if reference is not None else out
        timed(bench, impl, lambda runner=runner: runner(x), reference, case, batch, f"{label}; setup {build_s:.1f} s",
              repeat)


def main(argv=None) -> int:
    bench, args = Bench.from_args("engines", argv, __doc__.splitlines()[0], extra)
    on_gpu = bench.device.startswith("cuda")
    full = on_gpu and not bench.quick
    dtype = torch.bfloat16 if full else torch.float32
    precision = "bf16" if full else "fp32"
    impls = args.impls.split(",") if args.impls else (["eager", "compile", "tensorrt"] if on_gpu
                                                      else ["eager", "onnxruntime"])
    label = ("full-size random weights, bf16" if full else
             f"tiny random models ({'GPU' if on_gpu else 'CPU'}): no claim about the real networks")
    repeat = 1 if bench.quick else bench.repeat
    if bench.quick:
        bench.warmup = 0
    cache = args.cache or Path(tempfile.mkdtemp(prefix="engines-", dir=QUICK_RESULTS_DIR.parent
                                                if QUICK_RESULTS_DIR.parent.is_dir() else None))
    chosen = args.targets.split(",")
    if "sam3" in chosen:
        bench_sam3(bench, impls, full, dtype, precision, cache, label, repeat)
    # shapes: the real ones on GPU; on CPU (tiny models) smaller, so a run takes minutes; --quick: the smallest
    if "vae" in chosen:
        latent_frames, latent_hw = (2, (4, 6)) if bench.quick else (21, (90, 160)) if full else (3, (12, 20))
        bench_vae(bench, impls, full, dtype, precision, cache, label, repeat, latent_frames, latent_hw)
    if "lineart" in chosen:
        hw = (16, 24) if bench.quick else (512, 896) if full else (128, 224)
        bench_lineart(bench, impls, full, dtype, precision, cache, label, repeat, hw)
    bench.compare_to("eager")
    bench.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
