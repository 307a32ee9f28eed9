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
