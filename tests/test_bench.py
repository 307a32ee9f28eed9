"""bench/ scripts run (on small shapes) and write well-formed results; no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_vote_pack_bench_quick(tmp_path):
    out = tmp_path / "vote_pack.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "vote_pack.py"), "--quick", "--device", "cpu", "--warmup", "0",
         "--repeat", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(out.read_text())
    assert payload["benchmark"] == "vote_pack" and payload["environment"]["device"] == "cpu"
    assert payload["environment"]["peak_memory_bandwidth_gbps"] > 0
    impls = {row["impl"] for row in payload["rows"]}
    assert {"numpy", "torch-eager", "ours-host-c++"} <= impls
    for row in payload["rows"]:
        assert row["median_s"] > 0 and row["bytes_moved"] > 0 and "speedup_vs_numpy" in row
    cases = {(row["case"]["passes"], row["case"]["input"]) for row in payload["rows"]}
    assert cases == {(11, "uint8"), (11, "packed"), (20, "uint8"), (20, "packed")}


def test_other_bench_scripts_run_quick(tmp_path):
    """Every other bench script runs end to end on its --quick shapes and writes rows."""
    for script in ("decode.py", "canny_compose.py", "camera_motion.py", "bait.py", "generation.py", "edges.py",
                   "pipeline.py"):
        out = tmp_path / f"{script}.json"
        result = subprocess.run(
            [sys.executable, str(ROOT / "bench" / script), "--quick", "--device", "cpu", "--warmup", "0",
             "--repeat", "1", "--out", str(out)],
            capture_output=True, text=True, timeout=600,
        )
        assert result.returncode == 0, f"{script}: {result.stderr[-2000:]}"
        rows = json.loads(out.read_text())["rows"]
        assert rows and all(row["median_s"] > 0 for row in rows), script
