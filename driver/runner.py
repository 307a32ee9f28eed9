"""Runners: who runs which step on which samples, recording every outcome in the manifest.

LocalRunner (one process, one GPU) schedules steps, not stages (sparkle_fast/stages/steps.py). For each chunk of
samples it repeatedly picks a step that has samples waiting at it, preferring one whose model slot is already
resident (model-major: a model, once loaded, runs every pending call of the chunk it can take before another is
loaded), and runs it over those samples in batches of the slot's `[batch]` size (capped, for a --models folder, at
the batch the plan sized the slot's working memory for):

  chunk   [camera_filter] x all -> [camera_verdict, scene_instruction] (vlm) -> [edit_frame0] (editor) ->
          [score_edit] (scorer) -> [ground_r1] (vlm) -> ... -> [score_video] (scorer)

SlotCache holds the loaded models under the run's GPU-memory budget ([memory] gpu_memory_gib; a slot's bytes come
from the plan, driver/plan.py, for a --models folder, or are measured once loaded): a slot stays resident while the
budget allows, and when a load needs room the resident slot needed furthest ahead is released first. Models stay
loaded across chunks, so with room for all of them each loads once per run. A slot that cannot fit even alone stops
the run before any work (RunConfigError-like ValueError naming the slot, its bytes and the budget).

Every finished step is committed at once: a step that hands the sample on records the stage's state so far
(manifest step_results); a step that ends the stage (done, rejected, failed) records the stage's result. A rerun
starts each sample at its first unfinished step, so no finished model call is repeated; a failed stage resumes at the
step that failed. If a batch raises, each of its samples is run alone, so one bad sample fails only itself. An
exception inside a step (out-of-memory included) fails that sample with the error as its reason; the run goes on.
A full disk is not the sample's fault: the run stops with DiskFullError, no attempt is counted against the sample,
and everything committed before stays in the manifest (SQLite rolls back the transaction it could not write), so the
same command resumes once there is space.

A stage object without steps() (a test's stand-in) runs as one step with its own load_models() / run().
The Ray runner (driver/ray_runner.py) schedules the same steps over one actor pool per model slot with the same
module functions (first_unfinished_steps, call_step, commit_outcome); ShardedRunner (workers.py) runs one
LocalRunner process per GPU on disjoint shards of the samples.
"""

from __future__ import annotations

import copy
import errno
import functools
import sqlite3
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from sparkle_fast.layout import SparkleLayout
from sparkle_fast.stages.base import Sample, Stage, StageContext, StageOutcome

from .manifest import Manifest
from .workers import shard_of


class DiskFullError(RuntimeError):
    """The disk (or quota) under the output folder is full; the message says where and what to do."""


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC / EDQUOT anywhere in the exception's cause chain, or SQLite's "database or disk is full"."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return True
        if isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(exc: BaseException, root, doing: str) -> DiskFullError:
    return DiskFullError(f"disk full under {root} while {doing} ({exc}); free space there and rerun the same "
                         "command: finished work is kept in the manifest")


class Runner(Protocol):
    def run(self, stages: Sequence[Stage], manifest: Manifest, layout: SparkleLayout, config: Any,
            models_source: Any) -> None: ...


def _release_gpu_memory() -> None:
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- steps of the stages ------------------------------------------------------------------------------------------

@dataclass
class RunStep:
    """A step as the runner schedules it: `key` orders steps in pipeline order; `slot` is the residency key (a model
    slot, "stage:<name>" for a stage without steps, or None for kernels only)."""

    key: tuple[int, int]
    stage: Stage
    name: str
    slot: str | None
    run: Callable[[list], Sequence[StageOutcome | None]] | None  # None: a stage without steps (stage.run)
    last: bool


