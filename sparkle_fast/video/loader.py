"""VideoLoader: decode many videos in the background while the caller works on the ones already decoded.

    with VideoLoader(paths, fps=2, device="cuda") as loader:
        for item in loader:                 # input order; at most `prefetch` videos decoded ahead
            if item.error is not None:      # a VideoError naming the file; the batch goes on
                reject(item.path, item.error.cause)
                continue
            use(item.frames, item.indices)  # uint8 (T, H, W, 3) on the device, int64 (T,)

Two engines, picked from `device` and `backend` like read_frames:
  PyAV (CPU output, or no DALI): a thread pool, one video per task. PyAV releases the GIL while FFmpeg decodes
      and converts, so `workers` videos decode in parallel; each decoder gets `decode_threads` FFmpeg threads.
  DALI (backend="dali", or "auto" with CUDA output and DALI installed): one producer thread probes a batch of
      `batch_size` files (PyAV, demux only), decodes them in one DALI run (NVDEC on the GPU; DALI's CPU decoder
      for device="cpu"), resizes them on the device and queues them. Files DALI cannot take (codec, pixel format)
      are decoded by PyAV in the same thread under "auto". When a batch fails, its files are retried one by one so
      that only the broken ones are reported.
Either way decoding overlaps the consumer, and a bad file becomes an item with `error` set instead of an
exception. Errors that are not VideoError (bugs) are re-raised in the consumer.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from sparkle_fast.video import _dali
from sparkle_fast.video.decode import (
    Backend,
    DeviceLike,
    assemble,
    decode_dali_batch,
    decode_pyav,
    plan_unique,
    resolve_backend,
    resolve_device,
    select_indices,
)
from sparkle_fast.video.errors import BackendUnavailableError, VideoError
from sparkle_fast.video.probe import VideoInfo, probe
from sparkle_fast.video.sampling import ClipSpec, Rate

IndexChoice = Sequence[int] | np.ndarray | Callable[[VideoInfo], Sequence[int] | np.ndarray] | None


@dataclass
class LoadedVideo:
    """One video from a VideoLoader: either frames (error is None) or an error (frames is None).

    frames:  uint8 (T, H, W, 3) RGB on the loader's device.   indices: int64 (T,) source frame indices.
    info:    probe() result (None when probing failed).        error: the VideoError, naming the file.
    """

    path: str
    frames: torch.Tensor | None = None
    indices: np.ndarray | None = None
    info: VideoInfo | None = None
    error: VideoError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _Failure:
    """A non-VideoError exception from a worker, carried to the consumer to be re-raised there."""

    def __init__(self, exc: BaseException):
        self.exc = exc


class VideoLoader:
    """Iterate over decoded videos in input order (see the module docstring).

    paths:        video files.
    indices:      indices for every video, or a function info -> indices; fps / max_frames / size: as read_frames.
    clip:         a ClipSpec (e.g. SPARKLE_CLIP) instead of indices/fps/max_frames/size.
    device, backend: as read_frames.
    workers:      PyAV engine: videos decoded in parallel (default min(8, cores)).
    decode_threads: FFmpeg threads per PyAV decoder (default cores // workers, at least 1).
    batch_size:   DALI engine: files per DALI run.
    prefetch:     videos decoded ahead of the consumer at most (default 2 * workers, or 2 * batch_size with DALI);
                  bounds memory.
    """

    def __init__(self, paths: Iterable[str | os.PathLike], *, indices: IndexChoice = None, fps: Rate | None = None,
                 max_frames: int | None = None, size: tuple[int, int] | None = None, clip: ClipSpec | None = None,
                 device: DeviceLike = "cpu", backend: Backend = "auto", workers: int | None = None,
                 decode_threads: int | None = None, batch_size: int = 8, prefetch: int | None = None):
        if clip is not None and (indices is not None or fps is not None or max_frames is not None or size is not None):
            raise ValueError("give either clip= or indices/fps/max_frames/size, not both")
        if indices is not None and fps is not None:
            raise ValueError("give either indices= or fps=, not both")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.paths = [os.fspath(p) for p in paths]
        self._indices, self._fps, self._max_frames, self._size, self._clip = indices, fps, max_frames, size, clip
        self.device = resolve_device(device, self.paths[0] if self.paths else "<no videos>")
        self.backend = backend
        cores = os.cpu_count() or 1
        self.workers = workers or min(8, cores)
        self.decode_threads = decode_threads or max(1, cores // self.workers)
        self.batch_size = batch_size
        if backend not in ("auto", "dali", "pyav"):
            raise ValueError(f"backend must be 'auto', 'dali' or 'pyav', got {backend!r}")
        dali_problem = _dali.dali_import_error()
        if backend == "dali" and dali_problem is not None:
            raise BackendUnavailableError(self.paths[0] if self.paths else "<no videos>",
                                          f"backend 'dali' requested but nvidia.dali does not import ({dali_problem})")
        self.engine = "dali" if backend == "dali" or (backend == "auto" and self.device.type == "cuda"
                                                      and dali_problem is None) else "pyav"
        self.prefetch = prefetch or (2 * self.workers if self.engine == "pyav" else 2 * batch_size)
        self._stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._producer: threading.Thread | None = None
        self._started = False

    # -- what to read from one video --------------------------------------------------------------------------
    def _plan(self, info: VideoInfo) -> tuple[np.ndarray, tuple[int, int] | None]:
        if self._clip is not None:
            return self._clip.frame_indices(info), self._clip.output_size(info.height, info.width)
        chosen = self._indices(info) if callable(self._indices) else self._indices
        return select_indices(info, indices=chosen, fps=self._fps, max_frames=self._max_frames), self._size

    def _load_pyav(self, path: str) -> LoadedVideo:
        info = None
        try:
            info = probe(path)
            picked, size = self._plan(info)
            unique, positions = plan_unique(picked)
            decoded = decode_pyav(path, info, unique, self.decode_threads).to(self.device)
            return LoadedVideo(path, assemble(decoded, picked, unique, positions, size), picked, info)
        except VideoError as exc:
            return LoadedVideo(path, info=info, error=exc)

    def _load_dali_batch(self, paths: list[str]) -> list[LoadedVideo]:
        items = [LoadedVideo(path) for path in paths]
        plans: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int] | None]] = {}
        for i, item in enumerate(items):
            try:
                item.info = probe(item.path)
                picked, size = self._plan(item.info)
                if resolve_backend(item.info, self.device, self.backend) == "pyav":
                    items[i] = self._load_pyav(item.path)  # auto: a codec NVDEC does not take here
                    continue
                plans[i] = (picked, *plan_unique(picked), size)
            except VideoError as exc:
                item.error = exc
        order = list(plans)
        if order:
            decoded = decode_dali_batch([items[i].path for i in order], [items[i].info for i in order],
                                        [plans[i][1] for i in order], self.device, self.batch_size)
            for i, result in zip(order, decoded, strict=True):
                if isinstance(result, VideoError):
                    items[i].error = result
                else:
                    picked, unique, positions, size = plans[i]
                    items[i].frames, items[i].indices = assemble(result, picked, unique, positions, size), picked
        return items

    # -- engines --------------------------------------------------------------------------------------------------
    def _iter_pyav(self) -> Iterator[LoadedVideo]:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="video-decode")
        pending: deque[Future] = deque()
        upcoming = iter(self.paths)
        for path in upcoming:  # fill the window, then keep it full as items are consumed
            pending.append(self._pool.submit(self._load_pyav, path))
            if len(pending) >= self.prefetch:
                break
        while pending:
            item = pending.popleft().result()
            next_path = next(upcoming, None)
            if next_path is not None and not self._stop.is_set():
                pending.append(self._pool.submit(self._load_pyav, next_path))
            yield item

    def _produce_dali(self, out: queue.Queue) -> None:
        try:
            for start in range(0, len(self.paths), self.batch_size):
                for item in self._load_dali_batch(self.paths[start:start + self.batch_size]):
                    if not self._put(out, item):
                        return
        except BaseException as exc:  # a bug: hand it to the consumer rather than dying silently in a thread
            self._put(out, _Failure(exc))
        self._put(out, None)  # end of stream

    def _put(self, out: queue.Queue, item) -> bool:
        while not self._stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _iter_dali(self) -> Iterator[LoadedVideo]:
        out: queue.Queue = queue.Queue(maxsize=self.prefetch)
        self._producer = threading.Thread(target=self._produce_dali, args=(out,), name="video-dali", daemon=True)
        self._producer.start()
        while True:
            item = out.get()
            if item is None:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def __iter__(self) -> Iterator[LoadedVideo]:
        if self._started:
            raise RuntimeError("a VideoLoader can be iterated once; make a new one")
        self._started = True
        try:
            yield from (self._iter_dali() if self.engine == "dali" else self._iter_pyav())
        finally:
            self.close()

    def __len__(self) -> int:
        return len(self.paths)

    def close(self) -> None:
        """Stop decoding ahead and release the threads (running decodes finish first). Idempotent."""
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._producer is not None:
            self._producer.join()
            self._producer = None

    def __enter__(self) -> VideoLoader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def load_videos(paths: Iterable[str | os.PathLike], **options) -> Iterator[LoadedVideo]:
    """Shorthand: iterate over VideoLoader(paths, **options), closing it at the end."""
    with VideoLoader(paths, **options) as loader:
        yield from loader
