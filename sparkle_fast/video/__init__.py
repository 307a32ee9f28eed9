"""Video I/O for the Sparkle pipeline: probe, decode (DALI NVDEC on GPU, PyAV on CPU), sampling, encoding.

Reading
    probe(path) -> VideoInfo                       size, exact fps, frame count, codec, ... (probe.py)
    read_frames(path, indices=|fps=, max_frames=, size=, device=, backend=) -> DecodedVideo(frames, indices, info)
                                                   uint8 RGB (T, H, W, 3) torch tensor + source indices (decode.py)
    read_clip(path, SPARKLE_CLIP | KIWI_EDIT_CLIP | ClipSpec(...))   Sparkle's clip conventions (sampling.py)
    VideoLoader(paths, ...) / load_videos(...)     many videos, decoded ahead of the consumer (loader.py)
Writing
    write_video(path, frames, fps=16)              H.264 yuv420p mp4, atomic (encode.py)
    write_image(path, image) / read_image(path)    PNG, atomic
    BackgroundWriter                               the same on a writer thread
Errors
    VideoError and its subclasses (errors.py): every failure names the file and the cause.

Conventions: frames are uint8 RGB, channels last, (T, H, W, 3); sizes are (height, width); frame i is the i-th
displayed frame counting from 0; frame rates are exact fractions (16, 25, 30000/1001).
"""

from sparkle_fast.video.decode import DecodedVideo, read_clip, read_frames, resolve_backend, select_indices
from sparkle_fast.video.encode import BackgroundWriter, encode_video, read_image, write_image, write_video
from sparkle_fast.video.errors import (
    BackendUnavailableError,
    CorruptVideoError,
    EmptyVideoError,
    FrameIndexError,
    NotAVideoError,
    NoVideoStreamError,
    UnsupportedCodecError,
    VideoError,
    VideoNotFoundError,
    VideoWriteError,
)
from sparkle_fast.video.loader import LoadedVideo, VideoLoader, load_videos
from sparkle_fast.video.probe import VideoInfo, probe
from sparkle_fast.video.sampling import (
    KIWI_EDIT_CLIP,
    SPARKLE_CLIP,
    ClipSpec,
    resize_frames,
    sample_indices,
    trim_to_4k_plus_1,
)

__all__ = [
    "KIWI_EDIT_CLIP", "SPARKLE_CLIP", "BackendUnavailableError", "BackgroundWriter", "ClipSpec", "CorruptVideoError",
    "DecodedVideo", "EmptyVideoError", "FrameIndexError", "LoadedVideo", "NoVideoStreamError", "NotAVideoError",
    "UnsupportedCodecError", "VideoError", "VideoInfo", "VideoLoader", "VideoNotFoundError", "VideoWriteError",
    "encode_video", "load_videos", "probe", "read_clip", "read_frames", "read_image", "resize_frames",
    "resolve_backend", "sample_indices", "select_indices", "trim_to_4k_plus_1", "write_image", "write_video",
]
