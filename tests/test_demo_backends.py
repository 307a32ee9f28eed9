"""bench/demo_backends.py's comparison: what it calls a difference between two backends' demo runs (the runs
themselves take minutes, so they are not repeated here; bench/results/demo_backends-*.json has one)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import demo_backends  # noqa: E402


def _results(backend: str) -> dict:
    camera = {"verdict": "static", "max_displacement_px": 0.168, "pair_displacement_px": [0.138, None]}
    return {
        ("s1", 1): {"status": "done", "score": None, "reason": None,
                    "record": {"camera": dict(camera), "backends": {"track_points": backend,
                                                                   "find_homographies": "reference"}}},
        ("s1", 4): {"status": "done", "score": None, "reason": None,
                    "record": {"mask": "m.bin", "backends": {"vote_and_pack": backend}}},
        ("s2", 1): {"status": "rejected", "score": None, "reason": "camera moves", "record": {}},
    }


def test_equal_runs_differ_only_in_the_backend_names():
    problems, floats = demo_backends.compare_results(_results("reference"), _results("triton"), "triton")
    assert problems == []
    assert floats == {"max_displacement_px": 0.0, "pair_displacement_px": 0.0}


def test_each_kind_of_difference_is_reported():
    base = _results("reference")
    other = _results("triton")
    other[("s2", 1)]["status"] = "done"  # a decision
    other[("s1", 4)]["record"]["backends"]["vote_and_pack"] = "reference"  # an op that did not reach the backend
    other[("s1", 1)]["record"]["camera"]["max_displacement_px"] += 0.25  # a float beyond any tolerance
    other[("s1", 1)]["record"]["camera"]["pair_displacement_px"][1] = 0.5  # None on one side only
    problems, floats = demo_backends.compare_results(base, other, "triton")
    assert any("('s2', 1)" in p and "differ" in p for p in problems)
    assert any("did not reach triton" in p and "vote_and_pack" in p for p in problems)
    assert abs(floats["max_displacement_px"] - 0.25) < 1e-12
    assert floats["pair_displacement_px"] == float("inf")
    missing = copy.deepcopy(other)
    del missing[("s2", 1)]
    problems, _ = demo_backends.compare_results(base, missing, "triton")
    assert any("which (sample, stage) exist" in p for p in problems)


def test_file_hashes_skip_the_run_bookkeeping(tmp_path):
    (tmp_path / "time" / "videos").mkdir(parents=True)
    (tmp_path / "time" / "videos" / "a.mp4").write_bytes(b"video")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "run.log").write_text("x")
    for name in ("manifest.sqlite", "report.html", "summary.json", "demo_backends_run.json"):
        (tmp_path / name).write_text("x")
    assert list(demo_backends.file_hashes(tmp_path)) == [str(Path("time") / "videos" / "a.mp4")]
