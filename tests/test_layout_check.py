"""The layout validator accepts a conforming Sparkle folder and names each way a broken one departs from it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparkle_fast import formats, layout, video
from sparkle_fast.layout_check import check_dataset

T, H, W = 5, 48, 64
SAMPLE = "Sparkle_location_000000"
EDITSCORE = {"prompt_following": 9.0, "consistency": 8.0, "perceptual_quality": 8.5, "overall": 8.4,
             "SC_reasoning": "fine", "PQ_reasoning": "fine"}
FRAME_SCORE = {"SC_score": 9.0, "PQ_score": 8.5, "O_score": 8.7, "SC_score_reasoning": "ok",
               "PQ_score_reasoning": "ok", "SC_raw_output": "{}", "PQ_raw_output": "{}"}
R1 = {"id": SAMPLE, "prompt": "p", "edit_type": "location", "round1_labels": ["person"],
      "round1_objects": [{"bbox_2d": [1, 2, 300, 400], "label": "person"}]}


def write_dataset(root, *, fps=16, frames=T, mask_shape=(T, H, W)):
    out = layout.SparkleLayout(root)
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 255, size=(frames, H, W, 3), dtype=np.uint8)
    for kind in ("source_video", "edited_video"):
        video.write_video(out.artifact("location", kind, SAMPLE), clip, fps=fps)
    for kind in ("edited_background_video", "edited_video_canny"):
        video.write_video(out.artifact("location", kind, SAMPLE), clip, fps=fps)
    for kind in ("source_frame0", "edited_frame0", "edited_frame0_foreground_removed"):
        video.write_image(out.artifact("location", kind, SAMPLE), clip[0])
    formats.save_mask(out.artifact("location", "source_video_mask", SAMPLE), rng.random(mask_shape) < 0.5)
    layout.write_train_csv(out.train_csv("location"), [out.train_row("location", SAMPLE, "p")])
    layout.write_jsonl(out.train_metadata("location"),
                       [layout.metadata_record("location", SAMPLE, "p", "urban: rooftop", "a street")])
    records = {
        "edited_frame0_score": {"id": SAMPLE, "prompt": "p", "editscore": EDITSCORE},
        "edited_frame0_foreground_removed_score": {"id": SAMPLE, "prompt": "p", "editscore": EDITSCORE},
        "foreground_grounding_r1": R1,
        "foreground_grounding_r2": {**R1, "frame_objects": [[{"bbox_2d": [], "label": "person"}],
                                                             [{"bbox_2d": [5, 5, 50, 60], "label": "person"}]]},
        "edited_video_score": {"id": SAMPLE, "prompt": "p", "frame_indices": [1, 2, 3, 4],
                               "editscore": [FRAME_SCORE] * 4},
    }
    for name, record in records.items():
        layout.write_jsonl(out.records_file("location", name), [record])
    return out, records


def _config(out, **clip):
    """The run's config.json with a clip spec: Sparkle's fps, this folder's size and length, then `clip`."""
    spec = {"fps": 16, "max_frames": T, "width": W, "height": H, **clip}
    (out.root / "config.json").write_text(json.dumps({"clip": spec}))


def _scores(out, records, frame_indices):
    line = {**records["edited_video_score"], "frame_indices": frame_indices,
            "editscore": records["edited_video_score"]["editscore"][:1] * len(frame_indices)}
    layout.write_jsonl(out.records_file("location", "edited_video_score"), [line])


def test_a_conforming_folder_has_no_problems(tmp_path):
    out, _ = write_dataset(tmp_path)
    assert check_dataset(tmp_path) == []
    _config(out)  # the run's clip spec, met
    assert check_dataset(tmp_path) == []


