"""VIVID-10M mask augmentations against their references."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkle_fast.ops.mask_augment import MODES, augment_mask, augment_mask_reference, dilate_mask


def _masks(seed=0, t=3, h=30, w=45):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    m = np.zeros((t, h, w), bool)
    m[0] = ((yy - 10) ** 2 + (xx - 30) ** 2 < 40) | ((yy > 20) & (xx < 6))  # two blobs, one on the border
    m[1] = rng.random((h, w)) < 0.01
    # m[2] stays empty
    return m


def test_reference_modes():
    m = _masks()
    box = augment_mask(m, "bbox")
    rows, cols = np.nonzero(m[0])
    assert box[0, rows.min():rows.max() + 1, cols.min():cols.max() + 1].all() and box[0].sum() == (
        (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1))
    assert not box[2].any() and not augment_mask(m, "hull")[2].any()
    hull = augment_mask(m, "hull")
    assert (hull >= m).all() and (box >= hull).all()
    pts = cv2.convexHull(cv2.findNonZero(m[0].astype(np.uint8)))
    ys, xs = np.nonzero(hull[0])
    assert all(cv2.pointPolygonTest(pts, (float(x), float(y)), True) >= -1 for x, y in zip(xs, ys, strict=True))
    expand = augment_mask(m, "expand", 2)
    np.testing.assert_array_equal(expand[0], cv2.dilate(m[0].astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)
    np.testing.assert_array_equal(augment_mask(m, "box_expand", 3), dilate_mask(box, 3))
    np.testing.assert_array_equal(augment_mask(m, "hull_expand", 1), dilate_mask(hull, 1))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k", [0, 1, 4])
def test_triton_equals_reference(mode, k):
    m = _masks()
    want = augment_mask_reference(m, mode, k)
    got = augment_mask(torch.from_numpy(m), mode, k, backend="triton")
    assert got.dtype == torch.bool
    np.testing.assert_array_equal(got.numpy(), want)
    packed = augment_mask(torch.from_numpy(np.packbits(m.ravel())), mode, k, shape=m.shape, backend="triton")
    np.testing.assert_array_equal(packed.numpy(), want)


@settings(max_examples=10, deadline=None)
@given(t=st.integers(1, 2), h=st.integers(1, 20), w=st.integers(1, 20), k=st.integers(0, 5),
       mode=st.sampled_from(["expand", "bbox", "box_expand"]), seed=st.integers(0, 1000))
def test_triton_random_shapes(t, h, w, k, mode, seed):
    m = np.random.default_rng(seed).random((t, h, w)) < 0.05
    np.testing.assert_array_equal(augment_mask(torch.from_numpy(m), mode, k, backend="triton").numpy(),
                                  augment_mask_reference(m, mode, k))


def test_errors():
    m = _masks()
    with pytest.raises(ValueError, match="mode must be one of"):
        augment_mask(m, "circle")
    with pytest.raises(ValueError, match="k must be an integer"):
        augment_mask(m, "expand", -2)
    with pytest.raises(ValueError, match="also pass its shape"):
        augment_mask(np.packbits(m.ravel()), "bbox")


@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES)
def test_gpu_equals_reference(mode):
    m = np.repeat(_masks(h=200, w=300), 3, axis=0)
    want = augment_mask_reference(m, mode, 7)
    got = augment_mask(torch.from_numpy(m).cuda(), mode, 7)
    assert got.is_cuda
    np.testing.assert_array_equal(got.cpu().numpy(), want)