def stage_steps(stage: Stage) -> list[RunStep]:
    """The stage's steps as the runner schedules them. A stage holding `given_models` (adapters its caller made:
    tests, an embedding pipeline) uses those for its slots, keyed "given:<stage>:<slot>", never loaded or released
    by the runner."""
    steps = stage.steps() if callable(getattr(stage, "steps", None)) else None
    if not steps:
        return [RunStep((stage.number, 0), stage, stage.name, f"stage:{stage.name}", None, True)]
    given = getattr(stage, "given_models", None) is not None
    return [RunStep((stage.number, i), stage, s.name,
                    f"given:{stage.number}:{s.slot}" if given and s.slot is not None else s.slot, s.run,
                    i == len(steps) - 1) for i, s in enumerate(steps)]


# --- resident models ----------------------------------------------------------------------------------------------

def adapter_bytes(adapter: Any) -> int:
    """Parameter and buffer bytes of the torch modules an adapter holds (two attribute levels deep; shared tensors
    counted once): what a slot occupies once loaded, for the tiny models that have no plan."""
    try:
        import torch
    except ImportError:
        return 0
    seen: set[int] = set()
    total = 0

    def modules(obj: Any, depth: int):
        if isinstance(obj, torch.nn.Module):
            yield obj
            return
        if depth == 0 or obj is None or isinstance(obj, (str, bytes, int, float)):
            return
        values = obj.values() if isinstance(obj, dict) else getattr(obj, "__dict__", {}).values()
        for value in list(values):
            yield from modules(value, depth - 1)

    for module in modules(adapter, 3):
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


@dataclass
class SlotStats:
    loads: int = 0
    load_seconds: float = 0.0
    bytes: int = 0


class SlotCache:
    """The models resident in this process, by slot, under a byte budget (None: unbounded).

    planned_bytes: slot -> bytes from the plan (None or a missing slot: measured with adapter_bytes after loading).
    load(slot) returns the slot's adapter (or, for "stage:<name>", a stage's whole model dict); release(slot, value)
    gives its memory back. get(slot, next_use) loads on a miss, first releasing resident slots, those with the
    largest next_use(slot) (the step index of their next use; inf: never again) first, until the new one fits."""

    def __init__(self, load: Callable[[str], Any], release: Callable[[str, Any], None], budget_bytes: int | None,
                 planned_bytes: dict[str, int] | None = None):
        self._load, self._release = load, release
        self.budget_bytes = budget_bytes
        self.planned = dict(planned_bytes or {})
        self.resident: dict[str, Any] = {}
        self.bytes: dict[str, int] = {}
        self.stats: dict[str, SlotStats] = {}
        self.peak_resident_bytes = 0
        self.events: list[tuple[str, str, int]] = []  # ("load" | "release", slot, resident bytes after)

    @property
    def resident_bytes(self) -> int:
        return sum(self.bytes.get(slot, 0) for slot in self.resident)

    def check_fits(self, slots: Sequence[str]) -> None:
        """Raise ValueError naming every planned slot larger than the whole budget (before any work)."""
        if self.budget_bytes is None:
            return
        big = [f"[{slot}] {_size(self.planned[slot])}" for slot in slots
               if self.planned.get(slot, 0) > self.budget_bytes]
        if big:
            raise ValueError(f"{', '.join(big)} of planned resident memory: more than the GPU-memory budget of "
                             f"{_size(self.budget_bytes)} even alone; use a GPU with more memory, raise [memory] "
                             "gpu_memory_gib if the GPU has more, or see `sparkle-fast plan` for the offload modes")

    def get(self, slot: str, next_use: Callable[[str], float]) -> Any:
        if slot in self.resident:
            return self.resident[slot]
        need = self.planned.get(slot, 0)
        if self.budget_bytes is not None:
            while self.resident and self.resident_bytes + need > self.budget_bytes:
                victim = max(self.resident, key=lambda s: (next_use(s), s))
                self.evict(victim)
        started = time.perf_counter()
        value = self._load(slot)
        stats = self.stats.setdefault(slot, SlotStats())
        stats.loads += 1
        stats.load_seconds += time.perf_counter() - started
        self.resident[slot] = value
        self.bytes[slot] = self.planned.get(slot) or adapter_bytes(value)
        stats.bytes = self.bytes[slot]
        self.peak_resident_bytes = max(self.peak_resident_bytes, self.resident_bytes)
        self.events.append(("load", slot, self.resident_bytes))
        return value

    def evict(self, slot: str) -> None:
        value = self.resident.pop(slot)
        try:
            self._release(slot, value)
        finally:
            _release_gpu_memory()
            self.events.append(("release", slot, self.resident_bytes))

    def release_all(self) -> None:
        for slot in list(self.resident):
            self.evict(slot)


