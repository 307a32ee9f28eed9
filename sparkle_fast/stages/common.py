"""What the five stages share: where models come from, a per-sample time split, and small JSON helpers.

Models: `models_source` is "tiny" (random tiny models of the real classes, for tests and the demo) or the path of a
--models DIR (one sub-folder per slot, see sparkle_fast.models.slots). The folder is checked for the stage's slots
before anything loads, so a missing slot stops the stage naming the slot and the path. Nothing else in a stage
depends on which source the models came from.

Timing: every stage splits its seconds into model (network forward passes), kernel (sparkle_fast ops and camera /
BAIT glue) and io (decode, encode, PNG/npz reads and writes); the runner records the split in the manifest.

Device: a stage's own kernels (camera filter, control video, BAIT's vote) run where stage_device() says: the worker's
GPU when torch sees one (a worker sees only its GPU, as cuda:0), else the CPU. Frames are decoded onto that device
(or uploaded once), so the ops' auto dispatch reaches their GPU kernels; which implementation each op reached is
recorded by the runner (sparkle_fast.ops._dispatch.record_backends) in the stage's manifest record as "backends".
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sparkle_fast.models.slots import SLOTS, check_models_dir, load_or_stand_in

TINY = "tiny"


class StageTimer:
    """Accumulates seconds per category: `with timer.model(): ...`, `with timer.io(): ...`."""

    CATEGORIES = ("model", "kernel", "io")

    def __init__(self) -> None:
        self.seconds = {c: 0.0 for c in self.CATEGORIES}

    @contextlib.contextmanager
    def _measure(self, category: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[category] += time.perf_counter() - start

    def model(self):
        return self._measure("model")

    def kernel(self):
        return self._measure("kernel")

    def io(self):
        return self._measure("io")

    def add(self, category: str, seconds: float) -> None:
        """Charge seconds measured elsewhere (a share of a launch several samples had together)."""
        self.seconds[category] += seconds

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.seconds.items()}


def stage_device():
    """torch.device for a stage's kernels and decoded frames: cuda (this worker's GPU) when torch sees one, else cpu."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_slot_models(models_source: Any, builders: dict[str, tuple[Callable[[], Any], Callable[[Path], Any]]]) \
        -> dict[str, Any]:
    """Load one model per slot: builders maps slot -> (tiny builder, folder loader). For a --models DIR every slot's
    folder is checked first (models.ModelFolderError lists each missing slot and path)."""
    if isinstance(models_source, str) and models_source == TINY:
        return {slot: tiny() for slot, (tiny, _) in builders.items()}
    if not isinstance(models_source, (str, os.PathLike)):
        raise TypeError(f"models_source must be {TINY!r} or a --models folder, got {models_source!r}")
    folders = check_models_dir(models_source, list(builders))
    # A model that cannot load becomes an UnloadedModel: the stage's samples fail with its reason, the run goes on.
    return {slot: load_or_stand_in(slot, folders[slot], load) for slot, (_, load) in builders.items()}


def release_slot_models(models: dict[str, Any] | None) -> None:
    """Release every adapter (each returns its memory); safe on a partly loaded dict."""
    for adapter in (models or {}).values():
        release = getattr(adapter, "release", None)
        if release is not None:
            release()


def slot_folder(models_source: Any, slot: str) -> Path:
    return Path(models_source) / SLOTS[slot].subdir


def finite(value: Any) -> Any:
    """A JSON-safe copy: NaN and infinities become None (the manifest and jsonl files hold strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def previous_record(context, stage: int) -> dict:
    """The record an earlier stage left for this sample; a clear error when it is missing (the runner only runs a
    stage after the previous one is done, so this means a manifest edited by hand or an old run)."""
    record = context.previous.get(stage)
    if not isinstance(record, dict):
        raise RuntimeError(f"stage {stage}'s record is missing for this sample; rerun from stage {stage}")
    return record
