"""How each model slot is loaded: a random tiny model of the real class (models "tiny") or the slot's folder under
--models DIR. One place for every stage and runner, so a runner can hold one slot resident at a time (model-major
steps) instead of a stage's models all at once.

    load_slot("vlm", "tiny")          -> Qwen3VLAdapter.tiny()
    load_slot("vlm", "models/")       -> Qwen3VLAdapter.from_pretrained("models/qwen3_vl"), or an UnloadedModel
                                         carrying the load error (each sample of a step that needs it fails with it)
    load_slots("models/", ("vlm", "sam3"))  checks both folders first (ModelFolderError names each missing one)

"lineart" (stage 5's optional line-art detector) is never checked up front: LineartSlot loads it on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def _vlm() -> tuple[Callable, Callable]:
    from sparkle_fast.models.vlm import Qwen3VLAdapter

    return Qwen3VLAdapter.tiny, Qwen3VLAdapter.from_pretrained


def _editor() -> tuple[Callable, Callable]:
    from sparkle_fast.models.editor import FluxKleinEditor

    return FluxKleinEditor.tiny, FluxKleinEditor.from_pretrained


def _scorer() -> tuple[Callable, Callable]:
    from sparkle_fast.models.scorer import EditScoreAdapter

    return EditScoreAdapter.tiny, EditScoreAdapter.from_pretrained


def _sam3() -> tuple[Callable, Callable]:
    from sparkle_fast.models.tracker import Sam3Tracker

    return Sam3Tracker.tiny, Sam3Tracker.from_pretrained


def _i2v() -> tuple[Callable, Callable]:
    from sparkle_fast.models.i2v import I2VConfig, WanI2VGenerator

    def tiny():
        # The tiny text encoder reads 64 tokens here (its tiny() default of 16 cuts most prompts).
        return WanI2VGenerator.tiny(config=I2VConfig(num_frames=9, height=32, width=32, max_sequence_length=64))

    return tiny, WanI2VGenerator.from_pretrained


def _control() -> tuple[Callable, Callable]:
    from sparkle_fast.models.control import FunControlConfig, FunControlGenerator

    def tiny():
        # The tiny text encoder reads 64 tokens here (its tiny() default of 16 cuts most prompts).
        return FunControlGenerator.tiny(config=FunControlConfig(
            num_frames=9, height=32, width=32, num_inference_steps=4, guidance_scale=1.0, max_sequence_length=64))

    return tiny, FunControlGenerator.from_pretrained


BUILDERS: dict[str, Callable[[], tuple[Callable, Callable]]] = {
    "vlm": _vlm, "editor": _editor, "scorer": _scorer, "sam3": _sam3, "i2v": _i2v, "control": _control,
}
LAZY_SLOTS = ("lineart",)


def _is_tiny(models_source: Any) -> bool:
    return isinstance(models_source, str) and models_source == "tiny"


WAN_SLOTS = ("i2v", "control")


def load_slot(slot: str, models_source: Any, placement: str = "resident", vae_tiling: bool = False) -> Any:
    """One slot's adapter (see the module docstring); the folder is checked first. placement (Wan slots loaded from
    a folder): "resident", "sequential_experts" (one expert on the GPU at a time) or "model_offload" (diffusers'
    model CPU offload); vae_tiling: the Wan VAE in tiles."""
    if slot in LAZY_SLOTS:
        from sparkle_fast.models.lineart import LineartSlot

        return LineartSlot(models_source)
    if slot not in BUILDERS:
        raise KeyError(f"unknown model slot {slot!r}; known: {', '.join([*BUILDERS, *LAZY_SLOTS])}")
    tiny, load = BUILDERS[slot]()
    if _is_tiny(models_source):
        return tiny()
    from sparkle_fast.models.slots import check_models_dir, load_or_stand_in

    folder = check_models_dir(models_source, [slot])[slot]
    if slot in WAN_SLOTS:
        from functools import partial

        from sparkle_fast.models.i2v import SpeedOptions

        if placement not in ("resident", "sequential_experts", "model_offload"):
            raise ValueError(f"placement {placement!r}: expected resident, sequential_experts or model_offload")
        load = partial(load, speed=SpeedOptions(sequential_experts=placement == "sequential_experts",
                                                cpu_offload=placement == "model_offload", vae_tiling=vae_tiling))
    return load_or_stand_in(slot, folder, load)


def load_slots(models_source: Any, slots: Iterable[str]) -> dict[str, Any]:
    """Several slots at once (a stage's models), every folder checked before anything loads."""
    slots = list(slots)
    if not _is_tiny(models_source):
        from sparkle_fast.models.slots import check_models_dir

        if not isinstance(models_source, (str, Path)) and not hasattr(models_source, "__fspath__"):
            raise TypeError(f"models_source must be 'tiny' or a --models folder, got {models_source!r}")
        check_models_dir(models_source, [s for s in slots if s not in LAZY_SLOTS])
    return {slot: load_slot(slot, models_source) for slot in slots}
