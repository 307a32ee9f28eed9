"""`sparkle-fast engines export|build`: ONNX files and TensorRT engines for the per-frame networks.

    sparkle-fast engines export --models tiny|DIR [--slot sam3|vae|lineart ...] --out DIR [--precision fp32]
    sparkle-fast engines build  --models tiny|DIR [--slot ...] [--cache DIR] [--precision bf16]

export writes OUT/<target>_<graph>.onnx (+ a .json saying which exporter ran) for each slot's graphs.
build exports into the engine cache (CACHE/onnx) and builds each engine (CACHE/engines) for this GPU and TensorRT
version; --height/--width (the clip size) and --max-batch set the optimisation profiles.

Exit status: 0 done; 1 an export or build failed (the message names the graph); 2 bad arguments or model folder;
3 (build only) the ONNX files were exported but no engine was built because TensorRT or a CUDA GPU is missing here
(the message says which and names the extra to install).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "engines"
HELP = "export the per-frame networks to ONNX and build TensorRT engines (sam3, vae, lineart)"

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NO_TENSORRT = 3
SLOT_NAMES = ("sam3", "vae", "lineart")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, help="'tiny' (random tiny models) or a --models folder")
    parser.add_argument("--slot", action="append", choices=SLOT_NAMES,
                        help="a network to process (repeatable); default: sam3 and vae, and lineart when the "
                             "models folder has it (always with --models tiny)")
    parser.add_argument("--height", type=int, default=720, help="clip height the profiles are for (default 720)")
    parser.add_argument("--width", type=int, default=1280, help="clip width the profiles are for (default 1280)")
    parser.add_argument("--max-batch", type=int, default=8, help="largest batch of the profiles (default 8)")
    parser.add_argument("--device", default=None, help="where models load (default: cuda when available)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="engines_command", required=True)
    export = sub.add_parser("export", help="write the ONNX file(s) of the chosen networks")
    _common(export)
    export.add_argument("--out", required=True, help="folder for the .onnx files")
    export.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                        help="type of the exported graph (default fp32)")
    build = sub.add_parser("build", help="export and build TensorRT engines into the engine cache")
    _common(build)
    build.add_argument("--cache", default=None, help="engine cache folder (default: $SPARKLE_FAST_ENGINE_CACHE or "
                                                      "~/.cache/sparkle_fast/engines)")
    build.add_argument("--precision", default="bf16", choices=("bf16", "fp16", "fp32", "fp8"),
                       help="engine precision (default bf16; fp8 is not supported yet and says so)")


def _slot_subdir(slot: str) -> str:
    from sparkle_fast.models.slots import SLOTS

    return SLOTS[slot].subdir if slot in SLOTS else slot


def default_slots(models: str) -> list[str]:
    if models == "tiny":
        return list(SLOT_NAMES)
    slots = ["sam3", "vae"]
    if (Path(models) / _slot_subdir("lineart")).is_dir():
        slots.append("lineart")
    return slots


def graphs_for(slot: str, models: str, args: argparse.Namespace) -> list:
    """The GraphSpecs of one slot, from tiny models or the --models folder."""
    import torch

    from sparkle_fast.engines import targets

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tiny = models == "tiny"
    if slot == "sam3":
        from sparkle_fast.models.tracker import Sam3Tracker

        tracker = (Sam3Tracker.tiny(device=device) if tiny
                   else Sam3Tracker.from_pretrained(Path(models) / _slot_subdir("sam3"), device=device))
        return targets.sam3_graphs(tracker.model, max_batch=args.max_batch)
    if slot == "vae":
        vae = _load_vae(models, device)
        factor = int(vae.spatial_compression_ratio)
        return targets.vae_graphs(vae, latent_hw=(args.height // factor, args.width // factor),
                                  max_batch=min(args.max_batch, 2))
    from sparkle_fast.models.lineart import LineartDetector, detect_size

    detector = (LineartDetector.tiny(device=device) if tiny
                else LineartDetector.from_pretrained(Path(models) / _slot_subdir("lineart"), device=device))
    return targets.lineart_graphs(detector, detect_hw=detect_size(args.height, args.width,
                                                                  detector.detect_resolution),
                                  max_batch=args.max_batch)


def _load_vae(models: str, device: str):
    """The Wan VAE: the tiny pipelines' one, or the i2v folder's vae/ (the control folder's when there is no i2v
    folder; both hold Wan2.1's VAE, and the cache key has the weights hash, so equal weights share engines)."""
    import torch

    if models == "tiny":
        from sparkle_fast.models.tiny import tiny_wan_parts

        return tiny_wan_parts(0)[2].to(device)
    from diffusers import AutoencoderKLWan

    candidates = [Path(models) / _slot_subdir(slot) / "vae" for slot in ("i2v", "control")]
    for folder in candidates:
        if (folder / "config.json").is_file():
            return AutoencoderKLWan.from_pretrained(folder, dtype=torch.float32).to(device).eval()
    raise FileNotFoundError(f"[vae] no Wan VAE folder: looked for {' and '.join(str(c) for c in candidates)} "
                            f"(a diffusers AutoencoderKLWan folder with config.json)")


def run(args: argparse.Namespace) -> int:
    models = args.models
    if models != "tiny" and not Path(models).is_dir():
        print(f"sparkle-fast engines: --models {models}: no such folder (pass 'tiny' or a models folder)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.engines_command == "build":
        from sparkle_fast.engines.build import check_precision
        from sparkle_fast.engines.targets import EngineUnavailable

        try:
            check_precision(args.precision)
        except EngineUnavailable as exc:
            print(f"sparkle-fast engines build: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    slots = args.slot or default_slots(models)
    try:
        specs = [spec for slot in slots for spec in graphs_for(slot, models, args)]
    except (FileNotFoundError, ValueError) as exc:
        print(f"sparkle-fast engines: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.engines_command == "export":
        return _export(specs, args)
    return _build(specs, args)


def _export(specs: list, args: argparse.Namespace) -> int:
    from sparkle_fast.engines.export import PRECISIONS, export_graph

    out = Path(args.out)
    for spec in specs:
        try:
            result = export_graph(spec, out / f"{spec.full_name}.onnx", dtype=PRECISIONS[args.precision])
        except Exception as exc:  # noqa: BLE001 - reported with the graph's name
            print(f"sparkle-fast engines export: {spec.full_name} failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return EXIT_FAILED
        note = f" (fallback: {result.fallback_reason})" if result.fallback_reason else ""
        print(f"{spec.full_name}: {result.path} [{result.exporter} exporter, {result.dtype}, {result.seconds:.1f} s]"
              f"{note}")
    return 0


def _build(specs: list, args: argparse.Namespace) -> int:
    from sparkle_fast.engines import cache as engine_cache
    from sparkle_fast.engines.build import ensure_engine, ensure_onnx, tensorrt_ready

    cache_dir = engine_cache.resolve_cache_dir(args.cache)
    missing = tensorrt_ready()
    for spec in specs:
        try:
            onnx_file = ensure_onnx(spec, args.precision, cache_dir)
            print(f"{spec.full_name}: ONNX {onnx_file}")
            if missing is None:
                plan = ensure_engine(spec, precision=args.precision, cache_dir=cache_dir)
                print(f"{spec.full_name}: engine {plan}")
        except Exception as exc:  # noqa: BLE001 - reported with the graph's name
            print(f"sparkle-fast engines build: {spec.full_name} failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return EXIT_FAILED
    if missing is not None:
        print(f"sparkle-fast engines build: ONNX exported to {cache_dir / 'onnx'}, but no TensorRT engine was built: "
              f"{missing}. Building an engine needs TensorRT and a CUDA GPU (exit status {EXIT_NO_TENSORRT}).",
              file=sys.stderr)
        return EXIT_NO_TENSORRT
    return 0
