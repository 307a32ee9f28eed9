"""Benchmark BAIT's vote + Sparkle's bit packing (ops.vote_and_pack) against its peers.

The Sparkle case: N = 11 and 20 tracking passes of 81 x 720 x 1280, as uint8 masks and already bit-packed.
Implementations, all computing the same packed bits (checked against the reference before timing):
  numpy          the reference (sparkle_fast.ops.vote_pack.vote_and_pack_reference), on the host
  torch-eager    (passes != 0).sum(0) >= k, then packing with torch ops, on the run's device
  ours-host-c++  the CUDA kernels' per-thread code run in one host thread (sparkle_fast._C.vote_*_host)
  ours-triton    sparkle_fast.kernels.vote_pack on the GPU
  ours-cuda      sparkle_fast._C on the GPU
Bytes moved = the passes read once + the packed result written once: the floor of any implementation.

    python bench/vote_pack.py                  # GPU if torch sees one, else CPU
    python bench/vote_pack.py --quick          # small shapes, to check the script runs
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
from harness import Bench

from sparkle_fast import ops
from sparkle_fast._build import extension
from sparkle_fast.ops.vote_pack import vote_and_pack_reference

SPARKLE_SHAPE = (81, 720, 1280)
QUICK_SHAPE = (9, 72, 128)


def torch_eager_vote_and_pack(passes: torch.Tensor, min_votes: int, shape=None) -> torch.Tensor:
    """What one would write in plain torch: unpack (if packed), count, threshold, pack."""
    if shape is not None:  # packed rows -> bits
        shifts = torch.arange(7, -1, -1, device=passes.device, dtype=torch.uint8)
        n_pixels = math.prod(shape)
        passes = ((passes.unsqueeze(-1) >> shifts) & 1).reshape(passes.shape[0], -1)[:, :n_pixels]
    votes = (passes != 0).sum(0, dtype=torch.int16).reshape(-1) >= min_votes
    padded = torch.nn.functional.pad(votes, (0, (-votes.numel()) % 8)).reshape(-1, 8).to(torch.uint8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], device=votes.device, dtype=torch.uint8)
    return (padded * weights).sum(1, dtype=torch.uint8)


def host_twin_vote_and_pack(rows: np.ndarray, n_pixels: int, packed_in: bool, min_votes: int) -> np.ndarray:
    out = np.empty((n_pixels + 7) // 8, dtype=np.uint8)
    launch = extension().vote_packed_host if packed_in else extension().vote_u8_host
    launch(rows.ctypes.data, rows.shape[0], n_pixels, min_votes, out.ctypes.data, True)
    return out


def bench_case(bench: Bench, case: dict, x: torch.Tensor, min_votes: int, shape_arg, want: np.ndarray) -> bool:
    """Check then time every implementation on one input; False if one disagrees with the reference."""
    device = bench.device
    host_x = x.cpu().numpy()
    rows = host_x.reshape(host_x.shape[0], -1)
    n_pixels = math.prod(case_shape(case))
    candidates = {
        "numpy": (lambda: vote_and_pack_reference(host_x, min_votes, shape=shape_arg), "cpu"),
        "torch-eager": (lambda: torch_eager_vote_and_pack(x, min_votes, shape_arg), device),
        "ours-host-c++": (lambda: host_twin_vote_and_pack(rows, n_pixels, shape_arg is not None, min_votes), "cpu"),
    }
    if device.startswith("cuda"):
        for backend in ("triton", "cuda"):
            candidates[f"ours-{backend}"] = (
                lambda b=backend: ops.vote_and_pack(x, min_votes, shape=shape_arg, backend=b), device)
    for impl, (fn, where) in candidates.items():
        result = fn()
        got = result.cpu().numpy() if isinstance(result, torch.Tensor) else result
        if not np.array_equal(got, want):
            print(f"{impl} disagrees with the reference on {case}", file=sys.stderr)
            return False
        slow_host_run = where == "cpu" and not bench.quick
        bench.measure(impl, fn, case, bytes_moved=host_x.nbytes + want.nbytes, device=where,
                      repeat=min(bench.repeat, 5) if slow_host_run else None)
    return True


def case_shape(case: dict) -> tuple[int, ...]:
    return tuple(int(d) for d in case["shape"].split("x"))


def main(argv=None) -> int:
    bench, _ = Bench.from_args("vote_pack", argv, description=__doc__.splitlines()[0])
    shape = QUICK_SHAPE if bench.quick else SPARKLE_SHAPE
    generator = torch.Generator(device=bench.device).manual_seed(0)
    for n_passes in (11, 20):
        min_votes = n_passes // 2 + 1
        # Mostly-background masks with foreground blobs would look more like tracker output, but these kernels do
        # the same work whatever the values, and random values exercise every bit pattern.
        passes = (torch.rand((n_passes, *shape), generator=generator, device=bench.device) < 0.3).to(torch.uint8)
        host_passes = passes.cpu().numpy()
        packed = torch.from_numpy(np.stack([np.packbits(p.ravel()) for p in host_passes])).to(bench.device)
        want = vote_and_pack_reference(host_passes, min_votes)
        del host_passes
        for layout, x, shape_arg in (("uint8", passes, None), ("packed", packed, shape)):
            case = {"passes": n_passes, "shape": "x".join(map(str, shape)), "input": layout}
            if not bench_case(bench, case, x, min_votes, shape_arg, want):
                return 1
        del passes, packed
        if bench.device.startswith("cuda"):
            torch.cuda.empty_cache()
    bench.compare_to("numpy")
    bench.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
