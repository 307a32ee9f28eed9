"""The step runner (driver/runner.py) on the real stages with the tiny models and the demo's inputs.

- Under a simulated GPU budget (the slots' planned bytes at Sparkle's bf16 sizes in GiB, a budget of 80) the runner
  never holds models whose planned bytes exceed the budget, and loads a slot again only after releasing it; with
  room for every model each loads once. The VLM and EditScore receive batches (their calls are counted).
- Interrupted between steps (at the first EditScore call: stage 2's score_edit step) and rerun, no finished model call is made again
  (the interrupted run's calls plus the rerun's equal a straight run's, method by method) and the manifest's
  decisions and records equal the straight run's.
"""

from __future__ import annotations

import collections
import json

import pytest

from sparkle_fast.driver.config import load_config
from sparkle_fast.driver.demo import demo_config_path, write_demo_inputs
from sparkle_fast.driver.inputs import read_inputs
from sparkle_fast.driver.manifest import Manifest, SampleRow
from sparkle_fast.driver.runner import LocalRunner
from sparkle_fast.driver.step_graph import model_major_phases, step_graph
from sparkle_fast.layout import SparkleLayout
from sparkle_fast.stages import all_stages, slot_loaders

# Planned resident bytes per slot, in GiB units (bf16 weights of Sparkle's models; see driver/step_graph.py's plan):
# a budget of 80 holds the VLM alone, or the editor, the scorer and SAM3 together.
SIMULATED_GIB = {"vlm": 66, "editor": 35, "scorer": 16, "sam3": 4, "i2v": 57, "control": 57}
TASKS = ("camera_motion_verdict", "describe_scene", "write_instruction", "ground_foreground", "background_caption",
         "ground_per_frame", "score_edit", "score_frames", "try_edit", "remove", "try_generate", "open_clip")


REAL_LOAD_SLOT = slot_loaders.load_slot


class Interrupted(BaseException):
    """Stands for a kill: not an Exception, so no runner catches it."""


class Counted:
    """An adapter whose task calls are logged as (slot, method, rows); optionally raises Interrupted at a call."""

    def __init__(self, slot, adapter, log, interrupt_at=None):
        object.__setattr__(self, "_slot", slot)
        object.__setattr__(self, "_adapter", adapter)
        object.__setattr__(self, "_log", log)
        object.__setattr__(self, "_interrupt_at", interrupt_at)

    def __getattr__(self, name):
        value = getattr(self._adapter, name)
        base = name.removesuffix("_many")
        if not callable(value) or base not in TASKS:
            return value

        def counted(*args, **kwargs):
            if self._interrupt_at == base:
                raise Interrupted(name)
            rows = len(args[0]) if name.endswith("_many") and args else 1
            self._log.append((self._slot, base, rows))
            return value(*args, **kwargs)

        return counted

    def __setattr__(self, name, value):  # the runner's batch_size reaches the adapter
        setattr(self._adapter, name, value)


@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory):
    return write_demo_inputs(tmp_path_factory.mktemp("inputs"))


def _run(out, inputs, monkeypatch, *, batch=1, budget=None, planned=None, interrupt_at=None):
    """One runner pass over the demo inputs; returns (runner, calls log, generate rows per VLM backend call)."""
    config = load_config(demo_config_path(), overrides={"batch.vlm": batch, "batch.scorer": batch,
                                                        "batch.editor": batch})
    log, generate_rows = [], []
    real_load = REAL_LOAD_SLOT  # not the attribute: an earlier _run of the same test may have patched it

    def load(slot, models_source, *placement):
        adapter = real_load(slot, models_source, *placement)
        if slot == "vlm" and hasattr(adapter, "backend"):
            backend, generate = adapter.backend, adapter.backend.generate
            backend.generate = lambda requests, *a, **k: (generate_rows.append(len(requests)),
                                                          generate(requests, *a, **k))[1]
        return adapter if slot == "lineart" else Counted(slot, adapter, log, interrupt_at)

    monkeypatch.setattr(slot_loaders, "load_slot", load)
    samples = read_inputs(inputs, config.run.themes, config.run.seed).samples
    runner = LocalRunner(config.run.chunk_size, config.run.max_attempts, budget_bytes=budget, planned_bytes=planned,
                         batch_sizes={**vars(config.batch)})
    with Manifest(out / "manifest.sqlite") as manifest:
        manifest.add_samples([SampleRow(s.id, s.theme, s.src_video, s.prompt) for s in samples])
        try:
            runner.run(all_stages(), manifest, SparkleLayout(out), config, "tiny")
        except Interrupted:
            pass
    return runner, log, generate_rows


