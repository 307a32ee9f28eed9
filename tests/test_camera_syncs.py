"""The camera filter's traffic between host and device: a clip group's analysis makes a fixed number of host round
trips, however many refinement iterations and frame steps it runs (on a GPU each one waits for every launch before
it). Counted on CPU tensors by wrapping what would copy or sync on a GPU; the ops' own traffic (track_points,
select_points, find_homographies: their tests cover it) is counted as calls, not inside."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import traceback
from collections import Counter

import numpy as np
import pytest
import torch

from sparkle_fast import camera, camera_refine
from sparkle_fast.camera_synthetic import make_clip

SIZE = (96, 128)
# What copies between host and device, or waits for the device, when a tensor lives on a GPU: a copy out, a
# Python value of a tensor, a shape set by the data (nonzero, boolean masks, repeat_interleave without a
# known size), and a copy in (a host-made tensor: torch.tensor, from_numpy before .to(device)). Not numpy() nor
# __array__: on a GPU tensor they raise, so a copy out goes through .cpu() first (counted there).
_TENSOR_METHODS = ("cpu", "item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "unique")
_TORCH_FUNCTIONS = ("tensor", "as_tensor", "from_numpy", "nonzero", "unique", "masked_select")
_OPS = ((camera, "track_points"), (camera, "select_points"), (camera, "find_homographies"),
        (camera_refine, "track_points"), (camera.ops, "rgb_to_gray"))


def _is_mask(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


@contextlib.contextmanager
def count_host_traffic(monkeypatch, where: list | None = None):
    """Counter of host round trips made by camera code (not inside the ops) while the block runs; op calls are
    counted under "op:<name>". where: a list that receives a short stack for every round trip (for debugging)."""
    counts: Counter = Counter()
    inside_op = [0]
    depth = [0]  # one round trip per outermost call (np.asarray(t.cpu()) calls __array__, which calls numpy)

    def note(name):
        if inside_op[0] or depth[0]:
            return
        counts["sync"] += 1
        counts[name] += 1
        if where is not None:
            where.append((name, "".join(traceback.format_stack(limit=6)[:-2])))

    def counted(name, real):
        def wrapper(*args, **kwargs):
            note(name)
            depth[0] += 1
            try:
                return real(*args, **kwargs)
            finally:
                depth[0] -= 1
        return wrapper

    def wrap(owner, name):
        monkeypatch.setattr(owner, name, counted(name, getattr(owner, name)))

    for name in _TENSOR_METHODS:
        wrap(torch.Tensor, name)
    for name in _TORCH_FUNCTIONS:
        wrap(torch, name)
    real_getitem, real_setitem = torch.Tensor.__getitem__, torch.Tensor.__setitem__
    real_repeat = torch.Tensor.repeat_interleave

    def getitem(self, index):
        return (counted("mask index", real_getitem) if _is_mask(index) else real_getitem)(self, index)

    def setitem(self, index, value):
        return (counted("mask index", real_setitem) if _is_mask(index) else real_setitem)(self, index, value)

    def repeat_interleave(self, repeats, *args, **kwargs):
        sized = not isinstance(repeats, torch.Tensor) or kwargs.get("output_size") is not None
        return (real_repeat if sized else counted("repeat_interleave", real_repeat))(self, repeats, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "__getitem__", getitem)
    monkeypatch.setattr(torch.Tensor, "__setitem__", setitem)
    monkeypatch.setattr(torch.Tensor, "repeat_interleave", repeat_interleave)
    for module, name in _OPS:
        real = getattr(module, name)

        def op(*args, _real=real, _name=name, **kwargs):
            counts["op:" + _name] += 1
            inside_op[0] += 1
            try:
                return _real(*args, **kwargs)
            finally:
                inside_op[0] -= 1
        monkeypatch.setattr(module, name, op)
    try:
        yield counts
    finally:
        monkeypatch.undo()


def _clips(n_clips: int, n_frames: int):
    motions = ["pan", "zoom", "rotate", "drift"]
    return [torch.from_numpy(make_clip(motions[c % 4], n_frames=n_frames, size=SIZE, speed=2.0, seed=c).frames)
            for c in range(n_clips)]


# Patching torch.Tensor.__getitem__ (to count boolean-mask indexing) changes the class's C type slots for the rest of
# the process even after monkeypatch.undo() (the sequence slot stays set, so a 0-d tensor then looks like a sequence
# and later code fails with "len() of a 0-d tensor"). The counting tests therefore run in a child pytest process.
CHILD = "SPARKLE_FAST_SYNC_COUNT_CHILD"
in_child_only = pytest.mark.skipif(os.environ.get(CHILD) != "1",
                                   reason="runs in a child process (test_sync_counting_tests_in_a_child_process)")


def test_sync_counting_tests_in_a_child_process(tmp_path):
    if os.environ.get(CHILD) == "1":
        pytest.skip("this is the child")
    result = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider",
                             f"--basetemp={tmp_path / 'child'}", "-k", "round_trip"],
                            env={**os.environ, CHILD: "1"}, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout, result.stdout[-2000:]  # the two counting tests and the host copy test


def _count(monkeypatch, clips, **thresholds):
    th = camera.CameraThresholds(**thresholds)
    with count_host_traffic(monkeypatch) as counts:
        monkeypatch.setattr(camera, "HOST_SHORTCUTS", False)  # count what a GPU run does
        results = camera.analyze_many(clips, th, device="cpu")
    return counts, results


@in_child_only
def test_host_round_trips_do_not_grow_with_iterations_frame_steps_or_clips(monkeypatch):
    few, _ = _count(monkeypatch, _clips(2, 4), refine_iters=1)
    more_iters, _ = _count(monkeypatch, _clips(2, 4), refine_iters=3)
    more_steps, _ = _count(monkeypatch, _clips(2, 8), refine_iters=1)
    more_clips, results = _count(monkeypatch, _clips(4, 4), refine_iters=1)
    assert all(r.static is False and r.method == "homography" for r in results)  # every step ran
    # the runs did more work (more tracking launches) ...
    assert more_iters["op:track_points"] > few["op:track_points"] > 0
    assert more_steps["op:track_points"] > few["op:track_points"]
    # ... with the same host round trips, and the same RANSAC calls (each makes its own fixed few)
    for other in (more_iters, more_steps, more_clips):
        assert other["sync"] == few["sync"], (dict(few), dict(other))
        assert other["op:find_homographies"] == few["op:find_homographies"]
    # and few of them (today: 6 copies out, 11 in; before this count was kept, 52-61 and growing)
    assert few["cpu"] <= 6 and few["sync"] <= 20, dict(few)


@in_child_only
def test_the_counter_sees_a_per_iteration_round_trip(monkeypatch):
    """The counter is not blind: a host copy added to refine_from_first's loop shows up once per iteration."""
    real = camera_refine.apply_homographies_torch

    def leaky(h, points):
        np.asarray(h.cpu())  # what the loop did before: a copy to the host each iteration
        return real(h, points)

    monkeypatch.setattr(camera_refine, "apply_homographies_torch", leaky)
    one, _ = _count(monkeypatch, _clips(1, 4), refine_iters=1)
    monkeypatch.setattr(camera_refine, "apply_homographies_torch", leaky)
    three, _ = _count(monkeypatch, _clips(1, 4), refine_iters=3)
    assert three["cpu"] - one["cpu"] >= 2 * 2  # two calls per iteration (the mapping and the trim's errors)


