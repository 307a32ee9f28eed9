"""`sparkle-fast selftest`: what to run on a new node before a long run (and what `make gpu-check` starts with).

    report = run_selftest(quick=True)      # {"device", "ok", "summary", "checks": [...]}; ok is False on any failure

Groups of checks, each a pass, a fail or a skip with its reason:
  build      the extension (CUDA archs it carries against the GPU's compute capability), Triton (and whether it runs
             through its CPU interpreter), torch, the CUDA driver.
  parity     every op on every backend present (triton, cuda; on a machine without a GPU the CUDA kernels' per-thread
             code through its host twin, and Triton when TRITON_INTERPRET=1) against the op's reference (its numpy /
             OpenCV definition), at small adversarial sizes (odd, not multiples of any block) and, without --quick, at
             Sparkle's sizes (81 x 720 x 1280, 11 BAIT passes). Integer and bool outputs must be equal bit for bit;
             track_points and find_homographies within the bounds their tests state (tests/test_optical_flow.py,
             tests/test_homography.py). A reference that needs a library this machine lacks (OpenCV) is a skip.
  decode     DALI (NVDEC) against PyAV on an H.264 clip we encode: luma within mean 2 / max 6 levels (the bound of
             tests/test_video_gpu.py), when DALI, PyAV and a GPU are present.
  bench      each hot path on every backend present against its peers (the reference is one of them): the median of a
             few timed calls (CUDA events on a GPU). Reported, never asserted.
  sanitizer  where `compute-sanitizer` is on PATH and a GPU is present: memcheck and racecheck over one small launch
             of every CUDA and Triton kernel (this module's `sanitize-workload` entry point, in a child process).

Exit status of the command: 1 when any check failed, else 0 (skips are not failures).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SPARKLE_SHAPE = (81, 720, 1280)  # Sparkle's clip: 81 frames of 1280x720
SPARKLE_PASSES = 11  # BAIT's passes for 81 frames at 16 fps (anchors every 8 frames)


@dataclass
class Check:
    group: str  # build | parity | decode | bench | sanitizer
    name: str
    status: str  # pass | fail | skip
    detail: str = ""
    seconds: float = 0.0
    data: dict = field(default_factory=dict)


# --- what this machine has -----------------------------------------------------------------------------------------


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _missing_module(name: str) -> str | None:
    """None when `name` imports, else the reason."""
    try:
        __import__(name)
    except Exception as exc:  # noqa: BLE001 - any import failure is a reason to skip
        return f"{name} does not import ({type(exc).__name__}: {exc})"
    return None


def backends_present() -> dict[str, str | None]:
    """backend -> None when its kernels can run here, else why not. "cuda-host" is the CUDA kernels' per-thread code
    compiled for the host (sparkle_fast._C.*_host), which runs on any machine with the extension."""
    from sparkle_fast._build import cuda_kernels, extension
    from sparkle_fast.ops._dispatch import triton_available, triton_interpreter

    gpu = _gpu()
    out: dict[str, str | None] = {}
    if not triton_available():
        out["triton"] = "triton is not installed"
    elif not gpu and not triton_interpreter():
        out["triton"] = ("no GPU, and the Triton interpreter is off (run with TRITON_INTERPRET=1 to check the Triton "
                         "kernels on the CPU)")
    else:
        out["triton"] = None
    if cuda_kernels() is None:
        out["cuda"] = "sparkle_fast._C was built without CUDA (no nvcc at install time)"
    elif not gpu:
        out["cuda"] = "no GPU visible to torch"
    else:
        out["cuda"] = None
    ext = extension()
    out["cuda-host"] = None if ext is not None and hasattr(ext, "vote_u8_host") else "sparkle_fast._C is not built"
    return out


def device_name() -> str:
    """The GPU's name, or the host CPU's model with its core count."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores, no GPU)"


# --- build ---------------------------------------------------------------------------------------------------------