def load_stage_models(stage: Stage, models_source: Any, config: Any) -> Any:
    """The stage's models, given the run's settings where an adapter takes them (the VLM's prompts_file); VLM and
    EditScore folders load onto the run config's [vlm] backend (transformers, vllm or an OpenAI-compatible server)."""
    from sparkle_fast.models.vlm_backends import use_settings

    use_settings(getattr(config, "vlm", None))
    models = stage.load_models(models_source)
    for slot, adapter in (models.items() if isinstance(models, dict) else ()):
        configure_adapter(adapter, config, slot)
    return models


def configure_adapter(adapter: Any, config: Any, slot: str | None = None, batch_cap: int | None = None) -> None:
    """The run's settings on a loaded adapter: use_run_config(config) where it has one, and the slot's [batch] size
    (at most batch_cap, the plan's batch for the slot) as its `batch_size` (rows per generate / forward call)."""
    if hasattr(adapter, "use_run_config"):
        adapter.use_run_config(config)
    batch = getattr(config, "batch", None)
    if slot is not None and batch is not None and hasattr(batch, slot) and hasattr(adapter, "__dict__"):
        size = int(getattr(batch, slot))
        adapter.batch_size = size if batch_cap is None else max(1, min(size, int(batch_cap)))


def step_batch_size(step: RunStep, config: Any, caps: dict[str, int] | None = None,
                    sizes: dict[str, int] | None = None) -> int:
    """Samples per call of a step: its slot's [batch] size ("camera" for the kernel steps; `sizes` replaces the
    config's), at most caps[slot] (the plan's batch for a --models folder); a stage without steps keeps its
    run_batch size. Both runners use it."""
    if step.run is None:  # a stage without steps: its run_batch size, as before steps
        return max(1, int(getattr(step.stage, "batch_size", 1))) \
            if callable(getattr(step.stage, "run_batch", None)) else 1
    if sizes is None:
        batch = getattr(config, "batch", None)
        sizes = {} if batch is None else {k: int(v) for k, v in vars(batch).items()}
    key = step.slot if step.slot is not None else "camera"
    size = max(1, int(sizes.get(key, getattr(step.stage, "batch_size", 1))))
    # The plan sized the slot's working memory for its own batch: a larger [batch] would overrun the budget.
    return min(size, max(1, int(caps[key]))) if caps and key in caps else size


# The plan's mode of a Wan slot (driver/plan.py) -> how slot_loaders places it; "sequential_offload" (one block at a
# time) is not offered by the adapters, so model offload is the closest.
PLAN_PLACEMENT = {"resident": "resident", "sequential_experts": "sequential_experts", "model_offload": "model_offload",
                  "sequential_offload": "model_offload"}


def load_slot_model(slot: str, models_source: Any, config: Any, plan_modes: dict[str, str] | None = None,
                    batch_caps: dict[str, int] | None = None) -> Any:
    """One model slot's adapter with the run's settings (see load_stage_models). A Wan slot is placed as [memory]
    wan_placement says ("auto": the plan's mode for it, plan_modes; resident without one); the adapter's batch is
    the slot's [batch] size, at most batch_caps[slot] (the plan's) when given."""
    from sparkle_fast.models.vlm_backends import use_settings
    from sparkle_fast.stages.slot_loaders import load_slot

    use_settings(getattr(config, "vlm", None))
    memory = getattr(config, "memory", None)
    placement = getattr(memory, "wan_placement", "auto")
    if placement == "auto":
        placement = PLAN_PLACEMENT.get((plan_modes or {}).get(slot, "resident"), "resident")
    adapter = load_slot(slot, models_source, placement, bool(getattr(memory, "vae_tiling", False)))
    configure_adapter(adapter, config, slot, (batch_caps or {}).get(slot))
    return adapter


