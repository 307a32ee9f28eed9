"""find_homographies: the numpy definition, the CUDA kernel's host twin (same scores bit for bit), OpenCV agreement
on noisy data with 40% outliers (corner error <= 0.15 px: our refit is a linear least-squares DLT, OpenCV's is
Levenberg-Marquardt; inlier masks equal on >= 97% of points), degenerate input, and the CUDA kernel against the
reference on a GPU."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from sparkle_fast.camera_synthetic import corner_error
from sparkle_fast.ops import homography as hm
from sparkle_fast.ops.homography import find_homographies, find_homographies_reference


def _data(n_pairs=4, n=120, outliers=0.4, seed=0):
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 320, (n_pairs, n, 2)).astype(np.float32)
    dst = np.empty_like(src)
    truth = []
    for b in range(n_pairs):
        h = np.array([[1 + rng.normal(0, .01), rng.normal(0, .01), rng.normal(0, 4)],
                      [rng.normal(0, .01), 1 + rng.normal(0, .01), rng.normal(0, 4)],
                      [rng.normal(0, 2e-5), rng.normal(0, 2e-5), 1]])
        p = cv2.perspectiveTransform(src[b][None].astype(np.float64), h)[0] + rng.normal(0, 0.3, (n, 2))
        bad = rng.random(n) < outliers
        p[bad] = rng.uniform(0, 320, (bad.sum(), 2))
        dst[b], _ = p, truth.append(h)
    return src, dst, np.stack(truth)


def test_host_twin_scores_equal_reference():
    src, dst, _ = _data(n_pairs=3, n=57)
    usable = hm._usable(src, dst, None)
    usable[1, ::3] = False
    src_c, dst_c, n_valid = hm._compact(src, dst, usable)
    keys = np.array([7, 2**32 - 1, 0], np.uint32)  # the largest key too: the hash is uint32 arithmetic
    want_scores, want_models = hm.score_hypotheses_reference(src_c, dst_c, n_valid, keys, 300, 7, 4.0)
    got_scores, got_models = hm.score_hypotheses_host_twin(src_c, dst_c, n_valid, keys, 300, 7, 4.0)
    assert np.array_equal(got_scores, want_scores)
    ok = want_scores >= 0
    assert ok.mean() > 0.2 and (want_scores == -1).any()
    assert np.array_equal(got_models[ok], want_models[ok])


def test_matches_opencv_and_truth():
    src, dst, truth = _data()
    h, inliers = find_homographies_reference(src, dst, threshold=3.0)
    for b in range(len(src)):
        h_cv, mask = cv2.findHomography(src[b], dst[b], cv2.RANSAC, 3.0)
        assert corner_error(h[b], h_cv, (320, 320)) <= 0.15
        assert (inliers[b] == mask.ravel().astype(bool)).mean() >= 0.97
        assert corner_error(h[b], truth[b], (320, 320)) <= 0.5
        assert h[b, 2, 2] == 1.0


def test_deterministic_seed_and_batch_independent():
    src, dst, _ = _data(n_pairs=3)
    h_all, in_all = find_homographies(src, dst, seed=5)
    h_one, in_one = find_homographies(src[:2], dst[:2], seed=5)
    assert np.array_equal(h_all[:2], h_one) and np.array_equal(in_all[:2], in_one)
    single_h, single_in = find_homographies(src[0], dst[0], seed=5)  # unbatched
    assert np.array_equal(single_h, h_all[0]) and np.array_equal(single_in, in_all[0])


def test_degenerate_inputs_give_nan_not_errors():
    rng = np.random.default_rng(1)
    src = np.zeros((4, 10, 2), np.float32)
    dst = np.zeros_like(src)
    src[0, :3] = dst[0, :3] = [[0, 0], [5, 1], [2, 7]]                       # 3 points only
    valid = np.zeros((4, 10), bool)
    valid[0, :3] = True
    t = np.linspace(0, 100, 10).astype(np.float32)                           # collinear
    src[1] = dst[1] = np.stack([t, 2 * t + 1], axis=1)
    valid[1] = True
    src[2] = rng.uniform(0, 50, (10, 2))                                     # NaNs everywhere but 3 points
    dst[2] = src[2] + 1
    dst[2, 3:] = np.nan
    valid[2] = True
    src[3] = rng.uniform(0, 50, (10, 2))                                     # a good pair in the same batch
    dst[3] = src[3] + [2, -1]
    valid[3] = True
    h, inl = find_homographies(src, dst, valid)
    assert np.isnan(h[:3]).all() and not inl[:3].any()
    assert np.allclose(h[3], [[1, 0, 2], [0, 1, -1], [0, 0, 1]], atol=1e-6) and inl[3].all()
    h0, inl0 = find_homographies(np.zeros((0, 0, 2), np.float32), np.zeros((0, 0, 2), np.float32))
    assert h0.shape == (0, 3, 3) and inl0.shape == (0, 0)


def test_keys_make_a_pair_independent_of_its_batch():
    """Keyed draws: a pair gives the same result at any position and beside any other pairs; without keys its
    draw follows its position in the batch."""
    src, dst, _ = _data(n_pairs=4, outliers=0.45)
    keys = np.array([11, 3, 4_000_000_000, 3], np.uint64)
    h_all, in_all = find_homographies(src, dst, seed=2, max_iters=8, refine=False, keys=keys)
    order = [3, 1, 0]
    h_some, in_some = find_homographies(src[order], dst[order], seed=2, max_iters=8, refine=False, keys=keys[order])
    assert np.array_equal(h_some, h_all[order]) and np.array_equal(in_some, in_all[order])
    single_h, _ = find_homographies(src[2], dst[2], seed=2, max_iters=8, refine=False, keys=keys[2])
    assert np.array_equal(single_h, h_all[2])
    moved, _ = find_homographies(src[[1, 2]], dst[[1, 2]], seed=2, max_iters=8, refine=False)  # unkeyed: keys 0 and 1
    keyed_as_moved, _ = find_homographies(src[2], dst[2], seed=2, max_iters=8, refine=False, keys=[1])
    assert np.array_equal(moved[1], keyed_as_moved)
    # the draw itself depends on the key (the refined result above may still agree)
    n = np.array([120])
    assert not np.array_equal(hm.sample_indices(2, n, 64, np.array([1], np.uint32)),
                              hm.sample_indices(2, n, 64, np.array([2], np.uint32)))


@pytest.mark.parametrize("keys", [[1, 2], [[1, 2, 3, 4, 5]], [-1, 0, 0, 0, 0], [0, 0, 0, 0, 2**32],
                                  [0.5, 0, 0, 0, 0]])
def test_bad_keys_are_named(keys):
    src = np.zeros((5, 6, 2), np.float32)
    with pytest.raises(ValueError, match="keys must be 5 integers"):
        find_homographies(src, src, keys=np.array(keys))


@pytest.mark.parametrize("bad, match", [
    (dict(threshold=0), "threshold"), (dict(max_iters=0), "max_iters"), (dict(confidence=1.0), "confidence"),
    (dict(seed=-1), "seed"),
])
def test_bad_arguments(bad, match):
    src = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match=match):
        find_homographies(src, src, **bad)
    with pytest.raises(ValueError, match="same shape"):
        find_homographies(src, src[:4])
    with pytest.raises(TypeError, match="float32"):
        find_homographies(src.astype(np.float64), src.astype(np.float64))


@pytest.mark.gpu
@pytest.mark.parametrize("keyed", [False, True])
def test_cuda_matches_reference(keyed):
    src, dst, _ = _data(n_pairs=40, n=300)
    keys = np.random.default_rng(3).integers(0, 2**32, 40, dtype=np.uint64) if keyed else None
    want_h, want_in = find_homographies_reference(src, dst, keys=keys)
    got_h, got_in = find_homographies(torch.from_numpy(src).cuda(), torch.from_numpy(dst).cuda(), backend="cuda",
                                      keys=keys)
    for b in range(len(src)):
        assert corner_error(got_h[b].cpu().numpy(), want_h[b], (320, 320)) <= 1e-6
    assert (got_in.cpu().numpy() == want_in).mean() >= 0.999


# --- OpenCV's adaptive loop, exact thresholds, the device path (on CPU tensors here) --------------------------------


def _update_num_iters(p: float, ep: float, model_points: int, max_iters: int) -> int:
    """cv::RANSACUpdateNumIters, line by line."""
    import math
    import sys

    p, ep = min(max(p, 0.0), 1.0), min(max(ep, 0.0), 1.0)
    num = max(1.0 - p, sys.float_info.min)
    denom = 1.0 - (1.0 - ep) ** model_points
    if denom < sys.float_info.min:
        return 0
    num, denom = math.log(num), math.log(denom)
    return max_iters if denom >= 0 or -num >= max_iters * -denom else round(num / denom)  # cvRound: half to even


def opencv_loop_winner(scores, n: int, confidence: float, max_iters: int) -> int:
    """The hypothesis cv::RANSACPointSetRegistrator::run keeps when its iterations score `scores` in order
    (modelPoints 4; -1 = a rejected sample): a better count updates the loop length from the current one."""
    niters, best, max_good = max_iters, -1, 0
    i = 0
    while i < niters:
        good = int(scores[i])
        if good > max(max_good, 3):
            best, max_good = i, good
            niters = _update_num_iters(confidence, (n - good) / n, 4, niters)
        i += 1
    return best


def _winners_torch(scores, n_valid, n_points, confidence):
    table, rows = hm.iteration_rows(torch.from_numpy(n_valid), n_points, confidence, scores.shape[1])
    return hm.pick_winners_torch(torch.from_numpy(scores), table, rows).numpy()


def test_the_adaptive_loop_stops_before_a_better_hypothesis():
    """Hypothesis 0 holds 90 of 100 points: OpenCV's loop shrinks to 5 iterations and never sees hypothesis 10's 95.
    Before any 4-inlier hypothesis the loop runs max_iters; -1 (rejected) and 3-inlier hypotheses change nothing."""
    n_valid = np.array([100, 100, 100, 30, 100])
    scores = np.full((5, 40), 20, np.int32)
    scores[0, 0], scores[0, 3], scores[0, 10] = 90, 91, 95
    scores[1, :] = -1
    scores[1, 7], scores[1, 30] = 60, 61                  # 60/100: 35 iterations, so hypothesis 30 is still seen
    scores[2, :] = 3                                      # never 4 inliers: no winner
    scores[3, 5], scores[3, 6] = 30, 30                   # all inliers: the loop ends at once; ties keep the first
    scores[4, :] = np.arange(40) % 7                      # counts rise slowly: the loop runs to max_iters
    want = [opencv_loop_winner(s, n, 0.995, 40) for s, n in zip(scores, n_valid, strict=True)]
    assert want == [3, 30, -1, 5, 6]  # the premise: OpenCV stops before index 10 in row 0
    assert list(hm.pick_winners(scores, n_valid, 0.995)) == want
    assert list(_winners_torch(scores, n_valid, 100, 0.995)) == want


def test_adaptive_loop_on_real_scores_matches_opencv_semantics():
    """On 10%-outlier data the loop stops early and keeps a hypothesis that is not the global best; the public op
    returns that hypothesis' model (refine=False)."""
    src, dst, _ = _data(n_pairs=4, n=60, outliers=0.1, seed=12)
    usable = hm._usable(src, dst, None)
    src_c, dst_c, n_valid = hm._compact(src, dst, usable)
    keys = np.arange(4, dtype=np.uint32)
    scores, models = hm.score_hypotheses_reference(src_c, dst_c, n_valid, keys, 512, 0, 9.0)
    want = np.array([opencv_loop_winner(s, n, 0.995, 512) for s, n in zip(scores, n_valid, strict=True)])
    assert (want != scores.argmax(axis=1)).sum() >= 2  # the premise: the loop stopped before the best twice
    assert np.array_equal(hm.pick_winners(scores, n_valid, 0.995), want)
    assert np.array_equal(_winners_torch(scores, n_valid, 60, 0.995), want)
    h, _ = find_homographies(src, dst, threshold=3.0, refine=False)
    assert np.array_equal(h.reshape(4, 9), models[np.arange(4), want])


