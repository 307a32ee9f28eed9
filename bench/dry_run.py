"""A dry run at a real clip size: `--models tiny` on three 81-frame 640x360 clips through all five stages.

    python bench/dry_run.py [--quick] [--clips 3] [--frames 81] [--source-size 640x360] [--clip-size 640x352]
                            [--threads N] [--work DIR] [--out JSON]

What a new user does before renting a GPU: run the pipeline on their own clips with the tiny random models
(`sparkle-fast run --input CLIPS --out OUT --models tiny`). The tiny models keep the real models' downsampling and
patching (sparkle_fast/models/tiny.py), so the run does the real number of VLM tokens, FLUX.2 and Wan latent tokens
and SAM3 frames, at tiny widths: it must take minutes on a 2-core laptop, not hours.

The clips: a fixed camera looking at a photograph with a textured subject moving across it (camera_synthetic), written
as 16 fps H.264 at --source-size. The run config: the demo's (sparkle_fast/data/demo.toml: lowered EditScore thresholds
so samples can reach stage 5, 4-step Fun-Control without guidance) with the clip length and size set to a real size:
81 frames, 640x352 (the clip size must be a multiple of 16 for Wan's VAE x patch, so 360 becomes 352; the crop is
stage 1's "crop" aspect rule). The stages run one after the other (one run_pipeline call each, resuming the same
output), so each one's wall time is measured, model loading included; with its samples kept / rejected / failed and
the model / kernel / io split of the stages' own timers. --quick: the demo's sizes (17 frames of 96x64), to
check that the script works.

Results: bench/results/dry_run-<device>.json (--quick: out/bench-quick/, never committed). The figures depend on the
machine's load: the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import QUICK_RESULTS_DIR, RESULTS_DIR, environment, slug  # noqa: E402

# Candidate k: camera_synthetic's photograph PHOTOS[k % 6] seen by a fixed camera, seed k, with a subject covering
# SUBJECT_FRACTIONS[(k // 6) % 2] of the frame moving 1 px per frame.
from sparkle_fast.camera_synthetic import PHOTOS  # noqa: E402

SUBJECT_FRACTIONS = (0.08, 0.03)
MAX_CANDIDATES = 40


def parse_size(text: str) -> tuple[int, int]:
    """"640x360" -> (width, height)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 640x360") from exc
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"size {text!r}: width and height must be positive")
    return width, height


