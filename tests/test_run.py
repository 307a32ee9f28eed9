"""run_pipeline and `sparkle-fast run`: inputs to manifest to index files and summary, on scripted stages (fast);
a missing model folder stops the run before any work; config changes are reported."""

from __future__ import annotations

import csv
import json

import pytest

from sparkle_fast import layout
from sparkle_fast.driver.cli import main
from sparkle_fast.driver.config import load_config
from sparkle_fast.driver.run import parse_stages, run_pipeline
from sparkle_fast.layout_check import METADATA_SCHEMA, RECORD_SCHEMAS, schema_problems
from sparkle_fast.models.slots import ModelFolderError
from sparkle_fast.stages import StageOutcome

EDITSCORE = {"prompt_following": 9.0, "consistency": 9.0, "perceptual_quality": 9.0, "overall": 9.0,
             "SC_reasoning": "", "PQ_reasoning": ""}


class Scripted:
    """A stage that records Sparkle-shaped jsonl lines; samples whose src_video contains `reject` are rejected."""

    def __init__(self, number, reject=None):
        self.number, self.name, self.model_slots, self.reject = number, f"s{number}", (), reject
        self.runs = 0

    def load_models(self, source):
        return None

    def release_models(self, models):
        pass

    def run(self, sample, context):
        self.runs += 1
        if self.reject and self.reject in sample.src_video:
            return StageOutcome.rejected(f"scripted rejection at stage {self.number}", score=1.0)
        prompt = f"prompt for {sample.id}"
        jsonl = {}
        if self.number == 2:
            jsonl["edited_frame0_score"] = {"id": sample.id, "prompt": prompt, "editscore": EDITSCORE}
            record = {"prompt": prompt, "chosen_keyword": "beach: dunes", "original_scene": "a room"}
        elif self.number == 3:
            r1 = {"id": sample.id, "prompt": prompt, "edit_type": sample.theme, "round1_labels": ["cat"],
                  "round1_objects": [{"bbox_2d": [1, 2, 3, 4], "label": "cat"}]}
            jsonl = {"foreground_grounding_r1": r1, "edited_frame0_foreground_removed_score":
                     {"id": sample.id, "prompt": "Remove the cat.", "editscore": EDITSCORE}}
            record = {"r1": r1}
        else:
            record = {}
        return StageOutcome.done({**record, "jsonl": jsonl}, score=9.0, model=0.5, kernel=0.1, io=0.2)


def _videos(tmp_path, names):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(name.encode())  # distinct content: distinct samples (never decoded here)
    return folder


def test_parse_stages():
    assert parse_stages("1-5") == [1, 2, 3, 4, 5] and parse_stages("2") == [2] and parse_stages("1,3-4") == [1, 3, 4]
    for bad in ("0-2", "3-1", "x", "6"):
        with pytest.raises(ValueError, match="--stages"):
            parse_stages(bad)


def test_run_writes_index_files_from_the_manifest_and_resumes(tmp_path):
    videos = _videos(tmp_path, ["a.mp4", "b.mp4", "reject_c.mp4"])
    config = load_config(overrides={"run.themes": ["style"]})
    stages = [Scripted(1), Scripted(2), Scripted(3, reject="reject"), Scripted(4), Scripted(5)]
    out = tmp_path / "out"
    summary = run_pipeline(videos, out, config, stage_objects=stages, log=lambda m: None,
                           progress=lambda *a: None)
    assert summary["stages"]["3"]["kept"] == 2 and summary["stages"]["3"]["rejected"] == 1
    assert summary["stages"]["5"]["kept"] == 2 and summary["train_rows"] == {"style": 2}
    assert summary["stages"]["2"]["time"]["model"] == pytest.approx(1.5)
    assert json.loads((out / "summary.json").read_text()) == summary
    assert json.loads((out / "config.json").read_text()) == config.to_dict()

    sparkle = layout.SparkleLayout(out)
    def read_all():
        with open(sparkle.train_csv("style"), newline="") as handle:
            rows = list(csv.DictReader(handle))
        files = {name: layout.read_jsonl(sparkle.records_file("style", name)) for name in layout.RECORD_FILES}
        return rows, layout.read_jsonl(sparkle.train_metadata("style")), files

    rows, metadata, files = read_all()
    assert [r["task"] for r in rows] == ["Sparkle_style_000000", "Sparkle_style_000001"]
    assert rows[0]["src_video"] == "style/source_video/Sparkle_style_000000.mp4"
    assert all(schema_problems(m, METADATA_SCHEMA, "m") == [] for m in metadata)
    assert metadata[0]["metadata"] == {"edit_type": "style", "chosen_keyword": "beach: dunes",
                                       "original_scene": "a room"}
    assert len(files["edited_frame0_score"]) == 3 and len(files["foreground_grounding_r1"]) == 2
    for name, lines in files.items():
        assert all(schema_problems(line, RECORD_SCHEMAS[name], name) == [] for line in lines)

    # The same command again: nothing reruns, and the files are rewritten to exactly the same content.
    again = run_pipeline(videos, out, config, stage_objects=stages, log=lambda m: None, progress=lambda *a: None)
    assert sum(s.runs for s in stages) == 3 + 3 + 3 + 2 + 2
    assert read_all() == (rows, metadata, files) and again["stages"] == summary["stages"]


