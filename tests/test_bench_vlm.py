"""bench/vlm.py --quick runs and writes well-formed rows (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_vlm_bench_quick(tmp_path):
    """bench/vlm.py --quick: the pipeline's VLM requests through the transformers backend at batch 1 and batched,
    and the adapters' tasks one at a time and through *_many; rows carry requests/s and output tokens/s (no timing
    is asserted)."""
    out = tmp_path / "vlm.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "vlm.py"), "--quick", "--device", "cpu", "--warmup", "0",
         "--repeat", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(out.read_text())
    assert payload["benchmark"] == "vlm" and payload["quick"] is True
    rows = {row["impl"]: row for row in payload["rows"]}
    assert set(rows) == {"transformers-batch1", "transformers-batched", "tasks-batch1", "tasks-batched"}
    for impl in ("transformers-batch1", "transformers-batched"):
        row = rows[impl]
        case = row["case"]
        assert case["requests"] == 9 and case["samples"] == 1
        assert row["output_tokens"] == 4 * case["requests"]
        assert row["requests_per_s"] > 0 and row["output_tokens_per_s"] > 0
        assert "speedup_vs_transformers-batch1" in row
    # The adapters' tasks (7 per sample: 6 VLM tasks and EditScore on frame 0) one at a time and through *_many.
    for impl in ("tasks-batch1", "tasks-batched"):
        row = rows[impl]
        assert row["case"]["samples"] == 2 and row["results"] == 14
        assert row["requests"] >= 14 and row["output_tokens"] > row["requests"]
        assert row["process_cpu_s"] > 0 and "speedup_vs_tasks-batch1" in row
