"""Stage 2 (edit): a new background for frame 0, in three steps.

  scene_instruction [vlm]     keyword: themes.py's deterministic "subtheme: scene" for the sample from our taxonomy or
                              the run's themes_file (openve3m: the prompt given with the input); describe_scene ->
                              original_scene; write_instruction -> the editing prompt (keyword themes)
  edit_frame0 [editor]        FLUX.2-klein edits source_frame0 with the prompt -> edited_frame0.png
  score_edit [scorer]         EditScore overall >= thresholds.edit_frame0 (Sparkle: 8), else rejected
The record carries what later stages and the index files need: prompt, chosen_keyword, original_scene and the
edited_frame0_score.jsonl line (written for kept and rejected samples: it is the filter's evidence). The scorer reads
edited_frame0.png back (PNG is lossless), so a resumed run scores exactly what a straight run scores.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from sparkle_fast.stages.steps import Step, StepItem, SteppedStage, call_many, share_seconds


def _frame(item: StepItem, kind: str) -> Any:
    from sparkle_fast.video import read_image

    return read_image(item.context.layout.artifact(item.sample.theme, kind, item.sample.id)).numpy()


def _read(items: list[StepItem], kind: str) -> list[Any]:
    frames = []
    for item in items:
        with item.timer.io():
            frames.append(_frame(item, kind))
    return frames


def scene_instruction(items: list[StepItem]) -> list:
    from sparkle_fast import themes

    outcomes: list = [None] * len(items)
    frames = _read(items, "source_frame0")
    vlm = items[0].context.models["vlm"]
    started = time.perf_counter()
    scenes = call_many(vlm, "describe_scene", frames)
    share_seconds(items, "model", started)
    asks = []  # (index, subtheme, scene) of the keyword samples whose scene was described
    for i, (item, scene) in enumerate(zip(items, scenes, strict=True)):
        if not scene.ok:
            outcomes[i] = item.fail(f"describe_scene: {scene.reason}")
            continue
        item.state["original_scene"] = scene.value
        if item.sample.theme == themes.OPENVE3M:
            if not item.sample.prompt:
                outcomes[i] = item.reject("the openve3m theme needs a prompt from the input")
                continue
            item.state.update(prompt=item.sample.prompt, chosen_keyword=None)
            continue
        config = item.context.config
        taxonomy = themes.load_themes(config.run.themes_file)  # "" = the packaged taxonomy (ours)
        keyword = taxonomy.sample_keyword(item.sample.theme, item.sample.id, seed=config.run.seed)
        item.state["chosen_keyword"] = keyword.chosen_keyword
        asks.append((i, keyword.subtheme, keyword.scene))
    if asks:
        asked = [items[i] for i, _, _ in asks]
        started = time.perf_counter()
        instructions = call_many(vlm, "write_instruction", [frames[i] for i, _, _ in asks],
                                 [items[i].state["original_scene"] for i, _, _ in asks],
                                 [items[i].sample.theme for i, _, _ in asks], [sub for _, sub, _ in asks],
                                 [scene for _, _, scene in asks])
        share_seconds(asked, "model", started)
        for (i, _, _), instruction in zip(asks, instructions, strict=True):
            if not instruction.ok:
                outcomes[i] = items[i].fail(f"write_instruction: {instruction.reason}")
            else:
                items[i].state["prompt"] = instruction.value
    for i, item in enumerate(items):  # the record's keys in the order the stage has always written them
        if outcomes[i] is None and "prompt" in item.state:
            item.state = {"prompt": item.state["prompt"], "chosen_keyword": item.state["chosen_keyword"],
                          "original_scene": item.state["original_scene"]}
    return outcomes


def edit_frame0(items: list[StepItem]) -> list:
    from sparkle_fast.video import write_image

    outcomes: list = [None] * len(items)
    frames = _read(items, "source_frame0")
    editor = items[0].context.models["editor"]
    seed = items[0].context.config.run.seed
    started = time.perf_counter()
    edits = call_many(editor, "try_edit", frames, [item.state["prompt"] for item in items], seed=seed)
    share_seconds(items, "model", started)
    for i, (item, edited) in enumerate(zip(items, edits, strict=True)):
        if not edited.ok:
            outcomes[i] = item.fail(edited.reason)
            continue
        with item.timer.io():
            write_image(item.context.layout.artifact(item.sample.theme, "edited_frame0", item.sample.id),
                        np.asarray(edited.value))
    return outcomes


def score_edit(items: list[StepItem]) -> list:
    outcomes: list = [None] * len(items)
    sources, edits = _read(items, "source_frame0"), _read(items, "edited_frame0")
    scorer = items[0].context.models["scorer"]
    started = time.perf_counter()
    scores = call_many(scorer, "score_edit", sources, edits, [item.state["prompt"] for item in items])
    share_seconds(items, "model", started)
    for i, (item, score) in enumerate(zip(items, scores, strict=True)):
        if not score.ok:
            outcomes[i] = item.fail(f"EditScore of edited_frame0: {score.reason}")
            continue
        overall = float(score.value["overall"])
        prompt = item.state["prompt"]
        item.state["editscore"] = score.value
        item.state["jsonl"] = {"edited_frame0_score": {"id": item.sample.id, "prompt": prompt,
                                                       "editscore": score.value}}
        threshold = item.context.config.thresholds.edit_frame0
        if overall < threshold:
            outcomes[i] = item.reject(f"EditScore overall {overall:.2f} < {threshold} (edited frame 0)", overall)
        else:
            outcomes[i] = item.done(overall)
    return outcomes


class EditStage(SteppedStage):
    number = 2
    name = "edit"
    model_slots = ("vlm", "editor", "scorer")

    def steps(self) -> list[Step]:
        return [Step(2, "scene_instruction", "vlm", scene_instruction),
                Step(2, "edit_frame0", "editor", edit_frame0),
                Step(2, "score_edit", "scorer", score_edit)]
