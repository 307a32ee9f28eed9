"""`make gpu-check`: everything a lent GPU machine can check in one call, within a time budget.

    python3 bench/gpu_check.py [--budget SECONDS]      (the Makefile installs the package first)

Steps, in order, each with a time limit cut to what is left of the budget (default 420 s, so that with the install
before it the whole target finishes in under 9 minutes on one H200):
  1. selftest   `sparkle-fast selftest --json` (not --quick): build, parity of every op on every backend at small and
                Sparkle sizes, DALI/PyAV decode, bench rows, compute-sanitizer memcheck + racecheck.
  2. gpu tests  `pytest -m gpu` on the test files that can be imported here. The lent machines have torch, triton,
                pybind11, pytest and hypothesis and no package registry; a test file importing a module that is absent
                (cv2, av, diffusers, ...; its helper modules under tests/ are followed) is listed as skipped with the
                missing module instead of failing collection. Bring small wheels in .whl/ (see the Makefile).
  3. bench      each bench/*.py hot-path script whose imports resolve, with --repeat 5; their JSON goes to
                bench/results/<script>-<device>.json as usual.
A step that cannot start in the time left is recorded as skipped, with that reason.

Writes bench/results/gpu_check-<device slug>.json: the device, every step's status, time and output tail, and the
selftest report. Exit status 1 when any step failed (a parity mismatch, a failing test, a script that crashed).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BENCH_SCRIPTS = ("vote_pack", "canny_compose", "camera_motion", "decode", "bait")


def top_level_imports(path: Path) -> set[str]:
    """Top-level module names a Python file imports at module level (not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def missing_imports(path: Path, seen: set[Path] | None = None) -> list[str]:
    """Modules `path` imports at module level that cannot be found here; sibling helper modules (tests/video_clips.py,
    bench/harness.py) are followed."""
    seen = set() if seen is None else seen
    seen.add(path)
    missing = []
    for name in sorted(top_level_imports(path)):
        sibling = path.parent / f"{name}.py"
        if sibling.exists():
            if sibling not in seen:
                missing += missing_imports(sibling, seen)
        elif name != "__future__" and importlib.util.find_spec(name) is None:
            missing.append(name)
    return sorted(set(missing))


def device_slug() -> str:
    import torch

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_step(name: str, command: list[str], limit: float, steps: list[dict]) -> subprocess.CompletedProcess | None:
    """Run one step with `limit` seconds; record it in `steps`."""
    if limit < 20:
        steps.append({"step": name, "status": "skip", "detail": "not started: the time budget is spent"})
        return None
    started = time.perf_counter()
    print(f"== {name}: {' '.join(command)} (limit {limit:.0f} s)", flush=True)
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")[-3000:] if isinstance(exc.stdout, bytes) else (exc.stdout or "")[-3000:]
        steps.append({"step": name, "status": "fail", "seconds": round(time.perf_counter() - started, 1),
                      "detail": f"timed out after {limit:.0f} s", "tail": str(out)})
        print(f"   timed out after {limit:.0f} s", flush=True)
        return None
    seconds = round(time.perf_counter() - started, 1)
    status = "pass" if done.returncode == 0 else "fail"
    tail = (done.stdout + done.stderr)[-3000:]
    steps.append({"step": name, "status": status, "seconds": seconds, "exit": done.returncode, "tail": tail})
    print(f"   {status} in {seconds} s", flush=True)
    if status == "fail":
        print(tail, flush=True)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for all steps together")
    args = parser.parse_args(argv)
    deadline = time.perf_counter() + args.budget
    left = lambda cap: min(cap, deadline - time.perf_counter())  # noqa: E731
    steps: list[dict] = []
    python = sys.executable

    selftest_json = RESULTS / f"selftest-{device_slug()}.json"
    run_step("selftest", [python, "-m", "sparkle_fast.driver.cli", "selftest", "--out", str(selftest_json)],
             left(280), steps)

    test_files, skipped_files = [], {}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        if "mark.gpu" not in path.read_text(encoding="utf-8"):
            continue
        missing = missing_imports(path)
        if missing:
            skipped_files[path.name] = f"needs {', '.join(missing)}"
        else:
            test_files.append(str(path.relative_to(ROOT)))
    if test_files and left(60) >= 20:  # imports through sparkle_fast's own modules: let pytest say what fails
        collect = subprocess.run([python, "-m", "pytest", "--collect-only", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                                  "--continue-on-collection-errors", *test_files], cwd=ROOT, capture_output=True,
                                 text=True, timeout=left(60))
        for line in collect.stdout.splitlines():
            found = re.match(r"^ERROR (\S+\.py)(?: - (.*))?$", line.strip())
            if found and found.group(1) in test_files:
                test_files.remove(found.group(1))
                skipped_files[Path(found.group(1)).name] = found.group(2) or "does not import"
    steps.append({"step": "gpu tests: files left out", "status": "skip" if skipped_files else "pass",
                  "detail": skipped_files})
    if test_files:
        run_step("gpu tests", [python, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *test_files],
                 left(150), steps)

    for script in BENCH_SCRIPTS:
        path = ROOT / "bench" / f"{script}.py"
        missing = missing_imports(path) if path.exists() else ["(no such script)"]
        if missing:
            steps.append({"step": f"bench/{script}.py", "status": "skip", "detail": f"needs {', '.join(missing)}"})
            continue
        done = run_step(f"bench/{script}.py", [python, str(path), "--repeat", "5"], left(60), steps)
        absent = re.search(r"ModuleNotFoundError: No module named '([^']+)'", steps[-1].get("tail", "")) \
            if done is not None and done.returncode != 0 else None
        if absent:  # a module this machine lacks, imported through sparkle_fast: not the script's failure
            steps[-1].update(status="skip", detail=f"needs {absent.group(1)}")

    import torch

    report = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU",
              "torch": torch.__version__, "python": sys.version.split()[0], "budget_s": args.budget,
              "ok": not any(s["status"] == "fail" for s in steps), "steps": steps,
              "selftest": json.loads(selftest_json.read_text()) if selftest_json.exists() else None}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"gpu_check-{device_slug()}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out.relative_to(ROOT)}: " + ", ".join(f"{s['step']} {s['status']}" for s in steps), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    os.environ.pop("TRITON_INTERPRET", None)  # the real compiler on the GPU
    sys.exit(main())