# --- the local runner ---------------------------------------------------------------------------------------------

@dataclass
class StepStats:
    """What summary.json reports per step for this run."""

    stage: int
    step: str
    slot: str | None
    calls: int = 0
    items: int = 0
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=lambda: {"next": 0, "done": 0, "rejected": 0, "failed": 0})
    peak_gpu_bytes: int | None = None

    def to_dict(self) -> dict:
        return {"stage": self.stage, "step": self.step, "slot": self.slot, "calls": self.calls, "items": self.items,
                "mean_batch": round(self.items / self.calls, 3) if self.calls else 0.0,
                "seconds": round(self.seconds, 3), "outcomes": dict(self.outcomes),
                "peak_gpu_bytes": self.peak_gpu_bytes}


@dataclass
class Position:
    """Where a sample stands in this run: the index of its step in the run's step list and the stage's state."""

    index: int
    state: dict
    timing: dict[str, float]  # the stage's seconds so far, summed over its finished steps
    seconds: float


class LocalRunner:
    """Model-major step scheduling in this process (one GPU); see the module docstring."""

    def __init__(self, chunk_size: int, max_attempts: int, progress: Callable[[str, int, int], None] | None = None,
                 shard: tuple[int, int] = (0, 1), only: set[str] | None = None, *,
                 budget_bytes: int | None = None, planned_bytes: dict[str, int] | None = None,
                 batch_sizes: dict[str, int] | None = None):
        """shard (k, n): only every n-th sample id from the k-th (sorted order); see driver/workers.py.
        only: run these sample ids and leave the manifest's others alone (`sparkle-fast run --limit`).
        budget_bytes / planned_bytes: the GPU-memory budget and the slots' planned bytes (default: from the run
        config's [memory] and, for a --models folder, the plan). batch_sizes: slot -> items per call (default: the
        run config's [batch])."""
        self.chunk_size = chunk_size
        self.max_attempts = max_attempts
        self.progress = progress or (lambda label, done, total: None)
        self.shard = shard
        self.only = only
        self.budget_bytes = budget_bytes
        self.planned_bytes = planned_bytes
        self.batch_sizes = batch_sizes
        self.batch_caps: dict[str, int] = {}  # slot -> the plan's batch for it (a --models folder); see _batch_size
        self.step_stats: dict[tuple[int, int], StepStats] = {}
        self.cache: SlotCache | None = None

    # -- summary ---------------------------------------------------------------------------------------------------
    def summary(self) -> dict:
        """Per step and per slot figures of this run (summary.json "steps" / "slots")."""
        cache = self.cache
        return {"steps": [s.to_dict() for _, s in sorted(self.step_stats.items())],
                "slots": {slot: {"loads": st.loads, "load_seconds": round(st.load_seconds, 3), "bytes": st.bytes}
                          for slot, st in sorted((cache.stats if cache else {}).items())},
                "budget_bytes": cache.budget_bytes if cache else None,
                "plan_batch_caps": dict(sorted(self.batch_caps.items())),
                "peak_resident_bytes": cache.peak_resident_bytes if cache else 0}

    # -- run -------------------------------------------------------------------------------------------------------
    def run(self, stages: Sequence[Stage], manifest: Manifest, layout: SparkleLayout, config: Any,
            models_source: Any) -> None:
        steps = [step for stage in sorted(stages, key=lambda s: s.number) for step in stage_steps(stage)]
        self.cache = cache = self._slot_cache(steps, config, models_source)
        self._lazy = {}
        if any(stage.number == 5 and callable(getattr(stage, "steps", None)) for stage in stages):
            from sparkle_fast.stages.slot_loaders import load_slot

            self._lazy["lineart"] = load_slot("lineart", models_source)  # loads on first use only
            configure_adapter(self._lazy["lineart"], config)
        cache.check_fits(sorted({s.slot for s in steps if s.slot is not None}))
        samples = {row.id: Sample(row.id, row.theme, row.src_video, row.prompt) for row in manifest.samples()}
        shard, shards = self.shard
        chosen = list(samples) if self.only is None else sorted(set(samples) & self.only)
        order = sorted(shard_of(chosen, shard, shards))
        try:
            for start in range(0, len(order), self.chunk_size):
                chunk = order[start:start + self.chunk_size]
                try:
                    self._run_chunk(chunk, steps, samples, manifest, layout, config, cache)
                except sqlite3.OperationalError as exc:  # the manifest itself could not be written
                    if is_disk_full(exc):
                        raise disk_full_error(exc, layout.root, "recording step results") from exc
                    raise
        finally:
            cache.release_all()
            for lazy in self._lazy.values():
                lazy.release()

    def _slot_cache(self, steps: list[RunStep], config: Any, models_source: Any) -> SlotCache:
        def load(slot: str) -> Any:
            if slot.startswith("given:"):
                _, number, name = slot.split(":")
                return next(s.stage for s in steps if s.key[0] == int(number)).given_models[name]
            if slot.startswith("stage:"):
                stage = next(s.stage for s in steps if s.slot == slot)
                return load_stage_models(stage, models_source, config)
            return load_slot_model(slot, models_source, config, modes, self.batch_caps)

        def release(slot: str, value: Any) -> None:
            if slot.startswith("given:"):
                return  # the caller's adapters: theirs to release
            if slot.startswith("stage:"):
                next(s.stage for s in steps if s.slot == slot).release_models(value)
            elif hasattr(value, "release"):
                value.release()

        budget, planned, modes = self.budget_bytes, self.planned_bytes, {}
        if budget is None and planned is None:
            budget, planned, modes, self.batch_caps = memory_plan(config, models_source,
                                                                  [s.slot for s in steps if s.slot])
        return SlotCache(load, release, budget, planned)

    def _run_chunk(self, chunk: list[str], steps: list[RunStep], samples: dict[str, Sample], manifest: Manifest,
                   layout: SparkleLayout, config: Any, cache: SlotCache) -> None:
        positions = first_unfinished_steps(chunk, steps, manifest, self.max_attempts)
        reached: dict[int, int] = {}  # step index -> samples of the chunk that reached it (the progress totals)
        finished: dict[int, int] = {}
        for position in positions.values():
            reached[position.index] = reached.get(position.index, 0) + 1
        while positions:
            waiting: dict[int, list[str]] = {}
            for sid in sorted(positions):
                waiting.setdefault(positions[sid].index, []).append(sid)
            index = self._choose(waiting, steps, cache)
            step = steps[index]
            load_seconds, models = 0.0, None
            if step.slot is not None:
                before = cache.stats[step.slot].load_seconds if step.slot in cache.stats else 0.0
                models = cache.get(step.slot, functools.partial(_next_use, current=index, waiting=waiting, steps=steps))
                load_seconds = cache.stats[step.slot].load_seconds - before
            if step.run is not None:  # a stepped stage sees every resident slot by name (and the lazy ones)
                given = getattr(step.stage, "given_models", None)
                models = {**self._lazy, **given} if given is not None else self._resident_models(cache)
            slot = None if step.slot is None or step.slot.startswith("stage:") else step.slot
            stats = self.step_stats.setdefault(step.key, StepStats(step.key[0], step.name, slot))
            todo, size = waiting[index], self._batch_size(step, config)
            for start in range(0, len(todo), size):
                group = todo[start:start + size]
                self._run_group(steps, index, group, samples, positions, models, manifest, layout, config, stats,
                                load_seconds if start == 0 else 0.0)
                finished[index] = finished.get(index, 0) + len(group)
                for sid in group:  # samples handed on to a later step count towards its total
                    if sid in positions:
                        reached[positions[sid].index] = reached.get(positions[sid].index, 0) + 1
                self.progress(f"{step.stage.name}/{step.name}", finished[index], max(reached[index], finished[index]))

    def _resident_models(self, cache: SlotCache) -> dict:
        """The resident slots by name, plus the lazily loaded ones (stage 5's line-art detector)."""
        models = {slot: value for slot, value in cache.resident.items() if ":" not in slot}
        return {**self._lazy, **models}

    def _choose(self, waiting: dict[int, list[str]], steps: list[RunStep], cache: SlotCache) -> int:
        """The step to run next: the earliest with waiting samples whose slot is resident or that needs none;
        otherwise the earliest with waiting samples."""
        for index in sorted(waiting):
            slot = steps[index].slot
            if slot is None or slot in cache.resident:
                return index
        return min(waiting)

    def _batch_size(self, step: RunStep, config: Any) -> int:
        return step_batch_size(step, config, self.batch_caps, self.batch_sizes)

    def _run_group(self, steps: list[RunStep], index: int, group: list[str], samples: dict[str, Sample],
                   positions: dict[str, Position], models: Any, manifest: Manifest, layout: SparkleLayout,
                   config: Any, stats: StepStats, load_seconds: float) -> None:
        from sparkle_fast.stages.steps import StepItem

        step = steps[index]
        stage = step.stage
        contexts = [StageContext(layout, config, models, {n: (r.record if (r := manifest.result(sid, n)) else None)
                                                          for n in range(1, stage.number)}) for sid in group]
        started = time.perf_counter()
        peak = _reset_peak()
        if step.run is None:
            outcomes: list[StageOutcome | None] = run_group(stage, [samples[s] for s in group], contexts, layout)
            items = None
        else:
            items = [StepItem(samples[sid], context, dict(positions[sid].state)) for sid, context in
                     zip(group, contexts, strict=True)]
            outcomes = call_step(step, items, layout)
        seconds = (time.perf_counter() - started) / len(group)
        stats.calls += 1
        stats.items += len(group)
        stats.seconds += seconds * len(group)
        if peak:
            stats.peak_gpu_bytes = max(stats.peak_gpu_bytes or 0, _peak_bytes())
        for k, sid in enumerate(group):
            position, outcome = positions[sid], outcomes[k]
            timing = dict(position.timing)
            if items is not None:
                for key, value in items[k].timer.as_dict().items():
                    timing[key] = timing.get(key, 0.0) + value
            if k == 0 and load_seconds:
                timing["model_load"] = timing.get("model_load", 0.0) + load_seconds
            if step.run is None and outcome is not None:
                timing.update(outcome.timing)
            stats.outcomes[outcome.status if outcome is not None else ("done" if step.last else "next")] += 1
            following = commit_outcome(manifest, steps, index, sid, position, outcome,
                                       items[k] if items is not None else None, seconds, timing)
            if following is None:
                del positions[sid]
            else:
                positions[sid] = following


