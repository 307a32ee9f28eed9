"""The driver's core pieces: the Sparkle layout, the manifest, the config and the local runner (on scripted stages)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from sparkle_fast import layout
from sparkle_fast.driver.config import ConfigError, load_config
from sparkle_fast.driver.manifest import Manifest, ManifestError, SampleRow
from sparkle_fast.driver.runner import LocalRunner
from sparkle_fast.stages import StageOutcome

# --- layout ---------------------------------------------------------------------------------------------------------


def test_layout_paths_match_the_release(tmp_path):
    out = layout.SparkleLayout(tmp_path)
    sid = layout.sample_id("location", 0)
    assert sid == "Sparkle_location_000000"
    rel = out.relative
    assert rel(out.artifact("location", "source_video", sid)) == "location/source_video/Sparkle_location_000000.mp4"
    assert rel(out.artifact("location", "edited_video", sid)) == "location/edited_video/Sparkle_location_000000.mp4"
    assert rel(out.artifact("location", "source_video_mask", sid)) == \
        "intermediate_data/location/source_video_mask/Sparkle_location_000000.npz"
    assert rel(out.artifact("style", "edited_frame0_foreground_removed", "x")) == \
        "intermediate_data/style/edited_frame0_foreground_removed/x.png"
    assert rel(out.records_file("time", "foreground_grounding_r2")) == \
        "intermediate_data/time/foreground_grounding_r2.jsonl"
    assert rel(out.train_csv("season")) == "prompts/season_train.csv"
    assert rel(out.train_metadata("season")) == "prompts/season_train_metadata.jsonl"
    assert layout.metadata_edit_type("openve3m") == "openve3m_background_change"
    for bad in (lambda: out.artifact("beach", "source_video", sid), lambda: out.artifact("location", "mask", sid),
                lambda: out.records_file("location", "scores"), lambda: layout.sample_id("location", -1)):
        with pytest.raises(ValueError):
            bad()


def test_index_files_are_rewritten_whole(tmp_path):
    out = layout.SparkleLayout(tmp_path)
    rows = [out.train_row("location", layout.sample_id("location", i), f'prompt "{i}", with, commas')
            for i in range(3)]
    layout.write_train_csv(out.train_csv("location"), rows)
    layout.write_train_csv(out.train_csv("location"), rows)  # a second write replaces, never appends
    with open(out.train_csv("location"), newline="") as handle:
        read = list(csv.DictReader(handle))
    assert [r["task"] for r in read] == [r["task"] for r in rows] and read[0]["prompt"] == 'prompt "0", with, commas'
    assert list(read[0]) == ["prompt", "src_video", "tgt_video", "task"]

    record = layout.metadata_record("openve3m", "Sparkle_openve3m_000001", "Make it snow — ❄", None, "a street")
    path = layout.write_jsonl(out.train_metadata("openve3m"), [record, record])
    assert layout.read_jsonl(path) == [record, record]
    assert "❄" in path.read_text(encoding="utf-8")
    path.write_text('{"id": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r":2: not valid JSON"):
        layout.read_jsonl(path)


# --- manifest -------------------------------------------------------------------------------------------------------


def _samples(n):
    return [SampleRow(layout.sample_id("location", i), "location", f"/videos/{i}.mp4", None) for i in range(n)]


def test_manifest_pending_follows_the_stages(tmp_path):
    with Manifest(tmp_path / "manifest.sqlite") as manifest:
        assert manifest.add_samples(_samples(3)) == 3
        assert manifest.add_samples(_samples(3)) == 0  # idempotent
        a, b, c = (s.id for s in _samples(3))
        assert manifest.pending(1, max_attempts=2) == [a, b, c]
        assert manifest.pending(2, max_attempts=2) == []
        manifest.finish(a, 1, "done", record={"frames": 81})
        manifest.finish(b, 1, "rejected", reason="camera moved 31.0 px > 8.0 px")
        manifest.finish(c, 1, "failed", reason="VideoError: truncated")
        assert manifest.pending(1, max_attempts=2) == [c]  # failed once: retried
        assert manifest.pending(2, max_attempts=2) == [a]
        manifest.finish(c, 1, "failed", reason="VideoError: truncated")
        assert manifest.pending(1, max_attempts=2) == []  # failed twice: given up
        assert manifest.result(c, 1).attempts == 2
        assert manifest.result(a, 1).record == {"frames": 81}
        assert manifest.counts() == {1: {"done": 1, "failed": 1, "rejected": 1}}
        with pytest.raises(ValueError, match="needs a reason"):
            manifest.finish(a, 2, "rejected")


def test_manifest_reports_config_changes(tmp_path):
    with Manifest(tmp_path / "m.sqlite") as manifest:
        assert manifest.record_config(load_config().to_dict()) == []
        assert manifest.record_config(load_config().to_dict()) == []
        changed = load_config(overrides={"thresholds.edit_frame0": 7.5, "canny.low": 50}).to_dict()
        assert manifest.record_config(changed) == ["canny.low", "thresholds.edit_frame0"]


def test_manifest_rejects_a_file_that_is_not_one(tmp_path):
    path = tmp_path / "manifest.sqlite"
    path.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(ManifestError, match=str(path)):
        Manifest(path)


# --- config ---------------------------------------------------------------------------------------------------------


def test_config_defaults_are_sparkles(tmp_path):
    config = load_config()
    assert (config.clip.fps, config.clip.max_frames, config.clip.width, config.clip.height) == (16, 81, 1280, 720)
    assert (config.canny.low, config.canny.high, config.bait.anchor_fps) == (100, 200, 2.0)
    assert (config.thresholds.edit_frame0, config.thresholds.foreground_removal,
            config.thresholds.edited_video) == (8.0, 8.5, 8.0)
    path = tmp_path / "run.toml"
    path.write_text("[thresholds]\nedit_frame0 = 7\n[run]\nthemes = ['style']\n")
    config = load_config(path, overrides={"clip.max_frames": 49})
    assert config.thresholds.edit_frame0 == 7.0 and config.run.themes == ["style"] and config.clip.max_frames == 49
    assert config.digest() != load_config().digest()


@pytest.mark.parametrize(
    "text,message",
    [("[thresholds]\nedit_frame = 7\n", "unknown key thresholds.edit_frame"),
     ("[threshold]\nedit_frame0 = 7\n", r"unknown section \[threshold\]"),
     ("[clip]\nfps = 'sixteen'\n", "clip.fps: expected int"),
     ("[clip]\nmax_frames = 80\n", "4k\\+1"),
     ("[run]\nthemes = ['beach']\n", "unknown themes"),
     ("[clip\n", "not valid TOML")],
)
def test_config_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


# --- the local runner on scripted stages ----------------------------------------------------------------------------


class ScriptedStage:
    """A stage whose decision per sample is given; it records model loads and calls."""

    def __init__(self, number, decisions, log):
        self.number, self.name, self.model_slots = number, f"stage{number}", ()
        self.decisions, self.log = decisions, log

    def load_models(self, models_source):
        self.log.append(("load", self.number))
        return {"stage": self.number}

    def release_models(self, models):
        self.log.append(("release", self.number))

    def run(self, sample, context):
        assert context.models == {"stage": self.number}
        assert set(context.previous) == set(range(1, self.number))
        decision = self.decisions.get(sample.id, "done")
        self.log.append((self.number, sample.id))
        if decision == "raise":
            raise MemoryError("CUDA out of memory (scripted)")
        if decision == "rejected":
            return StageOutcome.rejected("scripted rejection", score=1.0)
        return StageOutcome.done(record={"stage": self.number, "sample": sample.id}, model=0.01)


def test_local_runner_chunks_stages_and_survives_errors(tmp_path):
    ids = [s.id for s in _samples(5)]
    log = []
    stages = [ScriptedStage(1, {ids[1]: "rejected"}, log), ScriptedStage(2, {ids[2]: "raise"}, log),
              ScriptedStage(3, {}, log)]
    with Manifest(tmp_path / "m.sqlite") as manifest:
        manifest.add_samples(_samples(5))
        # A budget with room for one stage's models at a time: each chunk loads each stage's models once.
        one_at_a_time = {f"stage:stage{n}": 1 for n in (1, 2, 3)}
        LocalRunner(chunk_size=3, max_attempts=2, budget_bytes=1, planned_bytes=one_at_a_time).run(
            stages, manifest, layout.SparkleLayout(tmp_path), None, None)
        assert [r.sample_id for r in manifest.results(3, "done")] == [ids[0], ids[3], ids[4]]
        assert manifest.result(ids[1], 1).status == "rejected" and manifest.result(ids[1], 2) is None
        failed = manifest.result(ids[2], 2)
        assert failed.status == "failed" and "out of memory" in failed.reason
        # Models are loaded once per stage per chunk and always released: 2 chunks x 3 stages.
        assert [e for e in log if e[0] == "load"] == [("load", 1), ("load", 2), ("load", 3)] * 2
        assert log.count(("release", 2)) == 2
        # A second run retries only the failed stage of the failed sample (which now succeeds). Without a budget the
        # models stay loaded across chunks: each loads once in the run and is released at its end.
        stages[1].decisions = {}
        log.clear()
        LocalRunner(chunk_size=3, max_attempts=2).run(stages, manifest, layout.SparkleLayout(tmp_path), None, None)
        assert [e for e in log if isinstance(e[0], int)] == [(2, ids[2]), (3, ids[2])]
        assert [e for e in log if e[0] == "load"] == [("load", 2), ("load", 3)]
        assert log.count(("release", 2)) == log.count(("release", 3)) == 1
        assert manifest.result(ids[2], 2).attempts == 2


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from sparkle_fast import layout
    from sparkle_fast.driver.manifest import Manifest, SampleRow
    from sparkle_fast.driver.runner import LocalRunner
    from sparkle_fast.stages import StageOutcome

    out, kill_at = sys.argv[1], sys.argv[2]

    class Stage:
        def __init__(self, number):
            self.number, self.name, self.model_slots = number, f"s{number}", ()
        def load_models(self, source): return None
        def release_models(self, models): pass
        def run(self, sample, context):
            if f"{self.number}:{sample.id}" == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # die mid-stage, before the result is recorded
            return StageOutcome.done(record={"n": self.number, "id": sample.id})

    with Manifest(os.path.join(out, "manifest.sqlite")) as manifest:
        manifest.add_samples([SampleRow(layout.sample_id("time", i), "time", f"{i}.mp4", None) for i in range(4)])
        LocalRunner(2, 2).run([Stage(n) for n in (1, 2, 3)], manifest, layout.SparkleLayout(out), None, None)
    """
)


