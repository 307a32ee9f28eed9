"""Judge-free metrics on constructed videos whose answers are known: an unchanged video has perfect fidelity, a
blurred foreground loses it, a frozen background has no dynamics, a steady video has no flicker, an output drawn
from its own control video matches it; SSIM equals skimage's."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.metrics import structural_similarity

from sparkle_fast.metrics import (
    METRIC_KEYS,
    background_motion,
    edge_f1,
    flicker,
    foreground_psnr,
    foreground_ssim,
    sample_metrics,
)

T, H, W = 6, 48, 64


def _texture(seed: int, height: int = H + 16, width: int = W + 16) -> np.ndarray:
    """A real photograph crop (textured everywhere, so optical flow and SSIM have structure to work on)."""
    image = [skdata.astronaut(), skdata.coffee(), skdata.chelsea()][seed % 3]
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))


def _scene(bg_shift: int = 0, fg_shift: int = 2):
    """(video uint8 (T, H, W, 3), mask bool (T, H, W)): a textured background moving bg_shift px per frame to the
    right, with a 16x20 textured subject moving fg_shift px per frame."""
    background, subject = _texture(0), _texture(1, 16, 20)
    frames, masks = [], []
    for t in range(T):
        frame = np.roll(background, bg_shift * t, axis=1)[8:8 + H, 8:8 + W].copy()
        y, x = 16, 8 + fg_shift * t
        frame[y:y + 16, x:x + 20] = subject
        mask = np.zeros((H, W), bool)
        mask[y:y + 16, x:x + 20] = True
        frames.append(frame)
        masks.append(mask)
    return np.stack(frames), np.stack(masks)


def _blur_inside(video, mask, sigma):
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in video])
    return np.where(mask[..., None], blurred, video)


def test_unchanged_video_has_perfect_fidelity():
    video, mask = _scene()
    psnr, pixels = foreground_psnr(video, video.copy(), mask, erode_px=2)
    ssim, _ = foreground_ssim(video, video.copy(), mask, erode_px=0)
    assert psnr == 100.0 and pixels == T * 12 * 16  # 16x20 subject eroded by 2 px on each side
    assert ssim == pytest.approx(1.0, abs=1e-12)


def test_blurred_foreground_loses_fidelity_in_order():
    video, mask = _scene()
    light, heavy = _blur_inside(video, mask, 0.8), _blur_inside(video, mask, 3.0)
    psnr = [foreground_psnr(video, v, mask)[0] for v in (video, light, heavy)]
    ssim = [foreground_ssim(video, v, mask, erode_px=0)[0] for v in (video, light, heavy)]
    assert psnr[0] > psnr[1] > psnr[2] and psnr[2] < 40
    assert ssim[0] > ssim[1] > ssim[2] and ssim[2] < 0.9
    # The background is not measured: blurring only outside the mask leaves foreground fidelity perfect.
    outside = _blur_inside(video, ~mask, 3.0)
    assert foreground_psnr(video, outside, mask, erode_px=3)[0] == 100.0


@pytest.mark.parametrize("shape", [(2, 40, 53), (1, 23, 31)])
def test_ssim_equals_skimage(shape):
    """Full-frame mask: equal to skimage's mean SSIM (Gaussian window, population covariance) within 1e-6; a partial
    mask: the mean of skimage's SSIM map over the mask's pixels inside the cropped border."""
    rng = np.random.default_rng(shape[1])
    a = cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8).transpose(1, 2, 0), (0, 0), 1.0)
    a = a.reshape(shape[1], shape[2], shape[0]).transpose(2, 0, 1).copy()
    b = np.clip(a.astype(int) + rng.integers(-25, 26, shape), 0, 255).astype(np.uint8)
    options = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    full = np.ones(shape, bool)
    ours, _ = foreground_ssim(a, b, full, erode_px=0)
    theirs = np.mean([structural_similarity(a[t].astype(float), b[t].astype(float), **options)
                      for t in range(shape[0])])
    assert ours == pytest.approx(theirs, abs=1e-6)
    half = np.zeros(shape, bool)
    half[:, :, : shape[2] // 2] = True
    ours_half, pixels = foreground_ssim(a, b, half, erode_px=0)
    maps = [structural_similarity(a[t].astype(float), b[t].astype(float), full=True, **options)[1]
            for t in range(shape[0])]
    cropped = np.stack([m[5:-5, 5:-5] for m in maps])
    assert pixels == int(half[:, 5:-5, 5:-5].sum())
    assert ours_half == pytest.approx(cropped[half[:, 5:-5, 5:-5]].mean(), abs=1e-6)


def test_ssim_too_small_frame_or_empty_mask_is_none():
    video, mask = _scene()
    assert foreground_ssim(video[:, :10, :10], video[:, :10, :10], mask[:, :10, :10])[0] is None
    assert foreground_psnr(video, video, np.zeros_like(mask))[0] is None
    assert foreground_psnr(video, video, mask, erode_px=12)[0] is None  # a 16-px-high subject erodes away


def test_frozen_background_has_no_dynamics_and_motion_is_ordered():
    frozen, mask = _scene(bg_shift=0, fg_shift=3)
    one, _ = _scene(bg_shift=1, fg_shift=3)
    two, _ = _scene(bg_shift=2, fg_shift=3)
    still, n = background_motion(frozen, mask, step=6)
    slow, _ = background_motion(one, mask, step=6)
    fast, _ = background_motion(two, mask, step=6)
    assert n > 0 and still < 0.05  # the subject moves 3 px / frame, but it is inside the mask
    assert slow == pytest.approx(1.0, abs=0.2) and fast == pytest.approx(2.0, abs=0.3)
    assert still < slow < fast
    assert background_motion(frozen, np.ones_like(mask))[0] is None  # no background left
    assert background_motion(frozen[:1], mask[:1])[0] is None


def test_flicker_known_answers():
    video, _ = _scene(bg_shift=0, fg_shift=0)
    assert flicker(video) == (0.0, (T - 2) * H * W)
    dark = (video // 2).astype(np.int32)
    fade = np.stack([dark[t] + 10 * t for t in range(T)]).astype(np.uint8)  # linear in time, no clipping
    assert flicker(fade)[0] == pytest.approx(0.0, abs=1e-4)
    alternating = np.stack([dark[t] + (6 if t % 2 else 0) for t in range(T)]).astype(np.uint8)
    assert flicker(alternating)[0] == pytest.approx(6.0, abs=1e-3)  # +-3 about the mean reads 2 * 3
    rng = np.random.default_rng(0)
    noisy = [np.clip(dark + rng.integers(-a, a + 1, dark.shape), 0, 255).astype(np.uint8) for a in (2, 8)]
    assert 0 < flicker(noisy[0])[0] < flicker(noisy[1])[0]
    assert flicker(video[:2])[0] is None


def test_flicker_regions():
    video, mask = _scene(fg_shift=0)
    boiling = video.copy()
    rng = np.random.default_rng(1)
    boiling[mask] = rng.integers(0, 256, boiling[mask].shape, dtype=np.uint8)
    assert flicker(boiling, mask, region="background")[0] == 0.0
    assert flicker(boiling, mask, region="foreground")[0] > 20
    with pytest.raises(ValueError, match="needs a mask"):
        flicker(video, region="background")


def test_edge_f1_orders_outputs_by_adherence():
    from sparkle_fast import ops

    video, mask = _scene()
    control = np.repeat(ops.canny(video)[..., None], 3, axis=-1)
    exact = edge_f1(control, video)
    assert exact == (1.0, 1.0, 1.0)
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in video])
    other, _ = _scene(bg_shift=5)
    other = other[:, ::-1].copy()  # a different picture: mirrored, shifted background
    f1 = [edge_f1(control, v)[0] for v in (video, blurred, other)]
    assert f1[0] > f1[1] > f1[2]
    flat = np.full_like(video, 128)
    assert edge_f1(np.zeros_like(control), flat) == (None, None, None)
    assert edge_f1(control, flat) == (0.0, None, 0.0)


def test_sample_metrics_nulls_have_reasons_and_outputs_are_aligned():
    video, mask = _scene()
    control = np.repeat(__import__("sparkle_fast").ops.canny(video)[..., None], 3, axis=-1)
    record = sample_metrics("Sparkle_time_000001", video, video, mask, control)
    assert set(record) == {"id", *METRIC_KEYS, "notes"} and record["notes"] == []
    assert record["fg_psnr"] == 100.0 and record["fg_ssim"] == pytest.approx(1.0) and record["edge_f1"] == 1.0
    bare = sample_metrics("x", video, video)
    assert bare["fg_psnr"] is None and bare["bg_motion"] is None and bare["edge_f1"] is None
    assert any(n.startswith("fg_psnr, fg_ssim, bg_motion: no foreground mask") for n in bare["notes"])
    assert any(n.startswith("edge_f1: no control video") for n in bare["notes"])
    # An output at another size and length is resized and trimmed, with notes; an unchanged picture stays close.
    bigger = np.stack([cv2.resize(f, (2 * W, 2 * H), interpolation=cv2.INTER_LINEAR) for f in video[:-1]])
    record = sample_metrics("y", video, bigger, mask, control)
    assert any("resized to the source's" in n for n in record["notes"])
    assert any("the first 5 compared" in n for n in record["notes"])
    assert record["fg_psnr"] > 25


def test_bad_inputs_name_the_argument():
    video, mask = _scene()
    with pytest.raises(ValueError, match="edited must be uint8"):
        foreground_psnr(video, video.astype(np.float32), mask)
    with pytest.raises(ValueError, match="mask has shape"):
        foreground_ssim(video, video, mask[:, :-1])
    with pytest.raises(ValueError, match="source is"):
        foreground_psnr(video, video[:-1], mask)


@pytest.mark.gpu
def test_metrics_on_cuda_equal_cpu():
    video, mask = _scene(bg_shift=1)
    blurred = _blur_inside(video, mask, 1.0)
    cuda = dict(device="cuda")
    assert foreground_psnr(video, blurred, mask, **cuda)[0] == pytest.approx(foreground_psnr(video, blurred, mask)[0],
                                                                             abs=1e-4)
    assert foreground_ssim(video, blurred, mask, **cuda)[0] == pytest.approx(foreground_ssim(video, blurred, mask)[0],
                                                                             abs=1e-6)
    assert flicker(blurred, **cuda)[0] == pytest.approx(flicker(blurred)[0], abs=1e-4)
    # LK on the GPU is the Triton kernel: equal to OpenCV within its float tolerance.
    assert background_motion(torch.from_numpy(video).cuda(), torch.from_numpy(mask).cuda())[0] == pytest.approx(
        background_motion(video, mask)[0], abs=0.05)
    control = np.repeat(__import__("sparkle_fast").ops.canny(video)[..., None], 3, axis=-1)
    assert edge_f1(torch.from_numpy(control).cuda(), torch.from_numpy(blurred).cuda())[0] == pytest.approx(
        edge_f1(control, blurred)[0], abs=1e-9)
