"""SAM3 video tracking for BAIT over transformers' Sam3TrackerVideoModel / Sam3TrackerVideoProcessor.

    tracker = Sam3Tracker.from_pretrained("models/sam3")     # or Sam3Tracker.tiny() for tests and the demo
    clip = tracker.open_clip(frames)                          # uint8 (T, H, W, 3): preprocessed once
    clip.start_pass(key, anchor_frame, boxes, reverse)        # boxes: pixel (K, 4) x1, y1, x2, y2, one object each
    masks = clip.track(key, frame)                            # bool (K, H, W) at the source resolution
    clip.end_pass(key); clip.close(); tracker.release()

This is the `ClipTracker` of sparkle_fast.bait. What makes a BAIT clip cost little more than one bidirectional pass:
  - the clip's frames are resized and normalised once, and the one copy is shared by every pass;
  - every pass is its own transformers session (one session per (anchor, direction): one session with one object
    id per anchor fails in transformers 5.23, see shared/FACTS.md) and all sessions read and fill ONE vision-feature
    cache (`SharedFeatureCache`), so the image encoder runs once per frame per clip. The cache evicts the least
    recently used frame (transformers' own evicts the lowest frame index, the worst choice for a backward sweep)
    and keeps one copy of the position embeddings, which depend on the feature map's shape only;
  - a session forgets the outputs of frames too far behind it for memory attention or object pointers to read
    again (max(num_maskmem, max_object_pointers_in_encoder) frames), so N live passes hold bounded memory;
  - the objects of a pass (one per box) share the session: transformers batches their memory encoding.
On GPU the model runs under bf16 autocast (weights in fp32 unless dtype= says otherwise; frames stored in bf16).
Masks are post-processed on the model's device with the processor's post_process_masks (bilinear, threshold 0).

The PyPI `sam3` package (Meta's code) is not a backend here: it builds models on "cuda" only and lacks upstream
fixes this use depends on (shared/FACTS.md); transformers' classes load the same facebook/sam3 weights.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from sparkle_fast.models.base import free_memory, pick_device
from sparkle_fast.models.slots import check_model_folder


class SharedFeatureCache:
    """The vision-feature cache every session of one clip shares (duck-types transformers'
    Sam3TrackerVideoInferenceCache: cache_vision_features / get_vision_features / clear_all).

    capacity: frames kept (least recently used evicted). `encodes` counts features stored = image-encoder runs,
    `hits` counts lookups answered from the cache.
    """

    def __init__(self, device: torch.device, capacity: int):
        if capacity < 1:
            raise ValueError(f"feature cache capacity must be >= 1 frame, got {capacity}")
        self.inference_device = device
        self.inference_state_device = device
        self.max_vision_features_cache_size = capacity
        self._features: OrderedDict[int, dict] = OrderedDict()
        self._shared_pos: list[torch.Tensor] | None = None
        self._pos_checked = False
        self.encodes = 0
        self.hits = 0

    def cache_vision_features(self, frame_idx: int, features: dict) -> None:
        self.encodes += 1
        features = dict(features)
        pos = features.get("vision_pos_embeds")
        if pos is not None:
            features["vision_pos_embeds"] = self._dedupe_pos(list(pos))
        self._features[frame_idx] = features
        self._features.move_to_end(frame_idx)
        while len(self._features) > self.max_vision_features_cache_size:
            self._features.popitem(last=False)

    def _dedupe_pos(self, pos: list[torch.Tensor]) -> list[torch.Tensor]:
        """One stored copy of the position embeddings; verified equal once (on the second frame) before trusting
        that they depend on the shape only."""
        if self._shared_pos is None:
            self._shared_pos = pos
            return pos
        same_shapes = [p.shape for p in pos] == [p.shape for p in self._shared_pos]
        if not self._pos_checked and same_shapes:
            same_shapes = all(torch.equal(a, b) for a, b in zip(pos, self._shared_pos, strict=True))
            self._pos_checked = True
            if not same_shapes:
                self._shared_pos = []  # frame-dependent after all: never share
        return self._shared_pos if same_shapes and self._shared_pos else pos

    def get_vision_features(self, frame_idx: int) -> dict | None:
        features = self._features.get(frame_idx)
        if features is None:
            return None
        self.hits += 1
        self._features.move_to_end(frame_idx)
        return features

    def clear_all(self) -> None:
        self._features.clear()
        self._shared_pos = None

    def __len__(self) -> int:
        return len(self._features)


class Sam3Tracker:
    """A SAM3 video tracker (transformers) that opens clips for BAIT; see the module docstring."""

    def __init__(self, model, processor, *, device=None, autocast_dtype: torch.dtype | None = None,
                 storage_dtype: torch.dtype | None = None):
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.processor = processor
        on_gpu = self.device.type == "cuda"
        self.autocast_dtype = autocast_dtype if autocast_dtype is not None else (torch.bfloat16 if on_gpu else None)
        self.storage_dtype = storage_dtype or (torch.bfloat16 if on_gpu else torch.float32)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, *, device=None, dtype: torch.dtype | None = None):
        """Load SAM3 from a local transformers folder (checked first: ModelFolderError names the folder and file).

        dtype: the weights' dtype (default fp32; compute runs under bf16 autocast on GPU either way).
        """
        from transformers import Sam3TrackerVideoModel, Sam3TrackerVideoProcessor

        folder = check_model_folder("sam3", folder)
        model = Sam3TrackerVideoModel.from_pretrained(folder, dtype=dtype or torch.float32)
        processor = Sam3TrackerVideoProcessor.from_pretrained(folder)
        return cls(model, processor, device=device)

    @classmethod
    def tiny(cls, *, seed: int = 0, device=None, image_size: int = 112):
        """The tiny random model (sparkle_fast.models.tiny.tiny_sam3_tracker): real classes, noise masks."""
        from sparkle_fast.models.tiny import tiny_sam3_tracker

        model, processor = tiny_sam3_tracker(seed, image_size)
        return cls(model, processor, device=device)

    def use_run_config(self, run_config) -> None:
        """Run the image encoder as the run config's [engines] sam3 says (torch | compile | tensorrt | onnxruntime,
        sparkle_fast.engines); EngineUnavailable when that cannot run here (e.g. tensorrt without TensorRT)."""
        from sparkle_fast.engines.plug import use_run_config_engines

        use_run_config_engines(self, run_config)

    def release(self) -> None:
        """Drop the model and return its memory (before the next stage loads its models)."""
        device = self.device
        self.model = None
        self.processor = None
        free_memory(device)

    def autocast(self):
        if self.autocast_dtype is None or self.device.type != "cuda":
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)

    def open_clip(self, frames: Any, *, max_cached_frames: int | None = None,
                  trim_history: bool = True) -> Sam3ClipTracker:
        """Preprocess a clip once. frames: uint8 RGB (T, H, W, 3) numpy or torch (any device).
        max_cached_frames: feature-cache capacity (default: the whole clip, so every frame is encoded once)."""
        if self.model is None:
            raise RuntimeError("Sam3Tracker was released; load it again")
        return Sam3ClipTracker(self, frames, max_cached_frames, trim_history)


class Sam3ClipTracker:
    """One clip: its preprocessed frames, the shared feature cache and one transformers session per pass."""

    def __init__(self, owner: Sam3Tracker, frames: Any, max_cached_frames: int | None, trim_history: bool):
        from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
            Sam3TrackerVideoInferenceSession,
        )

        self._session_class = Sam3TrackerVideoInferenceSession
        self.owner = owner
        video = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
        if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != torch.uint8 or video.shape[0] < 1:
            raise ValueError(f"Sam3Tracker.open_clip: frames must be uint8 RGB (T, H, W, 3), got {video.dtype} "
                             f"{tuple(video.shape)}")
        self.frame_count, self.height, self.width = (int(d) for d in video.shape[:3])
        device = owner.device
        with torch.inference_mode():
            # channels first: the processor reads a (T, H, W, 3) torch tensor as (T, C, H, W)
            processed = owner.processor.video_processor(videos=[video.permute(0, 3, 1, 2)], device=device,
                                                        return_tensors="pt")
        pixels = processed.pixel_values_videos[0].to(device, dtype=owner.storage_dtype)
        self.frames = dict(enumerate(pixels))  # the layout sessions keep; shared by all of them
        capacity = self.frame_count if max_cached_frames is None else int(max_cached_frames)
        self.cache = SharedFeatureCache(device, capacity)
        config = owner.model.config
        self.keep_behind = max(int(config.num_maskmem), int(config.max_object_pointers_in_encoder)) + 1
        self.trim_history = trim_history
        self.sessions: dict[Any, dict] = {}

    @property
    def encoder_calls(self) -> int:
        return self.cache.encodes

    def start_pass(self, key: Any, anchor_frame: int, boxes: np.ndarray, reverse: bool) -> None:
        """Prompt one object per box (pixel x1, y1, x2, y2 in the source resolution) on the anchor frame."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if key in self.sessions:
            raise ValueError(f"pass {key!r} was already started")
        if not 0 <= anchor_frame < self.frame_count or len(boxes) == 0:
            raise ValueError(f"pass {key!r}: anchor frame {anchor_frame} outside 0..{self.frame_count - 1} or no box")
        device = self.owner.device
        session = self._session_class(video=None, video_height=self.height, video_width=self.width,
                                      inference_device=device, inference_state_device=device,
                                      video_storage_device=device, dtype=self.owner.storage_dtype,
                                      max_vision_features_cache_size=self.cache.max_vision_features_cache_size)
        session.processed_frames = self.frames
        session.cache = self.cache
        self.owner.processor.add_inputs_to_inference_session(
            session, frame_idx=int(anchor_frame), obj_ids=list(range(1, len(boxes) + 1)),
            input_boxes=[boxes.tolist()])
        self.sessions[key] = {"session": session, "anchor": int(anchor_frame), "reverse": bool(reverse),
                              "last": None, "objects": len(boxes)}

    def track(self, key: Any, frame: int) -> torch.Tensor:
        """The pass's masks on `frame`: bool (K, H, W) on the tracker's device. The first step of a pass is its
        anchor frame, each next one the neighbouring frame in its direction (as propagate_in_video_iterator)."""
        state = self.sessions[key]
        step = -1 if state["reverse"] else 1
        expected = state["anchor"] if state["last"] is None else state["last"] + step
        if frame != expected:
            raise ValueError(f"pass {key!r} must step to frame {expected}, not {frame}")
        session = state["session"]
        with torch.inference_mode(), self.owner.autocast():
            output = self.owner.model(inference_session=session, frame_idx=int(frame), reverse=state["reverse"])
            masks = self.owner.processor.post_process_masks([output.pred_masks], original_sizes=[[self.height,
                                                                                                   self.width]],
                                                            binarize=True)[0]
        state["last"] = frame
        if self.trim_history:
            # frames this far behind are never read again by memory attention or object pointers
            old = frame - step * self.keep_behind
            for outputs in session.output_dict_per_obj.values():
                outputs["non_cond_frame_outputs"].pop(old, None)
        return masks[:, 0]

    def end_pass(self, key: Any) -> None:
        self.sessions.pop(key, None)

    def close(self) -> None:
        self.sessions.clear()
        self.cache.clear_all()
        self.frames = {}