@pytest.mark.parametrize("kill_at", ["1:Sparkle_time_000001", "2:Sparkle_time_000000", "3:Sparkle_time_000003"])
def test_sigkill_then_rerun_equals_a_clean_run(tmp_path, kill_at):
    def run(out, kill):
        return subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(out), kill], capture_output=True, text=True)

    killed = run(tmp_path / "killed", kill_at)
    assert killed.returncode == -signal.SIGKILL
    resumed = run(tmp_path / "killed", "never")
    clean = run(tmp_path / "clean", "never")
    assert resumed.returncode == 0 and clean.returncode == 0, resumed.stderr + clean.stderr

    def outcome(out):
        with Manifest(out / "manifest.sqlite") as manifest:
            return [(r.sample_id, r.stage, r.status, r.attempts, json.dumps(r.record))
                    for stage in (1, 2, 3) for r in manifest.results(stage)]

    assert outcome(tmp_path / "killed") == outcome(tmp_path / "clean")
    assert len(outcome(tmp_path / "clean")) == 12
    assert not [p for p in os.listdir(tmp_path / "killed") if p.endswith(".tmp")]


# --- inputs ---------------------------------------------------------------------------------------------------------


def test_folder_inputs_are_deduplicated_and_numbered(tmp_path):
    from sparkle_fast.driver.inputs import read_inputs

    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    for name, content in (("a.mp4", b"A"), ("b.mov", b"B"), ("sub/c.mkv", b"C"), ("copy_of_a.mp4", b"A"),
                          ("notes.txt", b"x")):
        (folder / name).write_bytes(content)
    first = read_inputs(folder, ["location", "style"], seed=3)
    assert len(first.samples) == 3 and any("same content" in p for p in first.problems)
    assert {s.theme for s in first.samples} <= {"location", "style"}
    for theme in ("location", "style"):
        ids = [s.id for s in first.samples if s.theme == theme]
        assert ids == [layout.sample_id(theme, i) for i in range(len(ids))]
    again = read_inputs(folder, ["location", "style"], seed=3)
    assert again.samples == first.samples  # deterministic
    with pytest.raises(ValueError, match="no video files"):
        read_inputs(_empty(tmp_path), ["location"])


