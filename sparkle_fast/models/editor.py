"""FLUX.2-klein adapter (diffusers Flux2KleinPipeline): background replacement of frame 0 (stage 2) and foreground
removal (stage 3, "Remove the ..." instructions built from the round-1 labels).

The distilled klein model edits in 4 steps without classifier-free guidance (guidance_scale 1.0). The pipeline
takes the source image as its reference; its output size follows the reference rounded to the VAE's multiple, so
the result is resized back to the exact source size (Sparkle's frames stay 1280x720). Every call is seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from sparkle_fast.models.base import TaskResult, free_memory, pick_device, pick_dtype, to_pil
from sparkle_fast.models.slots import check_model_folder

MIN_REFERENCE_SIDE = 64  # the pipeline rejects smaller reference images


@dataclass(frozen=True)
class EditorConfig:
    num_inference_steps: int = 4
    guidance_scale: float = 1.0
    max_sequence_length: int = 512
    text_encoder_out_layers: tuple[int, ...] | None = None   # None: the pipeline's default (the real model's)
    seed: int = 0


def removal_instruction(labels: Sequence[str]) -> str:
    """Stage 3's removal prompt, our template: "Remove the bald man." / "Remove the woman, the hat and the dog.".
    Sparkle's paper says the foreground is removed with FLUX.2-klein but does not publish the instruction."""
    names = [" ".join(str(label).split()) for label in labels if str(label).strip()]
    names = list(dict.fromkeys(names))
    if not names:
        raise ValueError("removal_instruction needs at least one non-empty label")
    phrases = [f"the {n}" if not n.lower().startswith(("the ", "a ", "an ")) else n for n in names]
    joined = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"Remove {joined}."


class FluxKleinEditor:
    """edit(image, instruction) and remove(image, labels) on a Flux2KleinPipeline. Images: PIL or uint8 (H, W, 3);
    results are PIL RGB at the source size."""

    def __init__(self, pipeline, config: EditorConfig | None = None):
        self.pipeline = pipeline
        self.config = config or EditorConfig()
        # Rows per pipeline call, for the runner's plan (adapter.batch_size = N). The *_many methods run one item
        # per call whatever it is: diffusers' Flux2KleinPipeline takes a list of images as the reference images of
        # ONE edit (it encodes each and repeats them for every prompt), so it cannot edit different images with
        # different prompts in one call.
        self.batch_size: int | None = None

    @classmethod
    def from_pretrained(cls, folder, *, device=None, dtype=None, config: EditorConfig | None = None):
        """Load a FLUX.2-klein diffusers folder (checked first: ModelFolderError names what is missing)."""
        from diffusers import Flux2KleinPipeline

        folder = check_model_folder("editor", folder)
        device = pick_device(device)
        pipeline = Flux2KleinPipeline.from_pretrained(folder, dtype=pick_dtype(device, dtype))
        pipeline.set_progress_bar_config(disable=True)
        return cls(pipeline.to(device), config)

    @classmethod
    def tiny(cls, *, seed: int = 0, config: EditorConfig | None = None):
        from sparkle_fast.models.tiny import tiny_flux2_klein

        pipeline = tiny_flux2_klein(seed)
        pipeline.set_progress_bar_config(disable=True)
        return cls(pipeline, config or EditorConfig(max_sequence_length=64, text_encoder_out_layers=(1,)))

    def release(self) -> None:
        device = self.pipeline.device if self.pipeline is not None else None
        self.pipeline = None
        free_memory(device)

    def edit(self, image, instruction: str, *, seed: int | None = None) -> Image.Image:
        """The edited image (PIL RGB, same size as `image`). Raises ValueError for an image under 64 px a side."""
        source = to_pil(image)
        if min(source.size) < MIN_REFERENCE_SIDE:
            raise ValueError(f"FLUX.2-klein needs reference images >= {MIN_REFERENCE_SIDE} px a side, got "
                             f"{source.size[0]}x{source.size[1]}")
        cfg = self.config
        kwargs = dict(image=source, prompt=instruction, num_inference_steps=cfg.num_inference_steps,
                      guidance_scale=cfg.guidance_scale, max_sequence_length=cfg.max_sequence_length,
                      generator=torch.Generator(device="cpu").manual_seed(cfg.seed if seed is None else seed))
        if cfg.text_encoder_out_layers is not None:
            kwargs["text_encoder_out_layers"] = tuple(cfg.text_encoder_out_layers)
        with torch.inference_mode():
            result = self.pipeline(**kwargs).images[0]
        result = result.convert("RGB")
        if result.size != source.size:
            result = result.resize(source.size, Image.Resampling.BICUBIC)
        return result

    def try_edit(self, image, instruction: str, *, seed: int | None = None) -> TaskResult:
        """edit() as a TaskResult: a failure (bad input, model error) is a recorded reason, not an exception."""
        try:
            return TaskResult(ok=True, value=self.edit(image, instruction, seed=seed), attempts=1)
        except Exception as exc:  # noqa: BLE001
            return TaskResult(ok=False, reason=f"FLUX.2-klein edit failed: {type(exc).__name__}: {exc}", attempts=1)

    def remove(self, image, labels: Sequence[str], *, seed: int | None = None) -> TaskResult:
        """Erase the labelled foreground. value = {"image": PIL, "instruction": str}."""
        try:
            instruction = removal_instruction(labels)
        except ValueError as exc:
            return TaskResult(ok=False, reason=str(exc))
        result = self.try_edit(image, instruction, seed=seed)
        if result.ok:
            result.value = {"image": result.value, "instruction": instruction}
        return result

    def try_edit_many(self, images: Sequence, prompts: Sequence[str], seed: int | Sequence[int] | None = None) \
            -> list[TaskResult]:
        """try_edit per (image, prompt) pair; seed: one for every item (as try_edit's), a list with one per item, or
        None (config.seed). Each item gets its own generator seeded as try_edit seeds it, so an item's image does
        not depend on the others. One pipeline call per item (see batch_size above)."""
        seeds = _seeds("try_edit_many", seed, len(images))
        if len(prompts) != len(images):
            raise ValueError(f"try_edit_many: {len(images)} images and {len(prompts)} prompts; give one prompt each")
        return [self.try_edit(image, prompt, seed=item_seed)
                for image, prompt, item_seed in zip(images, prompts, seeds, strict=True)]

    def remove_many(self, images: Sequence, labels_list: Sequence[Sequence[str]],
                    seed: int | Sequence[int] | None = None) -> list[TaskResult]:
        """remove per (image, labels) pair; seed as in try_edit_many. value = {"image": PIL, "instruction": str}."""
        seeds = _seeds("remove_many", seed, len(images))
        if len(labels_list) != len(images):
            raise ValueError(f"remove_many: {len(images)} images and {len(labels_list)} label lists")
        return [self.remove(image, labels, seed=item_seed)
                for image, labels, item_seed in zip(images, labels_list, seeds, strict=True)]


def _seeds(method: str, seed: int | Sequence[int] | None, count: int) -> list[int | None]:
    if seed is None or isinstance(seed, int):
        return [seed] * count
    seeds = [int(s) for s in seed]
    if len(seeds) != count:
        raise ValueError(f"{method}: {len(seeds)} seeds for {count} items; give one seed, or one per item")
    return seeds
