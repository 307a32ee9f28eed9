"""Stage 4 (BAIT): the foreground mask of every source frame.

  round 2   Qwen3-VL ground_per_frame re-locates every round-1 label on the clip's frames at bait.anchor_fps (2 FPS)
            -> foreground_grounding_r2.jsonl (frame_objects, "bbox_2d": [] where a label was not found)
  BAIT      SAM3 tracks from every anchor frame with a usable box, forward and backward; pixels voted by a strict
            majority of the passes (Sparkle's rule), or by at least bait.min_votes of them when that is set (capped
            at the sample's pass count) -> source_video_mask/{id}.npz (Sparkle's packed format)
  rejected  when no frame has a usable box (no anchor) or tracking fails
With bait.round1_anchor (off in Sparkle), frame 0 is also anchored on the round-1 boxes, which were found on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparkle_fast.stages.base import Sample, StageContext, StageOutcome
from sparkle_fast.stages.common import StageTimer, load_slot_models, previous_record, release_slot_models


class BaitStage:
    number = 4
    name = "bait"
    model_slots = ("vlm", "sam3")

    def load_models(self, models_source: Any) -> dict:
        from sparkle_fast.models.tracker import Sam3Tracker
        from sparkle_fast.models.vlm import Qwen3VLAdapter

        return load_slot_models(models_source, {
            "vlm": (Qwen3VLAdapter.tiny, Qwen3VLAdapter.from_pretrained),
            "sam3": (Sam3Tracker.tiny, Sam3Tracker.from_pretrained),
        })

    def release_models(self, models: Any) -> None:
        release_slot_models(models)

    def run(self, sample: Sample, context: StageContext) -> StageOutcome:
        from sparkle_fast.bait import run_bait
        from sparkle_fast.video import read_frames, sample_indices

        config, layout, models, timer = context.config, context.layout, context.models, StageTimer()
        r1 = previous_record(context, 3)["r1"]
        with timer.io():
            frames = read_frames(layout.artifact(sample.theme, "source_video", sample.id)).frames.numpy()
        anchor_frames = sample_indices(len(frames), config.clip.fps, config.bait.anchor_fps)

        with timer.model():
            grounding = models["vlm"].ground_per_frame([frames[i] for i in anchor_frames], r1["round1_labels"])
        if grounding.value is None:
            return StageOutcome("failed", f"round-2 grounding: {grounding.reason}", timing=timer.as_dict())
        r2 = {**r1, "frame_objects": grounding.value}
        record: dict[str, Any] = {"r2": r2, "anchor_frames": [int(i) for i in anchor_frames],
                                  "jsonl": {"foreground_grounding_r2": r2}}
        frame_objects = [list(objects) for objects in grounding.value]
        if config.bait.round1_anchor and frame_objects:
            # Slot 0 is clip frame 0, where round 1 found its boxes; round 2's own boxes there come first.
            frame_objects[0] = frame_objects[0] + list(r1["round1_objects"])
        elif not grounding.ok:
            return StageOutcome("rejected", f"round-2 grounding: {grounding.reason}", None, record, timer.as_dict())

        # BAIT's time is the tracker's forward passes (model) plus the vote and packing (kernel, a small part).
        with timer.model():
            # run.ablation "single-pass" (paper 3.4's baseline): one forward pass from the first anchor, no vote.
            mode = "single" if config.run.ablation == "single-pass" else "bait"
            result = run_bait(models["sam3"], frames, frame_objects, fps=config.clip.fps,
                              anchor_frames=anchor_frames, min_votes=config.bait.min_votes or None, mode=mode)
        # The record is the stage's outcome, identical on a rerun: measurements (seconds, peak memory) are left out.
        record["bait"] = {k: v for k, v in result.summary().items() if k not in ("seconds", "peak_memory_bytes")}
        if not result.ok:
            return StageOutcome("rejected", f"BAIT: {result.reason}", None, record, timer.as_dict())
        with timer.io():
            result.save(layout.artifact(sample.theme, "source_video_mask", sample.id))
        coverage = float(np.mean(result.mask()))
        record["mask_coverage"] = coverage
        return StageOutcome.done(record, coverage, **timer.as_dict())
