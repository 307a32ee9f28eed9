"""Benchmark stage 5's control video (ops.control_video: Canny of two videos + composition along the BAIT mask).

The Sparkle case: a source and a background video of 81 x 720 x 1280 RGB and a bit-packed mask; output the
(81, 720, 1280, 3) control video. Implementations (each checked against the reference before timing, except kornia,
which is not OpenCV-compatible):
  cv2-1thread        gray + cv2.Canny per frame for both videos with cv2.setNumThreads(1), numpy composition (host)
  cv2-all-threads    the same over a thread pool of all host cores (cv2 releases the GIL) (host)
  torch-eager-compose  composition only, from precomputed edge maps, in torch (run's device)
  kornia-canny       kornia.filters.canny on both videos (GPU only, if kornia imports; NOT OpenCV-compatible:
                     Gaussian blur first, float thresholds; listed for speed only)
  ours-triton        ops.control_video(backend="triton") on the GPU; on CPU only with --quick (the Triton
                     interpreter is a correctness tool, not a timing one)
Bytes moved = both RGB videos read once + the packed mask read once + the control video written once: the floor.

    python bench/canny_compose.py             # GPU if torch sees one, else CPU
    python bench/canny_compose.py --quick     # small shapes
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
from harness import Bench

from sparkle_fast.ops import compose as compose_ops
from sparkle_fast.ops.compose import control_video

SPARKLE_SHAPE = (81, 720, 1280)
QUICK_SHAPE = (4, 72, 128)


def make_inputs(shape, seed=0):
    """Two textured RGB videos (scikit-image photographs tiled and panned when available) and a blob mask."""
    T, H, W = shape
    rng = np.random.default_rng(seed)
    try:
        import skimage.data as data

        src_img, bg_img = data.astronaut(), data.coffee()
    except ImportError:
        src_img = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
        bg_img = rng.integers(0, 256, (400, 600, 3), dtype=np.uint8)

    def video(img):
        reps = (-(-(H + T) // img.shape[0]), -(-(W + T) // img.shape[1]), 1)
        big = np.tile(img, reps)
        return np.stack([big[i:i + H, i:i + W] for i in range(T)])

    yy, xx = np.mgrid[:H, :W]
    mask = np.stack([(yy - H / 2) ** 2 + (xx - W / 2 - i) ** 2 < (H / 3) ** 2 for i in range(T)])
    return video(src_img), video(bg_img), mask


def cv2_control(src, bg, mask, threads: int):
    def edges(frame):
        return cv2.Canny(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), 100, 200)

    frames = list(src) + list(bg)
    if threads == 1:
        maps = [edges(f) for f in frames]
    else:
        with ThreadPoolExecutor(threads) as pool:
            maps = list(pool.map(edges, frames))
    T = len(src)
    se, be = np.stack(maps[:T]), np.stack(maps[T:])
    return np.repeat(np.where(mask, se, be)[..., None], 3, axis=3)


def torch_compose(se, be, mask):
    return torch.where(mask, se, be).unsqueeze(-1).expand(*se.shape, 3).contiguous()


def main(argv=None) -> int:
    bench, args = Bench.from_args("canny_compose", argv, description=__doc__.splitlines()[0])
    device = bench.device
    on_gpu = device.startswith("cuda")
    shape = QUICK_SHAPE if bench.quick else SPARKLE_SHAPE
    src, bg, mask = make_inputs(shape)
    packed = np.packbits(mask.ravel())
    want = compose_ops.control_video_reference(src, bg, mask)
    case = {"shape": "x".join(map(str, shape)), "videos": 2, "mask": "packed"}
    bytes_moved = src.nbytes + bg.nbytes + packed.nbytes + want.nbytes
    cores = os.cpu_count() or 1

    def checked(name, fn):
        got = fn()
        got = got.cpu().numpy() if isinstance(got, torch.Tensor) else got
        if not np.array_equal(got, want):
            raise SystemExit(f"{name} differs from the reference")
        return fn

    prev_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    bench.measure("cv2-1thread", checked("cv2-1thread", lambda: cv2_control(src, bg, mask, 1)), case, bytes_moved,
                  device="cpu", repeat=3 if not bench.quick else None)
    cv2.setNumThreads(prev_threads)
    bench.measure(f"cv2-all-threads({cores})", checked("cv2-all", lambda: cv2_control(src, bg, mask, cores)), case,
                  bytes_moved, device="cpu", repeat=3 if not bench.quick else None)

    se_t = torch.from_numpy(compose_ops.canny_ops.canny_reference(src)).to(device)
    be_t = torch.from_numpy(compose_ops.canny_ops.canny_reference(bg)).to(device)
    mask_t = torch.from_numpy(mask).to(device)
    bench.measure("torch-eager-compose", checked("torch", lambda: torch_compose(se_t, be_t, mask_t)),
                  {**case, "mask": "bool", "note": "composition only"}, se_t.numel() * 6, note="composition only")

    src_t, bg_t = torch.from_numpy(src).to(device), torch.from_numpy(bg).to(device)
    if on_gpu:
        try:
            import kornia

            def kornia_canny():
                x = torch.cat([src_t, bg_t]).permute(0, 3, 1, 2).float() / 255
                _, edges = kornia.filters.canny(x, low_threshold=100 / 1020, high_threshold=200 / 1020)
                return edges

            bench.measure("kornia-canny", kornia_canny, case, bytes_moved,
                          note="kornia.filters.canny, edges only, NOT OpenCV-compatible")
        except ImportError as exc:
            print(f"kornia not available: {exc}", file=sys.stderr)
    if not on_gpu and bench.quick:
        # Triton's CPU interpreter, for a correctness run of the script; must be set before triton is imported.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if on_gpu or bench.quick:
        packed_t = torch.from_numpy(packed).to(device)
        fn = checked("ours", lambda: control_video(src_t, bg_t, packed_t, backend="triton"))
        bench.measure("ours-triton", fn, case, bytes_moved,
                      note="" if on_gpu else "Triton interpreter on CPU: correctness only, not a speed figure")
    bench.measure("ours-reference(cpu)", lambda: compose_ops.control_video_reference(src, bg, mask), case,
                  bytes_moved, device="cpu", repeat=3 if not bench.quick else None)
    bench.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