def write_candidate(folder: Path, index: int, frames: int, size: tuple[int, int]) -> Path:
    """Candidate clip `index` (see PHOTOS above); 16 fps H.264."""
    from sparkle_fast.camera_synthetic import make_clip
    from sparkle_fast.video import write_video

    width, height = size
    photo = PHOTOS[index % len(PHOTOS)]
    fraction = SUBJECT_FRACTIONS[(index // len(PHOTOS)) % len(SUBJECT_FRACTIONS)]
    clip = make_clip("static", n_frames=frames, size=(height, width), subject_fraction=fraction, subject_speed=1.0,
                     photo=photo, seed=index)
    return write_video(folder / f"clip_{index}_{photo}.mp4", clip.frames, fps=16)


def make_clips(folder: Path, count: int, frames: int, size: tuple[int, int], screen_config=None) \
        -> tuple[list[Path], int]:
    """`count` fixed-camera clips with a moving subject in `folder`; returns them and the number of candidates made.

    screen_config (the run's config): keep only candidates that stage 1 keeps, found by running stage 1 alone on
    batches of candidates in folder/../screen. Stage 1's fine filter is the tiny random VLM, whose verdicts are noise
    that depends on the pixels (at 640x352 it calls most candidates "moving"), and its camera rule can take the
    moving subject for camera motion; a clip stage 1 rejects leaves stages 2-5 untimed. A dry run of one's own clips
    meets the same noise, so this is the bench's choice of clips, not something the pipeline does."""
    import shutil

    from sparkle_fast.driver.manifest import Manifest
    from sparkle_fast.driver.run import run_pipeline

    folder.mkdir(parents=True, exist_ok=True)
    if screen_config is None:
        return [write_candidate(folder, index, frames, size) for index in range(count)], count
    screen_inputs, screen_out = folder.parent / "screen" / "clips", folder.parent / "screen" / "run"
    screen_inputs.mkdir(parents=True, exist_ok=True)
    kept: list[Path] = []
    candidate = 0
    while len(kept) < count:
        if candidate >= MAX_CANDIDATES:
            raise SystemExit(f"{MAX_CANDIDATES} candidate clips, {len(kept)} kept by stage 1: run with --no-screen")
        batch = max(2, 2 * (count - len(kept)))
        for _ in range(batch):
            write_candidate(screen_inputs, candidate, frames, size)
            candidate += 1
        run_pipeline(screen_inputs, screen_out, screen_config, models="tiny", stages=[1],
                     log=lambda message: print(f"[screen] {message}", file=sys.stderr))
        with Manifest(screen_out / "manifest.sqlite") as manifest:
            sources = {sample.id: Path(sample.src_video) for sample in manifest.samples()}
            done = sorted(sources[result.sample_id] for result in manifest.results(1, "done"))
        for source in done:
            source = source if source.is_absolute() else screen_inputs / source
            target = folder / source.name
            if len(kept) < count and not target.exists():
                kept.append(Path(shutil.copy2(source, target)))
    return kept, candidate


def stage_rows(summary: dict, walls: dict[int, float], cpus: dict[int, float]) -> list[dict]:
    """One row per stage: its wall and CPU seconds here (model loading included), and from the run's summary its
    outcome counts and the stage timers' split (model / kernel / io / model_load seconds)."""
    rows = []
    for number, wall in walls.items():
        stage = summary["stages"].get(str(number), {})
        rows.append({"stage": number, "name": stage.get("name", f"stage{number}"), "wall_seconds": wall,
                     "cpu_seconds": cpus[number],
                     "kept": stage.get("kept", stage.get("done", 0)), "rejected": stage.get("rejected", 0),
                     "failed": stage.get("failed", 0), "time": stage.get("time", {})})
    return rows


def outcome_reasons(manifest_path: Path) -> dict[int, list[str]]:
    """{stage: ["sample_id status: reason", ...]} for the samples a stage rejected or failed."""
    from sparkle_fast.driver.manifest import Manifest

    reasons: dict[int, list[str]] = {}
    with Manifest(manifest_path) as manifest:
        for number in range(1, 6):
            for result in manifest.results(number):
                if result.status != "done":
                    reasons.setdefault(number, []).append(f"{result.sample_id} {result.status}: {result.reason}")
    return reasons


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the demo's sizes (17 frames of 96x64): checks the script")
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--frames", type=int, default=None, help="frames per source clip and per run clip (81)")
    parser.add_argument("--source-size", type=parse_size, default=None, help="the source clips, WxH (640x360)")
    parser.add_argument("--clip-size", type=parse_size, default=None,
                        help="the run's clip size (clip.width x clip.height), multiples of 16 (640x352)")
    parser.add_argument("--no-screen", dest="screen", action="store_false",
                        help="keep every candidate clip (default: only those the tiny VLM calls static)")
    parser.add_argument("--engines", choices=("torch", "onnxruntime"), default="torch",
                        help="[engines] vae and sam3 (onnxruntime: the Wan VAE decoder and SAM3's image encoder as "
                             "ONNX graphs, exported into WORK/engines during the run, so the export is timed)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--work", type=Path, default=None, help="keep the clips and the run here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default bench/results/...)")
    args = parser.parse_args(argv)

    frames = args.frames or (17 if args.quick else 81)
    source_size = args.source_size or ((160, 90) if args.quick else (640, 360))
    clip_size = args.clip_size or ((96, 64) if args.quick else (640, 352))

    import torch

    from sparkle_fast.driver.config import load_config
    from sparkle_fast.driver.demo import demo_config_path
    from sparkle_fast.driver.run import run_pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment("cpu")
    overrides = {"clip.max_frames": frames, "clip.width": clip_size[0], "clip.height": clip_size[1]}

    with tempfile.TemporaryDirectory(prefix="sparkle-dry-run-") as scratch:
        work = args.work or Path(scratch)
        if args.engines != "torch":
            overrides.update({"engines.vae": args.engines, "engines.sam3": args.engines,
                              "engines.cache_dir": str(work / "engines")})
        config = load_config(demo_config_path(), overrides)
        inputs = work / "clips"
        out = work / "run"
        if out.exists():
            raise SystemExit(f"{out} exists: give a fresh --work (the run would resume instead of running)")
        load_before = os.getloadavg()
        started = time.perf_counter()
        _, candidates = make_clips(inputs, args.clips, frames, source_size, config if args.screen else None)
        clips_seconds = time.perf_counter() - started
        # One stage at a time (each call resumes from the manifest), so each stage's wall time is measured here,
        # model loading and the runner's bookkeeping included, whatever the summary's own split is.
        # CPU seconds (this process, all threads) beside wall seconds: on a shared machine the wall time follows the
        # load, the CPU time much less.
        walls, cpus = {}, {}
        for number in range(1, 6):
            stage_started, cpu_started = time.perf_counter(), time.process_time()
            summary = run_pipeline(inputs, out, config, models="tiny", stages=[number],
                                   log=lambda message: print(message, file=sys.stderr))
            walls[number] = round(time.perf_counter() - stage_started, 2)
            cpus[number] = round(time.process_time() - cpu_started, 2)
        wall = time.perf_counter() - started
        load_after = os.getloadavg()
        reasons = outcome_reasons(out / "manifest.sqlite")

    rows = stage_rows(summary, walls, cpus)
    payload = {
        "benchmark": "dry_run", "quick": args.quick, "environment": env,
        "case": {"clips": args.clips, "frames": frames, "source_size": list(source_size),
                 "clip_size": list(clip_size), "config": "demo.toml + clip overrides", "models": "tiny",
                 "engines": args.engines, "torch_threads": torch.get_num_threads(), "screened": args.screen,
                 "candidates": candidates},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "clips_seconds": round(clips_seconds, 2), "total_seconds": round(wall, 2), "rows": rows,
        "not_kept": {str(k): v for k, v in reasons.items()},
    }
    target = args.out or ((QUICK_RESULTS_DIR if args.quick else RESULTS_DIR)
                          / f"dry_run-{slug(env['device_name'])[:60]}"
                             f"{'' if args.engines == 'torch' else '-' + args.engines}.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(payload, indent=2) + "\n")

    print(f"dry run: {args.clips} clips of {frames} frames {source_size[0]}x{source_size[1]} -> clips "
          f"{clip_size[0]}x{clip_size[1]}, tiny models, {env['device_name']}, load {load_before[0]:.1f} -> "
          f"{load_after[0]:.1f}")
    print(f"{'stage':<16}{'wall s':>9}{'cpu s':>9}{'kept':>6}{'rej':>5}{'fail':>6}   model / kernel / io / load (s)")
    for row in rows:
        t = row["time"]
        print(f"{row['stage']} {row['name']:<14}{row['wall_seconds']:>9.1f}{row['cpu_seconds']:>9.1f}{row['kept']:>6}"
              f"{row['rejected']:>5}"
              f"{row['failed']:>6}   {t.get('model', 0):.1f} / {t.get('kernel', 0):.1f} / {t.get('io', 0):.1f} / "
              f"{t.get('model_load', 0):.1f}")
    for number, lines in reasons.items():
        for line in lines:
            print(f"  stage {number}: {line[:160]}")
    print(f"total {wall:.1f} s wall, {sum(cpus.values()):.1f} s CPU in the stages (clips {clips_seconds:.1f} s, "
          f"{candidates} candidates); "
          f"{target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
