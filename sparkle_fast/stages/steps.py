"""Steps: the unit the runners schedule. A step applies one model slot (or one family of kernels) to a batch of samples.

Each stage is a short sequence of steps that reads top to bottom (stage 2: scene_instruction [vlm] -> edit_frame0
[editor] -> score_edit [scorer]). A step gets a list of StepItems, one per sample, and returns one entry per item:

  None              the sample goes on to the stage's next step; what the step produced is in `item.state` (JSON,
                    kept in the manifest's step_results, so a rerun starts the sample at its first unfinished step)
                    and in files it wrote atomically under the output layout
  StageOutcome      the stage ends here for this sample: rejected or failed (with the reason), or done (the last step)

`item.state` is the stage's record under construction: the last step's outcome carries it as the stage's record,
so records are the same whichever runner ran the steps and however they were batched. Keys starting with "_" are
working values for later steps of the stage (not part of the record); `stage_record` drops them.

Models: `item.context.models` holds the resident adapters by slot. A step calls its adapter's batched method when
the adapter has one (`call_many`: `describe_scene_many(frames)` for `describe_scene`), else one call per item, so
stand-ins with single-call methods work too.

Timing: a batched call's seconds are shared evenly by its items (`share_seconds`), so a sample's model/kernel/io
split sums over its steps whatever the batch it fell in.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sparkle_fast.stages.base import Sample, StageContext, StageOutcome
from sparkle_fast.stages.common import StageTimer


@dataclass
class StepItem:
    """One sample in a step's batch. state: the stage's record so far (JSON; see the module docstring)."""

    sample: Sample
    context: StageContext
    state: dict = field(default_factory=dict)
    timer: StageTimer = field(default_factory=StageTimer)

    def fail(self, reason: str) -> StageOutcome:
        return StageOutcome("failed", reason, None, stage_record(self.state) or None, self.timer.as_dict())

    def reject(self, reason: str, score: float | None = None) -> StageOutcome:
        return StageOutcome("rejected", reason, score, stage_record(self.state), self.timer.as_dict())

    def done(self, score: float | None = None) -> StageOutcome:
        return StageOutcome("done", None, score, stage_record(self.state), self.timer.as_dict())


StepFunction = Callable[[list[StepItem]], Sequence[StageOutcome | None]]


@dataclass(frozen=True)
class Step:
    """stage: 1..5; name: as in driver/step_graph.py; slot: the model slot it needs resident (None: kernels only)."""

    stage: int
    name: str
    slot: str | None
    run: StepFunction


def stage_record(state: dict) -> dict:
    """The record a stage stores: its state without the working keys ("_...")."""
    return {k: v for k, v in state.items() if not k.startswith("_")}


@contextlib.contextmanager
def item_backends(item: StepItem) -> Iterator[None]:
    """Record the ops' implementations reached inside the block in item.state["backends"] (op -> "triton", ...):
    for steps that run one sample at a time (a batch's log would mix its samples)."""
    from sparkle_fast.ops._dispatch import record_backends

    with record_backends() as used:
        yield
    if used:
        item.state["backends"] = dict(sorted({**item.state.get("backends", {}), **used}.items()))


def finish_outcome(item: StepItem, outcome: StageOutcome) -> StageOutcome:
    """The outcome with the ops' implementations recorded during the stage's steps (item.state["backends"]) in its
    record, last, as the runners have always written it."""
    backends = item.state.get("backends")
    if backends and isinstance(outcome.record, dict):
        outcome.record.pop("backends", None)
        outcome.record["backends"] = backends
    return outcome


def call_many(adapter: Any, task: str, *columns: Sequence, **kwargs: Any) -> list:
    """adapter.<task>_many(*columns, **kwargs) when the adapter batches that task, else one <task> call per row."""
    many = getattr(adapter, f"{task}_many", None)
    if callable(many):
        results = list(many(*columns, **kwargs))
    else:
        results = [getattr(adapter, task)(*row, **kwargs) for row in zip(*columns, strict=True)]
    if columns and len(results) != len(columns[0]):
        raise RuntimeError(f"{type(adapter).__name__}.{task}: {len(results)} results for {len(columns[0])} inputs")
    return results


def share_seconds(items: Sequence[StepItem], category: str, started: float) -> None:
    """Charge the seconds since `started` (perf_counter) evenly to the items' timers under `category`."""
    if items:
        share = (time.perf_counter() - started) / len(items)
        for item in items:
            item.timer.add(category, share)


def run_steps(steps: Sequence[Step], samples: Sequence[Sample], contexts: Sequence[StageContext]) \
        -> list[StageOutcome]:
    """Run a stage's steps over a group of samples with all its models loaded (context.models), one batch per step:
    what Stage.run and run_batch do (tests, the Ray runner). Returns one outcome per sample; timings are summed over
    the steps. An exception in a step fails that step's samples with the error (the runners' per-sample fallback
    then retries them one by one)."""
    items = [StepItem(sample, context) for sample, context in zip(samples, contexts, strict=True)]
    outcomes: list[StageOutcome | None] = [None] * len(items)
    live = list(range(len(items)))
    for position, step in enumerate(steps):
        if not live:
            break
        results = list(step.run([items[i] for i in live]))
        if len(results) != len(live):
            raise RuntimeError(f"step {step.name} returned {len(results)} outcomes for {len(live)} samples")
        still = []
        for i, result in zip(live, results, strict=True):
            if result is not None:
                outcomes[i] = finish_outcome(items[i], result)
            elif position == len(steps) - 1:
                outcomes[i] = finish_outcome(items[i], items[i].done())
            else:
                still.append(i)
        live = still
    return outcomes  # type: ignore[return-value]


class SteppedStage:
    """Base of the five stages: run() and run_batch() execute the stage's steps() with all its models loaded."""

    number: int
    name: str
    model_slots: tuple[str, ...]
    # Adapters by slot that the caller made (tests, a pipeline embedding the stage): the runner uses them instead of
    # loading the slots, and never releases them. None: the runner loads the slots (slot_loaders.py).
    given_models: dict | None = None

    def steps(self) -> list[Step]:  # pragma: no cover - each stage defines it
        raise NotImplementedError

    def run(self, sample: Sample, context: StageContext) -> StageOutcome:
        (outcome,) = run_steps(self.steps(), [sample], [context])
        return outcome

    def run_batch(self, samples: list[Sample], contexts: list[StageContext]) -> list[StageOutcome]:
        if len(samples) != len(contexts):
            raise ValueError(f"run_batch: {len(samples)} samples but {len(contexts)} contexts")
        return run_steps(self.steps(), samples, contexts)

    def load_models(self, models_source: Any) -> dict:
        from sparkle_fast.stages.slot_loaders import load_slots

        return load_slots(models_source, self.model_slots)

    def release_models(self, models: Any) -> None:
        from sparkle_fast.stages.common import release_slot_models

        release_slot_models(models)