@pytest.mark.gpu
def test_cuda_decisions_equal_cpu_on_a_mixed_group():
    """The device path (Triton tracking, CUDA RANSAC, the refinement's torch fits on the GPU) decides every clip of a
    group as the CPU path does, method and reason included; homographies close at the corners (the
    trackers differ in float rounding, so no bit equality is claimed for the floats: 0.25 px, half the accuracy
    the CPU tests ask of these homographies against the truth)."""
    from sparkle_fast.camera_synthetic import corner_error

    size = (144, 192)
    specs = [dict(motion="static"), dict(motion="static", subject_fraction=0.3, subject_speed=3.0, noise=2.0),
             dict(motion="pan", speed=0.5), dict(motion="zoom", speed=2.0, noise=2.0),
             dict(motion="rotate", speed=1.0, subject_fraction=0.4, subject_speed=0.0, noise=2.0),
             dict(motion="shake", speed=1.5), dict(motion="pan", cut_at=3)]
    clips = [make_clip(size=size, n_frames=7, seed=i, **s).frames for i, s in enumerate(specs)]
    cpu = camera.analyze_many(clips, device="cpu")
    cuda = camera.analyze_many(clips, device="cuda")
    for a, b in zip(cpu, cuda, strict=True):
        assert (a.static, a.method, a.reason, a.pairs) == (b.static, b.method, b.reason, b.pairs)
        if a.from_first is not None and np.isfinite(a.from_first).all():
            assert max(corner_error(x, y, size) for x, y in zip(a.from_first, b.from_first, strict=True)) <= 0.25


