"""export-bench: samples that passed stages 1-4 and were rejected at stage 5 become Sparkle-Bench."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from sparkle_fast import layout, video
from sparkle_fast.driver.cli import main
from sparkle_fast.driver.manifest import Manifest, SampleRow


def _run_folder(tmp_path):
    """A run's output with four samples: one kept, one rejected at 5 (bench), one rejected at 2, one openve3m
    rejected at 5 (not a bench theme)."""
    out = layout.SparkleLayout(tmp_path / "out")
    frames = np.random.default_rng(0).integers(0, 255, (5, 32, 48, 3), dtype=np.uint8)
    samples = [SampleRow("Sparkle_time_000000", "time", "a.mp4", None),
               SampleRow("Sparkle_time_000001", "time", "b.mp4", None),
               SampleRow("Sparkle_style_000000", "style", "c.mp4", None),
               SampleRow("Sparkle_openve3m_000000", "openve3m", "d.mp4", "Make it snow.")]
    with Manifest(out.root / "manifest.sqlite") as manifest:
        manifest.add_samples(samples)
        for sample in samples:
            video.write_video(out.artifact(sample.theme, "source_video", sample.id), frames, fps=16)
            video.write_image(out.artifact(sample.theme, "edited_frame0_foreground_removed", sample.id), frames[0])
            edit = {"prompt": sample.prompt or f"Night for {sample.id}", "chosen_keyword": "night: city lights",
                    "original_scene": "a street"}
            manifest.finish(sample.id, 1, "done")
            if sample.id == "Sparkle_style_000000":
                manifest.finish(sample.id, 2, "rejected", reason="EditScore 7 < 8", record=edit)
                continue
            manifest.finish(sample.id, 2, "done", record=edit)
            for stage in (3, 4):
                manifest.finish(sample.id, stage, "done")
            kept = sample.id == "Sparkle_time_000000"
            manifest.finish(sample.id, 5, "done" if kept else "rejected", reason=None if kept else "mean 6.1 < 8")
    return out


def test_export_bench_writes_sparkle_bench(tmp_path, capsys):
    out = _run_folder(tmp_path)
    bench = tmp_path / "bench"
    assert main(["export-bench", str(out.root), "--bench", str(bench)]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == {"time": 1}
    with open(bench / "time_bench.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"edited_type": "time", "prompt": "Night for Sparkle_time_000001",
                     "original_video": "source_videos/time/Sparkle_time_000001.mp4"}]
    assert (bench / rows[0]["original_video"]).read_bytes() == \
        out.artifact("time", "source_video", "Sparkle_time_000001").read_bytes()
    assert (bench / "ref_images" / "time" / "Sparkle_time_000001.png").is_file()
    (record,) = layout.read_jsonl(bench / "time_metadata.jsonl")
    assert record == {"id": "Sparkle_time_000001", "prompt": "Night for Sparkle_time_000001",
                      "metadata": {"edit_type": "time", "chosen_keyword": "night: city lights",
                                   "original_scene": "a street"}}
    assert not (bench / "style_bench.csv").exists() and not (bench / "openve3m_bench.csv").exists()
    # A second export rewrites, never appends.
    assert main(["export-bench", str(out.root), "--bench", str(bench)]) == 0
    assert len(layout.read_jsonl(bench / "time_metadata.jsonl")) == 1


def test_export_bench_writes_masks_and_control_videos(tmp_path, capsys):
    """The stage-4 mask and the stage-5 control video of every exported sample land in MASKS/{theme}/ (the layout
    `sparkle-fast eval --masks` reads); --samples passed-4 also exports the samples stage 5 kept."""
    from sparkle_fast.formats import load_mask, save_mask

    out = _run_folder(tmp_path)
    mask = np.zeros((5, 32, 48), bool)
    mask[:, 8:20, 10:30] = True
    for sample in ("Sparkle_time_000000", "Sparkle_time_000001"):
        save_mask(out.artifact("time", "source_video_mask", sample), mask)
    control = np.zeros((5, 32, 48, 3), np.uint8)
    video.write_video(out.artifact("time", "edited_video_canny", "Sparkle_time_000001"), control, fps=16)
    bench, masks = tmp_path / "bench", tmp_path / "masks"
    assert main(["export-bench", str(out.root), "--bench", str(bench), "--masks", str(masks)]) == 0
    assert json.loads(capsys.readouterr().out)["masks"] == str(masks)
    assert sorted(p.name for p in (masks / "time").iterdir()) == ["Sparkle_time_000001.npz",
                                                                 "Sparkle_time_000001_control.mp4"]
    assert np.array_equal(load_mask(masks / "time" / "Sparkle_time_000001.npz"), mask)
    # Every sample that passed stage 4 (kept and rejected by stage 5); a sample without a control video has none.
    everything = tmp_path / "all"
    assert main(["export-bench", str(out.root), "--bench", str(everything), "--samples", "passed-4"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == {"time": 2}
    ids = [r["id"] for r in layout.read_jsonl(everything / "time_metadata.jsonl")]
    assert ids == ["Sparkle_time_000000", "Sparkle_time_000001"]
    assert (everything / "masks" / "time" / "Sparkle_time_000000.npz").is_file()
    assert not (everything / "masks" / "time" / "Sparkle_time_000000_control.mp4").exists()


def test_export_bench_without_a_run(tmp_path, capsys):
    assert main(["export-bench", str(tmp_path / "nothing")]) == 2
    assert "no manifest" in capsys.readouterr().err


KILLER = """
import os, signal, sys
from sparkle_fast import layout
from sparkle_fast.driver import export_bench as module

target, after = sys.argv[3], int(sys.argv[4])
calls = {"n": 0}

def killing(real):
    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            os.kill(os.getpid(), signal.SIGKILL)  # as a kill -9 from outside: no cleanup runs
        return real(*args, **kwargs)
    return wrapper

if target == "copy":
    module._copy = killing(module._copy)
else:  # the index files, written after every copy
    module.layout_mod.write_jsonl = killing(layout.write_jsonl)
module.export_bench(sys.argv[1], sys.argv[2])
"""


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("target,after", [("copy", 0), ("copy", 1), ("index", 0)])
def test_export_killed_then_rerun_equals_a_clean_export(tmp_path, target, after):
    """SIGKILL during export-bench (before the first copy, between copies, while writing the index files), then the
    same command again: the benchmark folder equals an uninterrupted export, with no temporary files left."""
    out = _run_folder(tmp_path)
    clean = tmp_path / "clean_bench"
    assert main(["export-bench", str(out.root), "--bench", str(clean)]) == 0
    bench = tmp_path / "bench"
    killed = subprocess.run([sys.executable, "-c", KILLER, str(out.root), str(bench), target, str(after)],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert main(["export-bench", str(out.root), "--bench", str(bench)]) == 0
    assert _tree(bench) == _tree(clean) and not [p for p in bench.rglob("*.tmp")]