def _on_threshold_case():
    """20 exact correspondences (dst = src on an integer grid), 10 exactly 3 px off (squared error 9 = 3**2), 10 far
    outliers. The 4-point DLT of exact points is the identity exactly, so the on-threshold errors are exactly 3."""
    grid = np.array([(x, y) for x in (3, 17, 41, 68, 90) for y in (5, 22, 47, 81)], np.float32)
    off = np.array([(x, y) for x in (11, 29, 55, 73, 96) for y in (13, 66)], np.float32)
    far = np.array([(x, 50.0) for x in range(10, 110, 10)], np.float32)
    src = np.concatenate([grid, off, far])
    shift = np.array([(3, 0), (0, 3), (-3, 0), (0, -3)] * 3, np.float32)[:10]
    dst = np.concatenate([grid, off + shift, far + [[0, 40]]]).astype(np.float32)
    return src[None], dst[None]


def test_correspondences_exactly_on_the_threshold_are_inliers():
    src, dst = _on_threshold_case()
    h, inliers = find_homographies(src, dst, threshold=3.0, refine=False, seed=1)
    assert np.array_equal(h[0], np.eye(3))  # the premise: the winning model (seed 1: hypothesis 1) is exact
    assert inliers[0].tolist() == [True] * 30 + [False] * 10
    n_valid = np.array([40], np.int32)
    keys = np.zeros(1, np.uint32)
    ref_scores, ref_models = hm.score_hypotheses_reference(src, dst, n_valid, keys, 64, 2, 9.0)
    twin_scores, twin_models = hm.score_hypotheses_host_twin(src, dst, n_valid, keys, 64, 2, 9.0)
    identity = (ref_models == np.eye(3).ravel()).all(axis=2) & (ref_scores >= 0)
    assert identity.sum() >= 4 and (ref_scores[identity] == 30).all()
    assert np.array_equal(twin_scores, ref_scores)
    below, _ = hm.score_hypotheses_reference(src, dst, n_valid, keys, 64, 2, np.nextafter(9.0, 0.0))
    assert (below[identity] == 20).all()  # the premise: those 10 points lie exactly on the threshold


