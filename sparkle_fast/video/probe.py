"""probe(path) -> VideoInfo: what a video file holds, read with PyAV by demuxing (no decoding).

Frame numbering used everywhere in sparkle_fast.video: frame i is the i-th frame in presentation (display) order,
counting from 0. This is the numbering of Sparkle's released clips, of PyAV's decoder output and of DALI's
`frames=` argument.

The frame count is not taken on trust from the container header: probe demuxes every packet of the video stream
(cheap: no pixels are decoded) and counts those the decoder will show. A header that declares more frames than the
file holds means the file was cut short, and probe raises CorruptVideoError rather than let a reader return a video
that silently ends early.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from sparkle_fast.video.errors import (
    CorruptVideoError,
    EmptyVideoError,
    NotAVideoError,
    NoVideoStreamError,
    UnsupportedCodecError,
    VideoNotFoundError,
    translate_av_errors,
)

# FFmpeg demuxers that "open" things which are not videos: the ANSI-art demuxer accepts any text file, and the image
# demuxers (png_pipe, jpeg_pipe, image2, ...) accept a single picture. Reading those as a video is always a mistake
# in this pipeline, so they are rejected by name.
_NOT_VIDEO_FORMATS = {"tty", "image2", "image2pipe"}


@dataclass(frozen=True)
class VideoInfo:
    """What probe() found in a video file.

    width, height:  frame size in pixels (the decoded, displayed size).
    fps:            nominal frame rate as an exact fraction (16, 25, 30000/1001); for a variable-rate video it is
                    the average rate, frame_count / duration.
    frame_count:    frames in the video stream (demuxed packets the decoder shows; not the header's claim).
    duration:       seconds: frame_count / fps for constant rate, else last timestamp + last frame's duration.
    codec:          FFmpeg codec name: "h264", "hevc", "vp9", "mpeg2video", ...
    pixel_format:   FFmpeg pixel format name, e.g. "yuv420p" ("" when the container does not say).
    container:      FFmpeg demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm".
    constant_rate:  True when every frame lasts 1/fps (within one timestamp tick or 2 %).
    timestamps:     presentation time of every frame in seconds, relative to the first frame, ascending
                    (float64 (frame_count,)); used by fps sampling of variable-rate videos.
    """

    path: str
    width: int
    height: int
    fps: Fraction
    frame_count: int
    duration: float
    codec: str
    pixel_format: str
    container: str
    constant_rate: bool
    timestamps: tuple[float, ...] = field(repr=False, compare=False)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width), the order used by `size=` arguments and tensor shapes."""
        return self.height, self.width


def _is_constant_rate(times: np.ndarray, tick: float) -> bool:
    """True when the frame intervals are all equal up to timestamp rounding (one tick) or 2 % jitter."""
    if len(times) < 3:
        return True
    steps = np.diff(times)
    typical = float(np.median(steps))
    return bool(np.all(np.abs(steps - typical) <= max(1.5 * tick, 0.02 * typical)))


def _declared_duration(stream) -> float | None:
    """The video stream's own duration in seconds as the container declares it (not the container's, which may
    be an audio track's), or None. Matroska keeps it as a per-track "DURATION" tag, e.g. "00:00:03.250000000"."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            return None
    return None


def probe(path: str | os.PathLike) -> VideoInfo:
    """Open `path`, check it holds a decodable video stream and describe it (see VideoInfo).

    Uses the first video stream. Raises (all VideoError): VideoNotFoundError, NotAVideoError, NoVideoStreamError
    (e.g. audio only), UnsupportedCodecError (no decoder in this FFmpeg build), EmptyVideoError (zero frames),
    CorruptVideoError (truncated: fewer frames present than the header declares, frames ending well before the
    declared stream duration, or demuxing fails).
    """
    import av

    path = os.fspath(path)
    if not Path(path).exists():  # FFmpeg's own message for this is fine, but be explicit and skip the open
        raise VideoNotFoundError(path, "no such file")
    with translate_av_errors(path, "open"):
        # Tags that are not valid UTF-8 (damaged files) must not hide a readable video stream.
        container = av.open(path, mode="r", metadata_errors="replace")
    with container:
        fmt = container.format.name
        if fmt in _NOT_VIDEO_FORMATS or fmt.endswith("_pipe"):
            raise NotAVideoError(path, f"FFmpeg reads it as '{fmt}' (text or a still image), not as a video")
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise NoVideoStreamError(path, f"no video stream (streams found: {', '.join(kinds)})")
        stream = container.streams.video[0]
        context = stream.codec_context
        if context is None:  # FFmpeg knows no decoder for this codec id (or the id itself is unknown)
            codec_id = stream.codec.name if getattr(stream, "codec", None) is not None else "unknown"
            raise UnsupportedCodecError(path, f"no decoder for the video codec '{codec_id}' in this FFmpeg build")
        codec = context.name
        width, height = context.width, context.height
        if width <= 0 or height <= 0:
            raise CorruptVideoError(path, f"video stream ({codec}) has no frame size ({width}x{height})")
        declared = int(stream.frames or 0)
        tick = float(stream.time_base) if stream.time_base else 0.0
        stamps: list[int] = []
        with translate_av_errors(path, "demuxing"):
            for packet in container.demux(stream):
                if packet.size == 0:  # the empty packet PyAV yields at the end to flush decoders
                    continue
                if packet.is_corrupt:
                    raise CorruptVideoError(path, f"truncated or corrupt stream: packet {len(stamps)} is flagged "
                                                  "corrupt by the demuxer")
                if packet.is_discard:  # dropped by an edit list: the decoder will not show it
                    continue
                stamp = packet.pts if packet.pts is not None else packet.dts
                stamps.append(stamp if stamp is not None else (stamps[-1] + 1 if stamps else 0))
        frame_count = len(stamps)
        if frame_count == 0:
            raise EmptyVideoError(path, f"the video stream ({codec}) holds zero frames")
        if declared > frame_count:
            raise CorruptVideoError(path, f"truncated or corrupt stream: the container declares {declared} frames "
                                          f"but only {frame_count} are present")
        declared_seconds = _declared_duration(stream)
        times = np.sort(np.asarray(stamps, dtype=np.float64))
        times = (times - times[0]) * tick if tick else np.arange(frame_count, dtype=np.float64)
        constant = _is_constant_rate(times, tick)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if constant and rate:
            fps = Fraction(rate)
            duration = frame_count / float(fps)
        else:
            last_step = times[-1] - times[-2] if frame_count >= 2 else 0.0
            duration = float(times[-1] + last_step)
            fps = Fraction(frame_count / duration).limit_denominator(1001) if duration > 0 else Fraction(rate or 1)
        # Formats without a frame count (WebM/Matroska) still record the stream's duration: a file ending well
        # before it was cut short (slack: 2 frames or 0.1 s, for rounding and a last frame's length).
        if declared_seconds is not None and duration < declared_seconds - max(2 / float(fps), 0.1):
            raise CorruptVideoError(path, f"truncated or corrupt stream: the container declares {declared_seconds:.3f}"
                                          f" s of video but the frames present last {duration:.3f} s")
        return VideoInfo(path=path, width=width, height=height, fps=fps, frame_count=frame_count,
                         duration=duration, codec=codec, pixel_format=context.pix_fmt or "", container=fmt,
                         constant_rate=constant, timestamps=tuple(times.tolist()))
