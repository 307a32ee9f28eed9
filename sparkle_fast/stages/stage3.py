"""Stage 3 (background): a clean background video behind the edited frame 0, in five steps.

  ground_r1 [vlm]             Qwen3-VL ground_foreground(source_frame0, edited_frame0): labels + boxes of the
                              preserved foreground (foreground_grounding_r1.jsonl); no foreground found -> rejected
  remove_foreground [editor]  FLUX.2-klein "Remove the ..." on edited_frame0 -> edited_frame0_foreground_removed.png
  score_removal [scorer]      EditScore overall of the removal >= thresholds.foreground_removal (Sparkle: 8.5),
                              else rejected
  caption_background [vlm]    Qwen3-VL background_caption(prompt)
  animate_background [i2v]    Wan2.2 I2V from the removed frame at the clip's length and size
                              -> edited_background_video.mp4
Each step reads the PNGs earlier steps wrote (lossless), so a resumed run computes what a straight run does.
"""

from __future__ import annotations

import time

import numpy as np

from sparkle_fast.stages.common import previous_record
from sparkle_fast.stages.steps import Step, StepItem, SteppedStage, call_many, share_seconds


def _read(items: list[StepItem], kind: str) -> list[np.ndarray]:
    from sparkle_fast.video import read_image

    frames = []
    for item in items:
        with item.timer.io():
            frames.append(read_image(item.context.layout.artifact(item.sample.theme, kind, item.sample.id)).numpy())
    return frames


def ground_r1(items: list[StepItem]) -> list:
    outcomes: list = [None] * len(items)
    sources, edits = _read(items, "source_frame0"), _read(items, "edited_frame0")
    started = time.perf_counter()
    groundings = call_many(items[0].context.models["vlm"], "ground_foreground", sources, edits)
    share_seconds(items, "model", started)
    for i, (item, grounding) in enumerate(zip(items, groundings, strict=True)):
        if not grounding.ok:
            outcomes[i] = item.fail(f"round-1 grounding: {grounding.reason}")
            continue
        prompt = previous_record(item.context, 2)["prompt"]
        r1 = {"id": item.sample.id, "prompt": prompt, "edit_type": item.sample.theme, **grounding.value}
        item.state.update(r1=r1, jsonl={"foreground_grounding_r1": r1})
        if not r1["round1_labels"]:
            outcomes[i] = item.reject("round-1 grounding found no foreground object to keep")
    return outcomes


def remove_foreground(items: list[StepItem]) -> list:
    from sparkle_fast.video import write_image

    outcomes: list = [None] * len(items)
    edits = _read(items, "edited_frame0")
    started = time.perf_counter()
    removals = call_many(items[0].context.models["editor"], "remove", edits,
                         [item.state["r1"]["round1_labels"] for item in items], seed=items[0].context.config.run.seed)
    share_seconds(items, "model", started)
    for i, (item, removed) in enumerate(zip(items, removals, strict=True)):
        if not removed.ok:
            outcomes[i] = item.fail(removed.reason)
            continue
        with item.timer.io():
            write_image(item.context.layout.artifact(item.sample.theme, "edited_frame0_foreground_removed",
                                                     item.sample.id), np.asarray(removed.value["image"]))
        item.state["_removal_instruction"] = removed.value["instruction"]
    return outcomes


def score_removal(items: list[StepItem]) -> list:
    outcomes: list = [None] * len(items)
    edits, removed = _read(items, "edited_frame0"), _read(items, "edited_frame0_foreground_removed")
    instructions = [item.state["_removal_instruction"] for item in items]
    started = time.perf_counter()
    scores = call_many(items[0].context.models["scorer"], "score_edit", edits, removed, instructions)
    share_seconds(items, "model", started)
    for i, (item, score, instruction) in enumerate(zip(items, scores, instructions, strict=True)):
        if not score.ok:
            outcomes[i] = item.fail(f"EditScore of the foreground removal: {score.reason}")
            continue
        overall = float(score.value["overall"])
        item.state["removal_instruction"] = instruction
        item.state["jsonl"]["edited_frame0_foreground_removed_score"] = {"id": item.sample.id, "prompt": instruction,
                                                                         "editscore": score.value}
        item.state["_score"] = overall
        threshold = item.context.config.thresholds.foreground_removal
        if overall < threshold:
            outcomes[i] = item.reject(f"EditScore overall {overall:.2f} < {threshold} (foreground removal)", overall)
    return outcomes


def caption_background(items: list[StepItem]) -> list:
    outcomes: list = [None] * len(items)
    started = time.perf_counter()
    captions = call_many(items[0].context.models["vlm"], "background_caption",
                         [previous_record(item.context, 2)["prompt"] for item in items])
    share_seconds(items, "model", started)
    for i, (item, caption) in enumerate(zip(items, captions, strict=True)):
        if not caption.ok:
            outcomes[i] = item.fail(f"background caption: {caption.reason}")
        else:
            item.state["background_caption"] = caption.value
    return outcomes


def animate_background(items: list[StepItem]) -> list:
    """One clip per generate call: a Wan I2V call is a whole GPU's work at Sparkle's size."""
    from sparkle_fast.models.slots import model_settings
    from sparkle_fast.video import write_video

    outcomes: list = []
    removed_frames = _read(items, "edited_frame0_foreground_removed")
    for item, removed in zip(items, removed_frames, strict=True):
        config, i2v = item.context.config, item.context.models["i2v"]
        clip = previous_record(item.context, 1)
        with item.timer.model():
            video = i2v.try_generate(removed, item.state["background_caption"],
                                     seed=config.i2v.seed if config.i2v.seed >= 0 else config.run.seed,
                                     num_frames=clip["frames"], height=clip["height"], width=clip["width"])
        score = item.state.get("_score")
        if not video.ok:
            outcomes.append(item.fail(video.reason))
            continue
        item.state["i2v_settings"] = model_settings(i2v)  # what generated the background video ([i2v])
        with item.timer.io():
            write_video(item.context.layout.artifact(item.sample.theme, "edited_background_video", item.sample.id),
                        video.value, fps=config.clip.fps)
        outcomes.append(item.done(score))
    return outcomes


class BackgroundStage(SteppedStage):
    number = 3
    name = "background"
    model_slots = ("vlm", "editor", "scorer", "i2v")

    def steps(self) -> list[Step]:
        return [Step(3, "ground_r1", "vlm", ground_r1),
                Step(3, "remove_foreground", "editor", remove_foreground),
                Step(3, "score_removal", "scorer", score_removal),
                Step(3, "caption_background", "vlm", caption_background),
                Step(3, "animate_background", "i2v", animate_background)]
