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


@pytest.mark.parametrize("mode", ["hull_expand", "box_expand"])
def test_triton_with_gpu_block_sizes(triton_blocks, mode):
    """3 x 30 x 45 = 4050 pixels: 4 programs of the GPU's 1024 (the last partial), so dilation rows and polygon
    fills cross program edges as on the GPU."""
    m = _masks()
    got = augment_mask(torch.from_numpy(np.packbits(m.ravel())), mode, 2, shape=m.shape, backend="triton")
    np.testing.assert_array_equal(got.numpy(), augment_mask_reference(m, mode, 2))


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


def _oracle_hull(frame: np.ndarray) -> np.ndarray:
    """Independent oracle: OpenCV's point-in-polygon test (exact on integer points) against cv2.convexHull of all
    foreground pixels; >= 0 is inside or on the hull. Degenerate hulls (1-2 vertices) are the segment between them."""
    points = cv2.findNonZero(frame.astype(np.uint8))
    out = np.zeros(frame.shape, bool)
    if points is None:
        return out
    hull = cv2.convexHull(points).reshape(-1, 2)
    ys, xs = np.mgrid[: frame.shape[0], : frame.shape[1]]
    if len(hull) <= 2:
        a, b = hull[0].astype(np.int64), hull[-1].astype(np.int64)
        cross = (b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0])
        within = (xs >= min(a[0], b[0])) & (xs <= max(a[0], b[0])) & (ys >= min(a[1], b[1])) & (ys <= max(a[1], b[1]))
        return (cross == 0) & within
    contour = hull.reshape(-1, 1, 2).astype(np.int32)
    for y, x in zip(ys.ravel(), xs.ravel(), strict=True):
        out[y, x] = cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0
    return out


def _degenerate_masks():
    m = np.zeros((7, 9, 12), bool)
    m[0, 4, 5] = True                      # one pixel
    m[1, 2, 1:11] = True                   # horizontal line
    m[2, :, 0] = True                      # vertical line on the border
    m[3, [1, 3, 5, 7], [2, 4, 6, 8]] = True  # diagonal with gaps: the hull is the whole segment
    m[4, 0, 0] = m[4, 8, 11] = True        # two far corners
    m[5] = True                            # full frame
    m[6, [0, 8, 0], [0, 0, 11]] = True     # a right triangle of three corners
    return m


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_hull_equals_the_point_in_polygon_oracle(backend):
    for m in (_masks(), _degenerate_masks(), np.random.default_rng(4).random((3, 13, 17)) < 0.08):
        x = m if backend == "reference" else torch.from_numpy(m)
        got = augment_mask(x, "hull", backend=backend)
        got = got.numpy() if isinstance(got, torch.Tensor) else got
        for t in range(m.shape[0]):
            np.testing.assert_array_equal(got[t], _oracle_hull(m[t]), err_msg=f"frame {t}")
            assert (got[t] >= m[t]).all()


@settings(max_examples=15, deadline=None)
@given(t=st.integers(1, 3), h=st.integers(1, 24), w=st.integers(1, 24), k=st.integers(0, 3),
       density=st.sampled_from([0.0, 0.02, 0.2]), mode=st.sampled_from(["hull", "hull_expand"]),
       seed=st.integers(0, 1000))
def test_triton_hull_random_shapes(t, h, w, k, density, mode, seed):
    m = np.random.default_rng(seed).random((t, h, w)) < density
    np.testing.assert_array_equal(augment_mask(torch.from_numpy(m), mode, k, backend="triton").numpy(),
                                  augment_mask_reference(m, mode, k))