def _cpu_scorer(src_c, dst_c, n_valid, keys, n_hyp, seed, thr2):
    """score_hypotheses_cuda's contract on CPU tensors, through the CUDA code's host twin."""
    scores, models = hm.score_hypotheses_host_twin(src_c.numpy(), dst_c.numpy(), n_valid.numpy(),
                                                   keys.numpy().view(np.uint32), n_hyp, seed, thr2)
    return torch.from_numpy(scores), torch.from_numpy(models)


@pytest.mark.parametrize("full_table", [True, False])
def test_device_path_equals_reference_without_host_compaction(monkeypatch, full_table):
    """The CUDA path's steps 1-3 (torch ops) run here on CPU tensors with the kernel's host twin as the scorer: the
    same homographies and inliers as the reference, bit for bit, and the host compaction is never called. Pairs of
    more than 256 points (the kernel's tile), NaN rows, a valid mask, keys; both iteration-table forms."""
    src, dst, _ = _data(n_pairs=3, n=300, outliers=0.3, seed=4)
    src[0, 5] = np.nan
    dst[2, 290:] = np.inf
    valid = np.ones((3, 300), bool)
    valid[1, ::4] = False
    keys = np.array([9, 2**32 - 1, 4], np.uint64)
    want_h, want_in = find_homographies_reference(src, dst, valid, keys=keys, max_iters=200)
    monkeypatch.setattr(hm, "score_hypotheses_cuda", _cpu_scorer)
    monkeypatch.setattr(hm, "_compact", lambda *a: pytest.fail("host compaction on the device path"))
    if not full_table:
        monkeypatch.setattr(hm, "_FULL_TABLE_MAX_POINTS", 16)
    got_h, got_in = hm._find_on_device(torch.from_numpy(src), torch.from_numpy(dst), torch.from_numpy(valid), keys,
                                       3.0, 200, 0.995, 0, True)
    assert np.array_equal(got_h, want_h, equal_nan=True) and np.array_equal(got_in, want_in)


