"""The SAM3 tracker adapter on the tiny random model: BAIT's real code path, shared features, encoder-call counts.

The tiny model's object-score head is biased to "object present" so that its (random) masks are not all empty and
the comparisons below compare something.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparkle_fast.bait import run_bait
from sparkle_fast.models.slots import ModelFolderError
from sparkle_fast.models.tracker import Sam3Tracker
from sparkle_fast.ops.vote_pack import vote_masks_reference

T, H, W = 9, 30, 50  # 16 fps: 2-FPS anchors at frames 0 and 8
BOXES = {0: [[5, 5, 30, 25], [20, 3, 45, 28]], 8: [[10, 8, 40, 29]]}


def tiny_tracker(device="cpu", seed=0):
    tracker = Sam3Tracker.tiny(device=device, seed=seed)
    with torch.no_grad():
        tracker.model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(50.0)
    return tracker


class Counter:
    def __init__(self, module):
        self.n = 0
        module.register_forward_hook(self)

    def __call__(self, *args):
        self.n += 1


@pytest.fixture(scope="module")
def tracker():
    t = tiny_tracker()
    t.encoder_runs = Counter(t.model.vision_encoder)
    t.model_calls = Counter(t.model)
    return t


@pytest.fixture(scope="module")
def video():
    return (np.random.default_rng(0).random((T, H, W, 3)) * 255).astype(np.uint8)


def grounding():
    """r2 grounding in the 0..1000 grid whose normalize_bbox pixels are roughly BOXES (plus an empty slot label)."""
    def grid(b):
        return [round(b[0] * 1000 / W), round(b[1] * 1000 / H), round(b[2] * 1000 / W), round(b[3] * 1000 / H)]
    return [[{"label": "a", "bbox_2d": grid(BOXES[0][0])}, {"label": "b", "bbox_2d": grid(BOXES[0][1])}],
            [{"label": "a", "bbox_2d": grid(BOXES[8][0])}, {"label": "b", "bbox_2d": []}]]


class Recording:
    """Wraps a tracker and keeps every mask its clips return: {(pass key, frame): bool (K, H, W)}."""

    def __init__(self, inner):
        self.inner, self.device, self.masks = inner, inner.device, {}

    def open_clip(self, frames, **kwargs):
        clip, masks = self.inner.open_clip(frames, **kwargs), self.masks

        class Clip:
            def __getattr__(self, name):
                return getattr(clip, name)

            def track(self, key, frame):
                out = clip.track(key, frame)
                masks[key, frame] = out.cpu().numpy()
                return out

        return Clip()


def test_bait_on_tiny_model_encodes_each_frame_once(tracker, video):
    tracker.encoder_runs.n = tracker.model_calls.n = 0
    recording = Recording(tracker)
    result = run_bait(recording, video, grounding())
    assert result.ok, result.reason
    assert result.anchors == [0, 8] and result.passes == 2
    assert tracker.encoder_runs.n == T and result.encoder_calls == T  # not passes x frames
    # anchor 0: forward 0..8; anchor 8: forward 8, backward 8..0
    assert sorted(recording.masks) == sorted([((0, False), f) for f in range(T)] + [((1, False), 8)]
                                             + [((1, True), f) for f in range(T)])
    assert tracker.model_calls.n == result.steps == 2 * T + 1
    assert all(m.shape[1:] == (H, W) and m.dtype == bool for m in recording.masks.values())
    assert [recording.masks[(0, False), 0].shape[0], recording.masks[(1, True), 0].shape[0]] == [2, 1]
    passes = np.zeros((2, T, H, W), dtype=bool)
    for f in range(T):
        passes[0, f] = recording.masks[(0, False), f].any(0)
        passes[1, f] = recording.masks[(1, False) if f == 8 else (1, True), f].any(0)
    assert 0 < passes.mean() < 1
    np.testing.assert_array_equal(result.mask(), vote_masks_reference(passes))
    assert result.mask().shape == (T, H, W)


def test_shared_features_give_the_masks_of_a_fresh_transformers_session(tracker, video):
    clip = tracker.open_clip(video)
    clip.start_pass("p", 8, np.asarray(BOXES[8] + BOXES[0]), reverse=True)
    ours = [clip.track("p", f).numpy() for f in range(8, -1, -1)]
    clip.close()
    proc, model = tracker.processor, tracker.model
    with torch.inference_mode():
        session = proc.init_video_session(video=video, inference_device="cpu", max_vision_features_cache_size=T)
        proc.add_inputs_to_inference_session(session, frame_idx=8, obj_ids=[1, 2, 3],
                                             input_boxes=[BOXES[8] + BOXES[0]])
        theirs = [proc.post_process_masks([o.pred_masks], original_sizes=[[H, W]])[0][:, 0].numpy()
                  for o in model.propagate_in_video_iterator(session, start_frame_idx=8, reverse=True)]
    assert len(theirs) == len(ours) == 9
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape == (3, H, W)
        assert np.mean(a != b) < 0.002  # float noise on the threshold only


def test_bounded_cache_with_lockstep_passes(tracker, video):
    tracker.encoder_runs.n = 0
    result = run_bait(tracker, video, grounding(), max_cached_frames=3)
    assert result.ok
    # forward sweep encodes 0..8; the backward sweep finds the 3 most recent (8, 7, 6) and encodes 5..0
    assert tracker.encoder_runs.n == result.encoder_calls == T + (T - 3)


def test_trimmed_history_changes_no_mask():
    t = tiny_tracker(seed=1)
    t.model.config.max_object_pointers_in_encoder = 3  # memory window max(7, 3): trimming starts at frame 8
    frames = (np.random.default_rng(1).random((12, 20, 28, 3)) * 255).astype(np.uint8)
    runs = {}
    for trim in (True, False):
        clip = t.open_clip(frames, trim_history=trim)
        clip.start_pass(0, 0, np.asarray([[2, 2, 20, 18]]), reverse=False)
        runs[trim] = [clip.track(0, f).numpy() for f in range(12)]
        stored = len(clip.sessions[0]["session"].output_dict_per_obj[0]["non_cond_frame_outputs"])
        assert stored <= clip.keep_behind if trim else stored == 11
    np.testing.assert_array_equal(np.stack(runs[True]), np.stack(runs[False]))


def test_pass_contract_and_bad_frames_are_clear_errors(tracker, video):
    clip = tracker.open_clip(video)
    clip.start_pass("p", 4, np.asarray([BOXES[8][0]]), reverse=False)
    with pytest.raises(ValueError, match="must step to frame 4"):
        clip.track("p", 5)
    with pytest.raises(ValueError, match="already started"):
        clip.start_pass("p", 4, np.asarray([BOXES[8][0]]), reverse=False)
    with pytest.raises(ValueError, match=r"uint8 RGB \(T, H, W, 3\)"):
        tracker.open_clip(video[..., 0])


def test_from_pretrained_checks_the_folder_then_loads(tmp_path, video):
    with pytest.raises(ModelFolderError, match="missing folder"):
        Sam3Tracker.from_pretrained(tmp_path / "absent", device="cpu")
    from sparkle_fast.models.tiny import tiny_sam3_tracker

    model, processor = tiny_sam3_tracker(seed=2)
    folder = tmp_path / "sam3"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.rename(tmp_path / "w")
    with pytest.raises(ModelFolderError, match=r"\[sam3\] .*sam3: no weights"):
        Sam3Tracker.from_pretrained(folder, device="cpu")
    (tmp_path / "w").rename(weights)
    loaded = Sam3Tracker.from_pretrained(folder, device="cpu")
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], value), name
    clip = loaded.open_clip(video[:2])
    clip.start_pass(0, 1, np.asarray([BOXES[8][0]]), reverse=True)
    assert clip.track(0, 1).shape == (1, H, W)
    loaded.release()
    with pytest.raises(RuntimeError, match="released"):
        loaded.open_clip(video)


@pytest.mark.gpu
def test_bait_on_gpu_bf16_autocast(video):
    t = tiny_tracker(device="cuda")
    runs = Counter(t.model.vision_encoder)
    recording = Recording(t)
    result = run_bait(recording, torch.from_numpy(video).cuda(), grounding())
    assert result.ok and result.packed.is_cuda and runs.n == T and result.peak_memory_bytes > 0
    passes = np.zeros((2, T, H, W), dtype=bool)
    for f in range(T):
        passes[0, f] = recording.masks[(0, False), f].any(0)
        passes[1, f] = recording.masks[(1, False) if f == 8 else (1, True), f].any(0)
    np.testing.assert_array_equal(result.mask(), vote_masks_reference(passes))
