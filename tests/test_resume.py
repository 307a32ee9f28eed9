"""Kill-and-resume on the real pipeline: `sparkle-fast demo` SIGKILLed between steps of stages 2, 4 and 5, then
rerun, ends with the same manifest and the same files as an uninterrupted run (nothing duplicated, nothing lost)."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

# Derived or timed outputs, rewritten by every run: compared by existence only.
TIMED = {"summary.json", "report.html"}


def run_demo(out: Path, kill_when: str | None = None, extra: tuple[str, ...] = ()) -> tuple[int, str]:
    """Run the demo command; with kill_when, SIGKILL it as soon as a progress line starts with that text."""
    process = subprocess.Popen([sys.executable, "-u", "-m", "sparkle_fast.driver.cli", "demo", "--out", str(out),
                                *extra],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stderr:
        lines.append(line)
        if kill_when and line.startswith(kill_when):
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=900)
    process.stderr.close()
    return process.returncode, "".join(lines)


def snapshot(out: Path) -> dict:
    """The run's outcome: manifest rows without timings, and every artifact's bytes (hashed)."""
    with sqlite3.connect(out / "manifest.sqlite") as db:
        rows = db.execute("SELECT sample_id, stage, status, attempts, score, reason, record FROM stage_results "
                          "ORDER BY sample_id, stage").fetchall()
        samples = db.execute("SELECT id, theme, prompt FROM samples ORDER BY id").fetchall()
    files = {}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out).as_posix()
        if path.is_dir() or relative.startswith(("manifest.sqlite", "report_media/", "logs/")):
            continue
        files[relative] = "present" if relative in TIMED else hashlib.sha256(path.read_bytes()).hexdigest()
    return {"samples": samples, "results": rows, "files": files}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("clean") / "demo"
    code, log = run_demo(out)
    assert code == 0, log
    return snapshot(out)


# Between steps: after the first sample's edit (its score not yet run), its round-2 grounding (tracking not yet run)
# and its render (the scratch video written, EditScore not yet run).
@pytest.mark.parametrize("kill_when", ["[edit/edit_frame0] 1/", "[bait/ground_r2] 1/", "[synthesize/render] 1/"])
def test_sigkill_then_rerun_equals_a_clean_run(tmp_path, clean_run, kill_when):
    out = tmp_path / "demo"
    code, log = run_demo(out, kill_when)
    assert code == -signal.SIGKILL, f"the demo finished before {kill_when!r} was seen:\n{log}"
    code, log = run_demo(out)
    assert code == 0, log
    assert snapshot(out) == clean_run
    assert not [p for p in out.rglob("*.tmp")], "temporary files left behind"


def test_two_worker_processes_equal_a_clean_run(tmp_path, clean_run):
    """`--device cpu,cpu`: two worker processes on disjoint shards, one manifest; the same dataset as one process."""
    out = tmp_path / "demo"
    code, log = run_demo(out, extra=("--device", "cpu,cpu"))
    assert code == 0, log
    assert "2 worker(s): cpu, cpu" in log
    assert snapshot(out) == clean_run
    logs = sorted((out / "logs").glob("worker-*.log"))
    assert [p.name for p in logs] == ["worker-0.log", "worker-1.log"]
    for path in logs:  # both took part: each ran stage 1 on its shard and finished
        text = path.read_text()
        assert "[collect/camera_filter] " in text and '"finished": true' in text, text[-2000:]
