"""Benchmark stage 5's two edge extractors end to end: two RGB videos and a packed BAIT mask in, the 3-channel
control video out ([edges] extractor = "canny" | "lineart").

  ours-canny              ops.control_video (Triton on the GPU, the OpenCV reference on the host)
  ours-lineart(fp32)      models/lineart.py: both videos in one batch through the line-art generator (random weights
                          of the real size: width 64, 3 residual blocks), then ops.compose_edges
  ours-lineart(bf16)      the same in bfloat16 (GPU only)
  controlnet_aux-lineart  the peer: controlnet_aux's LineartDetector frame by frame on the same device, its maps
                          resized back to the frame size as ours are (the generator's map resized, then inverted) and
                          composed the same way; checked against ours
                          (at most 1 gray level apart on 99.9% of pixels)
Canny rows are checked bit-exact against the reference. The generator's cost is compute, not memory: each lineart
row's note gives the generator's FLOPs per run (torch's FlopCounterMode), so a row's TFLOP/s reads off directly.

    python bench/edges.py                   # GPU if torch sees one, else CPU (lineart on a few frames there)
    python bench/edges.py --quick           # small shapes, detect resolution 64
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import torch
from canny_compose import make_inputs
from harness import Bench

from sparkle_fast.models.lineart import LineartDetector, LineartGenerator
from sparkle_fast.ops import compose_edges, control_video
from sparkle_fast.ops.compose import control_video_reference

SPARKLE_SHAPE = (81, 720, 1280)
CPU_LINEART_SHAPE = (2, 720, 1280)  # the generator at 512 x 896 is ~0.4 TFLOP a frame: a few frames on a host
QUICK_SHAPE = (1, 72, 128)


def generator_flops(model: LineartGenerator, frames: int, height: int, width: int, device: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros((1, 3, height, width), device=device))
    return float(counter.get_total_flops()) * frames


def main(argv=None) -> int:
    bench, args = Bench.from_args("edges", argv, description=__doc__.splitlines()[0])
    device = bench.device
    on_gpu = device.startswith("cuda")
    resolution = 64 if bench.quick else 512
    slow = None if bench.quick or on_gpu else 2

    # Canny: the whole clip.
    shape = QUICK_SHAPE if bench.quick else SPARKLE_SHAPE
    src, bg, mask = make_inputs(shape)
    packed = np.packbits(mask.ravel())
    case = {"shape": "x".join(map(str, shape)), "videos": 2, "extractor": "canny"}
    bytes_moved = src.nbytes + bg.nbytes + packed.nbytes + src.nbytes
    src_t, bg_t = torch.from_numpy(src).to(device), torch.from_numpy(bg).to(device)
    packed_t = torch.from_numpy(packed).to(device)
    want = control_video_reference(src, bg, mask)
    got = control_video(src_t, bg_t, packed_t).cpu().numpy()
    if not np.array_equal(got, want):
        raise SystemExit("ours-canny differs from the reference")
    bench.measure("ours-canny", lambda: control_video(src_t, bg_t, packed_t), case, bytes_moved,
                  note="Triton" if on_gpu else "OpenCV reference on the host", repeat=slow)

    # Line art: the whole clip on a GPU, a few frames on a host.
    if not bench.quick and not on_gpu:
        shape = CPU_LINEART_SHAPE
        src, bg, mask = make_inputs(shape)
        packed_t = torch.from_numpy(np.packbits(mask.ravel())).to(device)
        src_t, bg_t = torch.from_numpy(src).to(device), torch.from_numpy(bg).to(device)
    torch.manual_seed(0)
    fine = LineartGenerator(64, 3)
    detector = LineartDetector(fine, device=device, detect_resolution=resolution, batch_size=8)
    case = {"shape": "x".join(map(str, shape)), "videos": 2, "extractor": "lineart", "detect": resolution}
    bytes_moved = 2 * src.nbytes + src.nbytes
    from sparkle_fast.models.lineart import detect_size

    flops = generator_flops(detector.model, 2 * shape[0], *detect_size(shape[1], shape[2], resolution), device)

    def ours(det):
        lines = det(torch.cat([src_t, bg_t]))
        return compose_edges(lines[:len(src_t)], lines[len(src_t):], packed_t)

    reference = ours(detector).cpu().numpy()
    bench.measure("ours-lineart(fp32)", lambda: ours(detector), case, bytes_moved,
                  note=f"generator {flops / 1e12:.2f} TFLOP per run, batch 8", repeat=slow)
    if on_gpu:
        half = LineartDetector(fine, device=device, dtype=torch.bfloat16, detect_resolution=resolution, batch_size=8)
        bench.measure("ours-lineart(bf16)", lambda: ours(half), case, bytes_moved,
                      note=f"generator {flops / 1e12:.2f} TFLOP per run, batch 8")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from controlnet_aux.lineart import LineartDetector as Peer
    except ImportError as exc:
        print(f"controlnet_aux not available: {exc}", file=sys.stderr)
        bench.finish()
        return 0
    import cv2

    peer = Peer(fine.to(device), fine.to(device))
    height, width = shape[1:3]

    def theirs():  # their map at the detect size, back to the frame size in our order (resize, then invert)
        maps = [255 - cv2.resize(255 - peer(f, detect_resolution=resolution, image_resolution=resolution,
                                            output_type="np")[..., 0], (width, height), interpolation=cv2.INTER_LINEAR)
                for f in np.concatenate([src, bg])]
        lines = torch.from_numpy(np.stack(maps)).to(device)
        return compose_edges(lines[:len(src)], lines[len(src):], packed_t)

    diff = np.abs(theirs().cpu().numpy().astype(np.int16) - reference.astype(np.int16))
    if diff.max() > 1 or (diff > 0).mean() > 1e-3:
        raise SystemExit(f"controlnet_aux-lineart differs from ours by up to {diff.max()} on {(diff > 0).mean():.2%}")
    bench.measure("controlnet_aux-lineart", theirs, case, bytes_moved,
                  note=f"frame by frame; generator {flops / 1e12:.2f} TFLOP per run", repeat=slow)
    bench.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
