"""Stage 4 BAIT: multi-anchor tracking from the round-2 grounding, voted into Sparkle's packed mask.

Inputs: the clip's frames (uint8 (T, H, W, 3)) and the round-2 grounding, one list per 2-FPS frame of
{"label", "bbox_2d" on the 0..1000 grid} items where "bbox_2d" may be [] (Sparkle's foreground_grounding_r2 schema;
`load_r2_records` reads Sparkle's released jsonl).

The rule (Sparkle's BAIT):
  - the k-th 2-FPS slot is clip frame anchor_frames[k] (default: the fps rule of sparkle_fast.video.sampling,
    0, 8, 16, ... for a 16 fps clip);
  - a box is usable when it has four finite numbers and Sparkle's normalize_bbox gives it a nonzero width and height
    in pixels; an anchor is a slot with at least one usable box, and each such box (one per label) is one object;
  - one pass per anchor: its objects are prompted on the anchor frame, tracked forward to the last frame and
    backward to frame 0; the pass's mask on a frame is the union of its objects' masks;
  - a pixel is foreground iff more than half of the passes say so (ties are background), as ops.vote_masks;
  - zero anchors: the sample is rejected with that reason.
The single-pass baseline (OpenVE-3M-style) runs one pass from the first anchor, forward only; frames before it are
background.

How it runs (the image encoder dominates SAM3's cost):
  - the tracker encodes each frame once per clip into a feature cache every pass reads (see
    sparkle_fast.models.tracker); passes advance in lockstep (all forward passes sweep t upwards together, then all
    backward passes sweep downwards), so even a cache smaller than the clip is hit by every pass of a frame;
  - each pass's masks are bit-packed as they stream out (ops.pack_bits per frame, into one (N, T*H*W/8) tensor on
    the tracker's device: an eighth of N byte videos), and the vote is ops.vote_and_pack on those packed passes,
    so it runs on the op's GPU kernels on a GPU. Frames whose H*W is not a multiple of 8 do not start on a byte:
    such clips keep (N, T, H, W) bool passes instead (small sizes only in practice).

A tracker is anything with `open_clip(frames, max_cached_frames=...)` returning a `ClipTracker` (below); the real
one is models.tracker.Sam3Tracker, and `ScriptedTracker` returns known masks so the logic is tested exactly.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from sparkle_fast.models.json_answers import normalize_bbox
from sparkle_fast.ops.vote_pack import MAX_PASSES, pack_bits, vote_and_pack

ANCHOR_FPS = 2  # Sparkle grounds the foreground on frames sampled at 2 FPS
MODES = ("bait", "single")


class GroundingFileError(ValueError):
    """A round-2 grounding jsonl that is missing, unreadable, or lacks the sample asked for; names the file."""


# --- round-2 grounding ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class R2Record:
    """One line of Sparkle's foreground_grounding_r2.jsonl.

    frame_objects: one list per 2-FPS frame of {"bbox_2d": [x1, y1, x2, y2] on the 0..1000 grid or [], "label"}.
    """

    id: str
    frame_objects: list[list[dict]]
    labels: list[str] = field(default_factory=list)
    prompt: str = ""
    edit_type: str = ""


def _record_from_json(value: Any, where: str) -> R2Record:
    if not isinstance(value, dict):
        raise GroundingFileError(f"{where}: expected a JSON object, got {type(value).__name__}")
    sample_id = value.get("id")
    if not isinstance(sample_id, str) or not sample_id:
        raise GroundingFileError(f"{where}: missing or empty 'id'")
    frames = value.get("frame_objects")
    if not isinstance(frames, list) or not all(isinstance(f, list) for f in frames):
        raise GroundingFileError(f"{where} (id {sample_id}): 'frame_objects' must be a list of lists (one per 2-FPS "
                                 "frame); is this a foreground_grounding_r2.jsonl?")
    cleaned = [[item for item in frame if isinstance(item, dict)] for frame in frames]
    labels = value.get("round1_labels")
    return R2Record(sample_id, cleaned, [str(x) for x in labels] if isinstance(labels, list) else [],
                    str(value.get("prompt", "")), str(value.get("edit_type", "")))


def load_r2_records(path: str | os.PathLike) -> dict[str, R2Record]:
    """All records of a foreground_grounding_r2.jsonl, by id (blank lines skipped; a later duplicate id wins).

    Raises GroundingFileError naming the file (and line) for a missing file, invalid JSON or a record without
    'id' / 'frame_objects'.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GroundingFileError(f"{path}: no such grounding file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GroundingFileError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from exc
    records = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GroundingFileError(f"{path}:{number}: not JSON ({exc.msg} at column {exc.colno})") from None
        record = _record_from_json(value, f"{path}:{number}")
        records[record.id] = record
    return records


def find_r2_record(path: str | os.PathLike, sample_id: str | None = None) -> R2Record:
    """The record with `sample_id`; with no id, the file's only record. GroundingFileError otherwise."""
    records = load_r2_records(path)
    if sample_id is None:
        if len(records) != 1:
            raise GroundingFileError(f"{path}: holds {len(records)} records; pass the sample id (--id)")
        return next(iter(records.values()))
    if sample_id not in records:
        some = ", ".join(sorted(records)[:3]) + (" ..." if len(records) > 3 else "")
        raise GroundingFileError(f"{path}: no record with id {sample_id!r} ({len(records)} records: {some or 'none'})")
    return records[sample_id]


# --- anchors and passes -----------------------------------------------------------------------------------------------


def usable_box(bbox: Any, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Pixel (x1, y1, x2, y2) of a 0..1000-grid box by Sparkle's normalize_bbox, or None when the box is unusable:
    [] (not localized), not four finite numbers, or zero width or height in pixels after the rule (which clamps
    out-of-range values into the frame and collapses reversed boxes)."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    try:
        values = [float(v) for v in bbox]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in values):
        return None
    x1, y1, x2, y2 = normalize_bbox(values, width, height)
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2


@dataclass(frozen=True)
class Anchor:
    """A 2-FPS frame with at least one usable box.

    slot:   index into frame_objects; frame: the clip frame it shows;
    labels: one per object; boxes: int64 (K, 4) pixel x1, y1, x2, y2 (normalize_bbox).
    """

    slot: int
    frame: int
    labels: tuple[str, ...]
    boxes: np.ndarray


def default_anchor_frames(frame_count: int, fps: float = 16) -> np.ndarray:
    """Clip frames of the 2-FPS slots: the fps rule of sparkle_fast.video.sampling (16 fps: 0, 8, ..., 80)."""
    from sparkle_fast.video.sampling import sample_indices

    return sample_indices(frame_count, fps, ANCHOR_FPS)


def select_anchors(frame_objects: Sequence[Sequence[dict]], anchor_frames: Sequence[int], width: int,
                   height: int) -> tuple[list[Anchor], list[str]]:
    """(anchors, notes): the slots with a usable box, in slot order, and notes on what did not fit.

    Slots beyond len(anchor_frames) (grounding of frames past the clip's end) are ignored with a note. Within a slot
    each usable box is one object; a label repeated on one slot keeps its first usable box.
    """
    notes = []
    if len(frame_objects) > len(anchor_frames):
        notes.append(f"{len(frame_objects)} grounded 2-FPS frames for {len(anchor_frames)} anchor slots in the clip: "
                     f"the last {len(frame_objects) - len(anchor_frames)} ignored")
    anchors = []
    for slot, (items, frame) in enumerate(zip(frame_objects, anchor_frames, strict=False)):
        labels, boxes = [], []
        for item in items:
            label = str(item.get("label", "")) if isinstance(item, dict) else ""
            box = usable_box(item.get("bbox_2d") if isinstance(item, dict) else None, width, height)
            if box is None or label in labels:
                continue
            labels.append(label)
            boxes.append(box)
        if boxes:
            anchors.append(Anchor(slot, int(frame), tuple(labels), np.asarray(boxes, dtype=np.int64)))
    return anchors, notes


@dataclass(frozen=True)
class TrackPass:
    """One BAIT pass: the anchor's objects tracked forward (anchor..T-1) and/or backward (anchor..0)."""

    anchor: Anchor
    forward: bool = True
    backward: bool = True


def plan_passes(anchors: Sequence[Anchor], mode: str = "bait") -> list[TrackPass]:
    """BAIT: one bidirectional pass per anchor. "single": one forward pass from the first anchor."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not anchors:
        return []
    if mode == "single":
        return [TrackPass(anchors[0], forward=True, backward=False)]
    return [TrackPass(a) for a in anchors]


# --- the tracker interface -------------------------------------------------------------------------------------------


class ClipTracker(Protocol):
    """One clip's tracking state. A pass is started once, then stepped one frame at a time in its direction: the
    first step is its anchor frame, each next one the neighbouring frame. `encoder_calls` counts image-encoder runs."""

    encoder_calls: int

    def start_pass(self, key: Any, anchor_frame: int, boxes: np.ndarray, reverse: bool) -> None: ...

    def track(self, key: Any, frame: int) -> torch.Tensor:
        """bool (K, H, W) at the source resolution, one mask per box of the pass, on the tracker's device."""

    def end_pass(self, key: Any) -> None: ...

    def close(self) -> None: ...


class Tracker(Protocol):
    device: torch.device

    def open_clip(self, frames: Any, *, max_cached_frames: int | None = None) -> ClipTracker: ...


# --- BAIT -------------------------------------------------------------------------------------------------------------


@dataclass
class BaitResult:
    """The outcome of BAIT on one clip; never raised, `reason` says why when not ok.

    packed: uint8 (ceil(T*H*W/8),) torch on the tracker's device (np.packbits order), None when not ok.
    shape:  (T, H, W). anchors: clip frames of the anchors. passes: tracking passes run.
    encoder_calls: image-encoder runs (== T when every frame was encoded once). steps: tracker frame steps.
    peak_memory_bytes: torch.cuda.max_memory_allocated during the run (None on CPU).
    """

    ok: bool
    reason: str = ""
    packed: torch.Tensor | None = None
    shape: tuple[int, int, int] = (0, 0, 0)
    mode: str = "bait"
    anchors: list[int] = field(default_factory=list)
    passes: int = 0
    encoder_calls: int = 0
    steps: int = 0
    seconds: float = 0.0
    peak_memory_bytes: int | None = None
    notes: list[str] = field(default_factory=list)

    def mask(self) -> np.ndarray:
        """The voted mask as bool numpy (T, H, W)."""
        from sparkle_fast.ops.vote_pack import unpack_bits

        if not self.ok:
            raise ValueError(f"BAIT produced no mask: {self.reason}")
        return unpack_bits(self.packed.cpu().numpy(), self.shape)

    def save(self, path: str | os.PathLike) -> Path:
        """Write Sparkle's mask npz (atomic)."""
        from sparkle_fast.formats import save_packed_mask

        if not self.ok:
            raise ValueError(f"BAIT produced no mask to save: {self.reason}")
        return save_packed_mask(path, self.packed, self.shape)

    def summary(self) -> dict:
        t, h, w = self.shape
        return {"ok": self.ok, "reason": self.reason, "mode": self.mode, "frames": t, "height": h, "width": w,
                "anchors": list(self.anchors), "passes": self.passes, "encoder_calls": self.encoder_calls,
                "steps": self.steps, "seconds": round(self.seconds, 4), "peak_memory_bytes": self.peak_memory_bytes,
                "notes": list(self.notes)}


def _frames_shape(frames: Any) -> tuple[int, int, int]:
    shape = tuple(int(d) for d in getattr(frames, "shape", ()))
    dtype = str(getattr(frames, "dtype", ""))
    if len(shape) != 4 or shape[-1] != 3 or "uint8" not in dtype or min(shape[:3], default=0) < 1:
        raise ValueError(f"BAIT: frames must be uint8 RGB (T, H, W, 3) with T, H, W >= 1, got {dtype} {shape}")
    return shape[0], shape[1], shape[2]


def _union(masks: torch.Tensor, n_objects: int, size: tuple[int, int], where: str) -> torch.Tensor:
    if masks.dtype != torch.bool or masks.ndim != 3 or masks.shape[0] != n_objects or tuple(masks.shape[1:]) != size:
        raise ValueError(f"{where}: the tracker returned {masks.dtype} {tuple(masks.shape)}, expected bool "
                         f"({n_objects}, {size[0]}, {size[1]})")
    return masks.any(dim=0)


class _PassMasks:
    """Every pass's mask video, filled frame by frame: bit-packed rows (N, T*H*W/8) when a frame's H*W is a multiple
    of 8 (each frame then starts on a byte), else bool (N, T, H, W)."""

    def __init__(self, n_passes: int, shape: tuple[int, int, int], device: Any):
        self.shape = shape
        n_frames, height, width = shape
        self.frame_bytes = height * width // 8 if (height * width) % 8 == 0 else None
        if self.frame_bytes is not None:
            self.data = torch.zeros((n_passes, n_frames * self.frame_bytes), dtype=torch.uint8, device=device)
        else:
            self.data = torch.zeros((n_passes,) + shape, dtype=torch.bool, device=device)

    def add(self, index: int, frame: int, mask: torch.Tensor) -> None:
        """OR bool (H, W) `mask` into pass `index`'s frame `frame`."""
        if self.frame_bytes is None:
            self.data[index, frame] |= mask.to(self.data.device)
        else:
            where = slice(frame * self.frame_bytes, (frame + 1) * self.frame_bytes)
            self.data[index, where] |= pack_bits(mask.to(self.data.device))

    def vote(self, min_votes: int | None = None) -> torch.Tensor:
        """ops.vote_and_pack: uint8 (ceil(T*H*W/8),), a pixel foreground iff a strict majority of the passes say so,
        or at least min_votes of them (all of them when fewer passes ran)."""
        if min_votes is not None:
            min_votes = min(int(min_votes), int(self.data.shape[0]))
        if self.frame_bytes is None:
            return vote_and_pack(self.data, min_votes)
        return vote_and_pack(self.data, min_votes, shape=self.shape)


def track_and_vote(tracker: Tracker, frames: Any, passes: Sequence[TrackPass], *,
                   max_cached_frames: int | None = None, min_votes: int | None = None) -> tuple[torch.Tensor, dict]:
    """Run `passes` in lockstep on one clip and vote; returns (packed uint8 torch, stats).

    Forward sweep: t = first anchor .. T-1, every forward pass whose anchor <= t steps to t. Backward sweep:
    t = last anchor .. 0, every backward pass with anchor >= t steps to t (its anchor-frame step conditions the pass
    and is not voted again: the forward half already voted that frame). A pass with anchor 0 has no backward half
    (transformers' reverse from frame 0 yields nothing, and the forward half covers frame 0). Each pass votes once
    per frame it covers; a pixel is foreground iff votes >= len(passes) // 2 + 1 (ops.vote_and_pack's default), or
    votes >= min(min_votes, len(passes)) when min_votes is given.
    """
    n_frames, height, width = _frames_shape(frames)
    if not 1 <= len(passes) <= MAX_PASSES:
        raise ValueError(f"BAIT: the number of passes must be in 1..{MAX_PASSES}, got {len(passes)}")
    for p in passes:
        if not 0 <= p.anchor.frame < n_frames:
            raise ValueError(f"BAIT: anchor frame {p.anchor.frame} (slot {p.anchor.slot}) is outside the clip's "
                             f"{n_frames} frames")
    masks_of = _PassMasks(len(passes), (n_frames, height, width), tracker.device)
    clip = tracker.open_clip(frames, max_cached_frames=max_cached_frames)
    steps = 0
    try:
        sweeps = (
            (False, range(n_frames), [(i, p) for i, p in enumerate(passes) if p.forward]),
            (True, range(n_frames - 1, -1, -1),
             [(i, p) for i, p in enumerate(passes) if p.backward and p.anchor.frame > 0]),
        )
        for reverse, order, live in sweeps:
            started = set()
            for t in order:
                for i, p in live:
                    a = p.anchor.frame
                    if (t < a) if not reverse else (t > a):
                        continue
                    key = (i, reverse)
                    if key not in started:
                        clip.start_pass(key, a, p.anchor.boxes, reverse)
                        started.add(key)
                    masks = clip.track(key, t)
                    steps += 1
                    if reverse and t == a and p.forward:
                        continue  # the anchor frame was voted by this pass's forward half
                    masks_of.add(i, t, _union(masks, len(p.anchor.boxes), (height, width), f"pass {i} frame {t}"))
            for key in started:
                clip.end_pass(key)
        encoder_calls = int(clip.encoder_calls)
    finally:
        clip.close()
    return masks_of.vote(min_votes), {"encoder_calls": encoder_calls, "steps": steps}


def run_bait(tracker: Tracker, frames: Any, frame_objects: Sequence[Sequence[dict]], *, mode: str = "bait",
             fps: float = 16, anchor_frames: Sequence[int] | None = None,
             max_cached_frames: int | None = None, min_votes: int | None = None) -> BaitResult:
    """BAIT (or the single-pass baseline) on one clip; a BaitResult, never an exception for a bad sample.

    frames: uint8 RGB (T, H, W, 3), numpy or torch (on any device the tracker accepts).
    frame_objects: the round-2 grounding, one list of {"bbox_2d", "label"} per 2-FPS frame.
    fps: the clip's frame rate, for the default anchor_frames (the clip frame of each 2-FPS slot).
    max_cached_frames: bound on the tracker's feature cache (None: the whole clip).
    min_votes: passes that must agree on a foreground pixel (None: a strict majority, Sparkle's rule); capped at the
        number of passes the sample has.
    """
    start = time.perf_counter()
    n_frames, height, width = _frames_shape(frames)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if anchor_frames is None:
        anchor_frames = default_anchor_frames(n_frames, fps)
    anchors, notes = select_anchors(frame_objects, anchor_frames, width, height)
    result = BaitResult(ok=False, shape=(n_frames, height, width), mode=mode, anchors=[a.frame for a in anchors],
                        notes=notes)
    if not anchors:
        result.reason = (f"no usable anchor: none of the {min(len(frame_objects), len(anchor_frames))} grounded 2-FPS "
                         "frames has a usable box")
        result.seconds = time.perf_counter() - start
        return result
    passes = plan_passes(anchors, mode)
    if len(passes) > MAX_PASSES:
        result.reason = f"{len(passes)} anchors is more than the vote's limit of {MAX_PASSES} passes"
        return result
    device = tracker.device
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    try:
        packed, stats = track_and_vote(tracker, frames, passes, max_cached_frames=max_cached_frames,
                                       min_votes=min_votes)
    except (RuntimeError, ValueError, torch.OutOfMemoryError) as exc:  # a failed sample, not a failed run
        result.reason = f"tracking failed: {type(exc).__name__}: {exc}"
        result.seconds = time.perf_counter() - start
        return result
    if on_cuda:
        torch.cuda.synchronize(device)
        result.peak_memory_bytes = int(torch.cuda.max_memory_allocated(device))
    result.ok, result.packed, result.passes = True, packed, len(passes)
    result.encoder_calls, result.steps = stats["encoder_calls"], stats["steps"]
    result.seconds = time.perf_counter() - start
    return result


# --- a tracker with known masks, for tests and the demo --------------------------------------------------------------


class ScriptedTracker:
    """A Tracker whose masks are given by `script(anchor_frame, object_index, frame, reverse) -> bool (H, W)`.

    It checks that passes are driven as the ClipTracker contract says (start once, first step on the anchor, then
    one frame at a time in the pass's direction) and records every step in `calls` as
    (anchor_frame, reverse, frame); `encoder_calls` counts distinct frames stepped (a perfect shared cache).
    """

    def __init__(self, script: Callable[[int, int, int, bool], Any], device: str | torch.device = "cpu"):
        self.script = script
        self.device = torch.device(device)
        self.calls: list[tuple[int, bool, int]] = []
        self.opened = 0

    def open_clip(self, frames: Any, *, max_cached_frames: int | None = None) -> _ScriptedClip:
        self.opened += 1
        return _ScriptedClip(self, _frames_shape(frames))


class _ScriptedClip:
    def __init__(self, owner: ScriptedTracker, shape: tuple[int, int, int]):
        self.owner, self.shape = owner, shape
        self.passes: dict[Any, dict] = {}
        self.seen: set[int] = set()
        self.closed = False

    @property
    def encoder_calls(self) -> int:
        return len(self.seen)

    def start_pass(self, key, anchor_frame, boxes, reverse):
        if key in self.passes:
            raise AssertionError(f"pass {key} started twice")
        self.passes[key] = {"anchor": int(anchor_frame), "k": len(boxes), "reverse": bool(reverse), "last": None}

    def track(self, key, frame):
        p = self.passes[key]
        expected = p["anchor"] if p["last"] is None else p["last"] + (-1 if p["reverse"] else 1)
        if frame != expected or not 0 <= frame < self.shape[0]:
            raise AssertionError(f"pass {key} stepped to frame {frame}, expected {expected}")
        p["last"] = frame
        self.seen.add(frame)
        self.owner.calls.append((p["anchor"], p["reverse"], frame))
        masks = [torch.as_tensor(np.asarray(self.owner.script(p["anchor"], j, frame, p["reverse"]), dtype=bool))
                 for j in range(p["k"])]
        return torch.stack(masks).to(self.owner.device)

    def end_pass(self, key):
        self.passes.pop(key)

    def close(self):
        self.closed = True
