"""rgb_to_gray and canny: the numpy restatement and every backend against OpenCV, bit for bit."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkle_fast.ops import edges as canny_ops
from sparkle_fast.ops.edges import canny, canny_numpy, canny_reference, rgb_to_gray, rgb_to_gray_reference

skimage_data = pytest.importorskip("skimage.data")

THRESHOLDS = [(100, 200), (50, 60), (200, 100), (30, 30), (10.7, 300.2), (0, 0), (-5, 2000)]


def photographs() -> dict[str, np.ndarray]:
    """RGB photographs from scikit-image (camera is gray: replicated to RGB)."""
    camera = skimage_data.camera()
    return {
        "astronaut": skimage_data.astronaut(),
        "coffee": skimage_data.coffee(),
        "chelsea": skimage_data.chelsea(),
        "camera": np.repeat(camera[..., None], 3, axis=2),
    }


def adversarial() -> dict[str, np.ndarray]:
    """Gray images built to hit OpenCV's border, tie and sector rules."""
    rng = np.random.default_rng(7)
    h, w = 24, 40
    yy, xx = np.mgrid[:h, :w]
    images = {
        "flat0": np.zeros((h, w), np.uint8),
        "flat255": np.full((h, w), 255, np.uint8),
        "step_vertical": np.where(xx >= w // 2, 200, 10).astype(np.uint8),
        "step_horizontal": np.where(yy >= h // 2, 200, 10).astype(np.uint8),
        "ramp_x": (xx * 6).astype(np.uint8),  # equal gradient everywhere: NMS ties on the plateau
        "ramp_y": (yy * 9).astype(np.uint8),
        "ramp_diag": ((xx + yy) * 4).astype(np.uint8),
        "ramp_antidiag": ((xx - yy + h) * 4).astype(np.uint8),
        "line_h": np.where(yy == 7, 255, 0).astype(np.uint8),
        "line_v": np.where(xx == 11, 255, 0).astype(np.uint8),
        "line_diag": np.where(xx == yy + 5, 255, 0).astype(np.uint8),
        "line_antidiag": np.where(xx + yy == 30, 180, 20).astype(np.uint8),
        "staircase": np.where(xx >= 2 * (yy // 2) + 3, 230, 0).astype(np.uint8),
        "staircase_steep": np.where(yy >= 2 * (xx // 3), 160, 0).astype(np.uint8),
        "checker": (((xx // 3 + yy // 3) % 2) * 255).astype(np.uint8),
        "border_box": np.pad(np.full((h - 6, w - 6), 250, np.uint8), ((0, 6), (6, 0))),
        "border_lines": np.where((xx == 0) | (yy == h - 1) | (xx == w - 1), 255, 0).astype(np.uint8),
        "dot": np.where((xx == 0) & (yy == 0), 255, 0).astype(np.uint8),
        "blocks": (rng.integers(0, 4, (h // 4, w // 4)) * 80).astype(np.uint8).repeat(4, 0).repeat(4, 1),
        "noise": rng.integers(0, 256, (h, w), dtype=np.uint8),
        "low_contrast": rng.integers(100, 112, (h, w), dtype=np.uint8),
    }
    return images


def thin_shapes() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [np.array([[0]], np.uint8), np.array([[0, 255], [255, 0]], np.uint8),
            rng.integers(0, 256, (1, 33), dtype=np.uint8), rng.integers(0, 256, (29, 1), dtype=np.uint8),
            np.repeat(np.array([[0, 0, 0, 255, 255, 255, 0]], np.uint8), 1, 0),
            np.array([[0], [0], [255], [255], [255]], np.uint8), rng.integers(0, 256, (2, 50), dtype=np.uint8)]


# --- the definition against OpenCV ---------------------------------------------------------------------------------


def test_gray_weights_equal_opencv_on_every_rgb_value():
    values = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([(values >> 16) & 255, (values >> 8) & 255, values & 255], axis=-1).astype(np.uint8)
    rgb = rgb.reshape(4096, 4096, 3)
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(canny_ops.rgb_to_gray_numpy(rgb), expected)
    np.testing.assert_array_equal(rgb_to_gray_reference(rgb[None, :64]), expected[None, :64])


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "camera"])
@pytest.mark.parametrize("low,high", THRESHOLDS)
def test_numpy_restatement_equals_opencv_on_photographs(name, low, high):
    rgb = photographs()[name]
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    expected = cv2.Canny(gray, low, high, apertureSize=3, L2gradient=False)
    assert expected.any() or high > 1000  # the photographs do have edges below such a high threshold
    np.testing.assert_array_equal(canny_numpy(rgb[None], low, high)[0], expected)
    np.testing.assert_array_equal(canny_reference(gray[None], low, high)[0], expected)


@pytest.mark.parametrize("low,high", THRESHOLDS)
def test_numpy_restatement_equals_opencv_on_adversarial_images(low, high):
    for name, gray in list(adversarial().items()) + [(f"thin{i}", g) for i, g in enumerate(thin_shapes())]:
        expected = cv2.Canny(gray, low, high)
        np.testing.assert_array_equal(canny_numpy(gray[None], low, high)[0], expected, err_msg=name)


def test_thresholds_follow_opencv():
    assert canny_ops.opencv_thresholds(200, 100) == (100, 200)
    assert canny_ops.opencv_thresholds(10.9, 20.1) == (10, 20)
    assert canny_ops.opencv_thresholds(-50, 1e9) == (-1, 4096)
    gray = adversarial()["blocks"][None]
    np.testing.assert_array_equal(canny_reference(gray, 200, 100), canny_reference(gray, 100, 200))


# --- the Triton kernels (under the interpreter on CPU) -------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_triton_equals_opencv_on_photograph_crops(name):
    rgb = photographs()[name][150:214, 180:380]  # small crops: the interpreter runs programs one by one
    video = np.stack([rgb, np.ascontiguousarray(rgb[::-1])])
    expected = canny_reference(video, 100, 200)
    got = canny(torch.from_numpy(video), 100, 200, backend="triton").numpy()
    np.testing.assert_array_equal(got, expected)
    gray = rgb_to_gray_reference(video)
    np.testing.assert_array_equal(canny(torch.from_numpy(gray), 100, 200, backend="triton").numpy(), expected)


@pytest.mark.parametrize("low,high", [(100, 200), (200, 100), (30, 30), (0, 0)])
def test_triton_equals_opencv_on_adversarial_images(low, high):
    images = adversarial()
    video = np.stack(list(images.values()))  # one batch: frames never interact
    expected = canny_reference(video, low, high)
    got = canny(torch.from_numpy(video), low, high, backend="triton").numpy()
    for t, name in enumerate(images):
        np.testing.assert_array_equal(got[t], expected[t], err_msg=name)


def test_triton_thin_shapes():
    for gray in thin_shapes():
        expected = canny_reference(gray[None], 20, 40)
        np.testing.assert_array_equal(canny(torch.from_numpy(gray[None]), 20, 40, backend="triton").numpy(),
                                      expected, err_msg=str(gray.shape))


def test_triton_hysteresis_follows_long_chains():
    # A snake of weak edges that touches a strong square at one end: the whole snake must light up, across tiles.
    h = w = 70
    img = np.zeros((h, w), np.uint8)
    points = []
    for i in range(7):
        y = 4 + i * 9
        points += [(3, y), (w - 4, y)] if i % 2 == 0 else [(w - 4, y), (3, y)]
    cv2.polylines(img, [np.array(points, np.int32)], False, 90, thickness=3)
    img[0:8, 0:8] = 255
    expected = canny_reference(img[None], 150, 700)
    got = canny(torch.from_numpy(img[None]), 150, 700, backend="triton").numpy()
    assert np.count_nonzero(expected) > 900  # the snake is long and all of it is connected to the strong square
    np.testing.assert_array_equal(got, expected)


def test_triton_non_contiguous_inputs():
    rgb = photographs()["coffee"][100:180:2, 50:250]  # row stride 2, a view
    frames = torch.from_numpy(np.ascontiguousarray(np.stack([rgb, rgb[:, ::-1]])))
    strided = frames.permute(0, 2, 1, 3)  # transposed frames: W and H strides swapped
    assert not strided.is_contiguous()
    expected = canny_reference(strided.numpy(), 100, 200)
    np.testing.assert_array_equal(canny(strided, backend="triton").numpy(), expected)
    channels_first = torch.from_numpy(np.ascontiguousarray(np.moveaxis(rgb, -1, 0)))[None].permute(0, 2, 3, 1)
    np.testing.assert_array_equal(canny(channels_first, backend="triton").numpy(), canny_reference(rgb[None]))
    reversed_numpy = np.stack([rgb])[:, :, ::-1]  # negative strides: copied on the way in
    np.testing.assert_array_equal(rgb_to_gray(torch.from_numpy(reversed_numpy.copy()), backend="triton").numpy(),
                                  rgb_to_gray_reference(reversed_numpy))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=st.integers(1, 3), h=st.integers(1, 37), w=st.integers(1, 70), rgb=st.booleans(),
       block=st.sampled_from([1, 2, 3, 5]), levels=st.integers(2, 6), low=st.integers(0, 300), high=st.integers(0, 300),
       seed=st.integers(0, 2**31))
def test_triton_equals_opencv_on_random_shapes(t, h, w, rgb, block, levels, low, high, seed):
    rng = np.random.default_rng(seed)
    shape = (t, -(-h // block), -(-w // block)) + ((3,) if rgb else ())
    coarse = (rng.integers(0, levels, shape) * (255 // (levels - 1))).astype(np.uint8)
    video = np.ascontiguousarray(coarse.repeat(block, 1).repeat(block, 2)[:, :h, :w])
    expected = canny_reference(video, low, high)
    np.testing.assert_array_equal(canny(torch.from_numpy(video), low, high, backend="triton").numpy(), expected)


# 5x5 frames whose centre has Sobel (dx, dy) = (239, 99) and (-239, 99): |dy| << 15 = 3244032 lies between
# 239 * 13573 = 3243947 and 239 * 13574 = 3244186, so the centre is diagonal with OpenCV's tan(22.5 deg) in Q15 and
# horizontal with a constant one too large, and the non-maximum suppression (hence the edges) differs.
SECTOR_BOUNDARY_FRAMES = {
    (239, 99): [[205, 72, 112, 237, 255], [106, 99, 98, 91, 156], [163, 170, 199, 229, 69], [21, 105, 73, 234, 188],
                [81, 203, 167, 150, 219]],
    (-239, 99): [[135, 42, 105, 132, 205], [236, 235, 180, 70, 124], [142, 177, 102, 168, 101],
                 [64, 166, 244, 110, 162], [64, 68, 58, 218, 109]],
}


def _sector_is_horizontal(dx: int, dy: int, tg22_q15: int) -> bool:
    return (abs(dy) << 15) < abs(dx) * tg22_q15


def _sector_boundary_video() -> np.ndarray:
    """The two 5x5 frames, plus a 40x150 frame holding both patches across the GPU's 16x64 tile edges."""
    big = np.full((40, 150), 90, np.uint8)
    big[13:18, 61:66] = SECTOR_BOUNDARY_FRAMES[(239, 99)]
    big[30:35, 126:131] = SECTOR_BOUNDARY_FRAMES[(-239, 99)]
    small = np.zeros((2, 40, 150), np.uint8)
    for t, frame in enumerate(SECTOR_BOUNDARY_FRAMES.values()):
        small[t, :5, :5] = frame
    return np.concatenate([small, big[None]])


def test_sector_boundary_gradients_pin_the_tan_constant(triton_blocks, monkeypatch):
    """Gradients exactly between two sectors: the numpy restatement and the Triton kernel equal cv2.Canny there."""
    for (dx, dy), frame in SECTOR_BOUNDARY_FRAMES.items():
        gray = np.array(frame, np.uint8)
        g = gray.astype(int)
        sobel_dx = (g[1, 3] - g[1, 1]) + 2 * (g[2, 3] - g[2, 1]) + (g[3, 3] - g[3, 1])
        sobel_dy = (g[3, 1] - g[1, 1]) + 2 * (g[3, 2] - g[1, 2]) + (g[3, 3] - g[1, 3])
        assert (sobel_dx, sobel_dy) == (dx, dy)
        assert not _sector_is_horizontal(dx, dy, 13573) and _sector_is_horizontal(dx, dy, 13574)  # the premise
    video = _sector_boundary_video()
    want = canny_reference(video, 100, 200)
    with monkeypatch.context() as patched:  # the premise: one more in the constant changes the edges
        patched.setattr(canny_ops, "TG22_Q15", 13574)
        assert (canny_numpy(video, 100, 200) != want).sum() >= 3
    np.testing.assert_array_equal(canny_numpy(video, 100, 200), want)
    np.testing.assert_array_equal(canny(torch.from_numpy(video), 100, 200, backend="triton").numpy(), want)


def test_triton_rgb_to_gray():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 17, 23, 3), dtype=np.uint8)
    np.testing.assert_array_equal(rgb_to_gray(torch.from_numpy(frames), backend="triton").numpy(),
                                  cv2.cvtColor(frames.reshape(-1, 23, 3), cv2.COLOR_RGB2GRAY).reshape(2, 17, 23))


# --- API -----------------------------------------------------------------------------------------------------------


def test_auto_backend_on_host_inputs_is_the_reference_and_keeps_the_kind():
    gray = adversarial()["blocks"][None]
    out = canny(gray)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == gray.shape
    np.testing.assert_array_equal(out, canny_reference(gray))
    as_torch = canny(torch.from_numpy(gray))
    assert isinstance(as_torch, torch.Tensor)
    np.testing.assert_array_equal(as_torch.numpy(), out)
    assert set(np.unique(out)) <= {0, 255}


def test_empty_inputs():
    for backend in ("reference", "triton"):
        out = canny(torch.zeros((0, 5, 5), dtype=torch.uint8), backend=backend)
        assert tuple(out.shape) == (0, 5, 5)
        out = canny(torch.zeros((2, 0, 5, 3), dtype=torch.uint8), backend=backend)
        assert tuple(out.shape) == (2, 0, 5)


def test_errors_name_the_argument():
    with pytest.raises(TypeError, match="images must have dtype uint8"):
        canny(np.zeros((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"images must be gray \(T, H, W\) or RGB"):
        canny(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="low must be a finite number"):
        canny(np.zeros((1, 4, 4), np.uint8), low=float("nan"))
    with pytest.raises(ValueError, match="last dimension of 3"):
        rgb_to_gray(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(TypeError, match="frames must be a numpy array"):
        rgb_to_gray([[1, 2, 3]])


# --- on the GPU ----------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "auto"])
def test_gpu_equals_opencv_on_photographs(backend):
    video = np.stack([photographs()[name][:400, :400] for name in ("astronaut", "coffee", "chelsea", "camera")])
    for low, high in THRESHOLDS:
        expected = canny_reference(video, low, high)
        got = canny(torch.from_numpy(video).cuda(), low, high, backend=backend)
        assert got.is_cuda
        np.testing.assert_array_equal(got.cpu().numpy(), expected)


@pytest.mark.gpu
def test_gpu_long_batch_and_adversarial():
    images = adversarial()
    video = np.stack(list(images.values()) * 20)
    for low, high in [(100, 200), (30, 30), (0, 0)]:
        got = canny(torch.from_numpy(video).cuda(), low, high).cpu().numpy()
        np.testing.assert_array_equal(got, canny_reference(video, low, high))
    rng = np.random.default_rng(1)
    big = (rng.integers(0, 3, (6, 90, 160, 3)) * 100).astype(np.uint8).repeat(8, 1).repeat(8, 2)  # 720x1280
    np.testing.assert_array_equal(canny(torch.from_numpy(big).cuda()).cpu().numpy(), canny_reference(big))


def test_real_video_frames(real_clips):
    """Frames of real H.264 clips (decoded with sparkle_fast.video): the numpy restatement on whole frames, Triton
    on crops, both equal to cv2.Canny(cvtColor(frame, RGB2GRAY), 100, 200)."""
    from sparkle_fast import video

    for name in ("bigbuckbunny", "bikes", "carphone"):
        frames = video.read_frames(real_clips[name], indices=[0, 10]).frames.numpy()
        want = np.stack([cv2.Canny(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), 100, 200) for f in frames])
        np.testing.assert_array_equal(canny_reference(frames), want, err_msg=name)
        np.testing.assert_array_equal(canny_numpy(frames), want, err_msg=name)
        crop = np.ascontiguousarray(frames[:, :90, :130])
        want_crop = np.stack([cv2.Canny(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), 100, 200) for f in crop])
        np.testing.assert_array_equal(canny(torch.from_numpy(crop), backend="triton").numpy(), want_crop, err_msg=name)
