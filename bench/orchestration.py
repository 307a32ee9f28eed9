"""What a runner adds per sample per step, with no-op stages: the local runner against the Ray runner.

    python bench/orchestration.py [--samples 200] [--quick]

Five stages that do nothing (each returns `done` with a small record) run over N and then 2N registered samples,
each run on a fresh manifest. The slope, (T(2N) - T(N)) / (N x 5), is the runner's cost per sample per step with
fixed costs (Ray's start, actor creation) cancelled out; the fixed cost is reported beside it. Both runners write
every outcome to the SQLite manifest, so that is included. Ray runs on a local instance started once by this
script (its start is not counted); the Ray runner streams samples between five actor pools of one actor each.

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


def run_once(runner_name: str, n: int) -> float:
    """Seconds for one runner over n fresh samples and the five no-op stages."""
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
    return seconds


def main(argv=None) -> int:
    bench, args = Bench.from_args("orchestration", argv, __doc__.splitlines()[0],
                                  extra=lambda p: p.add_argument("--samples", type=int, default=200))
    n = 10 if bench.quick else args.samples
    import os

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=STEPS + 1)
    try:
        for runner_name in ("local", "ray"):
            small, large = run_once(runner_name, n), run_once(runner_name, 2 * n)
            per_step = max(large - small, 0.0) / (n * STEPS)
            fixed = max(small - per_step * n * STEPS, 0.0)
            row = {"case": {"samples": f"{n} and {2 * n}", "steps": STEPS}, "impl": runner_name,
                   "device": "cpu", "median_s": per_step, "min_s": per_step, "max_s": per_step, "iqr_s": 0.0,
                   "seconds_n": small, "seconds_2n": large, "fixed_seconds": fixed,
                   "note": "per sample per step: slope between N and 2N samples (fixed costs cancel)"}
            bench.rows.append(row)
            print(f"{runner_name:<6} {per_step * 1e3:8.2f} ms per sample per step; fixed {fixed:6.2f} s; "
                  f"N={n}: {small:.2f} s, 2N: {large:.2f} s", flush=True)
    finally:
        ray.shutdown()
    bench.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
