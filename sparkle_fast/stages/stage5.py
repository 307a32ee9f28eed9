"""Stage 5 (synthesize): the final video.

  control   edges of the source inside the BAIT mask (dilated by canny.mask_dilate), of the background video outside
            -> edited_video_canny.mp4. [edges] extractor "canny" (default): ops.control_video, cv2.Canny with
            canny.low / canny.high (VideoX-Fun's 100 / 200); "lineart": ControlNet's line-art annotator
            (models/lineart.py, both videos in one batch) composed by ops.compose_edges. The paper's sentence names
            both ("Canny edges ... using Lineart [5]"); the record says which ran ("edges").
  generate  Wan2.2 Fun-Control from the control video, edited frame 0 and the stage-2 prompt
  filter    EditScore on 4 uniformly spaced non-first frames ([1, 26, 51, 76] for 81); mean O_score >=
            thresholds.edited_video (Sparkle: 8) -> {theme}/edited_video/{id}.mp4; else rejected (the samples
            Sparkle-Bench is made of; their score line is kept in edited_video_score.jsonl)

The source and background videos are decoded onto the stage's device and the mask uploaded once
(common.stage_device), so on a GPU worker ops.control_video runs its GPU kernels (auto dispatch follows the input).
"""

from __future__ import annotations

from typing import Any

from sparkle_fast.stages.base import Sample, StageContext, StageOutcome
from sparkle_fast.stages.common import StageTimer, load_slot_models, previous_record, release_slot_models, stage_device


class SynthesizeStage:
    number = 5
    name = "synthesize"
    model_slots = ("control", "scorer")

    def load_models(self, models_source: Any) -> dict:
        from sparkle_fast.models.control import FunControlConfig, FunControlGenerator
        from sparkle_fast.models.scorer import EditScoreAdapter

        def tiny_control():
            # The tiny text encoder reads 64 tokens here (its tiny() default of 16 cuts most prompts).
            return FunControlGenerator.tiny(config=FunControlConfig(
                num_frames=9, height=32, width=32, num_inference_steps=4, guidance_scale=1.0,
                max_sequence_length=64))

        from sparkle_fast.models.lineart import LineartSlot

        models = load_slot_models(models_source, {
            "control": (tiny_control, FunControlGenerator.from_pretrained),
            "scorer": (EditScoreAdapter.tiny, EditScoreAdapter.from_pretrained),
        })
        models["lineart"] = LineartSlot(models_source)  # loaded on first use: only [edges] extractor = "lineart"
        return models

    def release_models(self, models: Any) -> None:
        release_slot_models(models)

    def run(self, sample: Sample, context: StageContext) -> StageOutcome:
        import torch

        from sparkle_fast import ops
        from sparkle_fast.formats import load_packed_mask
        from sparkle_fast.models.scorer import mean_overall, score_edited_video
        from sparkle_fast.video import read_frames, read_image, write_video

        config, layout, models, timer = context.config, context.layout, context.models, StageTimer()
        prompt = previous_record(context, 2)["prompt"]
        art = lambda kind: layout.artifact(sample.theme, kind, sample.id)  # noqa: E731
        device = stage_device()
        with timer.io():
            source = read_frames(art("source_video"), device=device).frames
            background = read_frames(art("edited_background_video"), device=device).frames
            packed, shape = load_packed_mask(art("source_video_mask"))
            packed = torch.from_numpy(packed).to(device)
            edited0 = read_image(art("edited_frame0")).numpy()
        if shape != tuple(source.shape[:3]):
            return StageOutcome("failed", f"mask shape {shape} does not match the source video "
                                f"{tuple(source.shape[:3])}", timing=timer.as_dict())
        edges = config.edges
        if edges.extractor == "lineart":
            edges_record = {"extractor": "lineart", "coarse": edges.lineart_coarse,
                            "detect_resolution": edges.lineart_detect_resolution,
                            "mask_dilate": config.canny.mask_dilate}
            with timer.model():
                detector = models["lineart"].get(device)
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
        ablation = config.run.ablation  # paper 3.4-3.5's baselines, as whole runs (driver/config.py run.ablation)
        if ablation == "foreground-only":  # OpenVE-3M-style guidance: the composed map's source side, nothing outside
            with timer.kernel():
                control = ops.foreground_only_control(control[..., 0].contiguous(), packed,
                                                      dilate=config.canny.mask_dilate)
        if control.is_cuda:  # the launches are asynchronous: charge them to kernel, not to the write below
            torch.cuda.synchronize(control.device)
        with timer.io():
            write_video(art("edited_video_canny"), control, fps=config.clip.fps)

        n_frames, height, width = source.shape[:3]
        if ablation == "copy-paste":  # the naive shortcut: source pixels inside the mask over the background video
            from sparkle_fast.models.base import TaskResult

            with timer.kernel():
                pasted = ops.copy_paste_composite(source, background, packed, dilate=config.canny.mask_dilate)
            video = TaskResult(ok=True, value=pasted.cpu().numpy(), attempts=1)
        else:
            with timer.model():
                video = models["control"].try_generate(control, edited0, prompt, seed=config.control.seed if
                                                       config.control.seed >= 0 else config.run.seed,
                                                       num_frames=n_frames, height=height, width=width)
        if not video.ok:
            return StageOutcome("failed", video.reason, timing=timer.as_dict())
        with timer.model():
            scored = score_edited_video(models["scorer"], sample.id, prompt, source.cpu(), video.value)
        if not scored.ok:
            return StageOutcome("failed", f"EditScore of the edited video: {scored.reason}", timing=timer.as_dict())
        mean = mean_overall(scored.value["editscore"])
        from sparkle_fast.models.slots import model_settings

        record = {"mean_overall": mean, "edges": edges_record, "jsonl": {"edited_video_score": scored.value},
                  "control_settings": model_settings(models["control"]),  # what generated it ([control])
                  "editscore_passes": getattr(getattr(models["scorer"], "config", None), "passes", None)}
        if ablation:
            record["ablation"] = ablation
        threshold = config.thresholds.edited_video
        if mean < threshold:
            return StageOutcome("rejected", f"mean EditScore O_score {mean:.2f} < {threshold} over frames "
                                f"{scored.value['frame_indices']}", mean, record, timer.as_dict())
        with timer.io():
            write_video(art("edited_video"), video.value, fps=config.clip.fps)
        return StageOutcome.done(record, mean, **timer.as_dict())