def first_unfinished_steps(sample_ids: Sequence[str], steps: list[RunStep], manifest: Manifest,
                           max_attempts: int) -> dict[str, Position]:
    """Each sample's first unfinished step among `steps` (the run's, in pipeline order) with its stage's state so
    far; none for a sample that is finished, rejected, out of attempts, or waiting on a stage not in `steps`."""
    positions = {}
    first_of: dict[int, int] = {}
    for i, step in enumerate(steps):
        first_of.setdefault(step.key[0], i)
    for sid in sample_ids:
        for number in sorted(first_of):
            result = manifest.result(sid, number)
            if result is not None and result.status == "done":
                continue
            if result is not None and (result.status == "rejected" or result.attempts >= max_attempts):
                break
            previous_done = number == 1 or ((r := manifest.result(sid, number - 1)) is not None and r.status == "done")
            if not previous_done:
                break
            finished = manifest.finished_steps(sid, number)
            index, state, timing, seconds = first_of[number], {}, {}, 0.0
            while index < len(steps) and steps[index].key[0] == number and steps[index].name in finished \
                    and not steps[index].last:
                row = finished[steps[index].name]
                state = row["state"]
                for k, v in (row["timing"] or {}).items():
                    timing[k] = timing.get(k, 0.0) + v
                seconds += row["seconds"] or 0.0
                index += 1
            positions[sid] = Position(index, state, timing, seconds)
            break
    return positions


