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

Steps: camera_filter [kernels] (read + coarse, batched: the clips of a batch are decoded onto the stage's device,
sparkle_fast.stages.common.stage_device, and analysed in one camera.analyze_many call; a clip's verdict does not
depend on its batch) then camera_verdict [vlm] (fine + writes; the clip is read again, so the step needs nothing
but the manifest's state to resume).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from sparkle_fast.stages.common import finite, stage_device
from sparkle_fast.stages.steps import Step, StepItem, SteppedStage, call_many, share_seconds


def clip_spec(config):
    from sparkle_fast.video import ClipSpec

    return ClipSpec(fps=config.clip.fps, max_frames=config.clip.max_frames,
                    size=(config.clip.height, config.clip.width))


def camera_filter(items: list[StepItem]) -> list:
    """The coarse filter over the batch: each clip decoded onto the stage's device, all analysed in one
    camera.analyze_many call (each launch batches every pair of every clip; a clip's verdict does not depend on its
    batch). Expected failures (an unreadable video, an analysis that raised for one clip) are that sample's outcome."""
    from sparkle_fast.video import VideoError, sample_indices

    device = stage_device()
    outcomes: list = [None] * len(items)
    clips: list[Any] = [None] * len(items)
    for i, item in enumerate(items):
        config = item.context.config
        with item.timer.io():
            try:
                frames, indices, plan = _read_clip(item.sample.src_video, config, device)
            except VideoError as exc:
                outcomes[i] = item.reject(f"unreadable video: {exc}")
                continue
        n_frames, height, width = (int(d) for d in frames.shape[:3])
        if n_frames < 2:
            outcomes[i] = item.reject(f"clip has {n_frames} frame(s) at {config.clip.fps} fps; need at least 5 "
                                      "(4k+1)")
            continue
        item.state.update(frames=n_frames, height=height, width=width, fps=config.clip.fps,
                          source_indices=[int(k) for k in np.asarray(indices)], aspect=plan.to_dict())
        clips[i] = frames
    live = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if not live:
        return outcomes
    config = items[live[0]].context.config
    sampled = []
    for i in live:
        picked = sample_indices(len(clips[i]), config.clip.fps, config.bait.anchor_fps)
        sampled.append(clips[i][_index(picked, clips[i].device)])
        clips[i] = None  # the decoded clips are released once sampled; camera_verdict reads the clip again
    from sparkle_fast.ops._dispatch import record_backends

    with record_backends() as used:
        motions, seconds = _analyze(sampled, _thresholds(config), device)
    for i, motion in zip(live, motions, strict=True):
        item = items[i]
        item.timer.add("kernel", seconds / len(live))
        if used:
            item.state["backends"] = _clip_backends(used, motion)
        outcomes[i] = _coarse_decision(item, motion)
    return outcomes




def _coarse_decision(item: StepItem, motion: Any):
    """None (go on to the VLM) for a clip the rule calls static; else the sample's rejection or failure."""
    config = item.context.config
    if isinstance(motion, Exception):
        return item.fail(f"camera filter: {type(motion).__name__}: {motion}")
    thresholds = _thresholds(config)
    item.state["camera"] = finite(motion.to_dict())
    item.state["camera_thresholds"] = {"threshold_px": thresholds.threshold_px,
                                       "pair_threshold_px": thresholds.pair_threshold_px}
    if motion.static is None:
        return item.reject(f"camera motion undecidable: {motion.reason}")
    if not motion.static:
        return item.reject(motion.reason or f"camera moves: corners move up to {motion.max_displacement_px:.1f} px "
                           f"(threshold {thresholds.threshold_px:.2f} px over the clip, "
                           f"{thresholds.pair_threshold_px:.2f} px between sampled frames)")
    return None


def camera_verdict(items: list[StepItem]) -> list:
    """The fine filter: Qwen3-VL's verdict on each clip the rule kept (read again, on the host: the VLM's processor
    and the encoder read host memory); kept clips are written as source_video and source_frame0."""
    from sparkle_fast.video import write_image, write_video

    outcomes: list = [None] * len(items)
    hosts = []
    for item in items:
        with item.timer.io():
            frames, _, _ = _read_clip(item.sample.src_video, item.context.config, stage_device())
            hosts.append(frames.cpu().numpy())  # decoded as camera_filter decoded it, so the same pixels
    fps = items[0].context.config.clip.fps
    started = time.perf_counter()
    verdicts = call_many(items[0].context.models["vlm"], "camera_motion_verdict", hosts, fps=fps)
    share_seconds(items, "model", started)
    for i, (item, verdict, host) in enumerate(zip(items, verdicts, hosts, strict=True)):
        if not verdict.ok:
            outcomes[i] = item.fail(f"camera-motion verdict: {verdict.reason}")
            continue
        item.state["vlm_verdict"] = verdict.value
        if verdict.value["camera_moving"]:
            outcomes[i] = item.reject(f"VLM says the camera moves: {verdict.value['reasoning']!r}")
            continue
        layout = item.context.layout
        with item.timer.io():
            write_video(layout.artifact(item.sample.theme, "source_video", item.sample.id), host, fps=fps)
            write_image(layout.artifact(item.sample.theme, "source_frame0", item.sample.id), host[0])
        outcomes[i] = item.done()
    return outcomes


class CollectStage(SteppedStage):
    number = 1
    name = "collect"
    model_slots = ("vlm",)
    # Samples per camera_filter call: their camera analysis shares every launch, and their decoded clips are held
    # until the batch is analysed (16 Sparkle clips: 3.6 GB of uint8 frames).
    batch_size = 16

    def steps(self) -> list[Step]:
        return [Step(1, "camera_filter", None, camera_filter), Step(1, "camera_verdict", "vlm", camera_verdict)]


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


