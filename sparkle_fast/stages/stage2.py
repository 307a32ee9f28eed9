"""Stage 2 (edit): a new background for frame 0.

  keyword   themes.py's deterministic "subtheme: scene" for the sample from our taxonomy or the run's themes_file
            (openve3m: the prompt given with the input)
  VLM       describe_scene -> original_scene; write_instruction -> the editing prompt (keyword themes)
  edit      FLUX.2-klein edits source_frame0 with the prompt -> edited_frame0.png
  filter    EditScore overall >= thresholds.edit_frame0 (Sparkle: 8), else rejected
The record carries what later stages and the index files need: prompt, chosen_keyword, original_scene and the
edited_frame0_score.jsonl line (written for kept and rejected samples: it is the filter's evidence).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparkle_fast.stages.base import Sample, StageContext, StageOutcome
from sparkle_fast.stages.common import StageTimer, load_slot_models, release_slot_models


def _read_frame(path) -> Any:
    from sparkle_fast.video import read_image

    return read_image(path).numpy()


class EditStage:
    number = 2
    name = "edit"
    model_slots = ("vlm", "editor", "scorer")

    def load_models(self, models_source: Any) -> dict:
        from sparkle_fast.models.editor import FluxKleinEditor
        from sparkle_fast.models.scorer import EditScoreAdapter
        from sparkle_fast.models.vlm import Qwen3VLAdapter

        return load_slot_models(models_source, {
            "vlm": (Qwen3VLAdapter.tiny, Qwen3VLAdapter.from_pretrained),
            "editor": (FluxKleinEditor.tiny, FluxKleinEditor.from_pretrained),
            "scorer": (EditScoreAdapter.tiny, EditScoreAdapter.from_pretrained),
        })

    def release_models(self, models: Any) -> None:
        release_slot_models(models)

    def run(self, sample: Sample, context: StageContext) -> StageOutcome:
        from sparkle_fast import themes
        from sparkle_fast.video import write_image

        config, layout, models, timer = context.config, context.layout, context.models, StageTimer()
        with timer.io():
            frame0 = _read_frame(layout.artifact(sample.theme, "source_frame0", sample.id))

        with timer.model():
            scene = models["vlm"].describe_scene(frame0)
        if not scene.ok:
            return StageOutcome("failed", f"describe_scene: {scene.reason}", timing=timer.as_dict())
        original_scene = scene.value
        if sample.theme == themes.OPENVE3M:
            if not sample.prompt:
                return StageOutcome("rejected", "the openve3m theme needs a prompt from the input", None, None,
                                    timer.as_dict())
            prompt, chosen_keyword = sample.prompt, None
        else:
            taxonomy = themes.load_themes(config.run.themes_file)  # "" = the packaged taxonomy (ours)
            keyword = taxonomy.sample_keyword(sample.theme, sample.id, seed=config.run.seed)
            chosen_keyword = keyword.chosen_keyword
            with timer.model():
                instruction = models["vlm"].write_instruction(frame0, original_scene, sample.theme, keyword.subtheme,
                                                              keyword.scene)
            if not instruction.ok:
                return StageOutcome("failed", f"write_instruction: {instruction.reason}", timing=timer.as_dict())
            prompt = instruction.value

        with timer.model():
            edited = models["editor"].try_edit(frame0, prompt, seed=config.run.seed)
        if not edited.ok:
            return StageOutcome("failed", edited.reason, timing=timer.as_dict())
        with timer.io():
            write_image(layout.artifact(sample.theme, "edited_frame0", sample.id), np.asarray(edited.value))
        with timer.model():
            score = models["scorer"].score_edit(frame0, edited.value, prompt)
        if not score.ok:
            return StageOutcome("failed", f"EditScore of edited_frame0: {score.reason}", timing=timer.as_dict())

        overall = float(score.value["overall"])
        record = {"prompt": prompt, "chosen_keyword": chosen_keyword, "original_scene": original_scene,
                  "editscore": score.value,
                  "jsonl": {"edited_frame0_score": {"id": sample.id, "prompt": prompt, "editscore": score.value}}}
        threshold = config.thresholds.edit_frame0
        if overall < threshold:
            return StageOutcome("rejected", f"EditScore overall {overall:.2f} < {threshold} (edited frame 0)",
                                overall, record, timer.as_dict())
        return StageOutcome.done(record, overall, **timer.as_dict())
