"""Stage 3 (background): a clean background video behind the edited frame 0.

  round 1   Qwen3-VL ground_foreground(source_frame0, edited_frame0): labels + boxes of the preserved foreground
            (foreground_grounding_r1.jsonl); no foreground found -> rejected
  remove    FLUX.2-klein "Remove the ..." on edited_frame0 -> edited_frame0_foreground_removed.png
  filter    EditScore overall of the removal >= thresholds.foreground_removal (Sparkle: 8.5), else rejected
  animate   Qwen3-VL background_caption(prompt), then Wan2.2 I2V from the removed frame at the clip's length and size
            -> edited_background_video.mp4
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparkle_fast.stages.base import Sample, StageContext, StageOutcome
from sparkle_fast.stages.common import StageTimer, load_slot_models, previous_record, release_slot_models


class BackgroundStage:
    number = 3
    name = "background"
    model_slots = ("vlm", "editor", "scorer", "i2v")

    def load_models(self, models_source: Any) -> dict:
        from sparkle_fast.models.editor import FluxKleinEditor
        from sparkle_fast.models.i2v import I2VConfig, WanI2VGenerator
        from sparkle_fast.models.scorer import EditScoreAdapter
        from sparkle_fast.models.vlm import Qwen3VLAdapter

        def tiny_i2v():
            # The tiny text encoder reads 64 tokens here (its tiny() default of 16 cuts most prompts).
            return WanI2VGenerator.tiny(config=I2VConfig(num_frames=9, height=32, width=32, max_sequence_length=64))

        return load_slot_models(models_source, {
            "vlm": (Qwen3VLAdapter.tiny, Qwen3VLAdapter.from_pretrained),
            "editor": (FluxKleinEditor.tiny, FluxKleinEditor.from_pretrained),
            "scorer": (EditScoreAdapter.tiny, EditScoreAdapter.from_pretrained),
            "i2v": (tiny_i2v, WanI2VGenerator.from_pretrained),
        })

    def release_models(self, models: Any) -> None:
        release_slot_models(models)

    def run(self, sample: Sample, context: StageContext) -> StageOutcome:
        from sparkle_fast.video import read_image, write_image, write_video

        config, layout, models, timer = context.config, context.layout, context.models, StageTimer()
        clip, edit = previous_record(context, 1), previous_record(context, 2)
        prompt = edit["prompt"]
        with timer.io():
            source0 = read_image(layout.artifact(sample.theme, "source_frame0", sample.id)).numpy()
            edited0 = read_image(layout.artifact(sample.theme, "edited_frame0", sample.id)).numpy()

        with timer.model():
            grounding = models["vlm"].ground_foreground(source0, edited0)
        if not grounding.ok:
            return StageOutcome("failed", f"round-1 grounding: {grounding.reason}", timing=timer.as_dict())
        r1 = {"id": sample.id, "prompt": prompt, "edit_type": sample.theme, **grounding.value}
        record: dict[str, Any] = {"r1": r1, "jsonl": {"foreground_grounding_r1": r1}}
        labels = r1["round1_labels"]
        if not labels:
            return StageOutcome("rejected", "round-1 grounding found no foreground object to keep", None, record,
                                timer.as_dict())

        with timer.model():
            removed = models["editor"].remove(edited0, labels, seed=config.run.seed)
        if not removed.ok:
            return StageOutcome("failed", removed.reason, None, record, timer.as_dict())
        removed_image, instruction = np.asarray(removed.value["image"]), removed.value["instruction"]
        with timer.io():
            write_image(layout.artifact(sample.theme, "edited_frame0_foreground_removed", sample.id), removed_image)
        with timer.model():
            score = models["scorer"].score_edit(edited0, removed_image, instruction)
        if not score.ok:
            return StageOutcome("failed", f"EditScore of the foreground removal: {score.reason}", None, record,
                                timer.as_dict())
        overall = float(score.value["overall"])
        record["removal_instruction"] = instruction
        record["jsonl"]["edited_frame0_foreground_removed_score"] = {"id": sample.id, "prompt": instruction,
                                                                     "editscore": score.value}
        threshold = config.thresholds.foreground_removal
        if overall < threshold:
            return StageOutcome("rejected", f"EditScore overall {overall:.2f} < {threshold} (foreground removal)",
                                overall, record, timer.as_dict())

        with timer.model():
            caption = models["vlm"].background_caption(prompt)
        if not caption.ok:
            return StageOutcome("failed", f"background caption: {caption.reason}", overall, record, timer.as_dict())
        record["background_caption"] = caption.value
        with timer.model():
            video = models["i2v"].try_generate(removed_image, caption.value, seed=config.i2v.seed if
                                               config.i2v.seed >= 0 else config.run.seed,
                                               num_frames=clip["frames"], height=clip["height"], width=clip["width"])
        if not video.ok:
            return StageOutcome("failed", video.reason, overall, record, timer.as_dict())
        from sparkle_fast.models.slots import model_settings

        record["i2v_settings"] = model_settings(models["i2v"])  # what generated the background video ([i2v])
        with timer.io():
            write_video(layout.artifact(sample.theme, "edited_background_video", sample.id), video.value,
                        fps=config.clip.fps)
        return StageOutcome.done(record, overall, **timer.as_dict())
