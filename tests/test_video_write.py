"""Writing videos (H.264 yuv420p mp4) and PNG images: round trips, atomicity, errors, the background writer."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from video_clips import frame_pattern

from sparkle_fast import video


def pattern_frames(count: int, height: int = 48, width: int = 64) -> torch.Tensor:
    return torch.from_numpy(np.stack([frame_pattern(i, height, width) for i in range(count)]))


@pytest.mark.parametrize("fps", [16, Fraction(30000, 1001)])
def test_write_then_read_round_trip(tmp_path, fps):
    frames = pattern_frames(9)
    path = video.write_video(tmp_path / "out" / "clip.mp4", frames, fps=fps)
    info = video.probe(path)
    assert (info.width, info.height, info.frame_count, info.fps) == (64, 48, 9, fps)
    assert (info.codec, info.pixel_format, info.constant_rate) == ("h264", "yuv420p", True)
    back = video.read_frames(path).frames
    # crf 18 on smooth content: pixels within a few levels (chroma subsampling + compression).
    error = (back.float() - frames.float()).abs()
    assert error.mean() < 2.5 and error.max() <= 40
    assert not list(tmp_path.glob("out/.*tmp"))  # no temporary file left behind


def test_write_single_frame_and_numpy_input(tmp_path):
    path = video.write_video(tmp_path / "one.mp4", frame_pattern(0, 48, 64)[None], fps=16)
    assert video.probe(path).frame_count == 1


@pytest.mark.parametrize("frames, words", [
    (torch.zeros((3, 49, 64, 3), dtype=torch.uint8), "even width and height"),
    (torch.zeros((3, 48, 64, 3), dtype=torch.float32), "must be uint8"),
    (torch.zeros((0, 48, 64, 3), dtype=torch.uint8), "T>=1"),
    (torch.zeros((48, 64, 3), dtype=torch.uint8), "T>=1"),
])
def test_write_video_rejects_bad_frames_and_keeps_the_old_file(tmp_path, frames, words):
    target = tmp_path / "existing.mp4"
    target.write_bytes(b"previous content")
    with pytest.raises(video.VideoWriteError, match=words) as caught:
        video.write_video(target, frames)
    assert str(target) in str(caught.value)
    assert target.read_bytes() == b"previous content"


def test_write_video_replaces_atomically(tmp_path):
    target = tmp_path / "clip.mp4"
    video.write_video(target, pattern_frames(5))
    video.write_video(target, pattern_frames(3))
    assert video.probe(target).frame_count == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_png_round_trip_is_lossless(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (49, 65, 3), dtype=np.uint8)
    path = video.write_image(tmp_path / "frame0.png", torch.from_numpy(rgb))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(video.read_image(path).numpy(), rgb)
    gray = rgb[..., 0]
    back = video.read_image(video.write_image(tmp_path / "gray.png", gray)).numpy()
    assert np.array_equal(back, np.repeat(gray[..., None], 3, axis=-1))


def test_write_image_rejects_bad_shapes(tmp_path):
    with pytest.raises(video.VideoWriteError, match="image must be"):
        video.write_image(tmp_path / "x.png", np.zeros((4, 4, 4), np.uint8))
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(video.VideoNotFoundError):
        video.read_image(tmp_path / "missing.png")


def test_background_writer(tmp_path):
    frames = pattern_frames(5)
    with video.BackgroundWriter(max_pending=2) as writer:
        futures = [writer.write_video(tmp_path / f"v{i}.mp4", frames, fps=16) for i in range(3)]
        image_future = writer.write_image(tmp_path / "f.png", frames[0])
        frames.zero_()  # the writer copied the frames at submit time
    assert [f.result() for f in futures] == [tmp_path / f"v{i}.mp4" for i in range(3)]
    assert video.probe(tmp_path / "v2.mp4").frame_count == 5
    assert video.read_image(image_future.result()).float().mean() > 20  # the pattern, not the zeroed tensor


def test_background_writer_raises_the_first_error_on_exit(tmp_path):
    with pytest.raises(video.VideoWriteError, match="even width"):
        with video.BackgroundWriter() as writer:
            writer.write_video(tmp_path / "odd.mp4", torch.zeros((2, 3, 5, 3), dtype=torch.uint8))
            good = writer.write_video(tmp_path / "good.mp4", pattern_frames(2))
    assert good.result() == tmp_path / "good.mp4"  # a failed write does not stop the others
