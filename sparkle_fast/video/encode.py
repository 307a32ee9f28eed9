"""Writing: write_video (H.264 yuv420p mp4), write_image / read_image (PNG), and a BackgroundWriter thread.

Encoding is CPU work (libx264 through PyAV; the H100 has no NVENC). A pipeline stage that produces videos on the
GPU hands them to a BackgroundWriter, which copies the frames to the host at submit time and encodes them on its own
thread, so the GPU is never waiting for x264.

Every write is atomic (sparkle_fast._io.atomic_write): the file is encoded in memory, written to a temporary file
beside the target and renamed over it, so a reader never sees half a file and a crash leaves the old file (or none).

Bytes: the encoder runs a fixed number of frame threads (ENCODE_THREADS), not x264's default of one per core. x264
is deterministic for a given thread count, but its output depends on that count, so with the default the same frames
gave different files on machines (or cgroups) with different core counts. Pinned, the bytes of a video depend only on
its frames, fps, crf, preset and the FFmpeg/x264 build: a rerun or a resumed run on the same build writes the same
files (docs/DETERMINISM.md says what a resumed run guarantees).

Colour: RGB is converted to limited-range YUV 4:2:0 by FFmpeg's swscale with BT.601 coefficients (the stream is
untagged, and FFmpeg and DALI read untagged streams as BT.601, so a write-then-read round trip keeps colours up to
chroma subsampling and compression loss).
"""

from __future__ import annotations

import io
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from sparkle_fast._io import atomic_write
from sparkle_fast.video.errors import VideoWriteError, translate_av_errors
from sparkle_fast.video.sampling import Rate, as_fraction

ArrayLike = torch.Tensor | np.ndarray
ENCODE_THREADS = 4  # x264 frame threads: fixed, so that the output bytes do not depend on the machine's core count


