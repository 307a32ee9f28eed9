"""RayRunner: the pipeline over every GPU of a node, or of several nodes, on a Ray cluster.

    runner = RayRunner(max_attempts=2, address=None)   # None: a local Ray instance; "HOST:PORT": an existing cluster
    runner.run(stages, manifest, layout, config, models_source)

Same run() as LocalRunner (driver/runner.py), over the same steps (sparkle_fast/stages/steps.py) and manifest:
  pools     one actor pool per model slot (vlm, editor, scorer, i2v, sam3, control) and one CPU pool ("cpu") for the
            kernel steps that need no model (camera_filter). An actor loads its slot once (load_slot_model) and serves
            batches of every step that uses the slot: the vlm pool runs camera_verdict, scene_instruction, ground_r1,
            caption_background and ground_r2. Actors of pools that run stage-5 steps also hold the lazily loaded
            line-art detector (as LocalRunner does). A stage object without steps() (a test's stand-in) gets a pool
            of its own ("stage:<name>") whose actors load its models and run the whole stage, as before steps; a
            stage holding its caller's adapters (given_models) gets pools "given:<stage>:<slot>" whose actors receive
            those adapters pickled with the stage.
            Resources per actor come from the run config's [ray] section: GPUs for model pools (fractions share a GPU;
            per-pool overrides in `gpus`), CPUs, and actors per pool (overrides in `actors`); the CPU pool takes no GPU.
            A pool no sample can reach any more (every live sample is past its last step) is shut down, giving its
            GPUs back to the pools still working.
  streaming the driver keeps each sample's position (its step and the stage's state so far, JSON); a sample goes to
            the pool of its step's slot as soon as its previous step is committed, in batches of the slot's [batch]
            size (for a --models folder at most the plan's batch for the slot, planned alone on an actor's GPU, and a
            Wan slot held in the plan's mode under [memory] wan_placement auto); each pool has at most actors x
            max_in_flight_per_actor calls in flight (back-pressure). Only sample ids, states, configs and records
            (small JSON) travel through Ray: frames, videos and masks are files under the output root, which must be
            on storage every node sees.
  manifest  the driver is its only writer: every step's result is committed as it arrives (runner.commit_outcome,
            the local runner's own), so a rerun of the same command resumes each sample at its first unfinished step
            (runner.first_unfinished_steps), and the records are the local runner's.
  faults    an exception inside a step fails that sample (as LocalRunner, batch first, then each sample alone;
            retried on a later run); an actor that dies (SIGKILL, out of memory, a lost node) is replaced, and each
            sample it had in flight is recorded as one failed attempt of its stage and queued again at the same step
            while attempts remain; a sample that exhausts them stays failed with the reason, and the run finishes.
            A full disk stops the run (DiskFullError) as it does locally.
  status    every `status_seconds` a table per pool (actors, queued, in flight, handed on, kept/rejected/failed,
            retried, items/s) on stderr, the same figures as Ray metrics (Prometheus, through Ray's metrics agent),
            and the pools' actors (pid, node, load seconds) in OUT/logs/ray-pools.json.

Not yet: placement that sizes pools by measured throughput; pools here are sized by the config.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sparkle_fast._io import atomic_write
from sparkle_fast.layout import SparkleLayout
from sparkle_fast.stages.base import Sample, Stage, StageContext, StageOutcome

from .manifest import Manifest
from .runner import (
    DiskFullError,
    Position,
    RunStep,
    StepStats,
    call_step,
    commit_outcome,
    configure_adapter,
    disk_full_error,
    first_unfinished_steps,
    is_disk_full,
    load_slot_model,
    load_stage_models,
    memory_plan,
    run_group,
    stage_steps,
    step_batch_size,
)

# Environment variables an actor must see as the driver does (kernel backend pin, Triton interpreter on CPU).
FORWARDED_ENV_PREFIXES = ("SPARKLE_FAST_", "TRITON_INTERPRET", "CUBLAS_WORKSPACE_CONFIG")
CPU_POOL = "cpu"  # the pool of the steps that need no model (slot None)
OUTCOME_KEYS = ("next", "done", "rejected", "failed")


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("--runner ray needs Ray: pip install 'sparkle-fast[ray]'") from exc
    return ray


def pool_of(step: RunStep) -> str:
    """The pool a step runs in: its model slot, "stage:<name>" for a stage without steps, "cpu" for slot None."""
    return CPU_POOL if step.slot is None else step.slot


class SlotWorker:
    """One actor of a pool: loads the pool's slot once, then runs batches of any of the pool's steps. Takes and
    returns plain JSON-like values (small); artifacts are written under the output root by the steps themselves."""

    def __init__(self, pool: str, stages: list[Stage], models_source: Any, config: Any, out_root: str,
                 plan_modes: dict[str, str] | None = None, batch_caps: dict[str, int] | None = None):
        self.layout = SparkleLayout(out_root)
        self.config = config
        # Stages are pickled by reference to their classes, so workers need the package installed.
        self.steps = {step.key: step for stage in stages for step in stage_steps(stage) if pool_of(step) == pool}
        started = time.perf_counter()
        self.models: dict = {}
        self.lazy: list = []
        if pool.startswith("stage:"):
            self.stage = next(step.stage for step in self.steps.values())
            self.models = load_stage_models(self.stage, models_source, config)
        elif pool.startswith("given:"):  # a stage holding its caller's adapters (pickled with it): all of them
            self.models = dict(next(step.stage for step in self.steps.values()).given_models)
        elif pool != CPU_POOL:
            self.models = {pool: load_slot_model(pool, models_source, config, plan_modes, batch_caps)}
        if any(key[0] == 5 and step.run is not None for key, step in self.steps.items()):
            from sparkle_fast.stages.slot_loaders import load_slot

            lineart = load_slot("lineart", models_source)  # loads on first use only ([edges] extractor "lineart")
            configure_adapter(lineart, config)
            self.models["lineart"] = lineart
        self.load_seconds = time.perf_counter() - started
        self.first_call = True

    def info(self) -> dict:
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "load_seconds": round(self.load_seconds, 3)}

    def process(self, key: tuple[int, int], samples: list[Sample], states: list[dict], previous: list[dict]) -> dict:
        """One batch of step `key`: per sample its outcome (None: handed to the stage's next step), the stage's
        state after the step and the step's seconds per category; the call's seconds per sample; model_load: the
        slot's load seconds on the actor's first call (0 after)."""
        from sparkle_fast.stages.steps import StepItem

        step = self.steps[tuple(key)]
        contexts = [StageContext(self.layout, self.config, self.models, prev) for prev in previous]
        started = time.perf_counter()
        if step.run is None:
            outcomes = run_group(step.stage, samples, contexts, self.layout)
            items = None
        else:
            items = [StepItem(sample, context, state) for sample, context, state in zip(samples, contexts, states,
                                                                                         strict=True)]
            outcomes = call_step(step, items, self.layout)
        seconds = (time.perf_counter() - started) / len(samples)
        load, self.first_call = (self.load_seconds if self.first_call else 0.0), False
        results = []
        for k, outcome in enumerate(outcomes):
            results.append({
                "outcome": None if outcome is None else {"status": outcome.status, "reason": outcome.reason,
                                                         "score": outcome.score, "record": outcome.record,
                                                         "timing": dict(outcome.timing)},
                "state": None if items is None else items[k].state,
                "timer": None if items is None else items[k].timer.as_dict()})
        return {"results": results, "seconds": seconds, "model_load": load}


@dataclass
class _Pool:
    name: str
    stages: list  # the stages with a step in this pool (sent to its actors)
    last_index: int  # the pool's last step in the run's step list: past it, no sample needs the pool again
    gpus: float
    size: int  # actors
    actors: list = field(default_factory=list)
    in_flight: dict = field(default_factory=dict)  # ObjectRef -> (actor index, actor handle, step index, [sample ids])
    waiting: dict = field(default_factory=dict)  # step index -> deque of sample ids
    counts: dict = field(default_factory=lambda: {"next": 0, "done": 0, "rejected": 0, "failed": 0, "retried": 0})
    started: float | None = None
    retired: bool = False
    actor_info: list = field(default_factory=list)  # per actor: {"pid", "node", "load_seconds"} once known
    info_refs: dict = field(default_factory=dict)  # ObjectRef of actor.info() -> (actor index, actor handle)
    started_actors: int = 0  # replacements included

    def load(self, index: int) -> int:
        return sum(1 for i, _, _, _ in self.in_flight.values() if i == index)

    def queued(self) -> int:
        return sum(len(q) for q in self.waiting.values())


class RayRunner:
    """Slot actor pools on a Ray cluster (module docstring)."""

    def __init__(self, max_attempts: int, *, address: str | None = None, actors_per_pool: int = 1,
                 gpus_per_actor: float = 1.0, cpus_per_actor: float = 1.0, max_in_flight_per_actor: int = 2,
                 status_seconds: float = 30.0, actors: dict[str, int] | None = None,
                 gpus: dict[str, float] | None = None, progress: Callable[[str, int, int], None] | None = None,
                 only: set[str] | None = None, log: Callable[[str], None] | None = None):
        """actors / gpus: per-pool overrides of actors_per_pool / gpus_per_actor ({"sam3": 0.25})."""
        for key, table in (("actors", actors), ("gpus", gpus)):
            bad = [f"{k} = {v!r}" for k, v in (table or {}).items()
                   if isinstance(v, bool) or not isinstance(v, (int, float))]
            if bad:
                raise ValueError(f"ray.{key}: expected pool = number, got {', '.join(bad)} (e.g. {{sam3 = 0.25}})")
        self.actors = {str(k): int(v) for k, v in (actors or {}).items()}
        self.gpus = {str(k): float(v) for k, v in (gpus or {}).items()}
        self.plan_modes: dict[str, str] = {}  # set per run from the plan (a --models folder)
        self.batch_caps: dict[str, int] = {}
        if actors_per_pool < 1 or max_in_flight_per_actor < 1 or any(v < 1 for v in self.actors.values()):
            raise ValueError("ray.actors_per_pool, ray.actors values and ray.max_in_flight_per_actor must be >= 1")
        if gpus_per_actor < 0 or cpus_per_actor < 0 or any(v < 0 for v in self.gpus.values()):
            raise ValueError("ray.gpus_per_actor, ray.gpus values and ray.cpus_per_actor must be >= 0")
        self.max_attempts = max_attempts
        self.address = address
        self.actors_per_pool = actors_per_pool
        self.gpus_per_actor = gpus_per_actor
        self.cpus_per_actor = cpus_per_actor
        self.max_in_flight_per_actor = max_in_flight_per_actor
        self.status_seconds = status_seconds
        self.progress = progress or (lambda label, done, total: None)
        self.only = only
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self._metrics = None
        self.result_times: list[float] = []  # time.monotonic() of every committed step result (bench/orchestration)
        self.step_stats: dict[tuple[int, int], StepStats] = {}
        self.pools: dict[str, _Pool] = {}

    @classmethod
    def from_config(cls, config: Any, *, address: str | None = None, **kwargs) -> RayRunner:
        ray_config = config.ray
        return cls(config.run.max_attempts, address=address, actors_per_pool=ray_config.actors_per_pool,
                   gpus_per_actor=ray_config.gpus_per_actor, cpus_per_actor=ray_config.cpus_per_actor,
                   max_in_flight_per_actor=ray_config.max_in_flight_per_actor,
                   status_seconds=ray_config.status_seconds, actors=ray_config.actors, gpus=ray_config.gpus, **kwargs)

    def summary(self) -> dict:
        """Per step and per pool figures of this run (summary.json "steps" / "pools")."""
        return {"steps": [s.to_dict() for _, s in sorted(self.step_stats.items())],
                "pools": {name: {"actors_started": pool.started_actors, "gpus_per_actor": pool.gpus,
                                 "load_seconds": round(sum(a.get("load_seconds", 0.0) for a in pool.actor_info
                                                           if a), 3),
                                 "outcomes": dict(pool.counts)}
                          for name, pool in sorted(self.pools.items()) if pool.started_actors}}

    # --- the run ----------------------------------------------------------------------------------------------------

    def run(self, stages: Sequence[Stage], manifest: Manifest, layout: SparkleLayout, config: Any,
            models_source: Any) -> None:
        # The driver is the only writer of ray-pools.json: a temporary of it here was left by a killed driver.
        for stale in (layout.root / "logs").glob(".ray-pools.json.*.tmp"):
            stale.unlink(missing_ok=True)
        ray = import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": env} if env else None)
        self.pools = {}
        try:
            self._run(ray, sorted(stages, key=lambda s: s.number), manifest, layout, config, models_source)
        except sqlite3.OperationalError as exc:  # the manifest itself could not be written
            if is_disk_full(exc):
                raise disk_full_error(exc, layout.root, "recording step results") from exc
            raise
        finally:
            for pool in self.pools.values():
                for actor in pool.actors:
                    ray.kill(actor)
            if started_here:
                ray.shutdown()

    def _run(self, ray, stages: list[Stage], manifest: Manifest, layout: SparkleLayout, config: Any,
             models_source: Any) -> None:
        steps = [step for stage in stages for step in stage_steps(stage)]
        samples = {row.id: Sample(row.id, row.theme, row.src_video, row.prompt) for row in manifest.samples()}
        chosen = sorted(samples) if self.only is None else sorted(set(samples) & self.only)
        positions = first_unfinished_steps(chosen, steps, manifest, self.max_attempts)
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        pools = self.pools
        for index, step in enumerate(steps):
            name = pool_of(step)
            if name not in pools:
                with_models = name != CPU_POOL and (not name.startswith("stage:") or bool(step.stage.model_slots))
                gpus = self.gpus.get(name, self.gpus_per_actor) if (has_gpus and with_models) else 0.0
                pools[name] = _Pool(name, [], index, gpus, self.actors.get(name, self.actors_per_pool))
            pool = pools[name]
            pool.last_index = index
            if step.stage not in pool.stages:
                pool.stages.append(step.stage)
        unknown = sorted((set(self.actors) | set(self.gpus)) - set(pools))
        if unknown:
            self.log(f"[ray] actors/gpus overrides for pools this run does not have: {', '.join(unknown)} "
                     f"(pools: {', '.join(pools)})")
        reached: dict[int, int] = {}  # step index -> samples that reached it in this run (the progress totals)
        finished: dict[int, int] = {}
        for sid, position in positions.items():
            self._enqueue(pools, steps, sid, position.index, reached)
        # A --models folder's plan, each slot alone on its actor's GPU (the plan sizes each slot by itself): how a
        # Wan slot is held ([memory] wan_placement auto) and the largest batch whose working memory fits.
        plan = memory_plan(config, models_source, [s.slot for s in steps if s.slot])
        self.plan_modes, self.batch_caps = plan.modes, plan.batch_caps
        worker_class = ray.remote(SlotWorker)
        context = (worker_class, layout, config, models_source)
        last_status = time.monotonic()
        while any(p.waiting or p.in_flight for p in pools.values()):
            for pool in pools.values():
                self._submit(ray, context, pool, steps, samples, positions, manifest, config)
            refs = [ref for pool in pools.values() for ref in pool.in_flight]
            ready, _ = ray.wait(refs, num_returns=1, timeout=1.0) if refs else ([], [])
            if ready and len(refs) > 1:  # every call already finished, not just the first
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                pool = next(p for p in pools.values() if ref in p.in_flight)
                self._collect(ray, context, pool, ref, steps, samples, positions, manifest, reached, finished)
            self._retire(ray, pools, positions)
            self._update_pools_file(ray, pools, layout)
            if time.monotonic() - last_status >= self.status_seconds:
                self._status(pools)
                last_status = time.monotonic()
        self._status(pools)

    @staticmethod
    def _enqueue(pools: dict[str, _Pool], steps: list[RunStep], sid: str, index: int, reached: dict[int, int]) \
            -> None:
        pools[pool_of(steps[index])].waiting.setdefault(index, deque()).append(sid)
        reached[index] = reached.get(index, 0) + 1

    def _submit(self, ray, context, pool: _Pool, steps: list[RunStep], samples: dict[str, Sample],
                positions: dict[str, Position], manifest: Manifest, config: Any) -> None:
        if not pool.waiting:
            return
        if not pool.actors:
            self._start_pool(context, pool)
        while pool.waiting:
            actor_index = min(range(len(pool.actors)), key=pool.load)
            if pool.load(actor_index) >= self.max_in_flight_per_actor:
                break
            # The latest step with a full batch waiting, else the latest with any: samples near the end of the
            # pipeline finish first, so fewer are half-done at any time.
            sizes = {index: step_batch_size(steps[index], config, self.batch_caps) for index in pool.waiting}
            full = [index for index, queue in pool.waiting.items() if len(queue) >= sizes[index]]
            index = max(full or pool.waiting)
            queue = pool.waiting[index]
            ids = [queue.popleft() for _ in range(min(sizes[index], len(queue)))]
            if not queue:
                del pool.waiting[index]
            number = steps[index].key[0]
            previous = [{n: (r.record if (r := manifest.result(sid, n)) else None) for n in range(1, number)}
                        for sid in ids]
            ref = pool.actors[actor_index].process.remote(steps[index].key, [samples[sid] for sid in ids],
                                                          [positions[sid].state for sid in ids], previous)
            pool.in_flight[ref] = (actor_index, pool.actors[actor_index], index, ids)

    def _actor_options(self, pool: _Pool) -> dict:
        return {"num_gpus": pool.gpus, "num_cpus": self.cpus_per_actor, "scheduling_strategy": "SPREAD"}

    def _new_actor(self, context, pool: _Pool, index: int) -> None:
        """Start (or replace) actor `index` of the pool; its pid and node are asked for without waiting."""
        worker_class, layout, config, models_source = context
        actor = worker_class.options(**self._actor_options(pool)).remote(
            pool.name, pool.stages, models_source, config, str(layout.root), self.plan_modes, self.batch_caps)
        if index == len(pool.actors):
            pool.actors.append(actor)
            pool.actor_info.append(None)
        else:
            pool.actors[index] = actor
            pool.actor_info[index] = None
        pool.started_actors += 1
        pool.info_refs[actor.info.remote()] = (index, actor)

    def _start_pool(self, context, pool: _Pool) -> None:
        for index in range(pool.size):
            self._new_actor(context, pool, index)
        pool.started = time.monotonic()

    def _retire(self, ray, pools: dict[str, _Pool], positions: dict[str, Position]) -> None:
        """Shut down the pools no live sample can reach any more (their resources go back to the cluster)."""
        earliest = min((p.index for p in positions.values()), default=None)
        for pool in pools.values():
            if pool.actors and not pool.in_flight and not pool.waiting and (
                    earliest is None or earliest > pool.last_index):
                for actor in pool.actors:
                    ray.kill(actor)
                pool.actors, pool.retired, pool.info_refs = [], True, {}

    def _update_pools_file(self, ray, pools: dict[str, _Pool], layout: SparkleLayout) -> None:
        """OUT/logs/ray-pools.json: each pool's actors (pid, node, model load seconds) once they have loaded (a
        replacement takes its dead actor's place; a retired pool keeps its last actors' entries); for operators and
        the fault tests. Never waits for an actor."""
        changed = False
        for pool in pools.values():
            if not pool.info_refs:
                continue
            ready, _ = ray.wait(list(pool.info_refs), num_returns=len(pool.info_refs), timeout=0)
            for ref in ready:
                index, actor = pool.info_refs.pop(ref)
                if index >= len(pool.actors) or pool.actors[index] is not actor:
                    continue  # replaced or retired meanwhile
                try:
                    pool.actor_info[index] = ray.get(ref)
                except Exception as exc:  # a dead actor: reported here, replaced when its call fails
                    pool.actor_info[index] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
                changed = True
        if changed:
            path = layout.root / "logs" / "ray-pools.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            value = {p.name: p.actor_info for p in pools.values() if p.actor_info}
            with atomic_write(path) as handle:
                handle.write(json.dumps(value, indent=2, sort_keys=True).encode())

    def _collect(self, ray, context, pool: _Pool, ref, steps: list[RunStep], samples: dict[str, Sample],
                 positions: dict[str, Position], manifest: Manifest, reached: dict[int, int],
                 finished: dict[int, int]) -> None:
        from sparkle_fast.stages.common import StageTimer
        from sparkle_fast.stages.steps import StepItem

        actor_index, actor, index, ids = pool.in_flight.pop(ref)
        step = steps[index]
        number = step.key[0]
        try:
            reply = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as exc:
            # The actor died with these samples in flight: one failed attempt of their stage each, then the same
            # step again while attempts remain. Its other in-flight calls fail the same way: replace it only once.
            if actor_index < len(pool.actors) and pool.actors[actor_index] is actor:
                ray.kill(actor)
                self._new_actor(context, pool, actor_index)
            reason = f"worker died ({type(exc).__name__}): {str(exc).splitlines()[0] if str(exc) else ''}"
            for sid in ids:
                position = positions[sid]
                manifest.finish(sid, number, "failed", reason=reason, seconds=position.seconds,
                                timing=position.timing)
                attempts = manifest.result(sid, number).attempts
                if attempts < self.max_attempts:
                    pool.waiting.setdefault(index, deque()).append(sid)
                    pool.counts["retried"] += 1
                else:
                    del positions[sid]
                    pool.counts["failed"] += 1
                    self.log(f"[{step.stage.name}/{step.name}] {sid}: {reason}; attempts exhausted ({attempts})")
            return
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, DiskFullError) or (cause is not None and is_disk_full(cause)):
                raise DiskFullError(str(cause)) from exc
            raise
        if pool.started is not None and sum(pool.counts.values()) == 0:
            pool.started = time.monotonic()  # the rate counts from the first result (model loading excluded)
        seconds = reply["seconds"]
        slot = None if step.slot is None or step.slot.startswith("stage:") else step.slot
        stats = self.step_stats.setdefault(step.key, StepStats(number, step.name, slot))
        stats.calls += 1
        stats.items += len(ids)
        stats.seconds += seconds * len(ids)
        for k, (sid, result) in enumerate(zip(ids, reply["results"], strict=True)):
            position = positions[sid]
            timing = dict(position.timing)
            for key, value in (result["timer"] or {}).items():
                timing[key] = timing.get(key, 0.0) + value
            if k == 0 and reply["model_load"]:
                timing["model_load"] = timing.get("model_load", 0.0) + reply["model_load"]
            outcome = None if result["outcome"] is None else StageOutcome(**result["outcome"])
            if step.run is None and outcome is not None:
                timing.update(outcome.timing)
            item = None
            if step.run is not None:
                item = StepItem(samples[sid], None, result["state"])
                item.timer = StageTimer()
                item.timer.seconds.update(result["timer"] or {})
            status = outcome.status if outcome is not None else ("done" if step.last else "next")
            stats.outcomes[status] += 1
            pool.counts[status] += 1
            following = commit_outcome(manifest, steps, index, sid, position, outcome, item, seconds, timing)
            self.result_times.append(time.monotonic())
            finished[index] = finished.get(index, 0) + 1
            if following is None:
                del positions[sid]
            else:
                positions[sid] = following
                self._enqueue(self.pools, steps, sid, following.index, reached)
            self.progress(f"{step.stage.name}/{step.name}", finished[index], max(reached[index], finished[index]))

    # --- status -----------------------------------------------------------------------------------------------------

    def _status(self, pools: dict[str, _Pool]) -> None:
        rows = [f"{'pool':<14} {'actors':>6} {'queued':>6} {'flight':>6} {'next':>5} {'kept':>5} {'rej':>4} "
                f"{'fail':>4} {'retry':>5} {'items/s':>8}"]
        for pool in pools.values():
            handled = sum(pool.counts[k] for k in OUTCOME_KEYS)
            elapsed = time.monotonic() - pool.started if pool.started else 0
            rate = handled / elapsed if elapsed > 0 and handled else 0.0
            flight = sum(len(ids) for _, _, _, ids in pool.in_flight.values())
            actors = "done" if pool.retired else str(len(pool.actors))
            rows.append(f"{pool.name:<14} {actors:>6} {pool.queued():>6} {flight:>6} {pool.counts['next']:>5} "
                        f"{pool.counts['done']:>5} {pool.counts['rejected']:>4} {pool.counts['failed']:>4} "
                        f"{pool.counts['retried']:>5} {rate:>8.3f}")
            self._export_metrics(pool, flight, rate)
        self.log("\n".join(rows))

    def _export_metrics(self, pool: _Pool, flight: int, rate: float) -> None:
        """Per-pool gauges for Ray's metrics agent (Prometheus): sparkle_fast_pool_{actors,queued,in_flight,handed_on,
        kept,rejected,failed,retried,items_per_second}{pool=...}."""
        if self._metrics is None:
            from ray.util.metrics import Gauge

            names = ("actors", "queued", "in_flight", "handed_on", "kept", "rejected", "failed", "retried",
                     "items_per_second")
            self._metrics = {n: Gauge(f"sparkle_fast_pool_{n}", description=f"per-slot actor pool: {n}",
                                      tag_keys=("pool",)) for n in names}
        values = {"actors": len(pool.actors), "queued": pool.queued(), "in_flight": flight,
                  "handed_on": pool.counts["next"], "kept": pool.counts["done"], "rejected": pool.counts["rejected"],
                  "failed": pool.counts["failed"], "retried": pool.counts["retried"], "items_per_second": rate}
        for name, value in values.items():
            self._metrics[name].set(value, tags={"pool": pool.name})