def call_step(step: RunStep, items: list, layout: SparkleLayout) -> list[StageOutcome | None]:
    """A stepped stage's step over a batch of StepItems; if the batch raises, each item alone (from the state it had),
    so a bad sample fails only itself. A full disk raises DiskFullError."""
    from sparkle_fast.stages.common import StageTimer

    states = [copy.deepcopy(item.state) for item in items]
    try:
        outcomes = list(step.run(items))
        if len(outcomes) != len(items):
            raise RuntimeError(f"step {step.name} returned {len(outcomes)} outcomes for {len(items)} samples")
        return outcomes
    except Exception as exc:  # noqa: BLE001
        if is_disk_full(exc):
            raise disk_full_error(exc, layout.root, f"{step.name} wrote a batch of samples") from exc
        if len(items) == 1:
            traceback.print_exc()  # the full trace for the log; the manifest keeps the message
            _release_gpu_memory()  # after an out-of-memory error, give the cache back before going on
            return [items[0].fail(f"{type(exc).__name__}: {exc}")]
    traceback.print_exc()
    _release_gpu_memory()
    results = []
    for item, state in zip(items, states, strict=True):
        item.state, item.timer = state, StageTimer()  # the failed batch may have half-written them
        results.append(call_step(step, [item], layout)[0])
    return results