def build_checks() -> list[Check]:
    import torch

    from sparkle_fast import build_info
    from sparkle_fast.ops._dispatch import triton_available, triton_interpreter

    info = build_info()
    checks = []
    ext = info.get("extension")
    if ext is None:
        checks.append(Check("build", "extension", "fail", f"sparkle_fast._C did not import: "
                                                           f"{info.get('extension_error')}; reinstall (make build)"))
    else:
        archs = ext.get("cuda_archs") or []
        detail = f"built with {ext.get('compiler')}, CUDA {ext.get('cuda_version') or 'no'}; archs {archs or '-'}"
        status = "pass"
        if torch.cuda.is_available() and ext.get("cuda"):
            major, minor = torch.cuda.get_device_capability(0)
            sm, ptx = f"sm_{major}{minor}", f"compute_{major}{minor}"
            runs = any(a == sm or a.startswith(sm + " ") for a in archs) or any(
                a.startswith("compute_") and int(a.split("_")[1].split()[0]) <= major * 10 + minor for a in archs)
            if not runs:
                status = "fail"
                detail += (f"; the GPU is {sm} and the extension carries no code for it (rebuild with "
                           f"SPARKLE_FAST_CUDA_ARCHS including {major}{minor})")
            else:
                detail += f"; runs on this {sm} GPU" + ("" if any(a.startswith(sm) for a in archs) else
                                                        f" through PTX JIT ({ptx} or lower)")
        checks.append(Check("build", "extension", status, detail, data=ext))
    if triton_available():
        import triton

        mode = "interpreter on CPU tensors (TRITON_INTERPRET=1)" if triton_interpreter() else "compiler"
        checks.append(Check("build", "triton", "pass", f"triton {triton.__version__}, {mode}"))
    else:
        checks.append(Check("build", "triton", "skip", "triton is not installed: the Triton kernels cannot run"))
    driver = info.get("cuda_driver_version")
    gpus = info.get("cuda_devices") or []
    if torch.cuda.is_available():
        checks.append(Check("build", "gpu", "pass", f"{torch.cuda.get_device_name(0)} (capability "
                            f"{'.'.join(map(str, torch.cuda.get_device_capability(0)))}), torch {torch.__version__} "
                            f"CUDA {torch.version.cuda}, driver {driver}", data={"devices": gpus}))
    else:
        checks.append(Check("build", "gpu", "skip", f"torch {torch.__version__} sees no GPU: GPU kernels, decode "
                            "parity and the sanitizer are skipped"))
    return checks


# --- parity --------------------------------------------------------------------------------------------------------


@dataclass
class ParityCase:
    op: str
    size: str  # "small" | "sparkle"
    needs: tuple[str, ...]  # modules the reference (or the case's inputs) needs
    backends: tuple[str, ...]  # the op's non-reference backends
    run: Callable[[str, str], Any]  # (backend, device) -> output (numpy arrays)
    reference: Callable[[], Any]
    compare: Callable[[Any, Any], str | None]  # (want, got) -> None when equal enough, else what differs


def _host(x):
    if isinstance(x, tuple):
        return tuple(_host(v) for v in x)
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _on(device: str, *arrays):
    import torch

    return [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays]


def _exact(want, got) -> str | None:
    want, got = np.asarray(want), np.asarray(got)
    if want.shape != got.shape or want.dtype != got.dtype:
        return f"shape/dtype {got.shape} {got.dtype}, expected {want.shape} {want.dtype}"
    bad = np.flatnonzero((want != got).ravel())
    if bad.size:
        return f"{bad.size} of {want.size} elements differ (first at flat index {int(bad[0])})"
    return None


def _lk_close(want, got) -> str | None:
    """tests/test_optical_flow.py's bounds: status agreement >= 98%, position within 0.02 px at the 99th percentile
    and 0.1 px at most, error within 0.05 where both tracked."""
    (w_pts, w_st, w_err), (g_pts, g_st, g_err) = want, got
    agree = float((w_st == g_st).mean())
    both = w_st & g_st
    if agree < 0.98 or not both.any():
        return f"status agrees on {agree:.1%} of points (need 98%)"
    d = np.abs(w_pts - g_pts)[both].max(axis=-1)
    e = float(np.abs(w_err - g_err)[both].max())
    if np.quantile(d, 0.99) > 0.02 or d.max() > 0.1 or e > 0.05:
        return f"positions differ by {np.quantile(d, 0.99):.4f} px (p99) / {d.max():.4f} px (max), error by {e:.4f}"
    return None