@pytest.mark.parametrize(
    "break_it,message",
    [
        (lambda out, rec: out.artifact("location", "edited_frame0", SAMPLE).unlink(), "missing"),
        (lambda out, rec: layout.write_jsonl(out.records_file("location", "edited_frame0_score"),
                                             [{"id": SAMPLE, "prompt": "p", "editscore": {"overall": "8"}}]),
         "missing field 'prompt_following'"),
        (lambda out, rec: layout.write_jsonl(out.records_file("location", "foreground_grounding_r2"),
                                             [{**rec["foreground_grounding_r2"],
                                               "frame_objects": [[{"bbox_2d": [1, 2, 3], "label": "x"}]]}]),
         "expected [x1, y1, x2, y2] or []"),
        (lambda out, rec: layout.write_jsonl(out.records_file("location", "edited_video_score"),
                                             [rec["edited_video_score"]] * 2), "duplicate ids"),
        (lambda out, rec: layout.write_jsonl(out.train_metadata("location"), [
            layout.metadata_record("season", SAMPLE, "p", "k", "s")]), "has edit_type 'season'"),
        (lambda out, rec: out.train_csv("location").write_text("prompt,src,tgt,task\n"), "columns"),
        (lambda out, rec: formats.save_mask(out.artifact("location", "source_video_mask", SAMPLE),
                                            np.zeros((T, H, W + 1), bool)), "mask shape"),
        (lambda out, rec: out.artifact("location", "source_video_mask", SAMPLE).write_bytes(b"junk"),
         "does not load with Sparkle's recipe"),
        (lambda out, rec: video.write_video(out.artifact("location", "edited_video", SAMPLE),
                                            np.zeros((T, H, W, 3), np.uint8), fps=25), "25 fps"),
        (lambda out, rec: video.write_video(out.artifact("location", "edited_video", SAMPLE),
                                            np.zeros((T + 1, H, W, 3), np.uint8), fps=16), "6 frames"),
        (lambda out, rec: _config(out, width=W + 32), f"{W}x{H}, the clip spec is {W + 32}x{H}"),
        (lambda out, rec: _config(out, max_frames=1), f"{T} frames, more than the clip spec's 1"),
        (lambda out, rec: _config(out, fps=25), "16 fps, the clip spec is 25 fps"),
        (lambda out, rec: video.write_video(out.artifact("location", "edited_video_canny", SAMPLE),
                                            np.zeros((T + 4, H, W, 3), np.uint8), fps=16),
         f"{W}x{H}x{T + 4} frames, the source video is {W}x{H}x{T}"),
        (lambda out, rec: _scores(out, rec, [1, 5, 9]), "not 4 distinct frames"),
        (lambda out, rec: _scores(out, rec, [1, 1, 2, 3]), "not 4 distinct frames"),
        (lambda out, rec: _scores(out, rec, [0, 1, 2, 3]), "include frame 0"),
        (lambda out, rec: _scores(out, rec, [1, 2, 3, T]), f"reach past the video's {T} frames"),
        (lambda out, rec: out.train_csv("location").write_text("prompt,src_video,tgt_video,task\n"),
         "a header without rows"),
    ],
    ids=["missing-png", "score-fields", "bad-box", "duplicate-ids", "edit-type", "csv-columns", "mask-shape",
         "mask-junk", "fps", "4k+1", "clip-size", "clip-length", "clip-fps", "intermediate-length",
         "three-scored-frames", "repeated-scored-frame", "scored-frame-0", "scored-frame-past-end", "header-only-csv"],
)
def test_each_departure_is_named(tmp_path, break_it, message):
    out, records = write_dataset(tmp_path)
    break_it(out, records)
    problems = check_dataset(tmp_path)
    assert any(message in p for p in problems), problems


def test_an_empty_folder_is_reported(tmp_path):
    assert "no prompts" in check_dataset(tmp_path)[0]


def test_validate_command(tmp_path, capsys):
    from sparkle_fast.driver.cli import main

    write_dataset(tmp_path)
    assert main(["validate", str(tmp_path)]) == 0 and "conforms" in capsys.readouterr().out
    layout.SparkleLayout(tmp_path).artifact("location", "source_frame0", SAMPLE).unlink()
    assert main(["validate", str(tmp_path)]) == 1 and "missing" in capsys.readouterr().out
