"""Stage 1 (collect): the source video as Sparkle's clip, kept only when the camera is fixed.

  read      the clip with the config's ClipSpec (Sparkle: 16 fps, <= 81 frames trimmed to 4k+1, 1280x720); a source of
            another aspect ratio is cropped, padded or stretched to that size (clip.aspect, ours; default crop;
            video/aspect.py), recorded as "aspect"
  coarse    camera.analyze on frames sampled at bait.anchor_fps (2 FPS): largest corner displacement over the
            clip <= thresholds.camera_max_displacement_px and between sampled frames <= camera_pair_displacement_px,
            both scaled from the calibration frame's diagonal (camera_reference_diagonal_px) to the clip's
            (camera.thresholds_for_size: one clip at 360p, 720p or 1080p gets one verdict), else rejected (also
            when undecidable: too few corners); the thresholds used are recorded ("camera_thresholds")
  fine      Qwen3-VL camera_motion_verdict on the clip: "camera_moving": yes -> rejected
  writes    {theme}/source_video/{id}.mp4 and intermediate_data/{theme}/source_frame0/{id}.png (kept samples only)

An unreadable video is rejected with the reader's reason (it will not become readable on a retry).

Batches: the runner calls run_batch with up to `batch_size` samples; their clips are decoded onto the stage's device
(sparkle_fast.stages.common.stage_device) and the coarse filter analyses all of them in one camera.analyze_many call
(each launch batches every pair of every clip; a clip's verdict does not depend on its batch). run() is a batch of one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparkle_fast.stages.base import Sample, StageContext, StageOutcome
from sparkle_fast.stages.common import StageTimer, finite, load_slot_models, release_slot_models, stage_device


def clip_spec(config):
    from sparkle_fast.video import ClipSpec

    return ClipSpec(fps=config.clip.fps, max_frames=config.clip.max_frames,
                    size=(config.clip.height, config.clip.width))


class CollectStage:
    number = 1
    name = "collect"
    model_slots = ("vlm",)
    # Samples per run_batch call: their camera analysis shares every launch, and their decoded clips are held until
    # the batch is done (16 Sparkle clips: 3.6 GB of uint8 frames).
    batch_size = 16

    def load_models(self, models_source: Any) -> dict:
        from sparkle_fast.models.vlm import Qwen3VLAdapter

        return load_slot_models(models_source, {"vlm": (Qwen3VLAdapter.tiny, Qwen3VLAdapter.from_pretrained)})

    def release_models(self, models: Any) -> None:
        release_slot_models(models)

    def run(self, sample: Sample, context: StageContext) -> StageOutcome:
        (outcome,) = self.run_batch([sample], [context])
        return outcome

    def run_batch(self, samples: list[Sample], contexts: list[StageContext]) -> list[StageOutcome]:
        """One outcome per sample, in order. Expected failures (an unreadable video, a verdict that cannot be
        parsed, a camera analysis that raised for one clip) are that sample's outcome."""
        from sparkle_fast.video import VideoError, sample_indices

        if len(samples) != len(contexts):
            raise ValueError(f"run_batch: {len(samples)} samples but {len(contexts)} contexts")
        device = stage_device()
        timers = [StageTimer() for _ in samples]
        outcomes: list[StageOutcome | None] = [None] * len(samples)
        records: list[dict[str, Any]] = [{} for _ in samples]
        clips: list[Any] = [None] * len(samples)
        for i, (sample, context) in enumerate(zip(samples, contexts, strict=True)):
            config = context.config
            with timers[i].io():
                try:
                    frames, indices, plan = _read_clip(sample.src_video, config, device)
                except VideoError as exc:
                    outcomes[i] = _rejected(f"unreadable video: {exc}", timers[i])
                    continue
            n_frames, height, width = (int(d) for d in frames.shape[:3])
            if n_frames < 2:
                outcomes[i] = _rejected(f"clip has {n_frames} frame(s) at {config.clip.fps} fps; need at least 5 "
                                        "(4k+1)", timers[i])
                continue
            records[i] = {"frames": n_frames, "height": height, "width": width, "fps": config.clip.fps,
                          "source_indices": [int(k) for k in np.asarray(indices)], "aspect": plan.to_dict()}
            clips[i] = frames

        live = [i for i, outcome in enumerate(outcomes) if outcome is None]
        if live:
            config = contexts[live[0]].config
            sampled = []
            for i in live:
                picked = sample_indices(len(clips[i]), config.clip.fps, config.bait.anchor_fps)
                sampled.append(clips[i][_index(picked, clips[i].device)])
            from sparkle_fast.ops._dispatch import record_backends

            with record_backends() as used:
                motions, seconds = _analyze(sampled, _thresholds(config), device)
            for i, motion in zip(live, motions, strict=True):
                timers[i].add("kernel", seconds / len(live))
                outcomes[i] = self._finish(samples[i], contexts[i], clips[i], motion, records[i], timers[i])
                if used and isinstance(outcomes[i].record, dict):
                    outcomes[i].record["backends"] = _clip_backends(used, motion)
                clips[i] = None  # the batch's clips are released as their samples finish
        return outcomes  # type: ignore[return-value]

    def _finish(self, sample: Sample, context: StageContext, frames: Any, motion: Any, record: dict,
                timer: StageTimer) -> StageOutcome:
        """The rest of one sample after the batch's camera analysis: the rule, the VLM verdict, the writes."""
        from sparkle_fast.video import write_image, write_video

        config = context.config
        if isinstance(motion, Exception):
            return StageOutcome("failed", f"camera filter: {type(motion).__name__}: {motion}", None, record,
                                timer.as_dict())
        thresholds = _thresholds(config)
        record["camera"] = finite(motion.to_dict())
        record["camera_thresholds"] = {"threshold_px": thresholds.threshold_px,
                                       "pair_threshold_px": thresholds.pair_threshold_px}
        if motion.static is None:
            return _rejected(f"camera motion undecidable: {motion.reason}", timer, record)
        if not motion.static:
            return _rejected(motion.reason or f"camera moves: corners move up to {motion.max_displacement_px:.1f} px "
                             f"(threshold {thresholds.threshold_px:.2f} px over the clip, "
                             f"{thresholds.pair_threshold_px:.2f} px between sampled frames)", timer, record)

        with timer.io():
            host = frames.cpu().numpy()  # the VLM's processor and the encoder read host memory
        with timer.model():
            verdict = context.models["vlm"].camera_motion_verdict(host, fps=config.clip.fps)
        if not verdict.ok:
            return StageOutcome("failed", f"camera-motion verdict: {verdict.reason}", None, record, timer.as_dict())
        record["vlm_verdict"] = verdict.value
        if verdict.value["camera_moving"]:
            return _rejected(f"VLM says the camera moves: {verdict.value['reasoning']!r}", timer, record)

        layout = context.layout
        with timer.io():
            write_video(layout.artifact(sample.theme, "source_video", sample.id), host, fps=config.clip.fps)
            write_image(layout.artifact(sample.theme, "source_frame0", sample.id), host[0])
        return StageOutcome.done(record, None, **timer.as_dict())


