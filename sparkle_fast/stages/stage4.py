"""Stage 4 (BAIT): the foreground mask of every source frame, in two steps.

  ground_r2 [vlm]   Qwen3-VL ground_per_frame re-locates every round-1 label on the clip's frames at bait.anchor_fps
                    (2 FPS) -> foreground_grounding_r2.jsonl (frame_objects, "bbox_2d": [] where a label was not
                    found); rejected when no frame has a usable box (no anchor)
  track [sam3]      BAIT: SAM3 tracks from every anchor frame with a usable box, forward and backward; pixels voted by
                    a strict majority of the passes (Sparkle's rule), or by at least bait.min_votes of them when that
                    is set (capped at the sample's pass count), voted and bit-packed by ops.vote_and_pack in the same
                    step (the passes' masks never leave memory) -> source_video_mask/{id}.npz (Sparkle's packed format)
With bait.round1_anchor (off in Sparkle), frame 0 is also anchored on the round-1 boxes, which were found on it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from sparkle_fast.stages.common import previous_record
from sparkle_fast.stages.steps import Step, StepItem, SteppedStage, call_many, item_backends, share_seconds


def _source_frames(item: StepItem) -> np.ndarray:
    from sparkle_fast.video import read_frames

    with item.timer.io():
        return read_frames(item.context.layout.artifact(item.sample.theme, "source_video", item.sample.id)) \
            .frames.numpy()


def ground_r2(items: list[StepItem]) -> list:
    from sparkle_fast.video import sample_indices

    outcomes: list = [None] * len(items)
    frames_per_sample, labels_per_sample = [], []
    for item in items:
        frames = _source_frames(item)
        config = item.context.config
        anchors = sample_indices(len(frames), config.clip.fps, config.bait.anchor_fps)
        item.state["anchor_frames"] = [int(i) for i in anchors]
        frames_per_sample.append([frames[i] for i in anchors])
        labels_per_sample.append(previous_record(item.context, 3)["r1"]["round1_labels"])
    started = time.perf_counter()
    groundings = call_many(items[0].context.models["vlm"], "ground_per_frame", frames_per_sample, labels_per_sample)
    share_seconds(items, "model", started)
    for i, (item, grounding) in enumerate(zip(items, groundings, strict=True)):
        anchors = item.state.pop("anchor_frames")
        if grounding.value is None:
            outcomes[i] = item.fail(f"round-2 grounding: {grounding.reason}")
            continue
        r1 = previous_record(item.context, 3)["r1"]
        r2 = {**r1, "frame_objects": grounding.value}
        item.state.update(r2=r2, anchor_frames=anchors, jsonl={"foreground_grounding_r2": r2})
        frame_objects = [list(objects) for objects in grounding.value]
        if item.context.config.bait.round1_anchor and frame_objects:
            # Slot 0 is clip frame 0, where round 1 found its boxes; round 2's own boxes there come first.
            frame_objects[0] = frame_objects[0] + list(r1["round1_objects"])
        elif not grounding.ok:
            outcomes[i] = item.reject(f"round-2 grounding: {grounding.reason}")
            continue
        item.state["_frame_objects"] = frame_objects
    return outcomes


def track(items: list[StepItem]) -> list:
    """One clip at a time: a clip's passes already batch its frames through SAM3."""
    outcomes: list[Any] = []
    for item in items:
        with item_backends(item):
            outcomes.append(_track_one(item))
    return outcomes


def _track_one(item: StepItem):
    from sparkle_fast.bait import run_bait

    config = item.context.config
    frames = _source_frames(item)
    # BAIT's time is the tracker's forward passes (model) plus the vote and packing (kernel, a small part).
    with item.timer.model():
        # run.ablation "single-pass" (paper 3.4's baseline): one forward pass from the first anchor, no vote.
        mode = "single" if config.run.ablation == "single-pass" else "bait"
        result = run_bait(item.context.models["sam3"], frames, item.state["_frame_objects"], fps=config.clip.fps,
                          anchor_frames=item.state["anchor_frames"], min_votes=config.bait.min_votes or None,
                          mode=mode)
    # The record is the stage's outcome, identical on a rerun: measurements (seconds, peak memory) are left out.
    item.state["bait"] = {k: v for k, v in result.summary().items() if k not in ("seconds", "peak_memory_bytes")}
    if not result.ok:
        return item.reject(f"BAIT: {result.reason}")
    with item.timer.io():
        result.save(item.context.layout.artifact(item.sample.theme, "source_video_mask", item.sample.id))
    coverage = float(np.mean(result.mask()))
    item.state["mask_coverage"] = coverage
    return item.done(coverage)


class BaitStage(SteppedStage):
    number = 4
    name = "bait"
    model_slots = ("vlm", "sam3")

    def steps(self) -> list[Step]:
        return [Step(4, "ground_r2", "vlm", ground_r2), Step(4, "track", "sam3", track)]