def commit_outcome(manifest: Manifest, steps: list[RunStep], index: int, sid: str, position: Position,
                   outcome: StageOutcome | None, item: Any, seconds: float, timing: dict[str, float]) -> \
        Position | None:
    """Record one sample's result of steps[index] in the manifest and return where it goes next in this run (None:
    nowhere). outcome None hands it to the stage's next step (its state committed as a step result); an outcome ends
    the stage (its record with the ops' backends, seconds and timing summed over the stage's steps); a kept sample
    goes on to the next stage's first step when that stage is in `steps`. item: the StepItem (None for a stage
    without steps); timing: the stage's seconds so far including this step's."""
    from sparkle_fast.stages.steps import finish_outcome

    step = steps[index]
    number = step.stage.number
    if outcome is None and not step.last:
        manifest.finish_step(sid, number, step.name, item.state, seconds=seconds, timing=item.timer.as_dict())
        return Position(index + 1, item.state, timing, position.seconds + seconds)
    if outcome is None:
        outcome = item.done()
    if item is not None:
        outcome = finish_outcome(item, outcome)
    manifest.finish(sid, number, outcome.status, score=outcome.score, reason=outcome.reason, record=outcome.record,
                    seconds=position.seconds + seconds, timing=timing)
    following = index + 1
    if outcome.status == "done" and following < len(steps) and steps[following].key[0] == number + 1:
        return Position(following, {}, {}, 0.0)
    return None


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n} bytes"


def _next_use(slot: str, current: int, waiting: dict[int, list[str]], steps: list[RunStep]) -> float:
    """The index of the next step that needs `slot`: among the steps with waiting samples, or ahead of the current
    one in pipeline order (samples move forward); inf when none does (released first)."""
    ahead = [i for i in range(current, len(steps)) if steps[i].slot == slot]
    pending = [i for i in waiting if steps[i].slot == slot]
    return float(min(ahead + pending, default=float("inf")))


def _reset_peak() -> bool:
    try:
        import torch
    except ImportError:
        return False
    if not torch.cuda.is_available():
        return False
    torch.cuda.reset_peak_memory_stats()
    return True


def _peak_bytes() -> int:
    import torch

    return int(torch.cuda.max_memory_allocated())


class MemoryPlan(NamedTuple):
    """What a run takes from the plan (memory_plan)."""

    budget: int | None  # bytes the slots may hold at once; None: unbounded (a CPU run)
    planned: dict[str, int]  # slot -> planned resident bytes (weights as held + working memory of its batch)
    modes: dict[str, str]  # slot -> how the plan holds it (resident, sequential_experts, model_offload, ...)
    batch_caps: dict[str, int]  # slot -> the plan's batch (items per call its working memory was sized for)


