"""`sparkle-fast selftest`: on a machine without a GPU it passes, checks what it can and says what it skipped and
why; a backend that computes a wrong answer makes it fail (exit status 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from sparkle_fast.driver.cli import main
from sparkle_fast.driver.selftest import run_selftest


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the report of a machine without a GPU")
def test_quick_json_on_cpu_passes_and_names_every_skip(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # Triton off: its skip must say why
    out = tmp_path / "selftest.json"
    done = subprocess.run([sys.executable, "-m", "sparkle_fast.driver.cli", "selftest", "--quick", "--json",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert json.loads(out.read_text()) == report
    assert report["ok"] is True and report["summary"]["fail"] == 0
    checks = report["checks"]
    assert {c["group"] for c in checks} == {"build", "parity", "decode", "bench", "sanitizer"}
    skipped = [c for c in checks if c["status"] == "skip"]
    assert skipped and all(c["detail"].strip() for c in skipped)  # every skip has its reason
    by_name = {c["name"]: c for c in checks}
    assert "TRITON_INTERPRET" in by_name["canny [triton, small]"]["detail"]
    assert by_name["memcheck"]["status"] == "skip" and by_name["find_homographies [cuda, small]"]["status"] == "skip"
    # what a CPU can check, it checks: the CUDA vote's per-thread code (host twin) and the references' bench
    assert by_name["vote_and_pack [cuda-host, small]"]["status"] == "pass"
    assert by_name["vote_and_pack [reference]"]["status"] == "pass"


def _break_triton_vote(monkeypatch):
    """The Triton vote kernel made to answer wrong: one output byte flipped after every launch."""
    from sparkle_fast.kernels import vote_pack as kernels

    right = kernels.vote

    def wrong(rows, n_pixels, packed_in, min_votes, out, pack_out):
        right(rows, n_pixels, packed_in, min_votes, out, pack_out)
        out.view(-1)[-1] ^= 1

    monkeypatch.setattr(kernels, "vote", wrong)


def test_triton_vote_parity_under_the_interpreter_and_a_broken_kernel_fails(monkeypatch, capsys):
    # conftest runs Triton through its interpreter here (no GPU): the Triton vote is checked against the reference
    report = run_selftest(quick=True, only_ops={"vote_and_pack"})
    triton = [c for c in report["checks"] if c["name"] == "vote_and_pack [triton, small]"]
    assert report["ok"] and [c["status"] for c in triton] == ["pass"]

    _break_triton_vote(monkeypatch)
    broken = run_selftest(quick=True, only_ops={"vote_and_pack"})
    failed = [c for c in broken["checks"] if c["status"] == "fail"]
    assert not broken["ok"] and [c["name"] for c in failed] == ["vote_and_pack [triton, small]"]
    assert "elements differ" in failed[0]["detail"]
    assert main(["selftest", "--quick", "--op", "vote_and_pack"]) == 1  # the command's exit status
    assert "fail  parity    vote_and_pack [triton, small]" in capsys.readouterr().out
