"""What a runner adds per sample per step, with no-op stages: the local runner against the Ray runner.

    python bench/orchestration.py [--samples 200] [--quick]

Five stages that do nothing (each returns `done` with a small record) run over N registered samples on a fresh
manifest. Both runners write every outcome to the SQLite manifest, so that is included.
  local  runs N and 2N samples; the slope (T(2N) - T(N)) / (N x 5) is its cost per sample per step.
  ray    streams the samples through five actor pools of one actor each (stages without steps() get a pool each,
         "stage:noopK"; the driver's per-step scheduling and commits are the same as for the slot pools), on a
         local Ray instance started once by
         this script (its start is not counted). Its cost per sample per step is the mean spacing of the recorded
         outcomes once they flow, (t_last - t_first) / (outcomes - 1): the steady state with the pools pipelined.
         Starting the actors (each imports the stages' libraries) is a fixed cost per run, reported beside it: on a
         loaded 2-core machine it varies by tens of seconds, which is why no slope between runs is used here.

Goal (issue: Ray runner): under 50 ms per sample per step, far below any model call.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Bench  # noqa: E402

from sparkle_fast.driver.config import PipelineConfig  # noqa: E402
from sparkle_fast.driver.manifest import Manifest, SampleRow  # noqa: E402
from sparkle_fast.driver.ray_runner import RayRunner  # noqa: E402
from sparkle_fast.driver.runner import LocalRunner  # noqa: E402
from sparkle_fast.layout import SparkleLayout  # noqa: E402
from sparkle_fast.stages.base import StageOutcome  # noqa: E402

STEPS = 5


class NoOpStage:
    """A stage with no model and no work: what is left is the runner's own cost."""

    model_slots = ()

    def __init__(self, number: int):
        self.number = number
        self.name = f"noop{number}"

    def load_models(self, models_source):
        return {}

    def release_models(self, models) -> None:
        pass

    def run(self, sample, context) -> StageOutcome:
        return StageOutcome.done({"stage": self.number, "id": sample.id})


def run_once(runner_name: str, n: int) -> tuple[float, list[float]]:
    """Seconds for one runner over n fresh samples and the five no-op stages, and (Ray) its outcomes' times."""
    stages = [NoOpStage(k) for k in range(1, STEPS + 1)]
    with tempfile.TemporaryDirectory(prefix="sparkle-orchestration-") as folder:
        layout = SparkleLayout(folder)
        with Manifest(Path(folder) / "manifest.sqlite") as manifest:
            manifest.add_samples([SampleRow(f"Sparkle_location_{i:06d}", "location", f"clip_{i}.mp4", None)
                                  for i in range(n)])
            config = PipelineConfig()
            if runner_name == "local":
                runner = LocalRunner(chunk_size=n, max_attempts=1)
            else:
                runner = RayRunner(max_attempts=1, status_seconds=1e9, log=lambda message: None,
                                   max_in_flight_per_actor=config.ray.max_in_flight_per_actor)
            start = time.perf_counter()
            runner.run(stages, manifest, layout, config, "tiny")
            seconds = time.perf_counter() - start
            done = sum(len(manifest.results(k, "done")) for k in range(1, STEPS + 1))
            if done != n * STEPS:
                raise RuntimeError(f"{runner_name}: {done} of {n * STEPS} steps done")
    return seconds, getattr(runner, "result_times", [])


def main(argv=None) -> int:
    bench, args = Bench.from_args("orchestration", argv, __doc__.splitlines()[0],
                                  extra=lambda p: p.add_argument("--samples", type=int, default=200))
    n = 10 if bench.quick else args.samples
    import os

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=STEPS + 1)
    try:
        (small, _), (large, _) = run_once("local", n), run_once("local", 2 * n)
        local_step = max(large - small, 0.0) / (n * STEPS)
        ray_total, times = run_once("ray", 2 * n)
        ray_step = (times[-1] - times[0]) / (len(times) - 1)
        rows = {"local": (local_step, max(small - local_step * n * STEPS, 0.0), {"seconds_n": small,
                                                                                   "seconds_2n": large}),
                "ray": (ray_step, max(ray_total - ray_step * len(times), 0.0), {"seconds_2n": ray_total})}
        for runner_name, (per_step, fixed, extra) in rows.items():
            row = {"case": {"samples": 2 * n, "steps": STEPS}, "impl": runner_name, "device": "cpu",
                   "median_s": per_step, "min_s": per_step, "max_s": per_step, "iqr_s": 0.0, "fixed_seconds": fixed,
                   **extra, "note": "per sample per step (module docstring: slope for local, steady state for ray)"}
            bench.rows.append(row)
            print(f"{runner_name:<6} {per_step * 1e3:8.2f} ms per sample per step; fixed {fixed:6.2f} s "
                  f"({', '.join(f'{k} {v:.2f}' for k, v in extra.items())})", flush=True)
    finally:
        ray.shutdown()
    bench.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
