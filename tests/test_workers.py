"""One worker per device on disjoint shards (driver/workers.py), and a full disk stopping a run cleanly."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from sparkle_fast._io import atomic_write
from sparkle_fast.driver.config import load_config
from sparkle_fast.driver.manifest import Manifest, SampleRow
from sparkle_fast.driver.run import run_pipeline
from sparkle_fast.driver.runner import DiskFullError, LocalRunner, is_disk_full
from sparkle_fast.driver.workers import DeviceError, ShardedRunner, needs_workers, parse_devices, shard_of, worker_env
from sparkle_fast.layout import SparkleLayout
from sparkle_fast.stages import StageOutcome


def test_parse_devices():
    assert parse_devices("auto", gpu_count=0) == ["cpu"]
    assert parse_devices("auto", gpu_count=3) == ["cuda:0", "cuda:1", "cuda:2"]
    assert parse_devices("cuda", gpu_count=1) == ["cuda:0"]
    assert parse_devices("cuda:1, cuda:0", gpu_count=2) == ["cuda:1", "cuda:0"]
    assert parse_devices("cpu,cpu", gpu_count=0) == ["cpu", "cpu"]
    with pytest.raises(DeviceError, match="cuda:2 is not visible"):
        parse_devices("cuda:2", gpu_count=2)
    with pytest.raises(DeviceError, match="'gpu0' is not a device"):
        parse_devices("gpu0", gpu_count=2)
    with pytest.raises(DeviceError, match="listed twice"):
        parse_devices("cuda:0,cuda:0", gpu_count=2)


def test_needs_workers_and_their_environment():
    assert not needs_workers(["cpu"], gpu_count=0) and not needs_workers(["cuda:0"], gpu_count=1)
    assert needs_workers(["cpu"], gpu_count=1)  # the models would pick the GPU in this process
    assert needs_workers(["cuda:1"], gpu_count=2) and needs_workers(["cpu", "cpu"], gpu_count=0)
    assert worker_env("cpu", {})["CUDA_VISIBLE_DEVICES"] == ""
    assert worker_env("cuda:1", {})["CUDA_VISIBLE_DEVICES"] == "1"
    # cuda:N counts what this process sees: mapped back through its own CUDA_VISIBLE_DEVICES
    assert worker_env("cuda:1", {"CUDA_VISIBLE_DEVICES": "4,6"})["CUDA_VISIBLE_DEVICES"] == "6"
    commands = ShardedRunner(["cuda:0", "cuda:1"], "tiny", [1, 2]).commands(Path("out"))
    assert [c[c.index("--shard") + 1] for c in commands] == ["0/2", "1/2"]


@pytest.mark.parametrize("n_ids,shards", [(0, 2), (1, 3), (7, 2), (10, 4)])
def test_shards_are_disjoint_and_complete(n_ids, shards):
    ids = [f"Sparkle_style_{i:06d}" for i in range(n_ids)][::-1]
    parts = [shard_of(ids, k, shards) for k in range(shards)]
    assert set().union(*parts) == set(ids) and sum(len(p) for p in parts) == n_ids


class Writing:
    """A stage that writes one artifact of `size` bytes per sample through atomic_write."""

    def __init__(self, number, size=1000):
        self.number, self.name, self.model_slots, self.size = number, f"w{number}", (), size
        self.seen = []

    def load_models(self, source):
        return None

    def release_models(self, models):
        pass

    def run(self, sample, context):
        self.seen.append(sample.id)
        with atomic_write(context.layout.root / f"stage{self.number}" / f"{sample.id}.bin") as handle:
            handle.write(sample.id.encode() * (self.size // len(sample.id) + 1))
        return StageOutcome.done({"jsonl": {}})


def _manifest_with(tmp_path, n):
    manifest = Manifest(tmp_path / "out" / "manifest.sqlite")
    manifest.add_samples([SampleRow(f"Sparkle_style_{i:06d}", "style", f"v{i}.mp4", None) for i in range(n)])
    return manifest


def test_local_runner_shards_split_the_work(tmp_path):
    layout = SparkleLayout(tmp_path / "out")
    with _manifest_with(tmp_path, 5) as manifest:
        stages = [[Writing(1)], [Writing(1)]]
        for k in range(2):
            LocalRunner(2, 3, shard=(k, 2)).run(stages[k], manifest, layout, None, None)
        assert sorted(stages[0][0].seen + stages[1][0].seen) == [s.id for s in manifest.samples()]
        assert not set(stages[0][0].seen) & set(stages[1][0].seen)
        assert len(manifest.results(1, "done")) == 5


def _outcome(out: Path) -> tuple[list, dict]:
    with sqlite3.connect(out / "manifest.sqlite") as db:
        rows = db.execute("SELECT sample_id, stage, status, attempts, reason FROM stage_results "
                          "ORDER BY sample_id, stage").fetchall()
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.bin"))}
    return rows, files


def _videos(tmp_path, n):
    folder = tmp_path / "videos"
    folder.mkdir(exist_ok=True)
    for i in range(n):
        (folder / f"clip{i}.mp4").write_bytes(f"clip {i}".encode())  # distinct content, never decoded here
    return folder


def _run(videos, out, stages):
    config = load_config(overrides={"run.themes": ["style"], "run.chunk_size": 2})
    return run_pipeline(videos, out, config, stage_objects=stages, log=lambda m: None, progress=lambda *a: None)


def test_disk_full_stops_the_run_without_using_attempts_and_resumes(tmp_path, monkeypatch):
    """ENOSPC from the 4th artifact write on (os.fsync raising it, as the kernel does on a full disk)."""
    videos = _videos(tmp_path, 4)
    clean = tmp_path / "clean"
    _run(videos, clean, [Writing(1), Writing(2)])

    out = tmp_path / "out"
    calls = {"n": 0}
    real_fsync = os.fsync

    def full_after_three(fd):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_after_three)
    with pytest.raises(DiskFullError, match=f"disk full under {out}.*rerun the same command"):
        _run(videos, out, [Writing(1), Writing(2)])
    monkeypatch.setattr(os, "fsync", real_fsync)
    rows, files = _outcome(out)
    # config.json took the first write; the two finished samples are kept, the third is neither failed nor charged
    assert len(rows) == 2 and all(r[2] == "done" and r[3] == 1 for r in rows), rows
    assert not list(out.rglob("*.tmp"))
    _run(videos, out, [Writing(1), Writing(2)])
    assert _outcome(out) == _outcome(clean)


def test_is_disk_full_reads_the_cause_chain():
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as inner:
            raise RuntimeError("could not write the mask") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (a real full disk), when this machine lets us mount one."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the ENOSPC test above covers the same path")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_really_full_disk_fails_cleanly_and_resumes_after_growing(tmp_path, small_tmpfs):
    videos = _videos(tmp_path, 6)
    out = small_tmpfs / "out"
    with pytest.raises(DiskFullError, match="disk full"):
        _run(videos, out, [Writing(1, size=300_000), Writing(2, size=300_000)])
    rows, _ = _outcome(out)
    assert rows and all(r[2] == "done" for r in rows)
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_tmpfs)], check=True)
    _run(videos, out, [Writing(1, size=300_000), Writing(2, size=300_000)])
    rows, files = _outcome(out)
    assert len(rows) == 12 and all(r[2] == "done" and r[3] == 1 for r in rows)
    assert len(files) == 12 and not list(out.rglob("*.tmp"))