def _decisions(out):
    with Manifest(out / "manifest.sqlite") as manifest:
        return {(r.sample_id, n): (r.status, r.reason, r.score, json.dumps(r.record, sort_keys=True))
                for n in range(1, 6) for r in manifest.results(n)}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, demo_inputs):
    """Batch 1, no budget: the reference."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        out = tmp_path_factory.mktemp("straight")
        runner, log, _ = _run(out, demo_inputs, monkeypatch)
    return out, runner, log


def test_the_stages_steps_are_the_plans_step_graph():
    run = [(step.stage, step.name, step.slot) for stage in all_stages() for step in stage.steps()]
    assert run == [(s.stage, s.name, s.slot) for s in step_graph()]


def test_unbounded_budget_loads_each_model_once(straight_run):
    out, runner, log = straight_run
    summary = runner.summary()
    used = {slot for slot, _, _ in log}
    assert {"vlm", "editor", "scorer", "sam3", "i2v", "control"} <= used, "the demo must reach stage 5"
    assert {slot: s["loads"] for slot, s in summary["slots"].items()} == {slot: 1 for slot in summary["slots"]}
    steps = {(s["stage"], s["step"]): s for s in summary["steps"]}
    assert steps[(1, "camera_filter")]["items"] == 3 and steps[(1, "camera_filter")]["calls"] == 1


def test_budget_is_never_exceeded_and_models_are_batched(tmp_path, demo_inputs, monkeypatch):
    runner, log, generate_rows = _run(tmp_path, demo_inputs, monkeypatch, batch=4, budget=80,
                                      planned=SIMULATED_GIB)
    cache = runner.cache
    assert cache.peak_resident_bytes <= 80
    assert all(resident <= 80 for _, _, resident in cache.events)
    # A slot is loaded again only after it was released (never two copies), and releases make room for a load.
    resident = set()
    for event, slot, _ in cache.events:
        assert (slot not in resident) if event == "load" else (slot in resident)
        resident = resident | {slot} if event == "load" else resident - {slot}
    loads = collections.Counter(slot for event, slot, _ in cache.events if event == "load")
    assert loads["vlm"] >= 2, "the 66 GiB VLM cannot stay beside the 35 GiB editor in 80"
    # Model-major: a slot loads at most once per phase of the plan's schedule (one chunk here).
    phases = collections.Counter(slot for slot, _ in model_major_phases(step_graph()) if slot)
    assert all(loads[slot] <= phases[slot] for slot in loads), (loads, phases)
    # Batches: two samples pass stage 1, and every VLM call of a step takes them together.
    assert max(generate_rows) >= 2, generate_rows
    batched = [rows for slot, _, rows in log if slot in ("vlm", "scorer")]
    assert max(batched) >= 2, log
    steps = {(s["stage"], s["step"]): s for s in runner.summary()["steps"]}
    assert steps[(2, "scene_instruction")]["mean_batch"] >= 2


def test_budget_smaller_than_a_model_stops_before_any_work(tmp_path, demo_inputs, monkeypatch):
    with pytest.raises(ValueError, match=r"\[vlm\] 66 bytes.* budget of 60 bytes"):
        _run(tmp_path, demo_inputs, monkeypatch, budget=60, planned=SIMULATED_GIB)
    with Manifest(tmp_path / "manifest.sqlite") as manifest:
        assert manifest.counts() == {}


def test_interrupted_between_steps_then_rerun_repeats_no_model_call(tmp_path, demo_inputs, monkeypatch,
                                                                    straight_run):
    reference, _, straight_log = straight_run
    _, first, _ = _run(tmp_path, demo_inputs, monkeypatch, interrupt_at="score_edit")
    with Manifest(tmp_path / "manifest.sqlite") as manifest:  # stopped between stage 2's second and third steps
        ids = [r.id for r in manifest.samples()]
        assert not manifest.results(2)
        assert any("edit_frame0" in manifest.finished_steps(sid, 2) for sid in ids)
    _, second, _ = _run(tmp_path, demo_inputs, monkeypatch)
    count = lambda log: collections.Counter((slot, task) for slot, task, _ in log)  # noqa: E731
    assert count(first) + count(second) == count(straight_log)
    assert _decisions(tmp_path) == _decisions(reference)
