"""Small generated test videos for the sparkle_fast.video tests (written with PyAV, a few KB each).

Frame i of every clip is a smooth diagonal gradient plus a brightness offset LEVEL_STEP * i, so a decoded frame can
be identified by its mean brightness, and compression (smooth content) changes pixels only slightly.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

LEVEL_STEP = 6


def frame_pattern(index: int, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3) RGB test frame number `index`."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = 40 * (xx / max(width - 1, 1) + yy / max(height - 1, 1))  # 0..80
    base = 20 + LEVEL_STEP * index + ramp
    rgb = np.stack([base, base * 0.8 + 10, 120 + 0.3 * ramp], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def make_clip(path: Path, *, codec: str = "libx264", width: int = 64, height: int = 48, frames: int = 9,
              fps: int | Fraction = 16, pts_ms: list[int] | None = None, container_format: str | None = None,
              options: dict | None = None, x264_preset: str = "ultrafast") -> Path:
    """Encode `frames` pattern frames. pts_ms: explicit presentation times in milliseconds (variable frame rate).
    x264_preset: "ultrafast" writes no B-frames; "medium" writes B-frames (decode order != display order) and an
    MP4 edit list, like most real H.264 files."""
    with av.open(str(path), "w", format=container_format, options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "12", "preset": x264_preset}
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, height, width), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def make_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def make_zero_frame_video(path: Path) -> Path:
    """A Matroska file with a declared H.264 video stream that holds no packets (an audio stream carries the
    file, since a muxer writes nothing for a container without any packet)."""
    with av.open(str(path), "w", format="matroska") as container:
        video = container.add_stream("libx264", rate=16)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return path


def make_unknown_codec_video(path: Path, h264_mkv: Path) -> Path:
    """An H.264 Matroska file whose codec id is renamed to one FFmpeg does not know (same length, so the EBML
    element sizes stay valid)."""
    data = h264_mkv.read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    path.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_UNKNOWN/XYZ42"))
    return path


def luma(frames) -> np.ndarray:
    """BT.601 luma (float32) of uint8 RGB frames (..., 3), numpy or torch."""
    array = frames.cpu().numpy() if hasattr(frames, "cpu") else np.asarray(frames)
    return array.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
