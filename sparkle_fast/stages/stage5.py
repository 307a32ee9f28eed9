"""Stage 5 (synthesize): the final video, in two steps.

  render [control]      the control video, then Wan2.2 Fun-Control from it, edited frame 0 and the stage-2 prompt:
      control           edges of the source inside the BAIT mask (dilated by canny.mask_dilate), of the background
                        video outside -> edited_video_canny.mp4. [edges] extractor "canny" (default):
                        ops.control_video, cv2.Canny with canny.low / canny.high (VideoX-Fun's 100 / 200); "lineart":
                        ControlNet's line-art annotator (models/lineart.py, both videos in one batch) composed by
                        ops.compose_edges. The paper's sentence names both ("Canny edges ... using Lineart [5]"); the
                        record says which ran ("edges").
      generate          the rendered clip is encoded once, to a scratch file beside the frames EditScore will read
                        (SCRATCH/{id}/: rendered.mp4, scored_frames.npz, lossless), so the next step needs no model
                        of this one
  score_video [scorer]  EditScore on 4 uniformly spaced non-first frames ([1, 26, 51, 76] for 81); mean O_score >=
                        thresholds.edited_video (Sparkle: 8) -> the scratch encode becomes
                        {theme}/edited_video/{id}.mp4; else rejected (the samples Sparkle-Bench is made of;
                        their score line is kept in edited_video_score.jsonl)

The source and background videos are decoded onto the stage's device and the mask uploaded once
(common.stage_device), so on a GPU worker ops.control_video runs its GPU kernels (auto dispatch follows the input).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from sparkle_fast.stages.common import previous_record, stage_device
from sparkle_fast.stages.steps import Step, StepItem, SteppedStage, item_backends, share_seconds

SCRATCH = "step_scratch"  # OUT/step_scratch/{id}/: what render leaves for score_video (deleted once scored)


def scratch_dir(item: StepItem) -> Path:
    return Path(item.context.layout.root) / SCRATCH / item.sample.id


def _control_video(item: StepItem, source, background, packed) -> tuple[Any, dict]:
    """(control video uint8 (T, H, W, 3) on the frames' device, the record's "edges")."""
    import torch

    from sparkle_fast import ops

    config, timer = item.context.config, item.timer
    edges = config.edges
    if edges.extractor == "lineart":
        edges_record = {"extractor": "lineart", "coarse": edges.lineart_coarse,
                        "detect_resolution": edges.lineart_detect_resolution, "mask_dilate": config.canny.mask_dilate}
        with timer.model():
            detector = item.context.models["lineart"].get(source.device)
            detector.batch_size = edges.lineart_batch
            if tuple(background.shape[1:3]) != tuple(source.shape[1:3]):  # as ops.control_video does
                from sparkle_fast.ops.compose import resize_video_reference

                resized = resize_video_reference(background.cpu().numpy(), *source.shape[1:3])
                background = torch.from_numpy(resized).to(source.device)
            both = torch.cat([source, background])
            lines = detector(both, coarse=edges.lineart_coarse, detect_resolution=edges.lineart_detect_resolution)
        with timer.kernel():
            control = ops.compose_edges(lines[:len(source)], lines[len(source):], packed,
                                        dilate=config.canny.mask_dilate)
    else:
        edges_record = {"extractor": "canny", "low": config.canny.low, "high": config.canny.high,
                        "mask_dilate": config.canny.mask_dilate}
        with timer.kernel():
            control = ops.control_video(source, background, packed, config.canny.low, config.canny.high,
                                        dilate=config.canny.mask_dilate)
    if config.run.ablation == "foreground-only":  # OpenVE-3M-style guidance: the source side only, nothing outside
        with timer.kernel():
            control = ops.foreground_only_control(control[..., 0].contiguous(), packed,
                                                  dilate=config.canny.mask_dilate)
    if control.is_cuda:  # the launches are asynchronous: charge them to kernel, not to the write after
        torch.cuda.synchronize(control.device)
    return control, edges_record


def render(items: list[StepItem]) -> list:
    """One clip at a time: a Fun-Control call is a whole GPU's work at Sparkle's size."""
    outcomes: list = []
    for item in items:
        with item_backends(item):
            outcomes.append(_render_one(item))
    return outcomes


def _render_one(item: StepItem):
    import torch

    from sparkle_fast import ops
    from sparkle_fast.formats import load_packed_mask
    from sparkle_fast.models.control import score_frame_indices
    from sparkle_fast.models.slots import model_settings
    from sparkle_fast.video import read_frames, read_image, write_video

    config, models, timer = item.context.config, item.context.models, item.timer
    art = lambda kind: item.context.layout.artifact(item.sample.theme, kind, item.sample.id)  # noqa: E731
    device = stage_device()
    with timer.io():
        source = read_frames(art("source_video"), device=device).frames
        background = read_frames(art("edited_background_video"), device=device).frames
        packed, shape = load_packed_mask(art("source_video_mask"))
        packed = torch.from_numpy(packed).to(device)
        edited0 = read_image(art("edited_frame0")).numpy()
    if shape != tuple(source.shape[:3]):
        return item.fail(f"mask shape {shape} does not match the source video {tuple(source.shape[:3])}")
    control, edges_record = _control_video(item, source, background, packed)
    with timer.io():
        write_video(art("edited_video_canny"), control, fps=config.clip.fps)

    n_frames, height, width = source.shape[:3]
    ablation = config.run.ablation  # paper 3.4-3.5's baselines, as whole runs (driver/config.py run.ablation)
    if ablation == "copy-paste":  # the naive shortcut: source pixels inside the mask over the background video
        with timer.kernel():
            video = ops.copy_paste_composite(source, background, packed, dilate=config.canny.mask_dilate).cpu().numpy()
    else:
        prompt = previous_record(item.context, 2)["prompt"]
        with timer.model():
            generated = models["control"].try_generate(control, edited0, prompt, seed=config.control.seed if
                                                       config.control.seed >= 0 else config.run.seed,
                                                       num_frames=n_frames, height=height, width=width)
        if not generated.ok:
            return item.fail(generated.reason)
        video = np.asarray(generated.value)
    indices = score_frame_indices(len(video))
    scratch = scratch_dir(item)
    with timer.io():
        scratch.mkdir(parents=True, exist_ok=True)
        source_host = source.cpu().numpy()
        _save_npz(scratch / "scored_frames.npz", indices=np.asarray(indices, np.int64), frames=len(video),
                  source=source_host[indices], edited=video[indices])
        write_video(scratch / "rendered.mp4", video, fps=config.clip.fps)
    item.state.update(edges=edges_record, control_settings=model_settings(models["control"]))
    return None


def _save_npz(path: Path, **arrays: Any) -> None:
    """np.savez to a temporary name, then renamed: a killed run never leaves a half-written file under `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(tmp, path)


class _ScoredFrames:
    """The frames stage 5 scores, indexable like the whole (T, H, W, 3) video they came from (score_edited_video
    picks video[i] for its frame indices)."""

    def __init__(self, length: int, indices: np.ndarray, frames: np.ndarray):
        self._length, self._frames = int(length), {int(i): frames[k] for k, i in enumerate(indices)}

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> np.ndarray:
        return self._frames[int(index)]


def score_video(items: list[StepItem]) -> list:
    import time

    from sparkle_fast.models import scorer as scorer_module

    outcomes: list = [None] * len(items)
    jobs = []
    for item in items:
        with item.timer.io(), np.load(scratch_dir(item) / "scored_frames.npz") as saved:
            length, indices = int(saved["frames"]), saved["indices"]
            jobs.append((item.sample.id, previous_record(item.context, 2)["prompt"],
                         _ScoredFrames(length, indices, saved["source"]), _ScoredFrames(length, indices,
                                                                                        saved["edited"])))
    scorer = items[0].context.models["scorer"]
    started = time.perf_counter()
    results = list(scorer_module.score_edited_video_many(scorer, jobs))  # every sample's frames in shared batches
    share_seconds(items, "model", started)
    for i, (item, scored) in enumerate(zip(items, results, strict=True)):
        if not scored.ok:
            outcomes[i] = item.fail(f"EditScore of the edited video: {scored.reason}")
            continue
        outcomes[i] = _decide(item, scored.value, scorer)
    return outcomes


def _decide(item: StepItem, scored: dict, scorer: Any):
    import shutil

    from sparkle_fast.models.scorer import mean_overall

    config = item.context.config
    mean = mean_overall(scored["editscore"])
    state = item.state
    record = {"mean_overall": mean, "edges": state["edges"], "jsonl": {"edited_video_score": scored},
              "control_settings": state["control_settings"],
              "editscore_passes": getattr(getattr(scorer, "config", None), "passes", None)}
    if config.run.ablation:
        record["ablation"] = config.run.ablation
    if "backends" in state:
        record["backends"] = state["backends"]
    item.state = record
    threshold = config.thresholds.edited_video
    scratch = scratch_dir(item)
    if mean < threshold:
        outcome = item.reject(f"mean EditScore O_score {mean:.2f} < {threshold} over frames "
                              f"{scored['frame_indices']}", mean)
    else:
        with item.timer.io():
            final = item.context.layout.artifact(item.sample.theme, "edited_video", item.sample.id)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(scratch / "rendered.mp4", final)  # the same encode, moved in one rename
        outcome = item.done(mean)
    shutil.rmtree(scratch, ignore_errors=True)
    return outcome


class SynthesizeStage(SteppedStage):
    number = 5
    name = "synthesize"
    model_slots = ("control", "scorer")

    def steps(self) -> list[Step]:
        return [Step(5, "render", "control", render), Step(5, "score_video", "scorer", score_video)]

    def load_models(self, models_source: Any) -> dict:
        from sparkle_fast.stages.slot_loaders import load_slots

        # lineart is loaded on first use: only [edges] extractor = "lineart" needs it
        return load_slots(models_source, (*self.model_slots, "lineart"))
