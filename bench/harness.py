"""The one benchmark harness every bench/ script uses.

    from harness import Bench
    bench = Bench.from_args("vote_pack", argv)          # --device, --warmup, --repeat, --out, --quick
    bench.measure("numpy", fn, case={...}, bytes_moved=...)
    bench.finish()                                      # prints the table, writes JSON under bench/results/

Timing: `warmup` untimed calls, then `repeat` timed calls; on CUDA each call is bracketed by CUDA events on the
current stream (so host overhead between launches is not counted twice), on the host by time.perf_counter. Reported:
median, min, max and the interquartile range of the runs. Throughput is bytes_moved / median; the physical floor is
bytes_moved / peak memory bandwidth (the device's published peak on GPU, a measured large-copy bandwidth on the
host), so every row says how far it is from what the memory allows.

Results are JSON: {"benchmark", "environment" (device, driver, library versions, sparkle_fast build), "rows": [...]},
written to bench/results/<benchmark>-<device slug>.json (--quick runs: out/bench-quick/, never committed).
Timings never go into tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
QUICK_RESULTS_DIR = Path(__file__).resolve().parents[1] / "out" / "bench-quick"  # ignored by git

# Published peak memory bandwidth (GB/s) for the GPUs we target, used when the driver's clock/bus query fails.
PUBLISHED_PEAK_GBPS = {"H100 80GB HBM3": 3350.0, "H100 PCIe": 2000.0, "H200": 4800.0, "A100-SXM4-80GB": 2039.0}


@dataclass
class Timing:
    median_s: float
    min_s: float
    max_s: float
    iqr_s: float
    runs: list[float] = field(repr=False)


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device: str = "cpu", warmup: int = 3, repeat: int = 10) -> Timing:
    """Time `fn()`; see the module docstring for the method."""
    for _ in range(warmup):
        fn()
    _synchronize(device)
    runs: list[float] = []
    if device.startswith("cuda"):
        import torch

        for _ in range(repeat):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            runs.append(start.elapsed_time(stop) / 1e3)
    else:
        for _ in range(repeat):
            start_s = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start_s)
    quartiles = statistics.quantiles(runs, n=4) if len(runs) >= 2 else [runs[0]] * 3
    return Timing(statistics.median(runs), min(runs), max(runs), quartiles[2] - quartiles[0], runs)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host_copy_bandwidth_gbps(size_bytes: int = 256 << 20) -> float:
    """Measured host memory bandwidth: a large np.copyto moves 2 x size bytes (read + write); best of 5."""
    src = np.ones(size_bytes, dtype=np.uint8)
    dst = np.empty_like(src)
    best = min(time_fn(lambda: np.copyto(dst, src), "cpu", warmup=1, repeat=5).runs)
    return 2 * size_bytes / best / 1e9


def gpu_properties(device: str) -> dict:
    """Name, driver, SM count and peak memory bandwidth of a CUDA device (from sparkle_fast._C when built)."""
    import torch

    index = torch.device(device).index or 0
    props = torch.cuda.get_device_properties(index)
    info = {"name": props.name, "compute_capability": f"{props.major}.{props.minor}", "sm_count":
            props.multi_processor_count, "total_memory_bytes": props.total_memory}
    try:
        from sparkle_fast._build import cuda_kernels

        ext = cuda_kernels()
        if ext is not None:
            queried = ext.cuda_device_info(index)
            info["peak_memory_bandwidth_gbps"] = queried["peak_memory_bandwidth_gbps"]
            info["peak_source"] = "memory clock x bus width (cudaDeviceGetAttribute)"
            info["cuda_driver_version"] = ext.cuda_driver_version()
    except Exception as exc:  # the harness must still run without our extension
        info["peak_error"] = f"{type(exc).__name__}: {exc}"
    if not info.get("peak_memory_bandwidth_gbps"):
        for name, gbps in PUBLISHED_PEAK_GBPS.items():
            if name in props.name:
                info["peak_memory_bandwidth_gbps"], info["peak_source"] = gbps, "published"
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm", "--format=csv,noheader",
                              f"--id={index}"], capture_output=True, text=True, timeout=20)
        if smi.returncode == 0:
            info["nvidia_smi"] = smi.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def _library_versions() -> dict:
    import importlib.metadata

    names = ("numpy", "torch", "triton", "opencv-python-headless", "av", "cupy-cuda13x", "nvidia-dali-cuda130")
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def environment(device: str) -> dict:
    env = {
        "device": device,
        "host": {"cpu": _cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()},
        "python": sys.version.split()[0],
        "libraries": _library_versions(),
    }
    try:
        import sparkle_fast

        env["sparkle_fast"] = sparkle_fast.build_info().get("extension")
    except Exception as exc:
        env["sparkle_fast"] = f"unavailable: {type(exc).__name__}: {exc}"
    if device.startswith("cuda"):
        env["gpu"] = gpu_properties(device)
        env["device_name"] = env["gpu"]["name"]
        env["peak_memory_bandwidth_gbps"] = env["gpu"].get("peak_memory_bandwidth_gbps")
    else:
        env["device_name"] = f"CPU: {env['host']['cpu']} ({env['host']['cores']} cores)"
        env["peak_memory_bandwidth_gbps"] = round(host_copy_bandwidth_gbps(), 2)
        env["peak_source"] = "measured: large np.copyto, read + write bytes"
    return env


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class Bench:
    """Collects the rows of one benchmark run on one device and writes them as one JSON file."""

    def __init__(self, name: str, device: str, warmup: int, repeat: int, out: Path | None, quick: bool):
        self.name, self.device, self.warmup, self.repeat, self.quick = name, device, warmup, repeat, quick
        self.env = environment(device)
        # Quick runs only check that a script works: they never overwrite the committed results.
        default_dir = QUICK_RESULTS_DIR if quick else RESULTS_DIR
        self.out = out or default_dir / f"{name}-{slug(self.env['device_name'])[:60]}.json"
        self.rows: list[dict] = []

    @classmethod
    def from_args(cls, name: str, argv: Sequence[str] | None = None, description: str = "",
                  extra: Callable[[argparse.ArgumentParser], None] | None = None) -> tuple[Bench, argparse.Namespace]:
        parser = argparse.ArgumentParser(description=description or f"bench/{name}.py")
        parser.add_argument("--device", default="cuda" if _cuda_available() else "cpu", help="cpu or cuda[:i]")
        parser.add_argument("--warmup", type=int, default=3)
        parser.add_argument("--repeat", type=int, default=10)
        parser.add_argument("--out", type=Path, default=None, help="JSON output (default bench/results/...)")
        parser.add_argument("--quick", action="store_true", help="small shapes: checks that the script runs")
        if extra is not None:
            extra(parser)
        args = parser.parse_args(argv)
        return cls(name, args.device, args.warmup, args.repeat, args.out, args.quick), args

    def measure(self, impl: str, fn: Callable[[], object], case: dict, bytes_moved: int | None = None,
                device: str | None = None, note: str = "", repeat: int | None = None) -> dict:
        """Time one implementation on one case and record a row. `device` overrides where it runs (a host peer
        in a GPU run is timed on the host)."""
        where = device or self.device
        timing = time_fn(fn, where, self.warmup, repeat or self.repeat)
        row = {"case": case, "impl": impl, "device": where, **asdict(timing), "note": note}
        if bytes_moved is not None:
            row["bytes_moved"] = bytes_moved
            row["achieved_gbps"] = bytes_moved / timing.median_s / 1e9
            peak = self.env.get("peak_memory_bandwidth_gbps") if where == self.device else None
            if peak:
                row["floor_s"] = bytes_moved / (peak * 1e9)
                row["fraction_of_peak_bandwidth"] = row["achieved_gbps"] / peak
        self.rows.append(row)
        print(self._format_row(row), flush=True)
        return row

    @staticmethod
    def _format_row(row: dict) -> str:
        case = " ".join(f"{k}={v}" for k, v in row["case"].items())
        text = f"{case:<48} {row['impl']:<22} median {row['median_s'] * 1e3:10.3f} ms  (iqr {row['iqr_s'] * 1e3:.3f})"
        if "achieved_gbps" in row:
            text += f"  {row['achieved_gbps']:8.1f} GB/s"
        if "fraction_of_peak_bandwidth" in row:
            text += f"  {100 * row['fraction_of_peak_bandwidth']:5.1f}% of peak"
        return text

    def compare_to(self, baseline_impl: str) -> None:
        """Add speedup_vs_<baseline> to every row: baseline median / row median, for the same case."""
        baselines = {json.dumps(r["case"], sort_keys=True): r["median_s"] for r in self.rows
                     if r["impl"] == baseline_impl}
        for row in self.rows:
            base = baselines.get(json.dumps(row["case"], sort_keys=True))
            if base is not None:
                row[f"speedup_vs_{baseline_impl}"] = base / row["median_s"]

    def finish(self) -> Path:
        payload = {"benchmark": self.name, "quick": self.quick, "warmup": self.warmup, "repeat": self.repeat,
                   "environment": self.env, "rows": self.rows}
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(payload, indent=2, default=str))
        print(f"wrote {self.out}")
        return self.out


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False