def _empty(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


def test_csv_inputs_report_bad_rows_and_keep_going(tmp_path):
    from sparkle_fast.driver.inputs import read_inputs

    (tmp_path / "v1.mp4").write_bytes(b"1")
    (tmp_path / "v2.mp4").write_bytes(b"2")
    (tmp_path / "v3.mp4").write_bytes(b"3")
    (tmp_path / "in.csv").write_text(
        "src_video,prompt,theme\n"
        "v1.mp4,,location\n"
        ",a prompt,style\n"
        "v2.mp4,,openve3m\n"
        "v2.mp4,Make it rain,openve3m\n"
        "v3.mp4,,beach\n"
        "missing.mp4,,style\n")
    inputs = read_inputs(tmp_path / "in.csv", ["location", "style", "openve3m"])
    assert [(s.id, s.prompt) for s in inputs.samples] == [("Sparkle_location_000000", None),
                                                          ("Sparkle_openve3m_000000", "Make it rain")]
    assert [p.split(": ", 1)[0].rsplit(":", 1)[-1] for p in inputs.problems[:3]] == ["3", "4", "6"]
    assert any("missing.mp4" in p for p in inputs.problems)
    (tmp_path / "bad.csv").write_text("video\nv1.mp4\n")
    with pytest.raises(ValueError, match="no src_video column"):
        read_inputs(tmp_path / "bad.csv", ["location"])
