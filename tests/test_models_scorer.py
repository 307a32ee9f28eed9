"""EditScore adapter: the editscore package's prompts and formulas, on a stub answer source and a tiny backbone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sparkle_fast.models.scorer import EditScoreAdapter, ScorerConfig, mean_overall

FRAME0_FIELDS = {"prompt_following", "consistency", "perceptual_quality", "overall", "SC_reasoning", "PQ_reasoning"}
VIDEO_FIELDS = {"SC_score", "PQ_score", "O_score", "SC_score_reasoning", "PQ_score_reasoning", "SC_raw_output",
                "PQ_raw_output"}


@pytest.fixture(scope="module")
def scorer():
    adapter = EditScoreAdapter.tiny(config=ScorerConfig(reasoning_chars=6, max_new_tokens=48))
    yield adapter
    adapter.release()


@pytest.fixture(scope="module")
def images():
    rng = np.random.RandomState(0)
    return [(rng.rand(64, 64, 3) * 255).astype(np.uint8) for _ in range(4)]


def _scripted(adapter, monkeypatch, answer_for):
    """Replace generation by answers chosen from the prompt (SC prompts hold two images, PQ prompts one)."""
    prompts = []

    def generate(inputs_list, seed):
        prompts.extend(p for _, p in inputs_list)
        return [answer_for(len(images), prompt) for images, prompt in inputs_list]

    monkeypatch.setattr(adapter, "_generate", generate)
    return prompts


def test_formulas_and_prompts_are_editscores(scorer, images, monkeypatch):
    prompts = _scripted(scorer, monkeypatch, lambda n, p: '{"reasoning": "ok", "score": [20, 18]}' if "overediting"
                        in p else '{"reasoning": "natural", "score": [22, 19]}')
    result = scorer.score_edit(images[0], images[1], "Replace the background with a beach.")
    assert result.ok and set(result.value) == FRAME0_FIELDS
    value = result.value
    assert value["prompt_following"] == pytest.approx(20 / 2.5) and value["consistency"] == pytest.approx(18 / 2.5)
    assert value["perceptual_quality"] == pytest.approx(19 / 2.5)
    assert value["overall"] == pytest.approx(math.sqrt((18 / 2.5) * (19 / 2.5)))
    assert value["SC_reasoning"] == "ok" and value["PQ_reasoning"] == "natural"
    # editscore's own prompt text, with the instruction and the 0..25 range substituted in.
    assert any("Editing instruction: Replace the background with a beach." in p for p in prompts)
    assert all("From scale 0 to 25" in p for p in prompts)


def test_unparsable_answers_fail_instead_of_guessing(scorer, images, monkeypatch):
    _scripted(scorer, monkeypatch, lambda n, p: "I cannot rate this image.")
    result = scorer.score_edit(images[0], images[1], "Replace the background.")
    assert not result.ok and "its score is a guess" in result.reason


def test_frames_records_and_mid_range_fallback_detected(scorer, images, monkeypatch):
    _scripted(scorer, monkeypatch, lambda n, p: '{"reasoning": "r", "score": [25, 20]}')
    result = scorer.score_frames(images[:2], images[2:], "Replace the background.")
    assert result.ok and len(result.value) == 2
    assert all(set(r) == VIDEO_FIELDS for r in result.value)
    assert result.value[0]["SC_score"] == pytest.approx(8.0) and result.value[0]["PQ_score"] == pytest.approx(8.0)
    assert mean_overall(result.value) == pytest.approx(8.0)
    _scripted(scorer, monkeypatch, lambda n, p: "no json here")
    broken = scorer.score_frames(images[:2], images[2:], "Replace the background.")
    assert not broken.ok and "unusable SC answer" in broken.reason
    assert not scorer.score_frames(images[:2], images[:1], "x").ok


def test_tiny_backbone_whole_path(scorer, images):
    single = scorer.score_edit(images[0], images[1], "Replace the background with a forest.")
    assert single.ok and set(single.value) == FRAME0_FIELDS
    assert all(0.0 <= single.value[k] <= 10.0 for k in ("prompt_following", "consistency", "perceptual_quality",
                                                          "overall"))
    frames = scorer.score_frames(images[:2], images[2:], "Replace the background with a forest.")
    assert frames.ok and len(frames.value) == 2
    for record in frames.value:
        assert record["O_score"] == pytest.approx(math.sqrt(record["SC_score"] * record["PQ_score"]))
        assert record["SC_raw_output"].lstrip().startswith("{")


def test_edited_video_record_is_sparkles(scorer, monkeypatch):
    from sparkle_fast.layout_check import RECORD_SCHEMAS, schema_problems
    from sparkle_fast.models.scorer import score_edited_video

    _scripted(scorer, monkeypatch, lambda n, p: '{"reasoning": "r", "score": [25, 20]}')
    rng = np.random.RandomState(1)
    source = (rng.rand(81, 16, 16, 3) * 255).astype(np.uint8)
    edited = (rng.rand(81, 16, 16, 3) * 255).astype(np.uint8)
    result = score_edited_video(scorer, "Sparkle_time_000004", "Make it night.", source, edited)
    assert result.ok and result.value["frame_indices"] == [1, 26, 51, 76]
    assert schema_problems(result.value, RECORD_SCHEMAS["edited_video_score"], "record") == []
    assert len(result.value["editscore"]) == 4 and mean_overall(result.value["editscore"]) == pytest.approx(8.0)
    mismatched = score_edited_video(scorer, "x", "p", source, edited[:5])
    assert not mismatched.ok and "must match" in mismatched.reason