def _host_uint8(array: ArrayLike, path: str | os.PathLike, what: str) -> np.ndarray:
    """A C-contiguous uint8 numpy copy-free view (or copy, from a GPU) of `array`, or VideoWriteError."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise VideoWriteError(path, f"{what} must be uint8, got {array.dtype}")
    return np.ascontiguousarray(array)


def encode_video(frames: ArrayLike, fps: Rate = 16, *, crf: int = 18, preset: str = "medium",
                 threads: int = ENCODE_THREADS, path_for_errors: str | os.PathLike = "<memory>") -> bytes:
    """Encode RGB frames as an H.264 yuv420p mp4 in memory.

    frames: uint8 (T, H, W, 3) RGB, T >= 1, H and W even (4:2:0 chroma needs even sizes; crop or resize first).
    fps: frame rate (exact: 16, 25, Fraction(30000, 1001)). crf: x264 quality (0 lossless .. 51; 18 is visually
    lossless, Sparkle's ~1 Mbps files correspond to roughly crf 23-28). preset: x264 speed/size trade-off.
    threads: x264 frame threads (>= 1); the same frames and settings give the same bytes for the same count.
    """
    import av

    path = path_for_errors
    frames = _host_uint8(frames, path, "frames")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise VideoWriteError(path, f"frames must be (T>=1, H, W, 3) RGB, got shape {frames.shape}")
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise VideoWriteError(path, f"H.264 yuv420p needs an even width and height, got {width}x{height}; "
                                    "crop or resize first")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"encode_video: threads must be an integer >= 1, got {threads!r}")
    rate = as_fraction(fps)
    buffer = io.BytesIO()
    with translate_av_errors(path, "encoding"):
        with av.open(buffer, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.time_base = Fraction(1, 1) / rate  # one tick per frame: exact timestamps
            stream.options = {"crf": str(int(crf)), "preset": preset}
            # frame threads, a fixed count: deterministic bytes on every machine (module docstring)
            stream.codec_context.thread_type = "FRAME"
            stream.codec_context.thread_count = threads
            for index, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = index
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))  # flush the encoder's delayed frames
    return buffer.getvalue()


def write_video(path: str | os.PathLike, frames: ArrayLike, fps: Rate = 16, *, crf: int = 18,
                preset: str = "medium", threads: int = ENCODE_THREADS) -> Path:
    """Write uint8 RGB frames (T, H, W, 3) (numpy, or torch on any device) as an H.264 yuv420p mp4, atomically.

    See encode_video for fps, crf, preset and threads. Returns the path. Raises VideoWriteError naming the file.
    """
    data = encode_video(frames, fps, crf=crf, preset=preset, threads=threads, path_for_errors=path)
    return _write_bytes(path, data)


def _write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    try:
        with atomic_write(path) as handle:
            handle.write(data)
    except OSError as exc:
        raise VideoWriteError(path, f"cannot write the file: {exc.strerror or exc}") from exc
    return Path(path)


def encode_png(image: ArrayLike, path_for_errors: str | os.PathLike = "<memory>") -> bytes:
    """PNG bytes of a uint8 image: (H, W, 3) RGB, or (H, W) / (H, W, 1) grayscale. Lossless."""
    import av

    path = path_for_errors
    image = _host_uint8(image, path, "image")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        pixel_format = "gray"
    elif image.ndim == 3 and image.shape[-1] == 3:
        pixel_format = "rgb24"
    else:
        raise VideoWriteError(path, f"image must be (H, W, 3) RGB or (H, W) gray, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise VideoWriteError(path, f"image is empty: shape {image.shape}")
    with translate_av_errors(path, "encoding"):
        codec = av.CodecContext.create("png", "w")
        codec.width, codec.height, codec.pix_fmt = image.shape[1], image.shape[0], pixel_format
        codec.time_base = Fraction(1, 1)
        packets = codec.encode(av.VideoFrame.from_ndarray(image, format=pixel_format)) + codec.encode(None)
    return b"".join(bytes(packet) for packet in packets)


def write_image(path: str | os.PathLike, image: ArrayLike) -> Path:
    """Write a uint8 image ((H, W, 3) RGB or (H, W) gray; numpy or torch on any device) as PNG, atomically."""
    return _write_bytes(path, encode_png(image, path_for_errors=path))


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file (PNG, JPEG, ...) as uint8 RGB (H, W, 3) on the CPU. Raises VideoError subclasses."""
    import av

    from sparkle_fast.video.errors import NotAVideoError, VideoNotFoundError

    if not Path(path).exists():
        raise VideoNotFoundError(path, "no such file")
    with translate_av_errors(path, "open"):
        container = av.open(os.fspath(path), mode="r", metadata_errors="replace")
    with container, translate_av_errors(path, "decoding"):
        if not container.streams.video:
            raise NotAVideoError(path, "not an image: no picture stream")
        for frame in container.decode(container.streams.video[0]):
            return torch.from_numpy(frame.to_ndarray(format="rgb24"))
    raise NotAVideoError(path, "not an image: nothing decodes")


class BackgroundWriter:
    """Encode and write videos and images on one background thread, off the caller's (GPU's) critical path.

        with BackgroundWriter() as writer:
            writer.write_video(out / "edited.mp4", frames_on_gpu, fps=16)   # returns at once (a Future)
            ...
        # leaving the block waits for every write and raises the first VideoWriteError, if any

    Frames are copied to host memory when submitted, so the caller may reuse its tensors immediately.
    max_pending: submitted writes not finished yet at most; a further submit blocks (bounds host memory).
    """

    def __init__(self, max_pending: int = 4):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="video-write")
        self._slots = threading.BoundedSemaphore(max_pending)
        self._futures: list[Future] = []

    def _submit(self, fn, *args, **kwargs) -> Future:
        self._slots.acquire()
        future = self._pool.submit(fn, *args, **kwargs)
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append(future)
        return future

    def write_video(self, path: str | os.PathLike, frames: ArrayLike, fps: Rate = 16, **options) -> Future:
        """Like write_video, in the background. Returns a Future of the path (its exception: VideoWriteError)."""
        return self._submit(write_video, path, _host_copy(frames), fps, **options)

    def write_image(self, path: str | os.PathLike, image: ArrayLike) -> Future:
        """Like write_image, in the background. Returns a Future of the path."""
        return self._submit(write_image, path, _host_copy(image))

    def close(self) -> list[BaseException]:
        """Wait for every submitted write; returns their exceptions (empty when all succeeded)."""
        self._pool.shutdown(wait=True)
        errors = [f.exception() for f in self._futures if f.exception() is not None]
        self._futures = []
        return errors

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        errors = self.close()
        if errors and exc_type is None:
            raise errors[0]


def _host_copy(array: ArrayLike) -> np.ndarray:
    """A private host copy, so the caller may overwrite its tensor (or array) right after submitting."""
    if isinstance(array, torch.Tensor):
        return array.detach().to("cpu", copy=True).numpy()
    return np.array(array, copy=True)
