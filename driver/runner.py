"""Runners: who runs which stage on which samples, recording every outcome in the manifest.

LocalRunner works through the samples in chunks; for each chunk it runs stage 1 on every sample still pending, then
loads stage 2's models and runs them on the survivors, and so on, releasing each stage's models before the next
stage's load, so one GPU holds one stage's models at a time. A Ray runner (an actor pool per stage) implements the
same run() over the same stages and manifest. ShardedRunner (workers.py) runs one LocalRunner process per GPU on
disjoint shards of the samples.

A stage with a `run_batch(samples, contexts)` method (stage 1: its camera filter batches many clips per launch) is
given up to its `batch_size` samples per call and returns one outcome per sample; if the call raises, each of its
samples is run alone with run(), so one bad sample cannot fail the others. Every run() call runs inside
ops' record_backends(), and the implementations the ops reached ("backends": {"control_video": "triton", ...}) are
added to its outcome's record; run_batch records each sample's own (one log for the batch would mix its samples,
and a record would then depend on the batch it fell in).

An exception inside a stage (out-of-memory included) fails that sample with the error as its reason; the run goes on.
A full disk is not the sample's fault: the run stops with DiskFullError, no attempt is counted against the sample,
and everything committed before stays in the manifest (SQLite rolls back the transaction it could not write), so
the same command resumes once there is space.
"""

from __future__ import annotations

import errno
import sqlite3
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Protocol

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


class LocalRunner:
    """Chunked, stage-by-stage execution in this process (one GPU)."""

    def __init__(self, chunk_size: int, max_attempts: int, progress: Callable[[str, int, int], None] | None = None,
                 shard: tuple[int, int] = (0, 1), only: set[str] | None = None):
        """shard (k, n): only every n-th sample id from the k-th (sorted order); see driver/workers.py.
        only: run these sample ids and leave the manifest's others alone (`sparkle-fast run --limit`)."""
        self.chunk_size = chunk_size
        self.max_attempts = max_attempts
        self.progress = progress or (lambda stage, done, total: None)
        self.shard = shard
        self.only = only

    def run(self, stages: Sequence[Stage], manifest: Manifest, layout: SparkleLayout, config: Any,
            models_source: Any) -> None:
        samples = {row.id: Sample(row.id, row.theme, row.src_video, row.prompt) for row in manifest.samples()}
        shard, shards = self.shard
        chosen = list(samples) if self.only is None else sorted(set(samples) & self.only)
        order = sorted(shard_of(chosen, shard, shards))
        for start in range(0, len(order), self.chunk_size):
            chunk = set(order[start:start + self.chunk_size])
            for stage in stages:
                todo = [sid for sid in manifest.pending(stage.number, self.max_attempts) if sid in chunk]
                if not todo:
                    continue
                try:
                    self._run_stage(stage, [samples[sid] for sid in todo], manifest, layout, config, models_source)
                except sqlite3.OperationalError as exc:  # the manifest itself could not be written
                    if is_disk_full(exc):
                        raise disk_full_error(exc, layout.root, f"recording {stage.name} results") from exc
                    raise

    def _run_stage(self, stage: Stage, todo: list[Sample], manifest: Manifest, layout: SparkleLayout, config: Any,
                   models_source: Any) -> None:
        started = time.perf_counter()
        models = load_stage_models(stage, models_source, config)
        load_seconds = time.perf_counter() - started
        batched = callable(getattr(stage, "run_batch", None))
        size = max(1, int(getattr(stage, "batch_size", 1))) if batched else 1
        done = 0
        try:
            for start in range(0, len(todo), size):
                group = todo[start:start + size]
                contexts = [StageContext(layout, config, models,
                                         {n: (r.record if (r := manifest.result(sample.id, n)) else None)
                                          for n in range(1, stage.number)}) for sample in group]
                t0 = time.perf_counter()
                if batched:
                    outcomes = self._run_batch(stage, group, contexts, layout)
                else:
                    outcomes = [self._run_one(stage, group[0], contexts[0], layout)]
                seconds = (time.perf_counter() - t0) / len(group)  # a batch's wall time, shared evenly
                for sample, outcome in zip(group, outcomes, strict=True):
                    done += 1
                    timing = dict(outcome.timing)
                    if done == 1:
                        timing["model_load"] = load_seconds
                    manifest.finish(sample.id, stage.number, outcome.status, score=outcome.score,
                                    reason=outcome.reason, record=outcome.record, seconds=seconds, timing=timing)
                    self.progress(stage.name, done, len(todo))
        finally:
            stage.release_models(models)
            _release_gpu_memory()

    def _run_one(self, stage: Stage, sample: Sample, context: StageContext, layout: SparkleLayout) -> StageOutcome:
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
        return _with_backends(outcome, used)

    def _run_batch(self, stage: Stage, group: list[Sample], contexts: list[StageContext],
                   layout: SparkleLayout) -> list[StageOutcome]:
        try:
            outcomes = list(stage.run_batch(group, contexts))
            if len(outcomes) != len(group):
                raise RuntimeError(f"{stage.name}.run_batch returned {len(outcomes)} outcomes for {len(group)} "
                                   "samples")
        except Exception as exc:
            if is_disk_full(exc):
                raise disk_full_error(exc, layout.root, f"{stage.name} wrote a batch of samples") from exc
            traceback.print_exc()
            _release_gpu_memory()
            outcomes = None
        if outcomes is None:  # the batch failed as a whole: each sample alone, so a bad one fails only itself
            return [self._run_one(stage, sample, context, layout)
                    for sample, context in zip(group, contexts, strict=True)]
        return outcomes  # a batch's log mixes its samples: run_batch records each sample's own "backends"


def load_stage_models(stage: Stage, models_source: Any, config: Any) -> Any:
    """The stage's models, given the run's settings where an adapter takes them (the VLM's prompts_file); VLM and
    EditScore folders load onto the run config's [vlm] backend (transformers, vllm or an OpenAI-compatible server)."""
    from sparkle_fast.models.vlm_backends import use_settings

    use_settings(getattr(config, "vlm", None))
    models = stage.load_models(models_source)
    for adapter in (models.values() if isinstance(models, dict) else ()):
        if hasattr(adapter, "use_run_config"):
            adapter.use_run_config(config)
    return models


def run_group(stage: Stage, group: list[Sample], contexts: list[StageContext],
              layout: SparkleLayout) -> list[StageOutcome]:
    """One call's samples through a stage exactly as LocalRunner runs them (run_batch when the stage has it, each
    sample alone otherwise or when the batch fails); for other runners (driver/ray_runner.py)."""
    runner = LocalRunner(chunk_size=1, max_attempts=1)
    if callable(getattr(stage, "run_batch", None)):
        return runner._run_batch(stage, group, contexts, layout)
    return [runner._run_one(stage, sample, context, layout) for sample, context in zip(group, contexts, strict=True)]


def _with_backends(outcome: StageOutcome, used: dict[str, str]) -> StageOutcome:
    """The outcome with record["backends"] = the ops' implementations reached during its call (none: unchanged)."""
    if used:
        outcome.record = {**(outcome.record or {}), "backends": dict(sorted(used.items()))}
    return outcome
