"""Benchmark stage 4 BAIT: shared-feature multi-anchor tracking vs re-encoding every frame in every pass.

One clip (default 81 frames; 720p on GPU), 11 anchors at 2 FPS (every 8th frame), a few objects per anchor.
Implementations (same model, same passes, same vote):
  bait-shared            ours: one feature cache for the clip, passes in lockstep (sparkle_fast.bait.run_bait)
  bait-naive-reencode    every pass gets its own feature cache, so the image encoder runs for every frame of every
                         pass (what running SAM3 once per anchor and direction costs)
  single-bidirectional   one anchor (the middle frame), forward + backward: the cost BAIT is compared with
                         (target: bait-shared <= 1.5x this)
Each row also records encoder_calls and peak GPU memory.

Models: on GPU, a FULL-SIZE SAM3 tracker (transformers Sam3TrackerVideoConfig defaults: 1008 px, ViT 1024 x 32
layers) with RANDOM weights: real weights cannot be downloaded here; same shapes, same cost, masks are noise. On CPU
the TINY random model (sparkle_fast.models.tiny), labelled "tiny" in every row: its timings say nothing about SAM3.

    python bench/bait.py                  # GPU if torch sees one (full-size random weights), else CPU (tiny)
    python bench/bait.py --quick          # a 9-frame clip with the tiny model, to check the script runs
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from harness import Bench

from sparkle_fast.bait import run_bait
from sparkle_fast.models.tracker import Sam3ClipTracker, Sam3Tracker, SharedFeatureCache


class NaiveTracker:
    """The same tracker, but each pass encodes its own frames (a fresh feature cache per pass)."""

    def __init__(self, inner: Sam3Tracker):
        self.inner, self.device = inner, inner.device

    def open_clip(self, frames, *, max_cached_frames=None):
        clip = self.inner.open_clip(frames, max_cached_frames=max_cached_frames)
        return NaiveClip(clip)


class NaiveClip:
    def __init__(self, clip: Sam3ClipTracker):
        self.clip, self.caches = clip, {}

    @property
    def encoder_calls(self) -> int:
        return sum(c.encodes for c in self.caches.values())

    def start_pass(self, key, anchor_frame, boxes, reverse):
        self.clip.start_pass(key, anchor_frame, boxes, reverse)
        cache = SharedFeatureCache(self.clip.owner.device, self.clip.frame_count)
        self.clip.sessions[key]["session"].cache = cache
        self.caches[key] = cache

    def track(self, key, frame):
        return self.clip.track(key, frame)

    def end_pass(self, key):
        self.clip.end_pass(key)
        self.caches[key].clear_all()  # free the pass's features, keep its count

    def close(self):
        self.clip.close()


def full_size_random_tracker(device: str) -> Sam3Tracker:
    from transformers import (
        Sam2VideoVideoProcessor,
        Sam3ImageProcessor,
        Sam3TrackerVideoConfig,
        Sam3TrackerVideoModel,
        Sam3TrackerVideoProcessor,
    )

    config = Sam3TrackerVideoConfig()
    torch.manual_seed(0)
    model = Sam3TrackerVideoModel(config).eval()
    size = {"height": config.image_size, "width": config.image_size}
    processor = Sam3TrackerVideoProcessor(
        image_processor=Sam3ImageProcessor(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3),
        video_processor=Sam2VideoVideoProcessor(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3))
    return Sam3Tracker(model, processor, device=device)


def grounding(n_slots: int, objects: int, only_slot: int | None = None) -> list[list[dict]]:
    """Round-2 grounding with `objects` boxes per 2-FPS slot, drifting a little from slot to slot."""
    rng = np.random.default_rng(0)
    slots = []
    for k in range(n_slots):
        items = []
        for j in range(objects):
            x0, y0 = 100 + 250 * j + 10 * k, 150 + int(rng.integers(0, 100))
            items.append({"label": f"object {j}", "bbox_2d": [x0, y0, x0 + 200, y0 + 500]})
        slots.append(items if only_slot in (None, k) else [])
    return slots


def main(argv=None) -> int:
    def extra(parser):
        parser.add_argument("--frames", type=int, default=81)
        parser.add_argument("--height", type=int, default=None, help="default 720 on GPU, 180 on CPU")
        parser.add_argument("--width", type=int, default=None, help="default 1280 on GPU, 320 on CPU")
        parser.add_argument("--objects", type=int, default=3)

    bench, args = Bench.from_args("bait", argv, __doc__.splitlines()[0], extra)
    on_gpu = bench.device.startswith("cuda")
    frames_n = 9 if bench.quick else args.frames
    height = 24 if bench.quick else args.height or (720 if on_gpu else 180)
    width = 40 if bench.quick else args.width or (1280 if on_gpu else 320)
    bench.warmup = 0 if bench.quick else min(bench.warmup, 1)  # a run is seconds long; SAM3 has no lazy warm-up
    repeat = 1 if bench.quick else min(bench.repeat, 3)
    objects = 1 if bench.quick else args.objects
    if on_gpu and not bench.quick:
        tracker, model_label = full_size_random_tracker(bench.device), "sam3-full-size-random-weights"
    else:
        tracker, model_label = Sam3Tracker.tiny(device=bench.device), "tiny-random (not SAM3's cost)"
    video = torch.from_numpy((np.random.default_rng(1).random((frames_n, height, width, 3)) * 255).astype(np.uint8))
    video = video.to(bench.device)
    n_slots = (frames_n - 1) // 8 + 1
    case = {"frames": frames_n, "size": f"{height}x{width}", "anchors": n_slots, "objects": objects,
            "model": model_label}
    full = grounding(n_slots, objects)
    single = grounding(n_slots, objects, only_slot=n_slots // 2)
    runs = {
        "bait-shared": (tracker, full),
        "bait-naive-reencode": (NaiveTracker(tracker), full),
        "single-bidirectional": (tracker, single),
    }
    medians = {}
    for impl, (which, slots) in runs.items():
        last = {}

        def call(which=which, slots=slots, last=last):
            last["result"] = run_bait(which, video, slots)

        row = bench.measure(impl, call, case, repeat=repeat, note=model_label)
        result = last["result"]
        if not result.ok:
            print(f"{impl}: BAIT failed: {result.reason}", file=sys.stderr)
            return 1
        row.update(passes=result.passes, encoder_calls=result.encoder_calls, steps=result.steps,
                   peak_memory_bytes=result.peak_memory_bytes)
        print(f"  passes {result.passes}  encoder calls {result.encoder_calls}  steps {result.steps}  "
              f"peak memory {result.peak_memory_bytes}", flush=True)
        medians[impl] = row["median_s"]
    bench.compare_to("bait-naive-reencode")
    ratio = medians["bait-shared"] / medians["single-bidirectional"]
    print(f"bait-shared / single-bidirectional = {ratio:.2f} (target <= 1.5) [{model_label}]")
    for row in bench.rows:
        row["time_vs_single_bidirectional"] = row["median_s"] / medians["single-bidirectional"]
    bench.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
