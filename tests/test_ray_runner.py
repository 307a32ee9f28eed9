"""`sparkle-fast run --runner ray` on a real two-node local Ray cluster (ray.cluster_utils.Cluster, each node
declaring fake GPUs): one actor pool per model slot plus the CPU pool, scheduling the stages' steps; the same
decisions, records and files as the local runner, through a worker actor SIGKILLed mid-run and through a driver
SIGKILLed mid-stage and rerun (per-step resume)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from sparkle_fast.driver.demo import demo_config_path, write_demo_inputs  # noqa: E402
from sparkle_fast.layout_check import check_dataset  # noqa: E402

# Rewritten by every run (timings) or per-runner bookkeeping: compared by existence only, or not at all.
TIMED = {"summary.json"}
# Every run of this module, local ones too (the config is part of what is compared): the Ray pool table every 2 s.
STATUS_EVERY_2S = ("--set", "ray.status_seconds=2")
# The demo's pools: one per model slot its steps use, and "cpu" for camera_filter (no model).
POOLS = {"cpu", "vlm", "editor", "scorer", "i2v", "sam3", "control"}


def one_thread_env() -> dict[str, str]:
    """Every run with one intra-op thread, as Ray gives an actor of one CPU: the tiny torch models' pixels depend on
    the thread count (the tiny editor's edited frame differs by 1 in a few pixels between 1 and 2 threads on CPU),
    which is not what this module compares."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run_cli(inputs: Path, out: Path, *extra: str, kill_when: str | None = None) -> tuple[int, str]:
    """`sparkle-fast run` on the demo's inputs and config; with kill_when, SIGKILL it at the first stderr line that
    starts with that text."""
    command = [sys.executable, "-u", "-m", "sparkle_fast.driver.cli", "run", "--input", str(inputs), "--out",
               str(out), "--config", str(demo_config_path()), "--models", "tiny", *STATUS_EVERY_2S, *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=one_thread_env())
    lines = []
    for line in process.stderr:
        lines.append(line)
        if kill_when and line.startswith(kill_when):
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=1200)
    process.stderr.close()
    return process.returncode, "".join(lines)


def snapshot(out: Path, with_attempts: bool = True) -> dict:
    """Decisions and records per sample and stage (no timings), and every artifact's bytes (hashed)."""
    columns = "sample_id, stage, status, score, reason, record" + (", attempts" if with_attempts else "")
    with sqlite3.connect(out / "manifest.sqlite") as db:
        rows = db.execute(f"SELECT {columns} FROM stage_results ORDER BY sample_id, stage").fetchall()
    files = {}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out).as_posix()
        if path.is_dir() or relative.startswith(("manifest.sqlite", "logs/")):
            continue
        files[relative] = "present" if relative in TIMED else hashlib.sha256(path.read_bytes()).hexdigest()
    return {"results": rows, "files": files}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    return write_demo_inputs(tmp_path_factory.mktemp("demo_input"))


