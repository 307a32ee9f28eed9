"""bench/orchestration.py --quick runs both runners over no-op stages and writes a row for each (no timing is
asserted: the figures belong in bench/README.md, measured on a named machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]


def test_orchestration_bench_quick(tmp_path):
    out = tmp_path / "orchestration.json"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "orchestration.py"), "--quick", "--out", str(out)],
                            capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    payload = json.loads(out.read_text())
    rows = {row["impl"]: row for row in payload["rows"]}
    assert set(rows) == {"local", "ray"}
    for row in rows.values():
        # Every step of every sample finished in both runs (the script raises otherwise), and the slope is finite.
        assert row["seconds_2n"] > 0 and row["median_s"] >= 0 and row["fixed_seconds"] >= 0
    assert rows["ray"]["median_s"] > 0  # outcomes were recorded over time, not all at one instant
    assert "per sample per step" in result.stdout
