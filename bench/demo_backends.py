"""The whole demo once per kernel backend: same decisions, same Sparkle files, and each stage's records name the
kernels it reached.

    python bench/demo_backends.py [--backends reference,triton] [--work DIR] [--out JSON]

A parity check of the pipeline, not a speed benchmark: `sparkle-fast demo` runs in a child process per backend, with
SPARKLE_FAST_BACKEND pinned to it (on a machine without a GPU, "triton" runs the kernels under Triton's interpreter,
so TRITON_INTERPRET=1 is set for it). Then, against the first backend's run:
  - every file of the Sparkle layout (videos, frames, masks, index files; not the manifest, report, summary or logs)
    must have the same bytes;
  - every stage result must have the same status, score, reason and record, except the record's "backends" and the
    camera filter's float displacements (sub-pixel track positions from float arithmetic in another order: Triton's
    Lucas-Kanade against OpenCV's, within the tolerance tests/test_lucas_kanade.py states), which are reported with
    their largest difference;
  - each stage that called a kernel op must record the pinned backend for it (find_homographies has no Triton
    kernel and resolves as auto, so it is exempt).
Exit status 1 on any difference. Results: bench/results/demo_backends-<device>.json. Wall seconds per run are
recorded for orientation only: the interpreter's time is not a kernel's speed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import RESULTS_DIR, environment, slug  # noqa: E402

NOT_COMPARED = {"manifest.sqlite", "manifest.sqlite-wal", "manifest.sqlite-shm", "report.html", "summary.json",
                "demo_backends_run.json"}
NOT_COMPARED_DIRS = {"logs", "report_media", "step_scratch"}
FLOAT_FIELDS = ("max_displacement_px", "pair_displacement_px")  # stage 1's camera record: sub-pixel track results
OPS_WITHOUT = {"triton": {"find_homographies"}}  # ops without a kernel of that backend (they resolve as auto)


def run_demo(backend: str, out: Path, reuse: bool = False) -> dict:
    """`sparkle-fast demo --out out` pinned to `backend`; returns its wall seconds (reuse: a run this script already
    finished in `out` is taken as it is)."""
    env = {**os.environ, "SPARKLE_FAST_BACKEND": backend}
    if backend == "triton":
        import torch

        if not torch.cuda.is_available():
            env["TRITON_INTERPRET"] = "1"
    done = out / "demo_backends_run.json"
    if reuse and done.exists():
        return json.loads(done.read_text())
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sparkle_fast.driver.cli", "demo", "--out", str(out)], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"demo pinned to {backend} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    run = {"backend": backend, "wall_seconds": round(seconds, 1), "interpreter": env.get("TRITON_INTERPRET") == "1"}
    done.write_text(json.dumps(run))
    return run


def file_hashes(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every compared file under root."""
    hashes = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and rel.name not in NOT_COMPARED and not (set(rel.parts[:-1]) & NOT_COMPARED_DIRS):
            hashes[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def stage_results(root: Path) -> dict[tuple[str, int], dict]:
    with sqlite3.connect(root / "manifest.sqlite") as db:
        rows = db.execute("select sample_id, stage, status, score, reason, record from stage_results").fetchall()
    return {(sid, stage): {"status": status, "score": score, "reason": reason, "record": json.loads(record or "{}")}
            for sid, stage, status, score, reason, record in rows}


def _largest_difference(a, b) -> float:
    """Largest |a - b| over two numbers or lists of numbers (None where a pair had no value: equal only to None)."""
    a, b = (a if isinstance(a, list) else [a]), (b if isinstance(b, list) else [b])
    if len(a) != len(b):
        return float("inf")
    diffs = [0.0 if x is None and y is None else float("inf") if x is None or y is None else abs(float(x) - float(y))
             for x, y in zip(a, b, strict=True)]
    return max(diffs, default=0.0)


def compare_results(base: dict, other: dict, backend: str) -> tuple[list[str], dict]:
    """(differences, {float field: largest difference}) between two runs' stage results."""
    problems, float_diffs = [], {}
    if set(base) != set(other):
        problems.append(f"stage results differ in which (sample, stage) exist: {sorted(set(base) ^ set(other))}")
    for key in sorted(set(base) & set(other)):
        a, b = json.loads(json.dumps(base[key])), json.loads(json.dumps(other[key]))
        backends = b["record"].pop("backends", None) or {}
        a["record"].pop("backends", None)
        for record in (a["record"], b["record"]):
            camera = record.get("camera")
            if isinstance(camera, dict):
                record["_floats"] = {f: camera.pop(f) for f in FLOAT_FIELDS if f in camera}
        for field in FLOAT_FIELDS:
            if field in a["record"].get("_floats", {}):
                diff = _largest_difference(a["record"]["_floats"][field], b["record"].get("_floats", {}).get(field))
                float_diffs[field] = max(float_diffs.get(field, 0.0), diff)
        a["record"].pop("_floats", None)
        b["record"].pop("_floats", None)
        if a != b:
            problems.append(f"{key}: status/score/reason/record differ")
        exempt = OPS_WITHOUT.get(backend, set())
        wrong = {op: used for op, used in backends.items() if used != backend and op not in exempt}
        if wrong:
            problems.append(f"{key}: ops that did not reach {backend}: {wrong}")
    return problems, float_diffs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="reference,triton", help="comma-separated; the first is the baseline")
    parser.add_argument("--work", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default bench/results/...)")
    parser.add_argument("--reuse", action="store_true", help="keep runs this script already finished in --work")
    parser.add_argument("--float-tolerance", type=float, default=1e-3,
                        help="largest allowed difference of the camera filter's displacements, px (default 1e-3)")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if len(backends) < 2:
        parser.error("--backends: give at least two, e.g. reference,triton")
    work = args.work or Path(tempfile.mkdtemp(prefix="demo_backends_"))
    runs, problems, comparisons = [], [], []
    for backend in backends:
        runs.append(run_demo(backend, work / backend, args.reuse))
    base = work / backends[0]
    base_files, base_results = file_hashes(base), stage_results(base)
    for backend in backends[1:]:
        files = file_hashes(work / backend)
        differing = sorted(k for k in set(base_files) | set(files) if base_files.get(k) != files.get(k))
        result_problems, float_diffs = compare_results(base_results, stage_results(work / backend), backend)
        over = {f: d for f, d in float_diffs.items() if d > args.float_tolerance}
        problems += [f"{backend}: file differs: {k}" for k in differing] + [f"{backend}: {p}" for p in result_problems]
        problems += [f"{backend}: {f} differs by {d} px (> {args.float_tolerance})" for f, d in over.items()]
        backends_seen = {f"{sid} stage {stage}": r["record"].get("backends")
                         for (sid, stage), r in sorted(stage_results(work / backend).items())
                         if r["record"].get("backends")}
        comparisons.append({"backend": backend, "against": backends[0], "files_compared": len(base_files),
                            "files_differing": differing, "float_differences_px": float_diffs,
                            "backends_recorded": backends_seen})
    env = environment("cpu")
    result = {"benchmark": "demo_backends", "environment": env, "runs": runs, "comparisons": comparisons,
              "problems": problems, "passed": not problems}
    out = args.out or RESULTS_DIR / f"demo_backends-{slug(env.get('device_name', 'cpu'))}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for comparison in comparisons:
        print(f"{comparison['backend']} vs {comparison['against']}: {comparison['files_compared']} files compared, "
              f"{len(comparison['files_differing'])} differ; float differences {comparison['float_differences_px']}")
    for run in runs:
        print(f"{run['backend']}: {run['wall_seconds']} s" + (" (Triton interpreter)" if run["interpreter"] else ""))
    print("\n".join(problems) if problems else "same decisions and files on every backend")
    print(f"wrote {out}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
