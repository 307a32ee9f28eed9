"""RayRunner: the pipeline over every GPU of a node, or of several nodes, on a Ray cluster.

    runner = RayRunner(max_attempts=2, address=None)   # None: a local Ray instance; "HOST:PORT": an existing cluster
    runner.run(stages, manifest, layout, config, models_source)

Same run() as LocalRunner (driver/runner.py), over the same stages and manifest:
  pools     one actor pool per stage (today's unit of model loading: a stage's models, see
            sparkle_fast/stages/base.py); an actor loads its stage's models once and serves every call of the run.
            Resources per actor come from the run config's [ray] section: GPUs for stages with model slots
            (fractions allowed for small models), CPUs, and actors per pool.
  streaming a sample goes to the next stage's queue as soon as a stage keeps it; each pool has at most
            actors x max_in_flight_per_actor calls in flight (back-pressure), and only sample ids, configs and
            records (small JSON) travel through Ray: frames, videos and masks are files under the output root, which
            must be on storage every node sees.
  manifest  the driver is its only writer (actors return outcomes); a rerun of the same command resumes from it.
  faults    an exception inside a stage fails that sample (as LocalRunner: retried on a later run); an actor that
            dies (SIGKILL, out of memory, a lost node) is replaced, and each sample it had in flight is recorded as
            one failed attempt and queued again while attempts remain; a sample that exhausts them stays failed with
            the reason, and the run finishes. A full disk stops the run (DiskFullError) as it does locally.
  status    every `status_seconds` a table per pool (actors, queued, in flight, kept/rejected/failed, samples/s) on
            stderr, the same figures as Ray metrics (Prometheus, through Ray's metrics agent), and the pools' actors
            (pid, node) in OUT/logs/ray-pools.json.

Stage batching (run_batch, stage.batch_size) and the record of each op's backend work as in LocalRunner: the actor
calls the same `run_group`.

Not yet: one pool per model *slot* with steps scheduled across pools (needs the steps refactor), and placement
that sizes pools by measured throughput; pools here are sized by the config.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sparkle_fast._io import atomic_write
from sparkle_fast.layout import SparkleLayout
from sparkle_fast.stages.base import Sample, Stage, StageContext

from .manifest import Manifest
from .runner import DiskFullError, is_disk_full, load_stage_models, run_group

# Environment variables an actor must see as the driver does (kernel backend pin, Triton interpreter on CPU).
FORWARDED_ENV_PREFIXES = ("SPARKLE_FAST_", "TRITON_INTERPRET", "CUBLAS_WORKSPACE_CONFIG")


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("--runner ray needs Ray: pip install 'sparkle-fast[ray]'") from exc
    return ray


class StageWorker:
    """One actor of a stage's pool: loads the stage's models once, then runs groups of samples through it.
    Returns plain dicts (picklable, small); artifacts are written under the output root by the stage itself."""

    def __init__(self, stage: Stage, models_source: Any, config: Any, out_root: str):
        self.stage = stage  # pickled by reference (an importable class), so workers need the package installed
        self.layout = SparkleLayout(out_root)
        self.config = config
        started = time.perf_counter()
        self.models = load_stage_models(self.stage, models_source, config)
        self.load_seconds = time.perf_counter() - started
        self.first_call = True

    def info(self) -> dict:
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "load_seconds": round(self.load_seconds, 3)}

    def process(self, samples: list[Sample], previous: list[dict]) -> list[dict]:
        contexts = [StageContext(self.layout, self.config, self.models, prev) for prev in previous]
        t0 = time.perf_counter()
        outcomes = run_group(self.stage, samples, contexts, self.layout)
        seconds = (time.perf_counter() - t0) / len(samples)
        results = []
        for outcome in outcomes:
            timing = dict(outcome.timing)
            if self.first_call:
                timing["model_load"] = self.load_seconds
                self.first_call = False
            results.append({"status": outcome.status, "reason": outcome.reason, "score": outcome.score,
                            "record": outcome.record, "timing": timing, "seconds": seconds})
        return results


@dataclass
class _Pool:
    stage: Stage
    actors: list = field(default_factory=list)
    in_flight: dict = field(default_factory=dict)  # ObjectRef -> (actor index, actor handle, [sample ids])
    queue: deque = field(default_factory=deque)
    counts: dict = field(default_factory=lambda: {"done": 0, "rejected": 0, "failed": 0, "retried": 0})
    started: float | None = None
    actor_info: list = field(default_factory=list)  # per actor: {"pid", "node", "load_seconds"} once known
    info_refs: dict = field(default_factory=dict)  # ObjectRef of actor.info() -> actor index

    def load(self, index: int) -> int:
        return sum(1 for i, _, _ in self.in_flight.values() if i == index)


class RayRunner:
    """Stage actor pools on a Ray cluster (module docstring)."""

    def __init__(self, max_attempts: int, *, address: str | None = None, actors_per_stage: int = 1,
                 gpus_per_actor: float = 1.0, cpus_per_actor: float = 1.0, max_in_flight_per_actor: int = 2,
                 status_seconds: float = 30.0, progress: Callable[[str, int, int], None] | None = None,
                 only: set[str] | None = None, log: Callable[[str], None] | None = None):
        if actors_per_stage < 1 or max_in_flight_per_actor < 1:
            raise ValueError("ray.actors_per_stage and ray.max_in_flight_per_actor must be >= 1")
        self.max_attempts = max_attempts
        self.address = address
        self.actors_per_stage = actors_per_stage
        self.gpus_per_actor = gpus_per_actor
        self.cpus_per_actor = cpus_per_actor
        self.max_in_flight_per_actor = max_in_flight_per_actor
        self.status_seconds = status_seconds
        self.progress = progress or (lambda stage, done, total: None)
        self.only = only
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self._metrics = None
        self.result_times: list[float] = []  # time.monotonic() of every recorded outcome (bench/orchestration.py)

    @classmethod
    def from_config(cls, config: Any, *, address: str | None = None, **kwargs) -> RayRunner:
        ray_config = config.ray
        return cls(config.run.max_attempts, address=address, actors_per_stage=ray_config.actors_per_stage,
                   gpus_per_actor=ray_config.gpus_per_actor, cpus_per_actor=ray_config.cpus_per_actor,
                   max_in_flight_per_actor=ray_config.max_in_flight_per_actor,
                   status_seconds=ray_config.status_seconds, **kwargs)

    # --- the run ----------------------------------------------------------------------------------------------------

    def run(self, stages: Sequence[Stage], manifest: Manifest, layout: SparkleLayout, config: Any,
            models_source: Any) -> None:
        ray = import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": env} if env else None)
        pools: dict[int, _Pool] = {}
        try:
            self._run(ray, list(stages), pools, manifest, layout, config, models_source)
        finally:
            for pool in pools.values():
                for actor in pool.actors:
                    ray.kill(actor)
            if started_here:
                ray.shutdown()

    def _run(self, ray, stages: list[Stage], pools: dict[int, _Pool], manifest: Manifest, layout: SparkleLayout,
             config: Any, models_source: Any) -> None:
        samples = {row.id: Sample(row.id, row.theme, row.src_video, row.prompt) for row in manifest.samples()}
        allowed = set(samples) if self.only is None else set(samples) & self.only
        numbers = [s.number for s in stages]
        for stage in stages:
            pools[stage.number] = _Pool(stage)
            pools[stage.number].queue.extend(sid for sid in manifest.pending(stage.number, self.max_attempts)
                                             if sid in allowed)
        totals = {n: len(p.queue) for n, p in pools.items()}
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        worker_class = ray.remote(StageWorker)
        last_status = time.monotonic()
        while any(p.queue or p.in_flight for p in pools.values()):
            for pool in pools.values():
                self._submit(ray, worker_class, pool, samples, manifest, layout, config, models_source, has_gpus)
            refs = [ref for pool in pools.values() for ref in pool.in_flight]
            ready, _ = ray.wait(refs, num_returns=1, timeout=1.0)
            for ref in ready:
                pool = next(p for p in pools.values() if ref in p.in_flight)
                index, actor, ids = pool.in_flight.pop(ref)
                self._collect(ray, worker_class, pool, index, actor, ids, ref, manifest, layout, config, models_source,
                              has_gpus, pools, numbers, totals, allowed)
            self._update_pools_file(ray, pools, layout)
            if time.monotonic() - last_status >= self.status_seconds:
                self._status(pools, layout)
                last_status = time.monotonic()
        self._status(pools, layout)

    def _submit(self, ray, worker_class, pool: _Pool, samples, manifest: Manifest, layout: SparkleLayout,
                config: Any, models_source: Any, has_gpus: bool) -> None:
        if not pool.queue:
            return
        if not pool.actors:
            self._start_pool(ray, worker_class, pool, layout, config, models_source, has_gpus)
        size = max(1, int(getattr(pool.stage, "batch_size", 1))) if callable(getattr(pool.stage, "run_batch",
                                                                                       None)) else 1
        limit = self.max_in_flight_per_actor
        while pool.queue:
            index = min(range(len(pool.actors)), key=pool.load)
            if pool.load(index) >= limit:
                break
            ids = [pool.queue.popleft() for _ in range(min(size, len(pool.queue)))]
            previous = [{n: (r.record if (r := manifest.result(sid, n)) else None)
                         for n in range(1, pool.stage.number)} for sid in ids]
            ref = pool.actors[index].process.remote([samples[sid] for sid in ids], previous)
            pool.in_flight[ref] = (index, pool.actors[index], ids)

    def _actor_options(self, pool: _Pool, has_gpus: bool) -> dict:
        gpus = self.gpus_per_actor if (has_gpus and pool.stage.model_slots) else 0
        return {"num_gpus": gpus, "num_cpus": self.cpus_per_actor, "scheduling_strategy": "SPREAD"}

    def _new_actor(self, worker_class, pool: _Pool, index: int, layout: SparkleLayout, config: Any,
                   models_source: Any, has_gpus: bool) -> None:
        """Start (or replace) actor `index` of the pool; its pid and node are asked for without waiting."""
        actor = worker_class.options(**self._actor_options(pool, has_gpus)).remote(
            pool.stage, models_source, config, str(layout.root))
        if index == len(pool.actors):
            pool.actors.append(actor)
            pool.actor_info.append(None)
        else:
            pool.actors[index] = actor
            pool.actor_info[index] = None
        pool.info_refs[actor.info.remote()] = index

    def _start_pool(self, ray, worker_class, pool: _Pool, layout: SparkleLayout, config: Any, models_source: Any,
                    has_gpus: bool) -> None:
        for index in range(self.actors_per_stage):
            self._new_actor(worker_class, pool, index, layout, config, models_source, has_gpus)
        pool.started = time.monotonic()

    def _replace_actor(self, ray, worker_class, pool: _Pool, index: int, layout: SparkleLayout, config: Any,
                       models_source: Any, has_gpus: bool) -> None:
        ray.kill(pool.actors[index])
        self._new_actor(worker_class, pool, index, layout, config, models_source, has_gpus)

    def _update_pools_file(self, ray, pools: dict[int, _Pool], layout: SparkleLayout) -> None:
        """OUT/logs/ray-pools.json: each pool's actors (pid, node, model load seconds) once they have loaded; for
        operators and the fault tests. Never waits for an actor."""
        changed = False
        for pool in pools.values():
            if not pool.info_refs:
                continue
            ready, _ = ray.wait(list(pool.info_refs), num_returns=len(pool.info_refs), timeout=0)
            for ref in ready:
                index = pool.info_refs.pop(ref)
                try:
                    pool.actor_info[index] = ray.get(ref)
                except Exception as exc:  # a dead actor: reported here, replaced when its call fails
                    pool.actor_info[index] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
                changed = True
        if changed:
            path = layout.root / "logs" / "ray-pools.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            value = {p.stage.name: p.actor_info for p in pools.values() if p.actors}
            with atomic_write(path) as handle:
                handle.write(json.dumps(value, indent=2, sort_keys=True).encode())

    def _collect(self, ray, worker_class, pool: _Pool, index: int, actor, ids: list[str], ref, manifest: Manifest,
                 layout: SparkleLayout, config: Any, models_source: Any, has_gpus: bool, pools: dict[int, _Pool],
                 numbers: list[int], totals: dict[int, int], allowed: set[str]) -> None:
        number = pool.stage.number
        try:
            results = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as exc:
            # The actor died with these samples in flight: one failed attempt each, then retried while attempts
            # remain. Its other in-flight calls fail the same way when collected: replace it only once.
            if pool.actors[index] is actor:
                self._replace_actor(ray, worker_class, pool, index, layout, config, models_source, has_gpus)
            reason = f"worker died ({type(exc).__name__}): {str(exc).splitlines()[0] if str(exc) else ''}"
            for sid in ids:
                manifest.finish(sid, number, "failed", reason=reason)
                attempts = manifest.result(sid, number).attempts
                if attempts < self.max_attempts:
                    pool.queue.append(sid)
                    pool.counts["retried"] += 1
                else:
                    pool.counts["failed"] += 1
                    self.log(f"[{pool.stage.name}] {sid}: {reason}; attempts exhausted ({attempts})")
            return
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, DiskFullError) or (cause is not None and is_disk_full(cause)):
                raise DiskFullError(str(cause)) from exc
            raise
        if pool.started is not None and sum(pool.counts.values()) == 0:
            pool.started = time.monotonic()  # the rate counts from the first result (model loading excluded)
        for sid, result in zip(ids, results, strict=True):
            manifest.finish(sid, number, result["status"], score=result["score"], reason=result["reason"],
                            record=result["record"], seconds=result["seconds"], timing=result["timing"])
            pool.counts[result["status"]] += 1
            self.result_times.append(time.monotonic())
            self.progress(pool.stage.name, sum(pool.counts[k] for k in ("done", "rejected", "failed")),
                          totals[number])
            following = number + 1
            if result["status"] == "done" and following in pools and sid in allowed:
                pools[following].queue.append(sid)
                totals[following] += 1

    # --- status -----------------------------------------------------------------------------------------------------

    def _status(self, pools: dict[int, _Pool], layout: SparkleLayout) -> None:
        rows = [f"{'pool':<12} {'actors':>6} {'queued':>6} {'flight':>6} {'kept':>5} {'rej':>4} {'fail':>4} "
                f"{'retry':>5} {'samples/s':>9}"]
        for pool in pools.values():
            finished = sum(pool.counts[k] for k in ("done", "rejected", "failed"))
            elapsed = time.monotonic() - pool.started if pool.started else 0
            rate = finished / elapsed if elapsed > 0 and finished else 0.0
            flight = sum(len(ids) for _, _, ids in pool.in_flight.values())
            rows.append(f"{pool.stage.name:<12} {len(pool.actors):>6} {len(pool.queue):>6} {flight:>6} "
                        f"{pool.counts['done']:>5} {pool.counts['rejected']:>4} {pool.counts['failed']:>4} "
                        f"{pool.counts['retried']:>5} {rate:>9.3f}")
            self._export_metrics(pool, flight, rate)
        self.log("\n".join(rows))

    def _export_metrics(self, pool: _Pool, flight: int, rate: float) -> None:
        """Per-pool gauges for Ray's metrics agent (Prometheus): sparkle_fast_pool_{queued,in_flight,kept,rejected,
        failed,retried,samples_per_second}{stage=...}."""
        if self._metrics is None:
            from ray.util.metrics import Gauge

            names = ("queued", "in_flight", "kept", "rejected", "failed", "retried", "samples_per_second")
            self._metrics = {n: Gauge(f"sparkle_fast_pool_{n}", description=f"per-stage pool: {n}",
                                      tag_keys=("stage",)) for n in names}
        values = {"queued": len(pool.queue), "in_flight": flight, "kept": pool.counts["done"],
                  "rejected": pool.counts["rejected"], "failed": pool.counts["failed"],
                  "retried": pool.counts["retried"], "samples_per_second": rate}
        for name, value in values.items():
            self._metrics[name].set(value, tags={"stage": pool.stage.name})