@pytest.mark.gpu
def test_refine_twins_on_cuda_equal_cpu():
    """The refinement's torch fits on the GPU against the same code on the CPU: the model choices equal, the fits
    within 1e-9 px (cuSOLVER and LAPACK round differently)."""
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 300, (24, 120, 2))
    h = np.eye(3) + np.concatenate([rng.normal(0, 0.01, (24, 2, 3)), rng.normal(0, 1e-5, (24, 1, 3))], axis=1)
    h[:, 2, 2] = 1.0
    dst = camera_refine.apply_homographies(h, src) + rng.normal(0, 0.1, src.shape)
    mask = rng.random((24, 120)) < 0.7
    mask[0], mask[1, 3:] = False, False
    groups = np.repeat(np.arange(6), 4)
    args = [torch.from_numpy(a) for a in (src, dst, mask)]
    h_cpu, keep_cpu = camera_refine.choose_motion_model_torch(*args, camera_refine.group_layout(groups, "cpu"))
    h_gpu, keep_gpu = camera_refine.choose_motion_model_torch(*(a.cuda() for a in args),
                                                              camera_refine.group_layout(groups, "cuda"))
    assert torch.equal(keep_cpu, keep_gpu.cpu())
    h_cpu, h_gpu = h_cpu.numpy(), h_gpu.cpu().numpy()
    finite = np.isfinite(h_cpu).all(axis=(1, 2))
    assert np.array_equal(finite, np.isfinite(h_gpu).all(axis=(1, 2)))
    moved = camera_refine.apply_homographies
    assert np.abs(moved(h_cpu[finite], src[finite]) - moved(h_gpu[finite], src[finite])).max() <= 1e-9


@pytest.mark.parametrize("dark", [False, True])
def test_gray_gain_equals_the_median_over_lit_pixels(dark):
    """_gray_frames' gain, taken without a boolean index (which would wait for a GPU), is the median ratio over the
    pixels lit in frame 0, as before; a frame 0 with no lit pixel keeps gain 1."""
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (3, 17, 23), dtype=np.uint8)
    frames[1] = np.clip(frames[0] * 1.3, 0, 255).astype(np.uint8)
    if dark:
        frames[0] = np.minimum(frames[0], 15)
    g = torch.from_numpy(frames).float()
    lit = g[0] >= 16
    if lit.any():
        gain = (g[:, lit] / g[0][lit]).median(dim=1).values.clamp_min(1e-3).view(-1, 1, 1)
    else:
        gain = torch.ones(3, 1, 1)
    scaled = g / gain
    mean, std = g[0].mean(), g[0].std().clamp_min(1.0)
    want = ((scaled - mean) / std * 48.0 + 128.0).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(camera._gray_frames(torch.from_numpy(frames)), want)


def test_to_host_round_trips_dtypes_and_shapes():
    tensors = [torch.tensor([[1.5, -2.25]], dtype=torch.float64), torch.tensor([True, False, True]),
               torch.arange(6, dtype=torch.int64).reshape(2, 3) * 1000003, torch.zeros((0, 4)),
               torch.tensor([0.1], dtype=torch.float32)]
    got = camera._to_host(*tensors)
    for t, g in zip(tensors, got, strict=True):
        assert g.shape == tuple(t.shape)
        assert np.array_equal(g, t.numpy().astype(g.dtype))
    assert got[1].dtype == bool and got[2].dtype == np.int64 and got[4][0] == np.float32(0.1)


def test_side_share_twin_equals_numpy():
    """The background-model choice made on the device compares the same scores as numpy's side_share, bit for bit
    (random sets, and ties: a model holding the same points as the other)."""
    rng = np.random.default_rng(3)
    cells = (12, 16)
    tracked = rng.random((30, 192)) < 0.7
    inliers = tracked & (rng.random((30, 192)) < 0.5)
    inliers[:5] = tracked[:5]
    tracked[7] = False  # nothing tracked: 0 / max(0, 1)
    want = camera.side_share(inliers, tracked, cells)
    got = camera.side_share_torch(torch.from_numpy(inliers), torch.from_numpy(tracked), cells).numpy()
    assert np.array_equal(want, got)


@pytest.mark.gpu
def test_cuda_synchronizations_do_not_grow_with_iterations_frame_steps_or_clips():
    """On the GPU itself: torch's sync debug mode reports every operation that waits for the device (copies either
    way, Python values of tensors, data-sized outputs), the ops' included. A group's analysis, frames already on the
    device and every kernel compiled (a first, uncounted run), waits as often with 3 refinement iterations as with
    1, with 8 frames as with 4, with 4 clips as with 2."""
    import warnings

    def synchronizations(n_clips, n_frames, iters):
        clips = [c.cuda() for c in _clips(n_clips, n_frames)]
        th = camera.CameraThresholds(refine_iters=iters)
        camera.analyze_many(clips, th, device="cuda")
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                results = camera.analyze_many(clips, th, device="cuda")
            finally:
                torch.cuda.set_sync_debug_mode("default")
        assert all(r.static is False and r.method == "homography" for r in results)
        return sum("synchroniz" in str(w.message) for w in caught)

    few = synchronizations(2, 4, 1)
    assert few > 0  # the mode is on: the results come back to the host at least once
    assert synchronizations(2, 4, 3) == few, "refinement iterations"
    assert synchronizations(2, 8, 1) == few, "frame steps"
    assert synchronizations(4, 4, 1) == few, "clips"
