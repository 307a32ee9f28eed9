"""Benchmark video decoding for the Sparkle pipeline: frames/s of sparkle_fast.video against its peers.

The Sparkle case: 1280x720 H.264 yuv420p at about 1 Mbps, 16 fps, 81 frames (Sparkle's clip format), read
  full     every frame (stage 1, BAIT, stage 5 inputs)
  2fps     Sparkle's 2-FPS sampling: 11 frames, indices 0, 8, ..., 80 (grounding and BAIT anchors)
for one video and for a batch of many (the batched loader; the batch is one file read `--batch` times, which is
what a GPU node's page cache sees anyway).
Implementations (each checked to return the same frame count and indices as PyAV before timing):
  pyav             sparkle_fast.video.read_frames(backend="pyav"): FFmpeg on the host, FFmpeg's own threads
  pyav-loader      VideoLoader(backend="pyav"): thread pool, one video per worker
  dali-nvdec       read_frames(backend="dali", device="cuda"): NVDEC, frames land in GPU memory (GPU runs only)
  dali-nvdec-loader  VideoLoader on CUDA: one DALI run per batch (GPU runs only)
  torchcodec       torchcodec.decoders.VideoDecoder(...).get_frames_at(indices), where it installs and imports
Rows carry frames_per_s (frames returned per second) and source_frames_per_s (source frames covered per
second: what a 2-FPS reader must still demux and decode). The physical yardstick is the NVDEC engines' rate
(H100: 7 engines), not memory bandwidth, so no bytes_moved is given.

    python bench/decode.py                     # GPU if torch sees one, else CPU
    python bench/decode.py --quick             # 320x176, 17 frames: checks the script runs
    python bench/decode.py --video my.mp4      # time a real file instead of the generated clip
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from harness import Bench

from sparkle_fast import video

SPARKLE = {"width": 1280, "height": 720, "frames": 81, "fps": 16, "bit_rate": 1_000_000}
QUICK = {"width": 320, "height": 176, "frames": 17, "fps": 16, "bit_rate": 250_000}


def make_test_clip(path: Path, width: int, height: int, frames: int, fps: int, bit_rate: int) -> Path:
    """A clip with real motion and texture (a drifting textured plane plus a moving bright square), encoded like
    Sparkle's files: H.264 yuv420p mp4 at the given bit rate. Decoding cost depends on content; this stands in
    for natural video when none is given with --video."""
    import av

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    texture = np.kron(texture, np.ones((8, 8, 1), dtype=np.uint8))  # 8x8 blocks: compressible, not trivial
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = width, height, "yuv420p", bit_rate
        stream.options = {"preset": "veryfast"}
        for i in range(frames):
            dy, dx = i % 8, (2 * i) % 16
            image = texture[dy:dy + height, dx:dx + width].copy()
            top, left = (3 * i) % max(1, height - 64), (7 * i) % max(1, width - 64)
            image[top:top + 64, left:left + 64] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def torchcodec_reader(device: str):
    """A function (path, indices) -> frames with torchcodec, or the reason it cannot run here."""
    try:
        from torchcodec.decoders import VideoDecoder
    except Exception as exc:  # not installed, or its FFmpeg libraries are missing
        return None, f"torchcodec unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"

    def read(path: Path, indices: np.ndarray):
        decoder = VideoDecoder(str(path), device=device)
        return decoder.get_frames_at(indices=indices.tolist()).data

    return read, None


def add_rates(row: dict, frames_out: int, source_frames: int) -> None:
    row["frames_per_s"] = frames_out / row["median_s"]
    row["source_frames_per_s"] = source_frames / row["median_s"]
    print(f"{'':48} {'':22} {row['frames_per_s']:10.1f} frames/s out, {row['source_frames_per_s']:.1f} source "
          f"frames/s", flush=True)


def main(argv=None) -> int:
    def extra(parser):
        parser.add_argument("--video", type=Path, default=None, help="time this file instead of a generated clip")
        parser.add_argument("--batch", type=int, default=None, help="videos per batch case (default 16, quick 4)")
        parser.add_argument("--workers", type=int, default=None, help="PyAV loader threads (default: cores, <= 8)")

    bench, args = Bench.from_args("decode", argv, __doc__.splitlines()[0], extra)
    spec = QUICK if bench.quick else SPARKLE
    batch = args.batch or (4 if bench.quick else 16)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as scratch:
        path = args.video or make_test_clip(Path(scratch) / "clip.mp4", **spec)
        info = video.probe(path)
        print(f"clip: {path.name} {info.width}x{info.height} {info.codec} {info.pixel_format} {info.frame_count} "
              f"frames at {info.fps} fps, {os.path.getsize(path) * 8 / info.duration / 1e6:.2f} Mbit/s", flush=True)
        selections = {"full": {}, "2fps": {"fps": 2}}
        expected = {name: video.select_indices(info, **sel) for name, sel in selections.items()}
        on_gpu = bench.device.startswith("cuda")
        torchcodec, why_not = torchcodec_reader(bench.device)
        if why_not:
            notes.append(why_not)
            print(why_not, flush=True)

        for name, selection in selections.items():
            want = expected[name]
            case = {"video": f"{info.width}x{info.height}", "frames": info.frame_count, "sampling": name,
                    "videos": 1}
            candidates = {"pyav": (lambda sel=selection: video.read_frames(path, backend="pyav", **sel).frames,
                                   "cpu")}
            if on_gpu:
                candidates["dali-nvdec"] = (lambda sel=selection: video.read_frames(
                    path, backend="dali", device=bench.device, **sel).frames, bench.device)
            if torchcodec is not None:
                candidates["torchcodec"] = (lambda want=want: torchcodec(path, want), bench.device)
            for impl, (fn, where) in candidates.items():
                got = fn()
                if got.shape[0] != len(want):
                    raise SystemExit(f"{impl} returned {got.shape[0]} frames for {name}, expected {len(want)}")
                row = bench.measure(impl, fn, case=case, device=where)
                add_rates(row, len(want), info.frame_count)

            batch_case = dict(case, videos=batch)
            loaders = {"pyav-loader": ("pyav", "cpu")}
            if on_gpu:
                loaders["dali-nvdec-loader"] = ("dali", bench.device)
            for impl, (backend, where) in loaders.items():
                def run_loader(backend=backend, where=where, sel=selection):
                    count = 0
                    for item in video.VideoLoader([path] * batch, backend=backend, device=where,
                                                  workers=args.workers, **sel):
                        if item.error is not None:
                            raise item.error
                        count += len(item.frames)
                    return count

                if run_loader() != batch * len(want):
                    raise SystemExit(f"{impl} returned the wrong number of frames")
                # A batch run takes `batch` times longer: fewer repeats keep the script's run time reasonable.
                row = bench.measure(impl, run_loader, case=batch_case, device=where, repeat=max(3, bench.repeat // 3))
                add_rates(row, batch * len(want), batch * info.frame_count)

    import av

    bench.env["libraries"]["ffmpeg (PyAV's libavcodec)"] = ".".join(map(str, av.library_versions["libavcodec"]))
    bench.env["notes"] = notes
    bench.env["clip"] = {"width": info.width, "height": info.height, "frames": info.frame_count, "fps": str(info.fps),
                         "codec": info.codec, "source": str(args.video) if args.video else "generated (see docstring)"}
    bench.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