@pytest.fixture(scope="module")
def local_run(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    code, log = run_cli(inputs, out)
    assert code == 0, log
    return out


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine, 3 fake GPUs and 4 CPUs each (logical resources: enough for the six model pools
    of one GPU and one CPU each, and the CPU pool)."""
    from ray.cluster_utils import Cluster

    env = {"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    os.environ.update(env)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "num_gpus": 3,
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=4, num_gpus=3)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def _kill_first_actor_of(out: Path, pool: str, timeout: float = 600) -> int:
    """Wait until OUT/logs/ray-pools.json lists an actor of `pool` (it has loaded its model and been sent work),
    then SIGKILL that actor's process; returns its pid."""
    path = out / "logs" / "ray-pools.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = json.loads(path.read_text()).get(pool) or []
        except (OSError, ValueError):
            info = []
        pids = [a["pid"] for a in info if a and "pid" in a]
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            return pids[0]
        time.sleep(0.1)
    raise AssertionError(f"no {pool} actor appeared in {path} within {timeout} s")


def test_two_nodes_with_a_worker_killed_equal_the_local_runner(inputs, local_run, cluster, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-u", "-m", "sparkle_fast.driver.cli", "run", "--input", str(inputs), "--out",
               str(out), "--config", str(demo_config_path()), "--models", "tiny", "--runner", "ray",
               "--ray-address", cluster.address, *STATUS_EVERY_2S]
    with open(tmp_path / "run.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=one_thread_env())
        killed = _kill_first_actor_of(out, "editor")  # the editor slot's actor, with stage-2 samples in flight
        code = process.wait(timeout=1200)
    text = (tmp_path / "run.log").read_text()
    assert code == 0, text[-4000:]
    # Every decision, score, record and file as the local runner made them; only attempts differ, where the killed
    # actor's samples were retried.
    assert snapshot(out, with_attempts=False) == snapshot(local_run, with_attempts=False)
    assert [p.replace(str(out), "OUT") for p in check_dataset(out)] == [
        p.replace(str(local_run), "OUT") for p in check_dataset(local_run)]
    with sqlite3.connect(out / "manifest.sqlite") as db:
        retried = db.execute("SELECT sample_id, attempts, status FROM stage_results WHERE stage IN (2, 3) "
                             "AND attempts > 1").fetchall()
    assert retried, f"the actor killed (pid {killed}) had nothing in flight:\n{text[-3000:]}"
    assert "retry" in text and "editor" in text  # the pool table was printed
    pools = json.loads((out / "logs" / "ray-pools.json").read_text())
    assert set(pools) == POOLS, pools  # one pool per model slot, plus the CPU pool
    nodes = {a["node"] for actors in pools.values() for a in actors if a and "node" in a}
    assert len(nodes) == 2, pools  # the pools were spread over both nodes
    editors = [a["pid"] for a in pools["editor"] if a and "pid" in a]
    assert editors and killed not in editors, pools  # the dead actor was replaced, and its replacement loaded
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pools"]["editor"]["actors_started"] == 2 and summary["pools"]["vlm"]["actors_started"] == 1
    # The vlm actor loaded once and served the five steps of four stages that use the slot.
    vlm_steps = {s["step"] for s in summary["steps"] if s["slot"] == "vlm" and s["calls"]}
    assert vlm_steps == {"camera_verdict", "scene_instruction", "ground_r1", "caption_background", "ground_r2"}


def test_driver_sigkilled_then_rerun_equals_the_local_runner(inputs, local_run, cluster, tmp_path):
    out = tmp_path / "out"
    extra = ("--runner", "ray", "--ray-address", cluster.address)
    # Killed once stage 2's first step has committed a sample: the rerun resumes it at its next step.
    code, log = run_cli(inputs, out, *extra, kill_when="[edit/edit_frame0] 1/")
    assert code == -signal.SIGKILL, f"the run finished before stage 2's edit step reported:\n{log[-3000:]}"
    with sqlite3.connect(out / "manifest.sqlite") as db:
        steps_done = db.execute("SELECT COUNT(*) FROM step_results").fetchone()[0]
    assert steps_done, "nothing was committed before the kill"
    code, log = run_cli(inputs, out, *extra)
    assert code == 0, log[-4000:]
    assert snapshot(out) == snapshot(local_run)  # attempts included: nothing ran twice, nothing was lost
    assert not list(out.rglob("*.tmp"))


def test_pools_per_slot_and_their_overrides():
    """Without a cluster: the demo's steps map to the slot pools (camera_filter to "cpu"), batch sizes come from
    [batch] by slot (at most the plan's batch for the slot), and the [ray] per-pool overrides are read from the config
    and checked."""
    from sparkle_fast.driver.config import load_config
    from sparkle_fast.driver.ray_runner import RayRunner, pool_of
    from sparkle_fast.driver.runner import stage_steps, step_batch_size
    from sparkle_fast.stages import all_stages

    config = load_config(demo_config_path(), {"ray.gpus": {"sam3": 0.25}, "ray.actors": {"vlm": 2},
                                              "batch.camera": 3})
    steps = [step for stage in all_stages() for step in stage_steps(stage)]
    assert {pool_of(step) for step in steps} == POOLS
    assert {step.name for step in steps if pool_of(step) == "cpu"} == {"camera_filter"}
    camera_filter = next(s for s in steps if s.name == "camera_filter")
    edit_frame0 = next(s for s in steps if s.name == "edit_frame0")
    assert step_batch_size(camera_filter, config) == 3
    assert step_batch_size(edit_frame0, config) == config.batch.editor
    assert step_batch_size(camera_filter, config, {"camera": 2, "editor": 1}) == 2
    assert step_batch_size(edit_frame0, config, {"editor": config.batch.editor + 5}) == config.batch.editor
    runner = RayRunner.from_config(config)
    assert runner.gpus == {"sam3": 0.25} and runner.actors == {"vlm": 2}
    with pytest.raises(ValueError, match="ray.gpus"):
        RayRunner(1, gpus={"sam3": "a quarter"})
    with pytest.raises(ValueError, match="ray.actors"):
        RayRunner(1, actors={"vlm": 0})
