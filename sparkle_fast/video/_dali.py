"""DALI decoding: one small pipeline, fed encoded files from Python, decoding chosen frames on NVDEC or the CPU.

The pipeline is

    encoded = external_source("encoded")   uint8 (nbytes,) per sample: the whole file, read by Python
    frames  = external_source("frames")    int32 (K,) per sample: ascending unique frame indices to decode
    video   = fn.decoders.video(encoded, frames=frames, device="mixed" | "cpu")   uint8 (K, H, W, 3) RGB

"mixed" is DALI's name for NVDEC: the container is parsed on the host, frames are decoded by the GPU's video
engines and land in GPU memory. "cpu" uses FFmpeg inside DALI and in this DALI build decodes only VP8, VP9 and MJPEG
(H.264/HEVC are refused: FACTS.md section 3); it exists here so that CI exercises this exact code path with VP9.

Feeding bytes through external_source (rather than fn.experimental.readers.video over file names) lets one built
pipeline serve any list of files with a different frame selection per file, and lets the caller read, validate and
batch files however it likes. Pipelines are built once per (device, batch size) and cached. DALI invalidates a
pipeline after any error, so a failed run drops it from the cache and the next call builds a fresh one.

DALI does not check `frames` against the video's length (past-the-end indices come back as padding), so callers
validate indices against probe()'s frame count before calling decode().
"""

from __future__ import annotations

import re
import threading

import numpy as np
import torch

# Codecs DALI's decoders.video handles, per backend (DALI 2.4 documentation).
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
DALI_MIXED_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "mjpeg", "mpeg4", "av1"})
# What backend="auto" sends to NVDEC: the 4:2:0 8-bit codecs every NVDEC generation decodes (the H100 has no AV1
# decode; MJPEG and MPEG-4 part 2 are rare here and PyAV handles them). Everything else goes to PyAV.
NVDEC_AUTO_CODECS = frozenset({"h264", "hevc", "vp8", "vp9"})
NVDEC_AUTO_PIXEL_FORMATS = frozenset({"yuv420p", "yuvj420p", "nv12"})


class DaliRunError(RuntimeError):
    """A DALI pipeline run failed; the message is DALI's, shortened. Callers translate it per file."""


def dali_import_error() -> str | None:
    """None when nvidia.dali imports, else why not (one line)."""
    try:
        import nvidia.dali  # noqa: F401
        import nvidia.dali.plugin.pytorch  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising something else
        return f"{type(exc).__name__}: {exc}"
    return None


def _short_message(exc: BaseException) -> str:
    """DALI's errors embed a Python traceback of the pipeline definition; keep the part after "encountered:"."""
    text = str(exc)
    if "encountered:" in text:
        text = text.split("encountered:", 1)[1]
    text = re.sub(r"\s+", " ", text).strip()
    return (text[:400] + " ...") if len(text) > 400 else (text or type(exc).__name__)


class _CachedPipeline:
    def __init__(self, pipe):
        self.pipe = pipe
        self.lock = threading.Lock()  # a DALI pipeline is fed and run by one thread at a time


_cache: dict[tuple, _CachedPipeline] = {}
_cache_lock = threading.Lock()


def _build_pipeline(dali_device: str, device_id: int | None, batch_size: int, num_threads: int):
    from nvidia.dali import fn, pipeline_def, types

    # prefetch_queue_depth=1: every run() consumes exactly the batch just fed (no read-ahead of inputs we have not
    # fed yet); overlap with the consumer is done by the caller's own thread (see loader.py).
    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, prefetch_queue_depth=1)
    def video_decode():
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
        return fn.decoders.video(encoded, device=dali_device, frames=frames)

    pipe = video_decode()
    pipe.build()
    return pipe


def _get_pipeline(key: tuple) -> _CachedPipeline:
    with _cache_lock:
        cached = _cache.get(key)
        if cached is None:
            cached = _cache[key] = _CachedPipeline(_build_pipeline(*key))
        return cached


def _drop_pipeline(key: tuple, cached: _CachedPipeline) -> None:
    with _cache_lock:
        if _cache.get(key) is cached:
            del _cache[key]


def decode(encoded: list[np.ndarray], frames: list[np.ndarray], device: torch.device,
           max_batch: int | None = None, num_threads: int = 2) -> list[torch.Tensor]:
    """Decode a batch of in-memory video files with DALI.

    encoded: one uint8 (nbytes,) array per file. frames: one int (K_i,) array of ascending unique indices per file,
    already checked to lie inside each video. device: cpu (DALI's CPU backend) or cuda:N (NVDEC on GPU N).
    max_batch: the pipeline's batch size (a loader passes its batch size so that a short last batch reuses the
    same pipeline); default len(encoded).
    Returns one uint8 (K_i, H_i, W_i, 3) RGB tensor per file on `device`, owning its memory (DALI reuses its
    output buffers on the next run, so outputs are copied out). Raises DaliRunError when the run fails.
    """
    max_batch = max_batch or len(encoded)
    if len(encoded) != len(frames) or not 1 <= len(encoded) <= max_batch:
        raise ValueError(f"decode() needs 1..{max_batch} files and one frame list per file")
    if device.type == "cuda":
        dali_device, device_id = "mixed", (device.index if device.index is not None else torch.cuda.current_device())
    else:
        dali_device, device_id = "cpu", None  # a CPU-only pipeline: no CUDA context is created
    key = (dali_device, device_id, max_batch, num_threads)
    cached = _get_pipeline(key)
    with cached.lock:
        try:
            cached.pipe.feed_input("encoded", [np.ascontiguousarray(data, dtype=np.uint8) for data in encoded])
            cached.pipe.feed_input("frames", [np.asarray(picked, dtype=np.int32) for picked in frames])
            (video,) = cached.pipe.run()
            return [_to_torch(video[i], device) for i in range(len(encoded))]
        except Exception as exc:
            _drop_pipeline(key, cached)  # DALI marks the pipeline invalid after an error
            raise DaliRunError(_short_message(exc)) from exc


def _to_torch(sample, device: torch.device) -> torch.Tensor:
    """Copy one DALI output sample (TensorCPU or TensorGPU, uint8 (K, H, W, 3)) into a new torch tensor."""
    if device.type == "cuda":
        from nvidia.dali.plugin.pytorch import feed_ndarray

        out = torch.empty(tuple(sample.shape()), dtype=torch.uint8, device=device)
        # Copy on torch's current stream, ordered after DALI's work on its own stream.
        feed_ndarray(sample, out, cuda_stream=torch.cuda.current_stream(device))
        return out
    return torch.from_numpy(np.array(sample, dtype=np.uint8, copy=True))
