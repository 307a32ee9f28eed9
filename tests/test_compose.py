"""compose_edges, the ablation baselines and the fused control_video against their references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparkle_fast.ops import compose as compose_ops
from sparkle_fast.ops.compose import compose_edges, control_video, copy_paste_composite, foreground_only_control
from sparkle_fast.ops.edges import canny_reference

skimage_data = pytest.importorskip("skimage.data")


def _clip(t=3, h=40, w=72, seed=0):
    """Two small RGB videos cut from photographs (moving crops) and a blob mask."""
    rng = np.random.default_rng(seed)
    src_img, bg_img = skimage_data.astronaut(), skimage_data.coffee()
    src = np.stack([src_img[150 + 3 * i:150 + 3 * i + h, 180 + 2 * i:180 + 2 * i + w] for i in range(t)])
    bg = np.stack([bg_img[100 + i:100 + i + h, 200:200 + w] for i in range(t)])
    yy, xx = np.mgrid[:h, :w]
    mask = np.stack([(yy - h / 2) ** 2 + (xx - w / 2 - 5 * i) ** 2 < (h / 3) ** 2 for i in range(t)])
    mask[0, 0, :5] = True  # a mask touching the border
    mask[-1] |= rng.random((h, w)) < 0.02
    return src, bg, mask


def test_reference_semantics():
    src, bg, mask = _clip()
    se, be = canny_reference(src), canny_reference(bg)
    out = compose_edges(se, be, mask)
    assert out.shape == mask.shape + (3,) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], np.where(mask, se, be))
    assert (out == out[..., :1]).all()
    fg = foreground_only_control(se, mask)
    np.testing.assert_array_equal(fg[..., 1], np.where(mask, se, 0))
    cp = copy_paste_composite(src, bg, mask)
    np.testing.assert_array_equal(cp, np.where(mask[..., None], src, bg))
    np.testing.assert_array_equal(control_video(src, bg, mask), out)


def test_packed_mask_and_dilation_reference():
    src, bg, mask = _clip()
    se, be = canny_reference(src), canny_reference(bg)
    packed = np.packbits(mask.ravel())
    np.testing.assert_array_equal(compose_edges(se, be, packed), compose_edges(se, be, mask))
    dilated = compose_edges(se, be, mask, dilate=2)
    import cv2

    grown = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0 for m in mask])
    np.testing.assert_array_equal(dilated[..., 2], np.where(grown, se, be))
    assert grown[0, 0, :7].all()  # dilation at the border stays inside the frame


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("dilate", [0, 3])
def test_triton_compose_and_baselines(packed, dilate):
    src, bg, mask = _clip()
    se, be = canny_reference(src), canny_reference(bg)
    m = np.packbits(mask.ravel()) if packed else mask
    tt = torch.from_numpy
    for got, want in [
        (compose_edges(tt(se), tt(be), tt(m), dilate=dilate, backend="triton"),
         compose_edges(se, be, m, dilate=dilate)),
        (foreground_only_control(tt(se), tt(m), dilate=dilate, backend="triton"),
         foreground_only_control(se, m, dilate=dilate)),
        (copy_paste_composite(tt(src), tt(bg), tt(m), dilate=dilate, backend="triton"),
         copy_paste_composite(src, bg, m, dilate=dilate)),
    ]:
        assert isinstance(got, torch.Tensor)
        np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("packed,dilate,rgb", [(False, 0, True), (True, 0, True), (True, 2, False)])
def test_triton_fused_control_video(packed, dilate, rgb):
    src, bg, mask = _clip(t=2)
    if not rgb:
        src, bg = src[..., 1].copy(), bg[..., 1].copy()
    m = np.packbits(mask.ravel()) if packed else mask.astype(np.uint8)
    want = compose_ops.control_video_reference(src, bg, mask, 100, 200, dilate=dilate)
    got = control_video(torch.from_numpy(src), torch.from_numpy(bg), torch.from_numpy(m), dilate=dilate,
                        backend="triton")
    np.testing.assert_array_equal(got.numpy(), want)
    assert (want == 255).any() and (want == 0).any()


def test_triton_with_gpu_block_sizes(triton_blocks):
    """2 frames of 40 x 72: with the GPU's sizes, 3 x 2 Canny tiles per frame (the last row and column partial),
    12 hysteresis blocks and 6 compose blocks; the control video and the edge-map composition equal the reference."""
    src, bg, mask = _clip(t=2)
    packed = np.packbits(mask.ravel())
    want = compose_ops.control_video_reference(src, bg, mask, 100, 200)
    got = control_video(torch.from_numpy(src), torch.from_numpy(bg), torch.from_numpy(packed), backend="triton")
    np.testing.assert_array_equal(got.numpy(), want)
    se, be = src[..., 0].copy(), bg[..., 1].copy()
    got = compose_edges(torch.from_numpy(se), torch.from_numpy(be), torch.from_numpy(mask), backend="triton")
    np.testing.assert_array_equal(got.numpy(), compose_ops.compose_edges_reference(se, be, mask))


def test_background_of_another_size_is_resized():
    src, _, mask = _clip(t=2)
    big_bg = np.stack([skimage_data.chelsea()[:80, :144]] * 2)  # twice the source size
    want = compose_ops.control_video_reference(src, big_bg, mask)
    np.testing.assert_array_equal(control_video(src, big_bg, mask), want)
    got = control_video(torch.from_numpy(src), torch.from_numpy(big_bg), torch.from_numpy(mask), backend="triton")
    np.testing.assert_array_equal(got.numpy(), want)
    pasted = copy_paste_composite(src, big_bg, mask)
    assert pasted.shape == src.shape


def test_errors():
    src, bg, mask = _clip(t=2)
    se = canny_reference(src)
    with pytest.raises(ValueError, match="src_video has 2 frames, bg_video has 1 frames"):
        control_video(src, bg[:1], mask)
    with pytest.raises(ValueError, match="source has 2 frames, mask has 1 frames"):
        compose_edges(se, se, mask[:1])
    with pytest.raises(ValueError, match="src_edges frames are"):
        compose_edges(se, se[:, :10], mask)
    with pytest.raises(ValueError, match="bytes but shape"):
        compose_edges(se, se, np.packbits(mask.ravel())[:-1])
    with pytest.raises(ValueError, match="dilate must be an integer"):
        compose_edges(se, se, mask, dilate=-1)
    with pytest.raises(TypeError, match="mask must have dtype bool or uint8"):
        compose_edges(se, se, mask.astype(np.float32))


@pytest.mark.gpu
@pytest.mark.parametrize("packed", [False, True])
def test_gpu_control_video(packed):
    src, bg, mask = _clip(t=5, h=200, w=300)
    m = np.packbits(mask.ravel()) if packed else mask
    want = compose_ops.control_video_reference(src, bg, mask, dilate=3)
    got = control_video(torch.from_numpy(src).cuda(), torch.from_numpy(bg).cuda(), torch.from_numpy(m).cuda(),
                        dilate=3)
    assert got.is_cuda
    np.testing.assert_array_equal(got.cpu().numpy(), want)
    want0 = compose_ops.control_video_reference(src, bg, mask)
    got0 = control_video(torch.from_numpy(src).cuda(), torch.from_numpy(bg).cuda(), torch.from_numpy(m).cuda())
    np.testing.assert_array_equal(got0.cpu().numpy(), want0)
