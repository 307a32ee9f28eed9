"""Qwen3-VL adapter: every task's whole call path on a tiny random model, and retries on recorded bad answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparkle_fast.models import json_answers as ja
from sparkle_fast.models.vlm import PROMPTS, Qwen3VLAdapter


@pytest.fixture(scope="module")
def vlm():
    adapter = Qwen3VLAdapter.tiny()
    yield adapter
    adapter.release()


@pytest.fixture(scope="module")
def frames():
    rng = np.random.RandomState(0)
    return (rng.rand(8, 72, 128, 3) * 255).astype(np.uint8)


def _all_answers_are_json(result):
    assert result.attempts == len(result.answers) >= 1
    for answer in result.answers:
        json.loads(answer)  # constrained decoding: even a random model writes well-formed JSON


def test_text_tasks_on_tiny_model(vlm, frames):
    scene = vlm.describe_scene(frames[0])
    instruction = vlm.write_instruction(frames[0], "a street", "location", "urban", "rooftop overlooking skyline")
    caption = vlm.background_caption("Replace the background with a beach at sunset.")
    for result in (scene, instruction, caption):
        assert result.ok and isinstance(result.value, str) and result.value and result.reason == ""
        _all_answers_are_json(result)
    assert len(scene.value) <= vlm.config.scene_chars


def test_camera_motion_verdict_on_tiny_model(vlm, frames):
    result = vlm.camera_motion_verdict(frames, fps=16.0)
    assert result.ok
    assert set(result.value) == {"reasoning", "camera_moving"} and isinstance(result.value["camera_moving"], bool)
    _all_answers_are_json(result)


def test_ground_foreground_on_tiny_model(vlm, frames):
    result = vlm.ground_foreground(frames[0], frames[1])
    _all_answers_are_json(result)
    if result.ok:  # a random model's boxes may all be degenerate; then the reason says so
        objects = result.value["round1_objects"]
        assert 1 <= len(objects) <= vlm.config.max_objects
        assert all(ja.clean_box(o["bbox_2d"]) == o["bbox_2d"] and o["label"] for o in objects)
        assert result.value["round1_labels"] == list(dict.fromkeys(o["label"] for o in objects))
    else:
        assert "no usable foreground object" in result.reason


def test_ground_per_frame_on_tiny_model(vlm, frames):
    labels = ["man", "red hat"]
    result = vlm.ground_per_frame(list(frames[:3]), labels)
    assert len(result.value) == 3
    for frame_objects in result.value:
        assert [o["label"] for o in frame_objects] == labels
        assert all(o["bbox_2d"] == [] or len(o["bbox_2d"]) == 4 for o in frame_objects)
    localized = any(o["bbox_2d"] for objs in result.value for o in objs)
    assert result.ok == localized
    _all_answers_are_json(result)


# --- retries on recorded answers -------------------------------------------------------------------------------
GOOD_BOXES = '```json\n[{"bbox_2d": [100, 50, 600, 990], "label": "woman"}]\n```'
RETRY_CASES = [
    # (task, scripted answers per attempt, ok, attempts, reason fragment)
    ("ground", ["Sorry, I can't help with that.", GOOD_BOXES], True, 2, ""),
    ("ground", ['[{"bbox_2d": [], "label": "woman"}]', '[{"bbox_2d": [1, 2, 3]}]', "[]"], False, 3,
     "no usable foreground object"),
    ("ground", ['[{"bbox_2d": [10, 20, 30, 40], "label": "dog"},]'], True, 1, ""),
    ("scene", ['{"scene": ', '{"scene": ""}', "```json\n{}\n```"], False, 3, "unusable answer after 3 attempt(s)"),
    ("scene", ["{'scene': 'A sunny plaza.'} That is all."], True, 1, ""),
    ("verdict", ['{"reasoning": "hmm", "camera_moving": "maybe"}', '{"reasoning": "pan", "camera_moving": "yes"}'],
     True, 2, ""),
    ("caption", ["", "", ""], False, 3, "empty answer"),
]


@pytest.mark.parametrize("task,answers,ok,attempts,reason", RETRY_CASES)
def test_retries_on_recorded_answers(vlm, frames, monkeypatch, task, answers, ok, attempts, reason):
    script = iter(answers)
    seeds = []

    def scripted_generate(requests, schema, key, *, sample_seed):
        seeds.append(sample_seed)
        return [next(script) for _ in requests]

    monkeypatch.setattr(vlm, "_generate", scripted_generate)
    call = {"ground": lambda: vlm.ground_foreground(frames[0], frames[1]),
            "scene": lambda: vlm.describe_scene(frames[0]),
            "verdict": lambda: vlm.camera_motion_verdict(frames),
            "caption": lambda: vlm.background_caption("Put the subject on a beach.")}[task]
    result = call()
    assert result.ok is ok
    assert result.attempts == attempts and result.answers == answers[:attempts]
    assert reason in result.reason
    assert seeds[0] is None and all(s is not None for s in seeds[1:])  # greedy first, then sampled retries
    if task == "ground" and ok:
        assert all(len(o["bbox_2d"]) == 4 for o in result.value["round1_objects"])


def test_model_errors_become_failed_results(vlm, frames, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(vlm, "_generate", broken)
    result = vlm.describe_scene(frames[0])
    assert not result.ok and result.attempts == vlm.config.attempts
    assert "generation failed: RuntimeError: CUDA out of memory" in result.reason


def test_ground_per_frame_keeps_failed_frames_as_empty_boxes(vlm, frames, monkeypatch):
    answers = {0: '[{"bbox_2d": [1, 2, 300, 400], "label": "man"}]', 1: "no idea"}

    def scripted_generate(requests, schema, key, *, sample_seed):
        return [answers[int(r.images[0][0, 0, 0] != frames[0][0, 0, 0])] for r in requests]

    monkeypatch.setattr(vlm, "_generate", scripted_generate)
    result = vlm.ground_per_frame([frames[0], frames[1]], ["man", "hat"])
    assert result.ok
    assert result.value[0] == [{"bbox_2d": [1, 2, 300, 400], "label": "man"}, {"bbox_2d": [], "label": "hat"}]
    assert result.value[1] == [{"bbox_2d": [], "label": "man"}, {"bbox_2d": [], "label": "hat"}]
    assert "frame 1" in result.reason
    assert not vlm.ground_per_frame([frames[0]], []).ok


def test_prompts_live_in_one_place():
    assert set(PROMPTS) == {"camera_motion", "describe_scene", "write_instruction", "ground_foreground",
                            "background_caption", "ground_per_frame"}
    text = PROMPTS["write_instruction"].format(original_scene="S", theme="T", subtheme="U", scene="V")
    assert '{"prompt": "..."}' in text and "S" in text