def test_device_compaction_equals_host_compaction():
    src, dst, _ = _data(n_pairs=2, n=40, seed=6)
    src[0, ::3] = np.nan
    usable = hm._usable(src, dst, None)
    want = hm._compact(src, dst, usable)
    t_usable = hm.usable_torch(torch.from_numpy(src), torch.from_numpy(dst), None)
    assert np.array_equal(t_usable.numpy(), usable)
    got = hm.compact_torch(torch.from_numpy(src), torch.from_numpy(dst), t_usable)
    for w, g in zip(want, got, strict=True):
        assert np.array_equal(g.numpy(), w, equal_nan=True)


@pytest.mark.gpu
def test_cuda_raw_scores_and_models_bit_for_bit_across_tiles():
    """The kernel's scores and models equal the reference's and the host twin's exactly, for pairs of more than one
    256-point shared-memory tile (257, 511, 512, 600 usable points) and one of fewer."""
    src, dst, _ = _data(n_pairs=5, n=600, outliers=0.3, seed=8)
    n_valid = np.array([257, 511, 512, 600, 100], np.int32)
    keys = np.array([1, 2, 3, 2**32 - 1, 0], np.uint32)
    want_scores, want_models = hm.score_hypotheses_reference(src, dst, n_valid, keys, 300, 3, 9.0)
    twin_scores, _ = hm.score_hypotheses_host_twin(src, dst, n_valid, keys, 300, 3, 9.0)
    assert np.array_equal(twin_scores, want_scores)
    got_scores, got_models = hm.score_hypotheses_cuda(
        torch.from_numpy(src).cuda(), torch.from_numpy(dst).cuda(), torch.from_numpy(n_valid).cuda(),
        torch.from_numpy(keys.view(np.int32)).cuda(), 300, 3, 9.0)
    got_scores, got_models = got_scores.cpu().numpy(), got_models.cpu().numpy()
    assert np.array_equal(got_scores, want_scores)
    ok = want_scores >= 0
    assert ok.mean() > 0.5 and np.array_equal(got_models[ok], want_models[ok])


@pytest.mark.gpu
def test_cuda_find_homographies_equals_reference_exactly():
    src, dst, _ = _data(n_pairs=12, n=400, seed=9)
    src[3, 7] = np.nan
    want_h, want_in = find_homographies_reference(src, dst)
    got_h, got_in = find_homographies(torch.from_numpy(src).cuda(), torch.from_numpy(dst).cuda(), backend="cuda")
    assert got_h.is_cuda and got_in.is_cuda
    assert np.array_equal(got_h.cpu().numpy(), want_h, equal_nan=True)
    assert np.array_equal(got_in.cpu().numpy(), want_in)
    s, d = _on_threshold_case()
    h, inl = find_homographies(torch.from_numpy(s).cuda(), torch.from_numpy(d).cuda(), refine=False, seed=1,
                               backend="cuda")
    assert np.array_equal(h.cpu().numpy()[0], np.eye(3)) and inl.cpu().numpy()[0].tolist() == [True] * 30 + [False] * 10
