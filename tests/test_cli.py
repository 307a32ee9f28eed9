"""The `sparkle-fast` command: --version, --help, info, and the vote demo end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import sparkle_fast
from sparkle_fast import formats
from sparkle_fast.driver.cli import main


def test_console_script_version_and_help():
    beside_python = Path(sys.executable).parent / "sparkle-fast"  # the environment's bin/, on PATH or not
    exe = str(beside_python) if beside_python.exists() else shutil.which("sparkle-fast")
    assert exe is not None, "the console script is not installed"
    result = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"sparkle-fast {sparkle_fast.__version__}"
    result = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: sparkle-fast" in result.stdout and "vote-demo" in result.stdout


def test_info_prints_build_info(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["version"] == sparkle_fast.__version__ and "extension" in info


def test_vote_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["vote-demo", "--out", str(out), "--frames", "17", "--height", "36", "--width", "64"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sparkle_recipe_matches"] is True
    assert summary["anchors"] == [0, 8, 16]
    mask = formats.load_mask(summary["mask_file"])
    assert mask.shape == (17, 36, 64) and mask.any()
    # The point of BAIT: the vote recovers what single passes lose far from their anchors.
    assert summary["voted_iou"] > summary["single_pass_iou"]["mean"]


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "sparkle_fast.driver.cli", "--version"], capture_output=True,
                            text=True)
    assert result.returncode == 0 and sparkle_fast.__version__ in result.stdout
