"""One worker process per device on disjoint shards of the samples, all recording into one manifest.

    sparkle-fast run --input videos/ --out out/ --device cuda:0,cuda:1,cuda:2,cuda:3

A node with several GPUs runs one worker per GPU. Worker k of n takes the samples whose position in the manifest's
sorted sample ids is k modulo n, and runs the LocalRunner over them (chunked, stage by stage, one stage's models at a
time) in its own process, seeing only its GPU (CUDA_VISIBLE_DEVICES). Why processes and not threads: each GPU gets
its own CUDA context and Python interpreter, and a crash or out-of-memory in one worker cannot take the others down.

The workers share out/manifest.sqlite. SQLite in WAL mode lets one writer commit at a time while the others wait
(every write is one short transaction, the connection waits up to 30 s), and the shards are disjoint, so no sample is
run twice. A killed worker loses only its work in flight; rerunning the same command resumes every shard. The parent
writes the index files and the summary once all workers have finished.

`parse_devices` turns the --device value into the worker list; `devices_for_run` decides whether workers are needed
at all (one device that this process can use runs in process).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sparkle_fast.layout import SparkleLayout

from .manifest import Manifest


class DeviceError(ValueError):
    """A --device value that names no usable device; the message says which part and what is accepted."""


def visible_gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_devices(text: str, gpu_count: int | None = None) -> list[str]:
    """"auto" -> one "cuda:i" per visible GPU, or ["cpu"] without one; "cpu", "cuda" (= cuda:0), "cuda:1",
    comma lists ("cuda:0,cuda:1"; "cpu,cpu" runs two CPU workers, for testing the sharding without a GPU).
    Raises DeviceError naming a malformed entry or a GPU index that is not visible."""
    gpus = visible_gpu_count() if gpu_count is None else gpu_count
    text = (text or "auto").strip()
    if text == "auto":
        return [f"cuda:{i}" for i in range(gpus)] or ["cpu"]
    devices = []
    for part in (p.strip() for p in text.split(",")):
        if part == "cpu":
            devices.append("cpu")
            continue
        if part == "cuda":
            part = "cuda:0"
        kind, _, index = part.partition(":")
        if kind != "cuda" or not index.isdigit():
            raise DeviceError(f"--device {text!r}: {part!r} is not a device; use auto, cpu, cuda or cuda:N, "
                              "or a comma-separated list of them")
        if int(index) >= gpus:
            raise DeviceError(f"--device {text!r}: {part} is not visible ({gpus} GPU(s) visible to this process; "
                              "check CUDA_VISIBLE_DEVICES)")
        devices.append(f"cuda:{int(index)}")
    if len(set(d for d in devices if d != "cpu")) != len([d for d in devices if d != "cpu"]):
        raise DeviceError(f"--device {text!r}: a GPU is listed twice; one worker per GPU")
    return devices


def needs_workers(devices: Sequence[str], gpu_count: int | None = None) -> bool:
    """True when the run must use worker processes: several devices, or one GPU other than the one this process
    would use by default (only a fresh process can be given a different CUDA_VISIBLE_DEVICES), or cpu while a GPU
    is visible (the models would otherwise pick the GPU)."""
    gpus = visible_gpu_count() if gpu_count is None else gpu_count
    if len(devices) != 1:
        return True
    (device,) = devices
    return device != "cuda:0" and not (device == "cpu" and gpus == 0)


def worker_env(device: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the worker for `device`: it sees only that GPU (as cuda:0), or none for cpu."""
    env = dict(os.environ if base is None else base)
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        index = int(device.partition(":")[2])
        # cuda:N counts the GPUs this process sees; map it back through an existing CUDA_VISIBLE_DEVICES
        listed = [v.strip() for v in visible.split(",")] if visible else None
        env["CUDA_VISIBLE_DEVICES"] = listed[index] if listed else str(index)
    return env


