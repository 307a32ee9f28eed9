"""Stage 1 at several frame sizes: relative camera thresholds (one clip, one verdict, whatever its resolution) and
the aspect handling of sources that are not of the clip's aspect ratio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparkle_fast import camera, layout
from sparkle_fast.camera_synthetic import make_clip
from sparkle_fast.driver.config import ConfigError, load_config
from sparkle_fast.models.base import TaskResult
from sparkle_fast.stages import StageContext
from sparkle_fast.stages.base import Sample
from sparkle_fast.stages.stage1 import CollectStage
from sparkle_fast.video import read_frames, write_video
from sparkle_fast.video.aspect import apply_aspect, aspect_plan

pytestmark = pytest.mark.filterwarnings("ignore::sparkle_fast.driver.config.KiwiCropWarning")

SIZES = [(288, 512), (360, 640), (432, 768)]  # 16:9, all larger than the 288 x 384 calibration frame


class StaticVLM:
    def camera_motion_verdict(self, frames, fps=16.0):
        return TaskResult(ok=True, value={"reasoning": "-", "camera_moving": False})


def _run_stage1(tmp_path, video, size, **overrides):
    height, width = size
    config = load_config(overrides={"clip.width": width, "clip.height": height, "clip.max_frames": 17, **overrides})
    context = StageContext(layout.SparkleLayout(tmp_path / "out"), config, {"vlm": StaticVLM()}, {})
    return CollectStage().run(Sample("Sparkle_time_000000", "time", str(video)), context)


def _pan_clip(tmp_path, size, fraction, name):
    """A 17-frame pan whose corners move `fraction` of the frame diagonal over the clip (2-FPS frames 0, 8, 16)."""
    total = fraction * float(np.hypot(*size))
    clip = make_clip("pan", n_frames=17, size=size, speed=total / 16, noise=1.0, seed=5)
    return write_video(tmp_path / f"{name}_{size[0]}.mp4", clip.frames, fps=16)


@pytest.mark.parametrize("fraction, static", [(0.003, True), (0.006, False)])
def test_one_clip_at_three_sizes_gets_one_decision(tmp_path, fraction, static):
    """0.3% of the diagonal over the clip is under the relative threshold (2 px per 480 px of diagonal = 0.42%) at
    every size, 0.6% over it. The slow clip measures 1.8-2.6 px: the absolute 2 px rule would split it."""
    outcomes = [_run_stage1(tmp_path, _pan_clip(tmp_path, size, fraction, "pan"), size) for size in SIZES]
    assert [o.record["camera"]["static"] for o in outcomes] == [static] * 3, [o.reason for o in outcomes]
    assert [o.status for o in outcomes] == ["done" if static else "rejected"] * 3
    measured = [o.record["camera"]["max_displacement_px"] for o in outcomes]
    assert measured == sorted(measured)  # the same motion measures more pixels on a larger frame ...
    used = [o.record["camera_thresholds"]["threshold_px"] for o in outcomes]
    for (h, w), threshold in zip(SIZES, used, strict=True):  # ... and the threshold grows with it
        assert threshold == pytest.approx(2.0 * np.hypot(h, w) / 480.0)
    if static:
        assert min(measured) < 2.0 < max(measured)


def test_absolute_pixels_when_asked_and_small_frames_keep_the_calibrated_values():
    base = camera.CameraThresholds()
    assert camera.thresholds_for_size(base, 720, 1280, 0) == base  # reference 0: absolute pixels
    small = camera.thresholds_for_size(base, 64, 96)  # below the calibration frame: the tracker's floor
    assert (small.threshold_px, small.pair_threshold_px) == (2.0, 1.5)
    hd = camera.thresholds_for_size(base, 1080, 1920)
    assert hd.threshold_px == pytest.approx(2.0 * np.hypot(1080, 1920) / 480)
    assert hd.pair_threshold_px == pytest.approx(1.5 * np.hypot(1080, 1920) / 480)
    assert hd.ransac_threshold_px == base.ransac_threshold_px and hd.still_px == base.still_px


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("fraction, static", [(0.0, True), (0.003, True), (0.006, False)])
def test_360p_720p_1080p_one_decision_on_cuda(fraction, static):
    verdicts = []
    for size in [(360, 640), (720, 1280), (1080, 1920)]:
        total = fraction * float(np.hypot(*size))
        clip = make_clip("pan", n_frames=81, size=size, speed=total / 80, noise=1.0, subject_fraction=0.12, seed=5)
        frames = torch.from_numpy(clip.frames[::8]).cuda()  # the 2-FPS frames of an 81-frame clip
        th = camera.thresholds_for_size(camera.CameraThresholds(), *size)
        verdicts.append(camera.analyze(frames, th).static)
    assert verdicts == [static] * 3


# --- aspect ----------------------------------------------------------------------------------------------------------


def test_aspect_plans():
    crop = aspect_plan(480, 640, 720, 1280, "crop")  # 4:3 into 16:9: scale to the width, cut top and bottom
    assert crop.scaled == (960, 1280) and crop.offset == (120, 0)
    pad = aspect_plan(480, 640, 720, 1280, "pad")  # scale to the height, bars left and right
    assert pad.scaled == (720, 960) and pad.offset == (0, 160)
    assert aspect_plan(480, 640, 720, 1280, "stretch").scaled == (720, 1280)
    assert aspect_plan(1080, 1920, 720, 1280, "crop").scaled == (720, 1280)  # same aspect: a resize alone
    tall = aspect_plan(1280, 720, 720, 1280, "crop")  # portrait into landscape
    assert tall.scaled == (2276, 1280) and tall.offset == (778, 0)
    with pytest.raises(ValueError, match="crop, pad, stretch"):
        aspect_plan(480, 640, 720, 1280, "fit")
    frames = np.arange(2 * 720 * 960 * 3, dtype=np.uint32).astype(np.uint8).reshape(2, 720, 960, 3)
    padded = apply_aspect(frames, pad)
    assert padded.shape == (2, 720, 1280, 3) and not padded[:, :, :160].any() and not padded[:, :, 1120:].any()
    assert np.array_equal(padded[:, :, 160:1120], frames)
    as_torch = apply_aspect(torch.from_numpy(frames), pad)
    assert isinstance(as_torch, torch.Tensor) and np.array_equal(as_torch.numpy(), padded)
    big = np.zeros((1, 960, 1280, 3), np.uint8)
    big[:, 120:840] = 7
    cropped = apply_aspect(big, crop)
    assert cropped.shape == (1, 720, 1280, 3) and (cropped == 7).all() and cropped.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("mode", ["crop", "pad", "stretch"])
def test_stage1_fits_a_4_3_source_and_records_how(tmp_path, mode):
    clip = make_clip("static", n_frames=17, size=(96, 128), seed=2).frames  # 4:3
    clip[:, :, :8] = 0  # a dark left edge, so the stretch is told from the crop
    video = write_video(tmp_path / "four_three.mp4", clip, fps=16)
    outcome = _run_stage1(tmp_path, video, (72, 128), **{"clip.aspect": mode})
    assert outcome.status == "done", outcome.reason
    aspect = outcome.record["aspect"]
    assert aspect["mode"] == mode and aspect["source"] == [96, 128] and aspect["out"] == [72, 128]
    written = read_frames(layout.SparkleLayout(tmp_path / "out").artifact("time", "source_video",
                                                                         "Sparkle_time_000000")).frames.numpy()
    assert written.shape == (17, 72, 128, 3)
    left = written[:, :, :4].mean()
    if mode == "pad":  # 96x128 scaled to 72x96, bars of 16 px each side
        assert aspect["scaled"] == [72, 96] and aspect["offset"] == [0, 16] and left < 20
        assert written[:, :, 24:104].mean() > 40
    elif mode == "crop":  # 96x128 scaled to 96x128 (covers), rows 12..84 kept
        assert aspect["scaled"] == [96, 128] and aspect["offset"] == [12, 0] and left < 40
    else:
        assert aspect["scaled"] == [72, 128] and aspect["offset"] == [0, 0]


def test_config_rejects_an_unknown_aspect():
    with pytest.raises(ConfigError, match="clip.aspect must be one of crop, pad, stretch"):
        load_config(overrides={"clip.aspect": "letterbox"})