def _homography_close(want, got) -> str | None:
    """tests/test_homography.py's bounds: corner error <= 1e-6 px per pair, inliers equal on >= 99.9%."""
    from sparkle_fast.camera import corner_displacement

    (w_h, w_in), (g_h, g_in) = want, got
    finite = np.isfinite(w_h).all(axis=(1, 2))
    if not np.array_equal(finite, np.isfinite(g_h).all(axis=(1, 2))):
        return "a different set of pairs has a model"
    error = float(np.max(corner_displacement(np.linalg.inv(w_h[finite]) @ g_h[finite], (320, 320)), initial=0.0))
    agree = float((w_in == g_in).mean())
    if error > 1e-6 or agree < 0.999:
        return f"corner error {error:.2e} px, inliers agree on {agree:.4%}"
    return None


def parity_cases(quick: bool) -> list[ParityCase]:
    from sparkle_fast import ops
    from sparkle_fast.ops import compose, edges, homography, mask_augment, optical_flow, vote_pack

    rng = np.random.default_rng(0)
    cases: list[ParityCase] = []
    sizes = [("small", (5, 17, 23, 37))] + ([] if quick else [("sparkle", (SPARKLE_PASSES,) + SPARKLE_SHAPE)])
    for size, (n, t, h, w) in sizes:
        passes = (rng.random((n, t, h, w)) < 0.5).astype(np.uint8)
        packed_passes = np.packbits(passes.reshape(n, -1).astype(bool), axis=1)
        cases += [
            ParityCase("vote_and_pack", size, (), ("cuda", "triton", "cuda-host"),
                       lambda b, d, p=passes: _vote_host(p, True) if b == "cuda-host" else
                       _host(ops.vote_and_pack(*_on(d, p), backend=b)),
                       lambda p=passes: vote_pack.vote_and_pack_reference(p), _exact),
            ParityCase("vote_masks (bit-packed passes)", size, (), ("cuda", "triton", "cuda-host"),
                       lambda b, d, p=packed_passes, s=(t, h, w): _vote_host(p, False, s) if b == "cuda-host" else
                       _host(ops.vote_masks(*_on(d, p), shape=s, backend=b)),
                       lambda p=packed_passes, s=(t, h, w): vote_pack.vote_masks_reference(p, shape=s), _exact),
            ParityCase("pack_bits / unpack_bits", size, (), ("cuda", "triton"),
                       lambda b, d, p=passes: _host(ops.unpack_bits(ops.pack_bits(*_on(d, p[0]), backend=b),
                                                                    p[0].shape, backend=b)),
                       lambda p=passes: vote_pack.unpack_bits_reference(vote_pack.pack_bits_reference(p[0]),
                                                                        p[0].shape), _exact),
        ]
    video_sizes = [("small", (3, 37, 53))] + ([] if quick else [("sparkle", SPARKLE_SHAPE)])
    for size, (t, h, w) in video_sizes:
        src = _textured_video(rng, t, h, w)
        bg = _textured_video(rng, t, h, w)
        mask = rng.random((t, h, w)) < 0.3
        packed_mask = np.packbits(mask.ravel())
        cases += [
            ParityCase("rgb_to_gray", size, ("cv2",), ("triton",),
                       lambda b, d, s=src: _host(ops.rgb_to_gray(*_on(d, s), backend=b)),
                       lambda s=src: edges.rgb_to_gray_reference(s), _exact),
            ParityCase("canny", size, ("cv2",), ("triton",),
                       lambda b, d, s=src: _host(ops.canny(*_on(d, s), 100, 200, backend=b)),
                       lambda s=src: edges.canny_reference(s, 100, 200), _exact),
            ParityCase("control_video", size, ("cv2",), ("triton",),
                       lambda b, d, s=src, g=bg, m=packed_mask: _host(ops.control_video(*_on(d, s, g, m), 100, 200,
                                                                                        dilate=2, backend=b)),
                       lambda s=src, g=bg, m=mask: compose.control_video_reference(s, g, m, 100, 200, dilate=2),
                       _exact),
            ParityCase("dilate_mask", size, ("cv2",), ("triton",),
                       lambda b, d, m=mask: _host(ops.dilate_mask(*_on(d, m), 3, backend=b)),
                       lambda m=mask: mask_augment.dilate_mask_reference(m, 3), _exact),
        ]
    # quick: one pair and 20 points (a few programs: the Triton interpreter takes seconds per LK program)
    lk_sizes = ([("small", (1, 61, 83, (4, 5)))] if quick else
                [("small", (4, 97, 131, (12, 16))), ("sparkle", (20, 720, 1280, (12, 16)))])
    for size, (pairs, h, w, cells) in lk_sizes:
        case = _lk_inputs(rng, pairs, h, w)
        if case is None:
            cases.append(ParityCase("track_points", size, ("cv2",), ("triton",), None, None, None))
            continue
        prev, nxt = case
        cases += [
            ParityCase("select_points", size, ("cv2",), ("triton",),
                       lambda b, d, p=prev, c=cells: _host(ops.select_points(*_on(d, p), cells=c, margin=8,
                                                                               backend=b)),
                       lambda p=prev, c=cells: optical_flow.select_points_reference(p, cells=c, margin=8),
                       lambda want, got: _exact(want[1], got[1]) or _exact(want[0], got[0])),
        ]
        points = optical_flow.select_points_reference(prev, cells=cells, margin=8)[0]
        cases.append(ParityCase(
            "track_points", size, ("cv2",), ("triton",),
            lambda b, d, p=prev, q=nxt, pts=points: _host(ops.track_points(*_on(d, p, q, pts), backend=b)),
            lambda p=prev, q=nxt, pts=points: optical_flow.track_points_reference(p, q, pts), _lk_close))
    # 432 points a pair: the RANSAC kernel's 256-point shared-memory tiles are crossed
    ransac_sizes = [("small", (40, 300))] + ([] if quick else [("sparkle", (100, 432))])
    for size, (pairs, n) in ransac_sizes:
        src, dst = _homography_inputs(rng, pairs, n)
        cases.append(ParityCase(
            "find_homographies", size, (), ("cuda",),
            lambda b, d, s=src, t=dst: _host(ops.find_homographies(*_on(d, s, t), backend=b)),
            lambda s=src, t=dst: homography.find_homographies_reference(s, t), _homography_close))
    return cases