def test_config_change_is_reported(tmp_path):
    videos = _videos(tmp_path, ["a.mp4"])
    stages = [Scripted(1)]
    messages = []
    run_pipeline(videos, tmp_path / "out", load_config(), stages=[1], stage_objects=stages, log=messages.append,
                 progress=lambda *a: None)
    summary = run_pipeline(videos, tmp_path / "out", load_config(overrides={"thresholds.edit_frame0": 7.0}),
                           stages=[1], stage_objects=stages, log=messages.append, progress=lambda *a: None)
    assert summary["config_changed"] == ["thresholds.edit_frame0"]
    assert any("config changed" in m and "thresholds.edit_frame0" in m for m in messages)


def test_missing_models_folder_stops_before_any_work(tmp_path, capsys):
    videos = _videos(tmp_path, ["a.mp4"])
    models = tmp_path / "models"
    (models / "qwen3_vl").mkdir(parents=True)
    with pytest.raises(ModelFolderError) as error:
        run_pipeline(videos, tmp_path / "out", load_config(), models=str(models), log=lambda m: None)
    assert "[vlm]" in str(error.value) and "[control]" in str(error.value) and str(models / "sam3") in str(error.value)
    assert not (tmp_path / "out").exists()

    code = main(["run", "--input", str(videos), "--out", str(tmp_path / "cli"), "--models", str(models),
                 "--stages", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "[vlm]" in err and "[sam3]" not in err  # only the chosen stages' slots are needed
    assert not (tmp_path / "cli").exists()


def test_cli_reports_bad_config_and_inputs(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["run", "--input", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no video files" in capsys.readouterr().err
    videos = _videos(tmp_path, ["a.mp4"])
    assert main(["run", "--input", str(videos), "--out", str(tmp_path / "o"), "--set", "clip.fps=sixteen"]) == 2
    assert "clip.fps" in capsys.readouterr().err
    assert main(["run", "--input", str(videos), "--out", str(tmp_path / "o"), "--set", "nokey"]) == 2
    assert "SECTION.KEY=VALUE" in capsys.readouterr().err


def test_limit_runs_only_the_first_inputs_even_with_more_in_the_manifest(tmp_path):
    videos = _videos(tmp_path, ["a.mp4", "b.mp4", "c.mp4"])
    config = load_config(overrides={"run.themes": ["style"]})
    out = tmp_path / "out"
    quiet = dict(log=lambda m: None, progress=lambda *a: None)
    first = Scripted(1)
    run_pipeline(videos, out, config, stage_objects=[first], limit=1, **quiet)
    assert first.runs == 1
    run_pipeline(videos, out, config, stage_objects=[Scripted(1)], **quiet)  # all three through stage 1
    # three samples wait for stage 2, but --limit 2 runs only the first two inputs
    second = Scripted(2)
    summary = run_pipeline(videos, out, config, stage_objects=[second], limit=2, **quiet)
    assert second.runs == 2 and summary["stages"]["2"]["kept"] == 2
    rest = Scripted(2)
    run_pipeline(videos, out, config, stage_objects=[rest], **quiet)
    assert rest.runs == 1


def test_a_clip_size_wan_cannot_generate_stops_the_run_before_any_work(tmp_path):
    videos = _videos(tmp_path, ["a.mp4"])
    config = load_config(overrides={"clip.width": 640, "clip.height": 360})
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"640x360.*use 640x352"):
        run_pipeline(videos, out, config, stage_objects=[Scripted(n) for n in range(1, 6)])
    assert not (out / "manifest.sqlite").exists()
    # stage 1 alone reads any size
    run_pipeline(videos, out, config, stages=[1], stage_objects=[Scripted(1)], log=lambda message: None)
    assert (out / "manifest.sqlite").exists()
