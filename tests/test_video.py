"""sparkle_fast.video: probe, read_frames (PyAV and DALI backends), fps sampling, clip conventions, resizing,
the batched loader, and writing. Bad inputs are in test_video_errors.py, NVDEC in test_video_gpu.py."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from video_clips import LEVEL_STEP, frame_pattern, luma, make_clip

from sparkle_fast import video
from sparkle_fast.video import _dali
from sparkle_fast.video.sampling import as_fraction

VFR_PTS_MS = [0, 100, 140, 240, 280, 380, 420, 520, 560, 660, 700, 800]  # alternating 100 ms and 40 ms frames
needs_dali = pytest.mark.skipif(_dali.dali_import_error() is not None, reason="nvidia.dali does not import")


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {
        "h264": make_clip(root / "h264_16fps.mp4", frames=17),
        "h264_bframes": make_clip(root / "h264_bframes.mp4", frames=17, x264_preset="medium"),
        "h264_25": make_clip(root / "h264_25fps.mp4", frames=26, fps=25),
        "h264_ntsc": make_clip(root / "h264_ntsc.mp4", frames=31, fps=Fraction(30000, 1001)),
        "one_frame": make_clip(root / "one_frame.mp4", frames=1),
        "vfr": make_clip(root / "vfr.mp4", frames=len(VFR_PTS_MS), pts_ms=VFR_PTS_MS),
        "vp9_odd": make_clip(root / "vp9_odd.webm", codec="libvpx-vp9", width=65, height=49, frames=9),
        "vp9": make_clip(root / "vp9.webm", codec="libvpx-vp9", width=96, height=64, frames=17),
        "mpeg2": make_clip(root / "mpeg2.mpg", codec="mpeg2video", frames=9, fps=25),
    }


@pytest.fixture(scope="session")
def all_frames(clips):
    """Every frame of every clip decoded with PyAV: the reference the other reads are compared with."""
    return {name: video.read_frames(path, backend="pyav").frames for name, path in clips.items()}


def brightness_index(frames: torch.Tensor, width: int, height: int) -> list[int]:
    """Which pattern frame each decoded frame is, from its mean brightness (see video_clips.frame_pattern)."""
    base = luma(frame_pattern(0, height, width)).mean()
    return [round(float(y - base) / (LEVEL_STEP * (0.299 + 0.587 * 0.8))) for y in luma(frames).mean(axis=(1, 2))]


# -- probe ---------------------------------------------------------------------------------------------------------

def test_probe_h264(clips):
    info = video.probe(clips["h264"])
    assert (info.width, info.height, info.size) == (64, 48, (48, 64))
    assert info.fps == 16 and isinstance(info.fps, Fraction)
    assert info.frame_count == 17 and info.duration == pytest.approx(17 / 16)
    assert (info.codec, info.pixel_format, info.constant_rate) == ("h264", "yuv420p", True)
    assert "mp4" in info.container and info.path == str(clips["h264"])


def test_probe_vp9_odd_size_and_ntsc_rate(clips):
    info = video.probe(clips["vp9_odd"])
    assert (info.width, info.height, info.frame_count, info.codec) == (65, 49, 9, "vp9")
    assert video.probe(clips["h264_ntsc"]).fps == Fraction(30000, 1001)


def test_probe_variable_frame_rate(clips):
    info = video.probe(clips["vfr"])
    assert not info.constant_rate
    assert info.frame_count == len(VFR_PTS_MS)
    np.testing.assert_allclose(info.timestamps, np.array(VFR_PTS_MS) / 1000, atol=1e-3)


# -- reading with PyAV ---------------------------------------------------------------------------------------------

def test_read_all_frames(clips, all_frames):
    frames, indices, info = video.read_frames(clips["h264"])
    assert frames.dtype == torch.uint8 and frames.shape == (17, 48, 64, 3) and frames.device.type == "cpu"
    np.testing.assert_array_equal(indices, np.arange(17))
    assert brightness_index(frames, 64, 48) == list(range(17))
    # Pixels are the encoded pattern up to compression loss.
    reference = np.stack([frame_pattern(i, 48, 64) for i in range(17)]).astype(np.float32)
    assert np.abs(frames.numpy().astype(np.float32) - reference).mean() < 2.5
    assert info.frame_count == 17


def test_b_frames_come_out_in_display_order(clips, all_frames):
    frames, indices, info = video.read_frames(clips["h264_bframes"])
    assert info.frame_count == 17 and brightness_index(frames, 64, 48) == list(range(17))
    assert torch.equal(video.read_frames(clips["h264_bframes"], indices=[16, 7]).frames, frames[[16, 7]])


def test_read_indices_in_any_order_with_repeats(clips, all_frames):
    out = video.read_frames(clips["h264"], indices=[5, 2, 2, 16, 0])
    np.testing.assert_array_equal(out.indices, [5, 2, 2, 16, 0])
    assert torch.equal(out.frames, all_frames["h264"][[5, 2, 2, 16, 0]])


def test_read_one_frame_clip_and_odd_size(clips):
    frames, indices, _ = video.read_frames(clips["one_frame"], fps=2)
    assert frames.shape == (1, 48, 64, 3) and list(indices) == [0]
    odd = video.read_frames(clips["vp9_odd"]).frames
    assert odd.shape == (9, 49, 65, 3)
    assert brightness_index(odd, 65, 49) == list(range(9))


@pytest.mark.parametrize("name, expected", [("h264", [0, 8, 16]), ("h264_25", [0, 12, 25]),
                                            ("h264_ntsc", [0, 14, 29])])
def test_read_at_2fps_returns_the_rule_indices(clips, all_frames, name, expected):
    out = video.read_frames(clips[name], fps=2)
    np.testing.assert_array_equal(out.indices, expected)
    assert torch.equal(out.frames, all_frames[name][expected])


def test_read_variable_frame_rate_at_2fps_uses_timestamps(clips, all_frames):
    out = video.read_frames(clips["vfr"], fps=2)
    # Sample times 0, 0.5: the frames on screen are those starting at 0 ms and 420 ms (index 6).
    np.testing.assert_array_equal(out.indices, [0, 6])
    assert torch.equal(out.frames, all_frames["vfr"][[0, 6]])


def test_max_frames_keeps_the_first_of_the_selection(clips):
    assert list(video.read_frames(clips["h264"], fps=4, max_frames=3).indices) == [0, 4, 8]
    assert video.read_frames(clips["h264"], max_frames=0).frames.shape == (0, 48, 64, 3)


def test_mpeg2_reads_with_pyav_under_auto(clips):
    out = video.read_frames(clips["mpeg2"], backend="auto")
    assert out.info.codec == "mpeg2video" and out.frames.shape == (9, 48, 64, 3)
    assert brightness_index(out.frames, 64, 48) == list(range(9))


def test_indices_and_fps_together_is_a_usage_error(clips):
    with pytest.raises(ValueError, match="not both"):
        video.read_frames(clips["h264"], indices=[0], fps=2)


# -- fps sampling rule ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source, count, expected", [
    (16, 81, [0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80]),
    (25, 100, [0, 12, 25, 37, 50, 62, 75, 87]),
    (Fraction(30000, 1001), 120, [0, 14, 29, 44, 59, 74, 89, 104, 119]),
    (29.97, 120, [0, 14, 29, 44, 59, 74, 89, 104, 119]),  # the float spelling means the same rate
])
def test_sample_indices_at_2fps(source, count, expected):
    np.testing.assert_array_equal(video.sample_indices(count, source, 2), expected)


@settings(max_examples=150, deadline=None)
@given(num=st.integers(1000, 240_000), den=st.sampled_from([1000, 1001]), target=st.sampled_from([1, 2, 3, 16]),
       count=st.integers(1, 400))
def test_sample_indices_pick_the_frame_on_screen(num, den, target, count):
    """For every sample k: frame i_k is on screen at t = k / target, i.e. i_k / fps <= t < (i_k + 1) / fps
    (in integers: i_k * den * target <= k * num < (i_k + 1) * den * target), and the samples cover every sample
    time before the end of the video."""
    fps = Fraction(num, den)  # 1 .. 240 frames/s
    picked = video.sample_indices(count, fps, target)
    k = np.arange(len(picked), dtype=np.int64)
    assert np.all(picked * den * target <= k * num) and np.all(k * num < (picked + 1) * den * target)
    assert len(picked) == -(-count * den * target // num)  # ceil(count / fps * target)
    assert picked[-1] < count


def test_sample_indices_variable_rate_matches_constant_rate_rule():
    times = np.arange(40) / 25  # a "variable-rate" list that happens to be constant: same answer as the formula
    np.testing.assert_array_equal(video.sample_indices(40, 25, 2, timestamps=times, duration=40 / 25),
                                  video.sample_indices(40, 25, 2))


def test_as_fraction_snaps_ntsc_rates():
    assert as_fraction(29.97) == Fraction(30000, 1001) and as_fraction(23.976) == Fraction(24000, 1001)
    assert as_fraction(12.5) == Fraction(25, 2) and as_fraction(16) == 16


# -- clip conventions ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("count, expected", [(200, 81), (81, 81), (80, 77), (73, 73), (69, 69), (5, 5), (4, 1),
                                             (1, 1), (0, 0)])
def test_trim_to_4k_plus_1(count, expected):
    assert video.trim_to_4k_plus_1(count) == expected


def _info(frame_count: int, fps, height: int = 720, width: int = 1280) -> video.VideoInfo:
    return video.VideoInfo(path="synthetic.mp4", width=width, height=height, fps=Fraction(fps),
                           frame_count=frame_count, duration=frame_count / fps, codec="h264",
                           pixel_format="yuv420p", container="mp4", constant_rate=True, timestamps=())


def test_sparkle_clip_spec():
    spec = video.SPARKLE_CLIP
    picked = spec.frame_indices(_info(300, 25))  # 12 s at 25 fps -> 16 fps, 81 frames
    assert len(picked) == 81
    np.testing.assert_array_equal(picked[:6], [0, 1, 3, 4, 6, 7])  # floor(k * 25 / 16)
    assert len(spec.frame_indices(_info(50, 16))) == 49
    assert spec.output_size(1080, 1920) == (720, 1280) and spec.output_size(49, 65) == (720, 1280)


def test_kiwi_edit_clip_spec():
    spec = video.KIWI_EDIT_CLIP
    np.testing.assert_array_equal(spec.frame_indices(_info(100, 25)), np.arange(81))  # no resampling
    assert spec.output_size(720, 1280) == (704, 1280)  # 720 floored to a multiple of 32
    height, width = spec.output_size(1080, 1440)  # 4:3 keeps its aspect ratio at about 1280*720 pixels
    assert height % 32 == 0 and width % 32 == 0 and abs(height * width / (1280 * 720) - 1) < 0.1
    assert abs(width / height - 4 / 3) < 0.05
    assert video.ClipSpec(multiple_of=32).output_size(480, 640) == (704, 1280)


def test_read_clip_default_is_sparkle_shape(clips, all_frames):
    out = video.read_clip(clips["h264"])  # 17 frames at 16 fps: 4*4+1 = 17, resized to 1280x720
    assert out.frames.shape == (17, 720, 1280, 3)
    np.testing.assert_array_equal(out.indices, np.arange(17))
    small = video.read_clip(clips["h264"], video.ClipSpec(fps=8, size=None))
    np.testing.assert_array_equal(small.indices, [0, 2, 4, 6, 8, 10, 12, 14, 16])
    assert torch.equal(small.frames, all_frames["h264"][::2])


# -- resizing ------------------------------------------------------------------------------------------------------

def test_resize_odd_sizes_and_constant_colour():
    frames = torch.full((2, 49, 65, 3), 77, dtype=torch.uint8)
    for size in [(31, 17), (97, 131), (1, 1)]:
        out = video.resize_frames(frames, size)
        assert out.shape == (2, *size, 3) and bool((out == 77).all())


def test_resize_matches_pil_bilinear():
    pil = pytest.importorskip("PIL.Image")
    image = frame_pattern(3, 49, 65)
    image[10:20, 5:40] = [250, 10, 10]  # a sharp edge, where interpolation choices show
    for size in [(24, 33), (100, 130)]:
        ours = video.resize_frames(torch.from_numpy(image)[None], size)[0].numpy().astype(int)
        theirs = np.asarray(pil.fromarray(image).resize((size[1], size[0]), pil.BILINEAR)).astype(int)
        assert np.abs(ours - theirs).max() <= 2


def test_read_frames_resizes(clips, all_frames):
    out = video.read_frames(clips["vp9_odd"], indices=[0, 4], size=(31, 17))
    assert out.frames.shape == (2, 31, 17, 3)
    assert torch.equal(out.frames, video.resize_frames(all_frames["vp9_odd"][[0, 4]], (31, 17)))


# -- DALI (CPU backend: VP9) ---------------------------------------------------------------------------------------

@needs_dali
@pytest.mark.parametrize("name, selection", [("vp9_odd", {}), ("vp9", {"fps": 2}), ("vp9", {"indices": [9, 3, 3]})])
def test_dali_cpu_vp9_matches_pyav(clips, all_frames, name, selection):
    """DALI's decoder and FFmpeg's agree on luma within mean |dY| <= 2 and max |dY| <= 6 levels. They round the
    YUV->RGB conversion differently (on 96x64 VP9 DALI is about one level brighter: mean |dY| 1.25, max 2.7)."""
    dali = video.read_frames(clips[name], backend="dali", **selection)
    pyav = video.read_frames(clips[name], backend="pyav", **selection)
    np.testing.assert_array_equal(dali.indices, pyav.indices)
    assert dali.frames.shape == pyav.frames.shape and dali.frames.dtype == torch.uint8
    difference = np.abs(luma(dali.frames) - luma(pyav.frames))
    assert difference.mean() <= 2.0 and difference.max() <= 6.0


@needs_dali
def test_dali_loader_reports_errors_and_keeps_order(clips, tmp_path, all_frames):
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n" * 20)
    paths = [clips["vp9"], text, clips["vp9_odd"], clips["h264"], clips["vp9"]]
    items = list(video.VideoLoader(paths, fps=2, backend="dali", batch_size=2))
    assert [item.path for item in items] == [str(p) for p in paths]
    assert [item.ok for item in items] == [True, False, True, False, True]
    assert isinstance(items[1].error, video.NotAVideoError)
    assert isinstance(items[3].error, video.UnsupportedCodecError)  # DALI's CPU decoder refuses H.264
    alone = video.read_frames(clips["vp9"], fps=2, backend="dali")  # batching must not change what DALI returns
    assert torch.equal(items[0].frames, alone.frames) and torch.equal(items[4].frames, alone.frames)
    assert list(items[4].indices) == [0, 8, 16]
    assert items[2].frames.shape == (2, 49, 65, 3)


@needs_dali
def test_dali_batch_failure_is_isolated_to_the_broken_file(clips, monkeypatch):
    """When a DALI run fails, the batch is retried file by file and only the file that fails alone is reported."""
    broken = np.fromfile(clips["vp9_odd"], dtype=np.uint8)
    real_decode = _dali.decode

    def decode_failing_on_broken(encoded, frames, device, max_batch=None, num_threads=2):
        if any(len(data) == len(broken) and np.array_equal(data, broken) for data in encoded):
            raise _dali.DaliRunError("simulated decoder failure")
        return real_decode(encoded, frames, device, max_batch, num_threads)

    monkeypatch.setattr(_dali, "decode", decode_failing_on_broken)
    items = list(video.VideoLoader([clips["vp9"], clips["vp9_odd"], clips["vp9"]], backend="dali", batch_size=3))
    assert [item.ok for item in items] == [True, False, True]
    assert isinstance(items[1].error, video.CorruptVideoError) and "simulated" in str(items[1].error)
    assert str(clips["vp9_odd"]) in str(items[1].error)


# -- PyAV loader ---------------------------------------------------------------------------------------------------

def test_pyav_loader_order_errors_and_clip_spec(clips, tmp_path, all_frames):
    missing = tmp_path / "missing.mp4"
    paths = [clips["h264"], missing, clips["vp9_odd"], clips["mpeg2"], clips["one_frame"]]
    spec = video.ClipSpec(fps=16, size=(32, 48))
    items = list(video.VideoLoader(paths, clip=spec, workers=2, prefetch=2))
    assert [item.path for item in items] == [str(p) for p in paths]
    assert [item.ok for item in items] == [True, False, True, True, True]
    assert isinstance(items[1].error, video.VideoNotFoundError) and str(missing) in str(items[1].error)
    assert items[0].frames.shape == (17, 32, 48, 3) and items[2].frames.shape == (9, 32, 48, 3)
    # MPEG-2 at 25 fps, 9 frames -> 16 fps picks floor(k * 25 / 16) = 0, 1, 3, 4, 6, 7, trimmed to 4k+1 = 5 frames.
    assert list(items[3].indices) == [0, 1, 3, 4, 6] and items[3].frames.shape == (5, 32, 48, 3)
    assert items[4].frames.shape == (1, 32, 48, 3)
    assert torch.equal(items[0].frames, video.resize_frames(all_frames["h264"], (32, 48)))


def test_loader_can_stop_early_and_callable_indices(clips):
    loader = video.VideoLoader([clips["h264"]] * 6, indices=lambda info: [info.frame_count - 1], workers=2)
    for item in loader:
        assert list(item.indices) == [16]
        break  # leaving early must shut the pool down, not hang
    assert loader._pool is None