def memory_plan(config: Any, models_source: Any, slots: Sequence[str]) -> MemoryPlan:
    """(budget bytes or None, slot -> planned resident bytes) for a run: the budget is [memory] gpu_memory_gib, else
    the GPU's memory less the plan's reserve when torch sees a GPU, else unbounded (a CPU run); the bytes come from
    the plan (driver/plan.py: safetensors headers, the mode each slot needs) for a --models folder, and are measured
    after loading for the tiny models. With the plan come each slot's mode (resident, sequential_experts,
    model_offload, ...) and its batch, which caps the slot's [batch] size (more would overrun the budget)."""
    from .plan import GIB, RESERVE_FRACTION

    memory = getattr(config, "memory", None)
    gib: float | None = float(getattr(memory, "gpu_memory_gib", 0.0) or 0.0) or None
    if gib is None:
        try:
            import torch

            if torch.cuda.is_available():
                gib = torch.cuda.get_device_properties(0).total_memory / GIB
        except ImportError:
            pass
    budget = None if gib is None else int(int(gib * GIB) * (1 - RESERVE_FRACTION))  # as the plan computes it
    planned: dict[str, int] = {}
    modes: dict[str, str] = {}
    caps: dict[str, int] = {}
    if not (isinstance(models_source, str) and models_source == "tiny") and models_source is not None:
        from .plan import make_plan

        model_slots = tuple(sorted({s for s in slots if not s.startswith("stage:")}))
        if model_slots:
            try:
                plan = make_plan(models_source, gpu=getattr(memory, "plan_gpu", "") or None, gpu_memory_gib=gib,
                                 slots=model_slots)
            except Exception:  # noqa: BLE001 - a folder the plan cannot size is measured after loading instead
                traceback.print_exc()
                return MemoryPlan(budget, planned, modes, caps)
            for slot, slot_plan in plan.slots.items():
                if slot_plan.mode is not None:
                    modes[slot] = slot_plan.mode
                    caps[slot] = max(slot_plan.batch_size, 1)
                    planned[slot] = slot_plan.resident_bytes + slot_plan.working_bytes_per_item * max(
                        slot_plan.batch_size, 1)
                elif budget is not None:
                    planned[slot] = slot_plan.weight_bytes  # fits in no mode: check_fits names it
    return MemoryPlan(budget, planned, modes, caps)


def run_group(stage: Stage, group: list[Sample], contexts: list[StageContext],
              layout: SparkleLayout) -> list[StageOutcome]:
    """One call's samples through a whole stage (run_batch when the stage has it, each sample alone otherwise or
    when the batch fails), each op's implementation recorded for one-sample calls: for stages without steps (and
    callers that want a whole stage at once)."""
    if callable(getattr(stage, "run_batch", None)):
        try:
            outcomes = list(stage.run_batch(group, contexts))
            if len(outcomes) != len(group):
                raise RuntimeError(f"{stage.name}.run_batch returned {len(outcomes)} outcomes for {len(group)} "
                                   "samples")
            return outcomes
        except Exception as exc:  # noqa: BLE001
            if is_disk_full(exc):
                raise disk_full_error(exc, layout.root, f"{stage.name} wrote a batch of samples") from exc
            traceback.print_exc()
            _release_gpu_memory()
    return [_run_one(stage, sample, context, layout) for sample, context in zip(group, contexts, strict=True)]


def _run_one(stage: Stage, sample: Sample, context: StageContext, layout: SparkleLayout) -> StageOutcome:
    from sparkle_fast.ops._dispatch import record_backends

    with record_backends() as used:
        try:
            outcome = stage.run(sample, context)
        except Exception as exc:  # one bad sample never stops the run
            if is_disk_full(exc):  # ... but a full disk stops them all: nothing recorded, no attempt used
                raise disk_full_error(exc, layout.root, f"{stage.name} wrote sample {sample.id}") from exc
            outcome = StageOutcome.failed(f"{type(exc).__name__}: {exc}")
            traceback.print_exc()  # the full trace for the log; the manifest keeps the message
            _release_gpu_memory()  # after an out-of-memory error, give the cache back before going on
    if used and isinstance(outcome.record, dict) and "backends" not in outcome.record:
        outcome.record = {**outcome.record, "backends": dict(sorted(used.items()))}
    return outcome