STILL_POINTS_OPS = ("rgb_to_gray", "select_points", "track_points")  # camera.py steps 1-3


def _clip_backends(used: dict[str, str], motion: Any) -> dict[str, str]:
    """The implementations (op -> backend, from the batch's record_backends log) this clip's analysis reached, so that
    a sample's record does not depend on the other clips of its batch: a clip the still-points test accepted went
    through steps 1-3 only, a clip too short to pair through the gray conversion only, every other clip through
    RANSAC too (steps 4-5b)."""
    from sparkle_fast.camera import CameraMotion

    if isinstance(motion, CameraMotion) and motion.pairs == 0:
        keep = ("rgb_to_gray",)
    elif isinstance(motion, CameraMotion) and motion.method == "still-points":
        keep = STILL_POINTS_OPS
    else:
        return dict(sorted(used.items()))
    return {op: backend for op, backend in sorted(used.items()) if op in keep}


def _thresholds(config):
    """The camera rule for the config's clip size: every clip of a run is read at that size."""
    from sparkle_fast import camera

    th = config.thresholds
    base = camera.CameraThresholds(threshold_px=th.camera_max_displacement_px,
                                   pair_threshold_px=th.camera_pair_displacement_px)
    return camera.thresholds_for_size(base, config.clip.height, config.clip.width, th.camera_reference_diagonal_px)


def _read_clip(path, config, device):
    """(frames (T, clip.height, clip.width, 3) on device, source indices, AspectPlan): the clip read at the size the
    aspect plan decodes at, then cropped or padded (VideoError for an unreadable source)."""
    from dataclasses import replace

    from sparkle_fast.video import probe, read_clip
    from sparkle_fast.video.aspect import apply_aspect, aspect_plan

    info = probe(path)
    plan = aspect_plan(info.height, info.width, config.clip.height, config.clip.width, config.clip.aspect)
    clip = read_clip(path, replace(clip_spec(config), size=plan.scaled), device=device, info=info)
    return apply_aspect(clip.frames, plan), clip.indices, plan


def _index(picked, device):
    import torch

    return torch.as_tensor(np.asarray(picked, dtype=np.int64), device=device)


def _analyze(clips: list, thresholds, device) -> tuple[list, float]:
    """camera.analyze_many on the batch's sampled frames (on `device`) and its seconds. When the batched call raises
    (not a clip's fault as far as we can tell), each clip is analysed alone, so one clip cannot fail the others:
    the result for a clip is a CameraMotion or the exception its own analysis raised."""
    import time
    import traceback

    from sparkle_fast import camera

    started = time.perf_counter()
    try:
        results = camera.analyze_many(clips, thresholds, device=str(device))
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()  # the full trace for the log; the manifest keeps the message
        if len(clips) == 1:
            return [exc], time.perf_counter() - started
        results = []
        for clip in clips:
            try:
                results.extend(camera.analyze_many([clip], thresholds, device=str(device)))
            except Exception as exc:  # noqa: BLE001
                results.append(exc)
    return results, time.perf_counter() - started


def _rejected(reason: str, timer: StageTimer, record: dict | None = None) -> StageOutcome:
    return StageOutcome("rejected", reason, None, record, timer.as_dict())
