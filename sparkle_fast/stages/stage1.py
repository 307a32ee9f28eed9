"""Stage 1 (collect): the source video as Sparkle's clip, kept only when the camera is fixed.

  read      the clip with the config's ClipSpec (Sparkle: 16 fps, <= 81 frames trimmed to 4k+1, 1280x720)
  coarse    camera.analyze on frames sampled at bait.anchor_fps (2 FPS): largest corner displacement over the
            clip <= thresholds.camera_max_displacement_px, else rejected (also when undecidable: too few corners)
  fine      Qwen3-VL camera_motion_verdict on the clip: "camera_moving": yes -> rejected
  writes    {theme}/source_video/{id}.mp4 and intermediate_data/{theme}/source_frame0/{id}.png (kept samples only)

An unreadable video is rejected with the reader's reason (it will not become readable on a retry).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparkle_fast.stages.base import Sample, StageContext, StageOutcome
from sparkle_fast.stages.common import StageTimer, finite, load_slot_models, release_slot_models


def clip_spec(config):
    from sparkle_fast.video import ClipSpec

    return ClipSpec(fps=config.clip.fps, max_frames=config.clip.max_frames,
                    size=(config.clip.height, config.clip.width))


class CollectStage:
    number = 1
    name = "collect"
    model_slots = ("vlm",)

    def load_models(self, models_source: Any) -> dict:
        from sparkle_fast.models.vlm import Qwen3VLAdapter

        return load_slot_models(models_source, {"vlm": (Qwen3VLAdapter.tiny, Qwen3VLAdapter.from_pretrained)})

    def release_models(self, models: Any) -> None:
        release_slot_models(models)

    def run(self, sample: Sample, context: StageContext) -> StageOutcome:
        from sparkle_fast import camera
        from sparkle_fast.video import VideoError, read_clip, sample_indices, write_image, write_video

        config, timer = context.config, StageTimer()
        with timer.io():
            try:
                clip = read_clip(sample.src_video, clip_spec(config))
            except VideoError as exc:
                return _rejected(f"unreadable video: {exc}", timer)
        frames = clip.frames.numpy()
        n_frames, height, width = (int(d) for d in frames.shape[:3])
        if n_frames < 2:
            return _rejected(f"clip has {n_frames} frame(s) at {config.clip.fps} fps; need at least 5 (4k+1)", timer)
        record: dict[str, Any] = {"frames": n_frames, "height": height, "width": width, "fps": config.clip.fps,
                                  "source_indices": [int(i) for i in np.asarray(clip.indices)]}

        with timer.kernel():
            sampled = sample_indices(n_frames, config.clip.fps, config.bait.anchor_fps)
            thresholds = camera.CameraThresholds(threshold_px=config.thresholds.camera_max_displacement_px)
            motion = camera.analyze(frames[np.asarray(sampled)], thresholds)
        record["camera"] = finite(motion.to_dict())
        if motion.static is None:
            return _rejected(f"camera motion undecidable: {motion.reason}", timer, record)
        if not motion.static:
            return _rejected(motion.reason or f"camera moves: corners move up to {motion.max_displacement_px:.1f} px "
                             f"(threshold {thresholds.threshold_px} px over the clip, {thresholds.pair_threshold_px}"
                             " px between sampled frames)", timer, record)

        with timer.model():
            verdict = context.models["vlm"].camera_motion_verdict(frames, fps=config.clip.fps)
        if not verdict.ok:
            return StageOutcome("failed", f"camera-motion verdict: {verdict.reason}", None, record, timer.as_dict())
        record["vlm_verdict"] = verdict.value
        if verdict.value["camera_moving"]:
            return _rejected(f"VLM says the camera moves: {verdict.value['reasoning']!r}", timer, record)

        layout = context.layout
        with timer.io():
            write_video(layout.artifact(sample.theme, "source_video", sample.id), frames, fps=config.clip.fps)
            write_image(layout.artifact(sample.theme, "source_frame0", sample.id), frames[0])
        return StageOutcome.done(record, None, **timer.as_dict())


def _rejected(reason: str, timer: StageTimer, record: dict | None = None) -> StageOutcome:
    return StageOutcome("rejected", reason, None, record, timer.as_dict())
