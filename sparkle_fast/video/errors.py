"""The one exception family of sparkle_fast.video.

Every failure to read or write a video raises a `VideoError` subclass whose message starts with the file's path and
then says the cause in words, e.g.

    /data/clip.mp4: truncated or corrupt stream: the container declares 81 frames but only 40 are present

Callers that only care whether a video is usable catch `VideoError`; the subclasses let a stage record why a sample
was rejected. PyAV (FFmpeg) and DALI errors never escape this module: they are translated here, with the original
exception kept as `__cause__` for debugging.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


class VideoError(Exception):
    """A video (or image) could not be read or written. `path` is the file, `cause` the reason in words."""

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path = os.fspath(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")

    def __reduce__(self):  # keep the two-argument constructor picklable (errors cross process pools)
        return (type(self), (self.path, self.cause))


class VideoNotFoundError(VideoError):
    """The path does not exist (or is not readable)."""


class NotAVideoError(VideoError):
    """The file is not a video container FFmpeg recognises (text, an image, a directory, random bytes)."""


class NoVideoStreamError(NotAVideoError):
    """The container is valid but holds no video stream (e.g. audio only)."""


class EmptyVideoError(VideoError):
    """The video stream holds zero frames."""


class CorruptVideoError(VideoError):
    """The stream is truncated or corrupt: demuxing or decoding failed, or fewer frames decode than are present."""


class UnsupportedCodecError(VideoError):
    """No decoder for the stream's codec in the chosen backend (or none at all in this FFmpeg build)."""


class FrameIndexError(VideoError, IndexError):
    """A requested frame index is negative or past the end of the video."""


class BackendUnavailableError(VideoError):
    """The requested backend or device cannot run here (DALI not installed, no CUDA device)."""


class VideoWriteError(VideoError):
    """Encoding or writing a video or image failed, or its frames are not in a writable shape or dtype."""


def _ffmpeg_message(exc: BaseException) -> str:
    """PyAV's messages look like "[Errno 1094995529] Invalid data found when processing input: 'x.mp4'"; keep the
    readable middle part (the path is already at the start of our message)."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.strip() or type(exc).__name__


@contextlib.contextmanager
def translate_av_errors(path: str | os.PathLike, stage: str) -> Iterator[None]:
    """Turn PyAV/FFmpeg exceptions raised inside the block into VideoError subclasses naming `path`.

    stage: "open" while opening the container (invalid data there means "not a video"), anything else ("demux",
    "decode") after it (invalid data there means a corrupt stream).
    """
    import av  # imported lazily: PyAV is a dependency of this module, but keep import-time cost out of the package

    try:
        yield
    except VideoError:
        raise
    except FileNotFoundError as exc:  # av.error.FileNotFoundError subclasses it
        raise VideoNotFoundError(path, "no such file") from exc
    except IsADirectoryError as exc:
        raise NotAVideoError(path, "is a directory, not a video file") from exc
    except PermissionError as exc:
        raise VideoNotFoundError(path, "permission denied") from exc
    except av.error.EOFError as exc:
        raise CorruptVideoError(path, f"truncated or corrupt stream: unexpected end of file while {stage}") from exc
    except av.error.InvalidDataError as exc:
        if stage == "open":
            raise NotAVideoError(path, f"not a video file FFmpeg recognises ({_ffmpeg_message(exc)})") from exc
        raise CorruptVideoError(path, f"truncated or corrupt stream while {stage}: {_ffmpeg_message(exc)}") from exc
    except UnicodeDecodeError as exc:  # text inside the file (tags, codec names) that is not valid UTF-8
        raise CorruptVideoError(path, f"corrupt text in the container while {stage}: {exc}") from exc
    except (av.error.FFmpegError, OSError) as exc:
        if stage == "open":
            raise NotAVideoError(path, f"cannot open as a video: {_ffmpeg_message(exc)}") from exc
        raise CorruptVideoError(path, f"truncated or corrupt stream while {stage}: {_ffmpeg_message(exc)}") from exc
