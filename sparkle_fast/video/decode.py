"""read_frames / read_clip: decode chosen frames of one video into a uint8 RGB torch tensor.

Backends:
  "pyav"  FFmpeg through PyAV on the CPU (threaded decoder); frames are copied to the requested device afterwards.
          Decodes everything FFmpeg does. Frames that are not requested are decoded (they are needed as references)
          but never converted to RGB, so sparse sampling (2 FPS) costs little more than demuxing + decoding.
  "dali"  DALI's fn.decoders.video: NVDEC on the GPU for device="cuda" (H.264, HEVC, VP8, VP9, AV1, MPEG-4,
          MJPEG), DALI's CPU decoder for device="cpu" (VP8, VP9, MJPEG only). Frames stay on the GPU.
  "auto"  "dali" when the output goes to a CUDA device, DALI is installed and the stream is one NVDEC decodes on
          every GPU we target (H.264, HEVC, VP8, VP9 in 8-bit 4:2:0); "pyav" otherwise (CPU output, other codecs
          such as MPEG-2, no DALI).

Colour: both backends convert YUV to RGB with the stream's colour matrix (BT.601 when untagged); DALI's and
FFmpeg's converters round differently, so RGB values may differ by a few levels between backends (the tests bound
the luma difference). Within one backend decoding is deterministic.

Every failure raises a VideoError subclass naming the file (see errors.py); programming errors in the arguments
(both `indices` and `fps` given, an unknown backend name) raise ValueError.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch

from sparkle_fast.video import _dali
from sparkle_fast.video.errors import (
    BackendUnavailableError,
    CorruptVideoError,
    FrameIndexError,
    UnsupportedCodecError,
    VideoError,
    VideoNotFoundError,
    translate_av_errors,
)
from sparkle_fast.video.probe import VideoInfo, probe
from sparkle_fast.video.sampling import SPARKLE_CLIP, ClipSpec, Rate, resize_frames, sample_indices

Backend = Literal["auto", "dali", "pyav"]
DeviceLike = str | torch.device


class DecodedVideo(NamedTuple):
    """What read_frames returns; unpack as `frames, indices, info = read_frames(...)`.

    frames:  uint8 (T, H, W, 3) RGB on the requested device (H, W = `size` when given, else the video's).
    indices: int64 (T,) numpy: the source frame index of each output frame (presentation order, from 0).
    info:    the probe() result of the file.
    """

    frames: torch.Tensor
    indices: np.ndarray
    info: VideoInfo


def resolve_device(device: DeviceLike, path: str | os.PathLike) -> torch.device:
    """torch.device for `device`; BackendUnavailableError (naming `path`) when CUDA is asked for but absent."""
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(path, f"device '{device}' requested but torch sees no CUDA device")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    return resolved


def resolve_backend(info: VideoInfo, device: torch.device, backend: Backend = "auto") -> Literal["dali", "pyav"]:
    """Which backend decodes `info`'s stream for output on `device` (rules in the module docstring)."""
    if backend == "pyav":
        return "pyav"
    if backend == "auto":
        if (device.type == "cuda" and info.codec in _dali.NVDEC_AUTO_CODECS
                and info.pixel_format in _dali.NVDEC_AUTO_PIXEL_FORMATS and _dali.dali_import_error() is None):
            return "dali"
        return "pyav"
    if backend != "dali":
        raise ValueError(f"backend must be 'auto', 'dali' or 'pyav', got {backend!r}")
    problem = _dali.dali_import_error()
    if problem is not None:
        raise BackendUnavailableError(info.path,
                                      f"backend 'dali' requested but nvidia.dali does not import ({problem})")
    supported = _dali.DALI_MIXED_CODECS if device.type == "cuda" else _dali.DALI_CPU_CODECS
    if info.codec not in supported:
        which = "NVDEC (GPU)" if device.type == "cuda" else "CPU"
        raise UnsupportedCodecError(info.path, f"DALI's {which} video decoder does not decode '{info.codec}' "
                                               f"(it decodes {', '.join(sorted(supported))}); use backend='pyav'")
    return "dali"


def select_indices(info: VideoInfo, *, indices: Sequence[int] | np.ndarray | None = None, fps: Rate | None = None,
                   max_frames: int | None = None) -> np.ndarray:
    """The source frame indices read_frames will return, int64 (T,), validated against info.frame_count.

    indices: explicit indices (any order, repeats allowed). fps: sample at this rate (sampling.py's rule).
    Neither: every frame. max_frames: keep only the first max_frames of the selection.
    """
    if indices is not None and fps is not None:
        raise ValueError("give either indices= or fps=, not both")
    if indices is not None:
        picked = np.asarray(indices, dtype=np.int64).reshape(-1)
        bad = picked[(picked < 0) | (picked >= info.frame_count)]
        if bad.size:
            raise FrameIndexError(info.path, f"frame index {int(bad[0])} is out of range: the video has "
                                             f"{info.frame_count} frames (indices 0..{info.frame_count - 1})")
    elif fps is not None:
        picked = sample_indices(info.frame_count, info.fps, fps, None if info.constant_rate else info.timestamps,
                                info.duration)
    else:
        picked = np.arange(info.frame_count, dtype=np.int64)
    if max_frames is not None:
        if max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, got {max_frames}")
        picked = picked[:max_frames]
    return picked


def decode_pyav(path: str | os.PathLike, info: VideoInfo, wanted: np.ndarray, threads: int = 0) -> torch.Tensor:
    """Decode the frames `wanted` (int64 (K,), ascending, unique, inside the video) with PyAV.

    Returns uint8 (K, H, W, 3) RGB on the CPU. threads: FFmpeg decoder threads (0 = FFmpeg chooses; a loader
    running many decoders in parallel passes a small number to avoid oversubscribing the cores).
    """
    import av

    out = np.empty((len(wanted), info.height, info.width, 3), dtype=np.uint8)
    if len(wanted) == 0:
        return torch.from_numpy(out)
    with translate_av_errors(path, "open"):
        container = av.open(os.fspath(path), mode="r", metadata_errors="replace")
    position, frame_index = 0, -1
    with container, translate_av_errors(path, "decoding"):
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"  # frame + slice threads
        stream.codec_context.thread_count = threads
        for packet in container.demux(stream):
            if packet.is_corrupt:
                raise CorruptVideoError(path, "truncated or corrupt stream: a packet is flagged corrupt by the demuxer")
            for frame in packet.decode():
                frame_index += 1
                if frame_index != wanted[position]:
                    continue  # decoded (later frames may reference it) but not converted to RGB
                image = frame.to_ndarray(format="rgb24")
                if image.shape != out.shape[1:]:
                    raise CorruptVideoError(path, f"frame {frame_index} is {image.shape[1]}x{image.shape[0]}, "
                                                  f"the stream says {info.width}x{info.height}")
                out[position] = image
                position += 1
                if position == len(wanted):
                    return torch.from_numpy(out)
    raise CorruptVideoError(path, f"truncated or corrupt stream: only {frame_index + 1} of {info.frame_count} "
                                  f"frames decode, frame {int(wanted[position])} was requested")


def decode_dali_batch(paths: Sequence[str | os.PathLike], infos: Sequence[VideoInfo], wanted: Sequence[np.ndarray],
                      device: torch.device, max_batch: int | None = None) -> list[torch.Tensor | VideoError]:
    """Decode several files in one DALI run; one uint8 (K_i, H_i, W_i, 3) tensor or one VideoError per file.

    wanted[i]: ascending unique indices inside infos[i]. When the batched run fails, each file is decoded alone so
    that only the broken ones get an error (DALI reports a failure for the whole batch).
    """
    results: list[torch.Tensor | VideoError | None] = [None] * len(paths)
    encoded: dict[int, np.ndarray] = {}
    for i, path in enumerate(paths):
        try:
            encoded[i] = np.fromfile(os.fspath(path), dtype=np.uint8)
        except OSError as exc:
            results[i] = VideoNotFoundError(path, f"cannot read the file: {exc.strerror or exc}")
    todo = [i for i in encoded if len(wanted[i]) > 0]
    for i in encoded:
        if len(wanted[i]) == 0:
            results[i] = torch.empty((0, infos[i].height, infos[i].width, 3), dtype=torch.uint8, device=device)
    groups = [todo] if todo else []
    while groups:
        group = groups.pop()
        try:
            outputs = _dali.decode([encoded[i] for i in group], [wanted[i] for i in group], device, max_batch)
        except _dali.DaliRunError as exc:
            if len(group) > 1:
                groups.extend([i] for i in group)  # isolate the file(s) that broke the batch
                continue
            which = "NVDEC" if device.type == "cuda" else "CPU"
            results[group[0]] = CorruptVideoError(paths[group[0]], f"DALI {which} decoder failed: {exc}")
            continue
        for i, frames in zip(group, outputs, strict=True):
            expected = (len(wanted[i]), infos[i].height, infos[i].width, 3)
            if tuple(frames.shape) != expected:
                results[i] = CorruptVideoError(paths[i], f"DALI returned frames of shape {tuple(frames.shape)}, "
                                                         f"expected {expected}")
            else:
                results[i] = frames
    return results  # type: ignore[return-value]


def read_frames(path: str | os.PathLike, *, indices: Sequence[int] | np.ndarray | None = None,
                fps: Rate | None = None, max_frames: int | None = None, size: tuple[int, int] | None = None,
                device: DeviceLike = "cpu", backend: Backend = "auto", info: VideoInfo | None = None,
                decode_threads: int = 0) -> DecodedVideo:
    """Decode frames of one video as uint8 RGB.

    path:        the video file.
    indices:     source frame indices to return, in the order given (repeats allowed); or
    fps:         sample at this rate, e.g. fps=2 for Sparkle's 2-FPS frames (rule and examples for 25 and 29.97 fps
                 in sampling.py's docstring); neither: all frames.
    max_frames:  keep only the first max_frames of the selection.
    size:        (height, width) to resize to (bilinear + antialias, see resize_frames); None keeps the video's.
    device:      "cpu" or "cuda[:N]": where the returned tensor lives.
    backend:     "auto" | "dali" | "pyav" (module docstring).
    info:        a probe() result for `path`, to skip probing again.
    decode_threads: PyAV decoder threads (0 = FFmpeg chooses).

    Returns DecodedVideo(frames uint8 (T, H, W, 3), indices int64 (T,), info). Raises VideoError subclasses:
    FrameIndexError for an index past the end, others as probe() and the decoders find them.
    """
    target = resolve_device(device, path)
    info = info if info is not None else probe(path)
    picked = select_indices(info, indices=indices, fps=fps, max_frames=max_frames)
    unique, positions = plan_unique(picked)
    if resolve_backend(info, target, backend) == "dali":
        (decoded,) = decode_dali_batch([path], [info], [unique], target)
        if isinstance(decoded, VideoError):
            raise decoded
    else:
        decoded = decode_pyav(path, info, unique, decode_threads).to(target)
    return DecodedVideo(assemble(decoded, picked, unique, positions, size), picked, info)


def plan_unique(picked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique, positions): the ascending unique indices to decode and, for each picked index, its row in them."""
    unique, positions = np.unique(picked, return_inverse=True)
    return unique.astype(np.int64), positions.reshape(-1)


def assemble(decoded: torch.Tensor, picked: np.ndarray, unique: np.ndarray, positions: np.ndarray,
             size: tuple[int, int] | None) -> torch.Tensor:
    """Frames in the picked order (repeats restored) and resized: uint8 (len(picked), h, w, 3).

    decoded: uint8 (len(unique), H, W, 3), the decoded unique frames."""
    if not np.array_equal(unique, picked):
        decoded = decoded[torch.as_tensor(positions, device=decoded.device)]
    return resize_frames(decoded, size) if size is not None else decoded


def read_clip(path: str | os.PathLike, spec: ClipSpec = SPARKLE_CLIP, *, device: DeviceLike = "cpu",
              backend: Backend = "auto", info: VideoInfo | None = None) -> DecodedVideo:
    """Read `path` as a training clip following `spec` (default SPARKLE_CLIP: 16 fps, <= 81 frames as 4k+1,
    1280x720; KIWI_EDIT_CLIP for Kiwi-Edit's reading). Returns DecodedVideo like read_frames."""
    info = info if info is not None else probe(path)
    return read_frames(path, indices=spec.frame_indices(info), size=spec.output_size(info.height, info.width),
                       device=device, backend=backend, info=info)
