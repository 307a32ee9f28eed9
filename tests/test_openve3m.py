"""OpenVE-3M input mode: the 2-FPS EditScore pre-filter of source/edited pairs (driver/openve3m.py, the
openve3m-filter command) and the input CSV it writes for `sparkle-fast run --themes openve3m`."""

from __future__ import annotations

import csv
import json

import pytest

from sparkle_fast.camera_synthetic import make_clip
from sparkle_fast.driver.cli import main
from sparkle_fast.driver.inputs import read_inputs
from sparkle_fast.driver.openve3m import filter_pairs, read_pairs, scores_path
from sparkle_fast.models.base import TaskResult
from sparkle_fast.video import write_video


class PromptScorer:
    """O_score 9 for prompts containing "good", 5 otherwise; records the frame pairs it was given."""

    def __init__(self):
        self.calls = []

    def score_frames(self, source_frames, edited_frames, instruction, passes=None):
        self.calls.append((len(source_frames), len(edited_frames), instruction))
        score = 9.0 if "good" in instruction else 5.0
        return TaskResult(ok=True, value=[{"SC_score": score, "PQ_score": score, "O_score": score}
                                          for _ in source_frames], attempts=1)


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory):
    root = tmp_path_factory.mktemp("openve3m")
    for name, seed, frames in (("a", 1, 33), ("b", 2, 17)):
        write_video(root / f"{name}_src.mp4", make_clip("static", n_frames=frames, size=(32, 48), seed=seed).frames,
                    fps=16)
        edited = make_clip("static", n_frames=frames, size=(32, 48), photo="coffee", seed=seed).frames
        write_video(root / f"{name}_edit.mp4", edited, fps=16)
    path = root / "pairs.csv"
    path.write_text("src_video,edited_video,prompt\n"
                    "a_src.mp4,a_edit.mp4,Make the background a good beach.\n"
                    "b_src.mp4,b_edit.mp4,Make the background a bad forest.\n"
                    "a_src.mp4,missing.mp4,A good but missing edit.\n"
                    ",b_edit.mp4,no source\n")
    return path


def test_pairs_are_scored_at_2fps_and_the_kept_ones_become_an_input_csv(tmp_path, pairs_csv):
    kept = tmp_path / "kept.csv"
    scorer = PromptScorer()
    summary = filter_pairs(pairs_csv, kept, scorer)
    assert (summary["pairs"], summary["scored_now"], summary["kept"], summary["rejected"]) == (3, 3, 1, 2)
    assert "pairs.csv:5: empty src_video" in summary["problems"][0]
    # 33 frames at 16 fps sampled at 2 FPS: frames 0, 8, 16, 24, 32; 17 frames: 0, 8, 16
    assert [c[:2] for c in scorer.calls] == [(5, 5), (3, 3)]
    records = [json.loads(line) for line in scores_path(kept).read_text().splitlines()]
    assert [r["kept"] for r in records] == [True, False, False]
    assert records[0]["mean_overall"] == 9.0 and records[0]["frames"] == 5
    assert "mean EditScore overall 5.00 < 8.0 over 3 frame pairs" in records[1]["reason"]
    assert records[2]["reason"].startswith("unreadable video") and "missing.mp4" in records[2]["reason"]
    rows = list(csv.DictReader(kept.open()))
    assert rows == [{"src_video": str(pairs_csv.parent / "a_src.mp4"), "prompt": "Make the background a good beach.",
                     "theme": "openve3m", "editscore_mean": "9.000000", "frames": "5"}]
    inputs = read_inputs(kept, ["openve3m"])
    assert [(s.theme, s.prompt) for s in inputs.samples] == [("openve3m", "Make the background a good beach.")]

    # A rerun scores nothing again and writes the same CSV; a torn last line (a kill) is redone.
    again = PromptScorer()
    assert filter_pairs(pairs_csv, kept, again)["scored_now"] == 0 and again.calls == []
    lines = scores_path(kept).read_text().splitlines()
    scores_path(kept).write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    assert filter_pairs(pairs_csv, kept, PromptScorer())["scored_now"] == 1
    assert list(csv.DictReader(kept.open())) == rows


def test_a_pairs_csv_given_to_run_names_the_filter(pairs_csv):
    with pytest.raises(ValueError, match="openve3m-filter"):
        read_inputs(pairs_csv, ["openve3m"])
    bad = pairs_csv.parent / "bad.csv"
    bad.write_text("src_video,tgt_video\nx.mp4,y.mp4\n")
    with pytest.raises(ValueError, match="needs the columns src_video .* and prompt"):
        read_pairs(bad)


def test_the_command_filters_with_the_slot_scorer(tmp_path, pairs_csv, capsys, monkeypatch):
    """The command's wiring: --models tiny loads the scorer slot's tiny builder (a stand-in here: the real tiny
    EditScore is exercised in tests/test_models_scorer.py), --threshold applies, the next command is printed."""
    from sparkle_fast.models.scorer import EditScoreAdapter

    monkeypatch.setattr(EditScoreAdapter, "tiny", classmethod(lambda cls, **kw: PromptScorer()))
    one = tmp_path / "one.csv"
    one.write_text(f"source_video,tgt_video,prompt\n{pairs_csv.parent / 'b_src.mp4'},"
                   f"{pairs_csv.parent / 'b_edit.mp4'},Make it snow.\n")
    assert main(["openve3m-filter", str(one), "--out", str(tmp_path / "kept.csv"), "--threshold", "4.5"]) == 0
    (record,) = [json.loads(line) for line in scores_path(tmp_path / "kept.csv").read_text().splitlines()]
    assert record["frames"] == 3 and record["kept"] and record["mean_overall"] == 5.0
    assert len(list(csv.DictReader((tmp_path / "kept.csv").open()))) == 1
    assert "--themes openve3m" in capsys.readouterr().out
    assert main(["openve3m-filter", str(one), "--out", str(tmp_path / "k.csv"), "--fps", "0"]) == 2