class ShardedRunner:
    """Runs `sparkle_fast.driver.workers` worker processes, one per device, and waits for all of them.

    Same run() as LocalRunner. The workers rebuild the stages from their numbers and read the resolved config from
    the manifest (the parent stored it before starting them), so nothing but paths crosses the process boundary."""

    def __init__(self, devices: Sequence[str], models: str | os.PathLike, stage_numbers: Sequence[int],
                 only: set[str] | None = None):
        self.devices = list(devices)
        self.models = str(models)
        self.stage_numbers = list(stage_numbers)
        self.only = only

    def commands(self, out: Path, only_file: Path | None = None) -> list[list[str]]:
        n = len(self.devices)
        extra = [] if only_file is None else ["--only", str(only_file)]
        return [[sys.executable, "-m", "sparkle_fast.driver.workers", "--out", str(out), "--models", self.models,
                 "--stages", ",".join(map(str, self.stage_numbers)), "--shard", f"{k}/{n}", "--device", device,
                 *extra] for k, device in enumerate(self.devices)]

    def run(self, stages, manifest: Manifest, layout: SparkleLayout, config: Any, models_source: Any) -> None:
        del stages, manifest, config, models_source  # the workers rebuild these from the manifest and the paths
        logs = layout.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        only_file = None
        if self.only is not None:  # --limit: the sample ids this run may touch
            only_file = logs / "run-sample-ids.json"
            only_file.write_text(json.dumps(sorted(self.only)))
        running = []
        for k, (device, command) in enumerate(zip(self.devices, self.commands(layout.root, only_file), strict=True)):
            log_path = logs / f"worker-{k}.log"
            handle = open(log_path, "ab")  # noqa: SIM115 (closed below, after the process ends)
            running.append((k, device, log_path, handle,
                            subprocess.Popen(command, env=worker_env(device), stdout=handle, stderr=subprocess.STDOUT)))
        failed = []
        for k, device, log_path, handle, process in running:
            code = process.wait()
            handle.close()
            if code != 0:
                failed.append(f"worker {k} ({device}) exited with status {code}; see {log_path}")
        if failed:
            raise RuntimeError("; ".join(failed) + ". Samples it finished are recorded; rerun the same command "
                               "to resume the rest")


def shard_of(sample_ids: Sequence[str], shard: int, shards: int) -> set[str]:
    """The sample ids of worker `shard` of `shards`: every shards-th id of the sorted list (disjoint, complete).
    LocalRunner(shard=...) takes its samples with this."""
    return {sid for i, sid in enumerate(sorted(sample_ids)) if i % shards == shard}


def _parse_shard(text: str) -> tuple[int, int]:
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected K/N with 0 <= K < N")
    return int(k), int(n)


def main(argv: Sequence[str] | None = None) -> int:
    """A worker: run the LocalRunner on one shard of the manifest's samples (started by ShardedRunner)."""
    from sparkle_fast.stages import all_stages

    from .config import PipelineConfig, apply_values, check_config
    from .run import Progress
    from .runner import LocalRunner

    parser = argparse.ArgumentParser(prog="python -m sparkle_fast.driver.workers", description=main.__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", required=True)
    parser.add_argument("--stages", required=True)
    parser.add_argument("--shard", required=True, type=_parse_shard)
    parser.add_argument("--device", required=True)
    parser.add_argument("--only", help="a JSON list of the sample ids to run (the others are left alone)")
    args = parser.parse_args(argv)
    only = None if args.only is None else set(json.loads(Path(args.only).read_text()))
    shard, shards = args.shard
    layout = SparkleLayout(args.out)
    numbers = {int(n) for n in args.stages.split(",")}
    with Manifest(layout.root / "manifest.sqlite") as manifest:
        stored = manifest.stored_config()
        if stored is None:
            print(f"{layout.root / 'manifest.sqlite'}: no config stored; start runs with `sparkle-fast run`",
                  file=sys.stderr)
            return 2
        config = apply_values(PipelineConfig(), stored, "the manifest's stored config")
        check_config(config)
        stage_list = [s for s in all_stages() if s.number in numbers]
        runner = LocalRunner(config.run.chunk_size, config.run.max_attempts,
                             Progress(prefix=f"worker {shard}/{shards} {args.device} "),
                             shard=(shard, shards), only=only)
        runner.run(stage_list, manifest, layout, config, args.models)
    print(json.dumps({"worker": shard, "shards": shards, "device": args.device, "finished": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