def _vote_host(rows: np.ndarray, pack_out: bool, shape=None) -> np.ndarray:
    """The CUDA vote kernels' per-thread code on the host (sparkle_fast._C.vote_*_host), 7 emulated threads."""
    from sparkle_fast._build import extension

    rows = np.ascontiguousarray(rows)
    packed_in = shape is not None
    n_pixels = int(np.prod(shape)) if packed_in else int(np.prod(rows.shape[1:]))
    out = np.zeros((n_pixels + 7) // 8 if pack_out else n_pixels, np.uint8)
    launch = extension().vote_packed_host if packed_in else extension().vote_u8_host
    launch(rows.ctypes.data, rows.shape[0], n_pixels, rows.shape[0] // 2 + 1, out.ctypes.data, pack_out, 7)
    return out if pack_out else out.view(bool).reshape(shape)


def _textured_video(rng, t: int, h: int, w: int) -> np.ndarray:
    """uint8 (t, h, w, 3): smooth random blobs plus noise, so Canny finds edges of every strength."""
    coarse = rng.integers(0, 256, (t, max(h // 8, 2), max(w // 8, 2), 3)).astype(np.float32)
    ys = np.linspace(0, coarse.shape[1] - 1, h)
    xs = np.linspace(0, coarse.shape[2] - 1, w)
    smooth = coarse[:, np.round(ys).astype(int)][:, :, np.round(xs).astype(int)]
    noise = rng.normal(0, 12, (t, h, w, 3))
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def _lk_inputs(rng, pairs: int, h: int, w: int):
    """(prev, next) uint8 (pairs, h, w): a textured image and its copy warped by a small homography (OpenCV)."""
    try:
        import cv2
    except ImportError:
        return None
    base = cv2.GaussianBlur(rng.integers(0, 256, (h, w)).astype(np.uint8), (0, 0), 1.5)
    base = cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX)
    prev, nxt = [], []
    for _ in range(pairs):
        shift = rng.uniform(-2.5, 2.5, 2)
        m = np.array([[1.005, 0.004, shift[0]], [-0.004, 1.0, shift[1]], [0, 0, 1]])
        moved = cv2.warpPerspective(base, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        prev.append(base)
        nxt.append(np.clip(moved + rng.normal(0, 2, moved.shape), 0, 255).astype(np.uint8))
    return np.stack(prev), np.stack(nxt)


def _homography_inputs(rng, pairs: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (pairs, n, 2) correspondences in a 320 px frame: a random homography each, 40% outliers."""
    src = rng.uniform(0, 320, (pairs, n, 2))
    dst = np.empty_like(src)
    for b in range(pairs):
        h = np.eye(3) + np.concatenate([rng.normal(0, 0.01, (2, 3)), rng.normal(0, 1e-5, (1, 3))])
        h[:2, 2] = rng.uniform(-5, 5, 2)
        h[2, 2] = 1
        mapped = np.c_[src[b], np.ones(n)] @ h.T
        dst[b] = mapped[:, :2] / mapped[:, 2:] + rng.normal(0, 0.3, (n, 2))
        outliers = rng.random(n) < 0.4
        dst[b, outliers] = rng.uniform(0, 320, (int(outliers.sum()), 2))
    return src.astype(np.float32), dst.astype(np.float32)


def parity_checks(quick: bool, present: dict[str, str | None], only_ops=None) -> list[Check]:
    checks = []
    device = "cuda" if _gpu() else "cpu"
    for case in parity_cases(quick):
        if only_ops and not any(case.op.startswith(op) for op in only_ops):
            continue
        missing = next((r for r in map(_missing_module, case.needs) if r), None)
        for backend in case.backends:
            name = f"{case.op} [{backend}, {case.size}]"
            if present.get(backend) is not None:
                checks.append(Check("parity", name, "skip", present[backend]))
                continue
            if missing or case.run is None:
                checks.append(Check("parity", name, "skip", f"the reference needs {missing or 'cv2'}"))
                continue
            if case.size == "sparkle" and device == "cpu":
                checks.append(Check("parity", name, "skip", "Sparkle sizes on the Triton interpreter would take "
                                    "hours; run on a GPU"))
                continue
            started = time.perf_counter()
            try:
                want = case.reference()
                got = case.run(backend, device)
                problem = case.compare(want, got)
            except Exception as exc:  # noqa: BLE001 - a crash on a backend is a failed check, with its trace
                problem = f"raised {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"
            checks.append(Check("parity", name, "fail" if problem else "pass", problem or "equal to the reference",
                                time.perf_counter() - started))
    return checks


# --- decode ----------------------------------------------------------------------------------------------------------


def decode_checks() -> list[Check]:
    reason = None if _gpu() else "no GPU: NVDEC decode cannot run"
    reason = reason or _missing_module("av")
    if reason is None:
        from sparkle_fast.video import _dali

        problem = _dali.dali_import_error()
        reason = None if problem is None else f"DALI does not import ({problem})"
    if reason:
        return [Check("decode", "DALI NVDEC vs PyAV (H.264)", "skip", reason)]
    import tempfile

    from sparkle_fast.video import read_frames, write_video

    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = write_video(os.path.join(folder, "clip.mp4"),
                               _textured_video(np.random.default_rng(1), 17, 144, 256), fps=16)
            nvdec = read_frames(path, device="cuda", backend="dali").frames.cpu().numpy()
            pyav = read_frames(path, device="cpu", backend="pyav").frames.numpy()
        weights = np.array([0.299, 0.587, 0.114])
        diff = np.abs(nvdec.astype(np.float64) @ weights - pyav.astype(np.float64) @ weights)
        ok = nvdec.shape == pyav.shape and diff.mean() <= 2.0 and diff.max() <= 6.0
        detail = f"luma difference mean {diff.mean():.2f}, max {diff.max():.1f} (bounds 2 / 6)"
    except Exception as exc:  # noqa: BLE001
        ok, detail = False, f"raised {type(exc).__name__}: {exc}"
    return [Check("decode", "DALI NVDEC vs PyAV (H.264)", "pass" if ok else "fail", detail,
                  time.perf_counter() - started)]


# --- bench ---------------------------------------------------------------------------------------------------------


def _time(fn: Callable[[], Any], device: str, repeat: int, warmup: bool = True) -> float:
    """Median seconds of `repeat` calls after one warm-up call (CUDA events on a GPU)."""
    import torch

    if warmup:
        fn()
    runs = []
    for _ in range(repeat):
        if device == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            runs.append(start.elapsed_time(stop) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
    return float(np.median(runs))


def bench_checks(quick: bool, present: dict[str, str | None], only_ops=None) -> list[Check]:
    """Each hot path on the reference and on every GPU backend present (on its device)."""
    from sparkle_fast import ops

    gpu = _gpu()
    rng = np.random.default_rng(2)
    t, h, w = (9, 180, 320) if quick or not gpu else SPARKLE_SHAPE
    n = 5 if quick or not gpu else SPARKLE_PASSES
    repeat = 3 if quick else 10
    passes = (rng.random((n, t, h, w)) < 0.5).astype(np.uint8)
    src, bg = _textured_video(rng, t, h, w), _textured_video(rng, t, h, w)
    mask = np.packbits(rng.random((t, h, w)) < 0.3)
    hom_src, hom_dst = _homography_inputs(rng, 8 if quick or not gpu else 100, 300)
    paths = {
        "vote_and_pack": (("cuda", "triton"), (), lambda b, d, x=passes: ops.vote_and_pack(*_on(d, x), backend=b),
                          f"{n} passes of {t}x{h}x{w}"),
        "control_video": (("triton",), ("cv2",),
                          lambda b, d: ops.control_video(*_on(d, src, bg, mask), 100, 200, backend=b),
                          f"{t}x{h}x{w} RGB"),
        "find_homographies": (("cuda",), (), lambda b, d: ops.find_homographies(*_on(d, hom_src, hom_dst), backend=b),
                              f"{len(hom_src)} pairs x 300 points"),
    }
    checks = []
    for name, (gpu_backends, needs, call, case) in paths.items():
        if only_ops and name not in only_ops:
            continue
        missing = next((r for r in map(_missing_module, needs) if r), None)
        for backend in ("reference",) + gpu_backends:
            label = f"{name} [{backend}]"
            if missing:
                checks.append(Check("bench", label, "skip", f"needs {missing}"))
                continue
            if backend != "reference" and (present.get(backend) is not None or not gpu):
                checks.append(Check("bench", label, "skip", present.get(backend) or
                                    "the Triton interpreter's speed means nothing"))
                continue
            device = "cuda" if backend != "reference" else "cpu"
            try:
                # the host references at Sparkle sizes take seconds a call: timed once or twice, no warm-up
                host = backend == "reference"
                seconds = _time(lambda c=call, b=backend, d=device: c(b, d), device,
                                (1 if quick else 2) if host else repeat, warmup=not host)
                checks.append(Check("bench", label, "pass", f"{case}: median {seconds * 1e3:.3f} ms on {device}",
                                    data={"median_s": seconds, "case": case, "device": device}))
            except Exception as exc:  # noqa: BLE001
                checks.append(Check("bench", label, "fail", f"raised {type(exc).__name__}: {exc}"))
    return checks


# --- sanitizer -------------------------------------------------------------------------------------------------------


def sanitize_workload() -> None:
    """One small launch of every CUDA and Triton kernel on the GPU (run under compute-sanitizer by sanitizer_checks)."""
    import torch

    from sparkle_fast import ops

    rng = np.random.default_rng(3)
    passes = torch.from_numpy((rng.random((5, 3, 17, 37)) < 0.5).astype(np.uint8)).cuda()
    for backend in ("cuda", "triton"):
        ops.vote_and_pack(passes, backend=backend)
        packed = ops.pack_bits(passes[0], backend=backend)
        ops.unpack_bits(packed, tuple(passes[0].shape), backend=backend)
    video = torch.from_numpy(_textured_video(rng, 2, 37, 53)).cuda()
    ops.rgb_to_gray(video, backend="triton")
    ops.canny(video, backend="triton")
    ops.control_video(video, video.flip(0).contiguous(), passes[0, :2].bool(), dilate=2, backend="triton")
    ops.dilate_mask(passes[0].bool(), 2, backend="triton")
    gray = ops.rgb_to_gray(video, backend="triton")
    points, _ = ops.select_points(gray, cells=(3, 4), margin=4, backend="triton")
    ops.track_points(gray, gray.flip(0).contiguous(), points, window=15, max_level=1, backend="triton")
    src, dst = _homography_inputs(rng, 3, 300)
    ops.find_homographies(torch.from_numpy(src).cuda(), torch.from_numpy(dst).cuda(), backend="cuda")
    torch.cuda.synchronize()


def sanitizer_checks(quick: bool) -> list[Check]:
    """memcheck and racecheck, each in its own child process, both at once (each mostly waits on CUDA's start-up
    under the tool); a run that outlives its time limit is a skip, with that reason."""
    tool = shutil.which("compute-sanitizer")
    reason = None if _gpu() else "no GPU"
    reason = reason or (None if tool else "compute-sanitizer is not on PATH (it ships with the CUDA toolkit)")
    if reason:
        return [Check("sanitizer", name, "skip", reason) for name in ("memcheck", "racecheck")]
    limit = 150 if quick else 180
    started = time.perf_counter()
    running = {name: subprocess.Popen([tool, "--tool", name, "--error-exitcode", "86", sys.executable, "-m",
                                       "sparkle_fast.driver.selftest", "sanitize-workload"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for name in ("memcheck", "racecheck")}
    checks = []
    for name, process in running.items():
        try:
            output, _ = process.communicate(timeout=max(1.0, limit - (time.perf_counter() - started)))
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            checks.append(Check("sanitizer", name, "skip", f"timed out after {limit} s",
                                time.perf_counter() - started))
            continue
        status = "pass" if process.returncode == 0 else "fail"
        detail = "no errors" if status == "pass" else f"exit {process.returncode}: {output[-1500:]}"
        checks.append(Check("sanitizer", name, status, detail, time.perf_counter() - started))
    return checks


# --- the whole self-test -------------------------------------------------------------------------------------------


def run_selftest(quick: bool = False, log: Callable[[str], None] | None = None, only_ops=None) -> dict:
    """All groups of checks (module docstring); returns the report. Never raises for a failed check.
    only_ops: names of ops (e.g. {"vote_and_pack"}) to limit the parity and bench checks to."""
    log = log or (lambda line: None)
    started = time.perf_counter()
    present = backends_present()
    checks: list[Check] = []
    for group, run in (("build", build_checks), ("parity", lambda: parity_checks(quick, present, only_ops)),
                       ("decode", decode_checks), ("bench", lambda: bench_checks(quick, present, only_ops)),
                       ("sanitizer", lambda: sanitizer_checks(quick))):
        try:
            found = run()
        except Exception as exc:  # noqa: BLE001 - a broken group is a failure, not a crash
            found = [Check(group, group, "fail", f"raised {type(exc).__name__}: {exc}\n{traceback.format_exc()}")]
        for check in found:
            first_line = check.detail.splitlines()[0] if check.detail else ""
            log(f"{check.status:5} {check.group:9} {check.name}: {first_line}")
        checks += found
    counts = {s: sum(c.status == s for c in checks) for s in ("pass", "fail", "skip")}
    return {"device": device_name(), "quick": quick, "backends": present, "ok": counts["fail"] == 0,
            "summary": counts, "seconds": round(time.perf_counter() - started, 2),
            "checks": [asdict(c) for c in checks]}


def main(argv: list[str] | None = None) -> int:
    """`python -m sparkle_fast.driver.selftest sanitize-workload` (the child compute-sanitizer runs)."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["sanitize-workload"]:
        sanitize_workload()
        return 0
    print("usage: python -m sparkle_fast.driver.selftest sanitize-workload (the command is `sparkle-fast selftest`)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Check", "backends_present", "run_selftest"]
