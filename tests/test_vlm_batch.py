"""Batched adapters (*_many) against one-at-a-time calls on the tiny random models (float32, CPU).

Every VLM task, EditScore and the FLUX.2-klein editor: a batch of mixed inputs (different image sizes and clip
lengths, different label counts, a batch of 1, more rows than batch_size, rows that need retries, an input that
fails alone) gives, per item, what the single call gives. The one-at-a-time reference runs with batch_size 1 (every
row alone, unpadded). Left padding changes logits by rounding only, which can flip a token where two nearly tie on a
random model: tests/vlm_near_tie.py proves every such flip (top-2 gap below 1e-4 relative for greedy rows; equal
logits within 1e-4 relative for sampled rows) and a differing result is accepted only when one of its answers comes
from a proven flip. Generate calls are counted to show the batching.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from vlm_near_tie import TokenTrace, check_rows, explained

from sparkle_fast.models.vlm import Qwen3VLAdapter, VLMConfig

RNG = np.random.RandomState(0)


def _image(h, w):
    return (RNG.rand(h, w, 3) * 255).astype(np.uint8)


IMAGES = [_image(72, 128), _image(40, 56), _image(64, 64), _image(96, 80), _image(28, 28)]
CLIPS = [(RNG.rand(8, 72, 128, 3) * 255).astype(np.uint8), (RNG.rand(40, 64, 96, 3) * 255).astype(np.uint8),
         (RNG.rand(24, 72, 128, 3) * 255).astype(np.uint8)]


# Short answers keep the tests cheap (decoding dominates their cost on CPU).
SMALL = VLMConfig(reasoning_chars=12, scene_chars=12, prompt_chars=16, caption_chars=12, label_chars=6,
                  max_objects=2)


@pytest.fixture(scope="module")
def vlm():
    adapter = Qwen3VLAdapter.tiny(config=SMALL)
    yield adapter
    adapter.release()


def _compare(adapter, many, singles, batch_size):
    """(batched results, one-at-a-time results, rows per generate call, proven flips)."""
    adapter.batch_size = 1
    try:
        with TokenTrace(adapter.backend) as reference:
            expected = [single() for single in singles]
        adapter.batch_size = batch_size
        with TokenTrace(adapter.backend) as trace:
            got = many()
            calls = list(trace.calls)
            flips = check_rows(trace, reference)
    finally:
        adapter.batch_size = None
    assert len(got) == len(expected)
    for index, (result, alone) in enumerate(zip(got, expected, strict=True)):
        assert result == alone or explained(result, alone, flips), \
            f"item {index}: batched {result} != alone {alone} (flips: {flips})"
    return got, expected, calls, flips


def _first_attempt_calls(rows: int, batch_size: int) -> list[int]:
    return [min(batch_size, rows - start) for start in range(0, rows, batch_size)]


def _calls_per_attempt(results, batch_size: int) -> list[int]:
    """The call sizes _ask makes: every pending row once per attempt, batch_size at a time."""
    sizes = []
    for attempt in range(max(r.attempts for r in results)):
        sizes += _first_attempt_calls(sum(1 for r in results if r.attempts > attempt), batch_size)
    return sizes


def test_describe_scene_many_mixed_sizes_and_a_batch_of_one(vlm):
    got, expected, calls, _ = _compare(vlm, lambda: vlm.describe_scene_many(IMAGES),
                                       [lambda im=im: vlm.describe_scene(im) for im in IMAGES], batch_size=4)
    assert calls == _calls_per_attempt(got, 4) and calls[:2] == [4, 1]  # 5 requests, batch_size 4: 2 calls
    assert all(r.ok and isinstance(r.value, str) for r in got)
    vlm.batch_size = 4
    try:
        with TokenTrace(vlm.backend) as trace:
            (one,) = vlm.describe_scene_many([IMAGES[1]])
        assert trace.calls == [1] and one == expected[1]  # a batch of 1 is the single call
    finally:
        vlm.batch_size = None


def test_write_instruction_and_caption_many(vlm):
    scenes = ["a street", "a quiet kitchen with a window over the sink", "snow"]
    themes, subthemes = ["location", "time", "weather"], ["urban", "night", "storm at sea with lightning"]
    places = ["rooftop", "neon alley", "harbor"]
    got, _, calls, _ = _compare(
        vlm, lambda: vlm.write_instruction_many(IMAGES[:3], scenes, themes, subthemes, places),
        [lambda i=i: vlm.write_instruction(IMAGES[i], scenes[i], themes[i], subthemes[i], places[i])
         for i in range(3)], batch_size=2)
    assert calls == _calls_per_attempt(got, 2) and calls[:2] == [2, 1]
    prompts = ["Replace the background with a beach at sunset.", "Night city.",
               "Replace the background with a dense forest after rain, mist between the trees and light rays."]
    got, _, calls, _ = _compare(vlm, lambda: vlm.background_caption_many(prompts),
                                [lambda p=p: vlm.background_caption(p) for p in prompts], batch_size=2)
    assert calls == _calls_per_attempt(got, 2)
    with pytest.raises(ValueError, match="one entry per sample"):
        vlm.write_instruction_many(IMAGES[:2], scenes, themes, subthemes, places)


def test_camera_motion_verdict_many_clips_of_different_lengths_and_sizes(vlm):
    clips = CLIPS + [np.zeros((0, 72, 128, 3), np.uint8)]  # an empty clip fails alone, without a request
    got, _, calls, _ = _compare(vlm, lambda: vlm.camera_motion_verdict_many(clips, fps=16.0),
                                [lambda c=c: vlm.camera_motion_verdict(c, fps=16.0) for c in clips], batch_size=2)
    assert calls == _calls_per_attempt(got[:3], 2) and calls[:2] == [2, 1]
    assert all(isinstance(r.value["camera_moving"], bool) for r in got[:3] if r.ok)
    assert not got[3].ok and "no frames" in got[3].reason and got[3].attempts == 0


def test_ground_foreground_many(vlm):
    sources, edits = [IMAGES[0], IMAGES[2], IMAGES[3]], [IMAGES[1], IMAGES[4], IMAGES[3][::-1]]
    got, _, calls, _ = _compare(vlm, lambda: vlm.ground_foreground_many(sources, edits),
                                [lambda s=s, e=e: vlm.ground_foreground(s, e)
                                 for s, e in zip(sources, edits, strict=True)],
                                batch_size=2)
    assert calls == _calls_per_attempt(got, 2) and calls[:2] == [2, 1]


def test_ground_per_frame_many_different_label_lists_share_calls(vlm):
    frames = [[IMAGES[0], IMAGES[2]], [IMAGES[1]], [IMAGES[4], IMAGES[3]], [IMAGES[2]]]
    labels = [["man", "hat"], ["dog"], ["cat"], []]
    got, _, calls, _ = _compare(vlm, lambda: vlm.ground_per_frame_many(frames, labels),
                                [lambda f=f, lb=lb: vlm.ground_per_frame(f, lb)
                                 for f, lb in zip(frames, labels, strict=True)],
                                batch_size=4)
    # 5 frame rows of three samples (three schemas), 4 per call: the first call mixes three samples' schemas.
    assert calls[:2] == [4, 1] and sum(calls) == sum(r.attempts for r in got)
    for result, lbl, frs in zip(got[:3], labels[:3], frames[:3], strict=True):
        assert len(result.value) == len(frs)
        assert all([o["label"] for o in objects] == lbl for objects in result.value)
    assert not got[3].ok and got[3].reason == "no round-1 labels to ground"


def test_rows_that_need_retries_are_retried_alone_and_equal():
    """Unconstrained decoding on a random model: answers do not parse, so rows are retried (greedy, then seeded
    sampling), only the failing ones, batch_size at a time; each sample's answers equal its one-at-a-time answers."""
    config = dataclasses.replace(SMALL, constrained=False, max_new_tokens_cap=10)  # 10 random tokens never parse
    adapter = Qwen3VLAdapter.tiny(config=config)
    frames, labels = [[IMAGES[4]], [IMAGES[1]], [IMAGES[4][::-1]]], [["dog"], ["man"], ["a red hat"]]
    got, _, calls, _ = _compare(adapter, lambda: adapter.ground_per_frame_many(frames, labels),
                                [lambda f=f, lb=lb: adapter.ground_per_frame(f, lb)
                                 for f, lb in zip(frames, labels, strict=True)],
                                batch_size=2)
    assert any(r.attempts > 1 for r in got)  # a row needed a retry
    assert calls == _calls_per_attempt(got, 2)  # one frame per sample: a sample's attempts are its row's
    adapter.release()


def test_a_request_that_fails_generation_fails_alone(vlm):
    bad = np.zeros((4,), np.uint8)  # not an image: the processor raises for the whole batched call
    got, _, _, _ = _compare(vlm, lambda: vlm.describe_scene_many([IMAGES[1], bad]),
                            [lambda: vlm.describe_scene(IMAGES[1]), lambda: vlm.describe_scene(bad)], batch_size=2)
    assert got[0].ok
    assert not got[1].ok and got[1].attempts == vlm.config.attempts and "generation failed" in got[1].reason


# --- EditScore -----------------------------------------------------------------------------------------------------

def test_score_edit_many_greedy_equals_one_pair_at_a_time():
    from sparkle_fast.models.scorer import EditScoreAdapter, ScorerConfig

    scorer = EditScoreAdapter.tiny(config=ScorerConfig(reasoning_chars=4, max_new_tokens=48, passes=1,
                                                       temperature=0.0))
    sources, edits = [IMAGES[0], IMAGES[2], IMAGES[1]], [IMAGES[1], IMAGES[3], IMAGES[4]]
    instructions = ["Replace the background with a forest.", "Night.", "A beach at sunset with waves."]
    got, _, calls, _ = _compare(
        scorer, lambda: scorer.score_edit_many(sources, edits, instructions, passes=2),
        [lambda i=i: scorer.score_edit(sources[i], edits[i], instructions[i], passes=2) for i in range(3)],
        batch_size=5)
    assert calls == [5, 5, 2]  # 3 pairs x 2 passes x (SC, PQ) = 12 rows, 5 per call
    assert all(len(r.answers) == 4 for r in got)
    scorer.release()


def test_score_edited_video_many_sampled_passes_keep_their_seeds():
    """EditScore's own sampling (temperature 0.7, one seed per pass): a sample's record does not depend on its
    batch. A sample whose videos do not match fails alone."""
    from sparkle_fast.models import scorer as scoring
    from sparkle_fast.models.scorer import EditScoreAdapter, ScorerConfig

    scorer = EditScoreAdapter.tiny(config=ScorerConfig(reasoning_chars=4, max_new_tokens=48, passes=1))
    rng = np.random.RandomState(3)
    videos = [(rng.rand(6, 32, 48, 3) * 255).astype(np.uint8) for _ in range(4)]
    small = (rng.rand(6, 24, 24, 3) * 255).astype(np.uint8)
    items = [("s0", "Make it night.", videos[0], videos[1]), ("s1", "A beach.", videos[2], videos[3]),
             ("bad", "x", videos[0], videos[1][:5]), ("s2", "Snow.", small, small[::-1])]
    got, _, calls, _ = _compare(
        scorer, lambda: scoring.score_edited_video_many(scorer, items, [4]),
        [lambda it=it: scoring.score_edited_video(scorer, *it, frame_indices=[4]) for it in items], batch_size=4)
    assert calls == [4, 2]  # 3 samples x 1 frame x (SC, PQ) x 1 pass = 6 rows
    assert [r.ok for r in got[:2]] == [True, True] and got[0].value["id"] == "s0"
    assert got[0].value["frame_indices"] == [4] and len(got[0].value["editscore"]) == 1
    assert all(math.isfinite(rec["O_score"]) for rec in got[0].value["editscore"])
    assert not got[2].ok and "must match" in got[2].reason
    scorer.release()


# --- FLUX.2-klein --------------------------------------------------------------------------------------------------

def test_editor_many_equals_one_at_a_time():
    from sparkle_fast.models.editor import EditorConfig, FluxKleinEditor

    editor = FluxKleinEditor.tiny(config=EditorConfig(num_inference_steps=1, max_sequence_length=32,
                                                      text_encoder_out_layers=(1,)))
    images = [_image(64, 64), _image(70, 80), _image(32, 80)]  # the last is under 64 px: fails alone
    prompts = ["Replace the background with a beach.", "Night city.", "Snow."]
    edits = editor.try_edit_many(images, prompts, seed=5)
    for image, prompt, result in zip(images, prompts, edits, strict=True):
        alone = editor.try_edit(image, prompt, seed=5)
        assert result.ok == alone.ok and result.reason == alone.reason
        if alone.ok:
            assert np.array_equal(np.asarray(result.value), np.asarray(alone.value))
    assert [r.ok for r in edits] == [True, True, False] and edits[1].value.size == (80, 70)
    labels = [["man"], [], ["dog", "hat"]]
    removals = editor.remove_many(images[:2] + [images[0]], labels, seed=[1, 2, 3])
    for image, lbl, seed, result in zip(images[:2] + [images[0]], labels, [1, 2, 3], removals, strict=True):
        alone = editor.remove(image, lbl, seed=seed)
        assert result.ok == alone.ok and result.reason == alone.reason
        if alone.ok:
            assert result.value["instruction"] == alone.value["instruction"]
            assert np.array_equal(np.asarray(result.value["image"]), np.asarray(alone.value["image"]))
    assert [r.ok for r in removals] == [True, False, True]
    with pytest.raises(ValueError, match="seeds"):
        editor.remove_many(images[:2], labels[:2], seed=[1])
    editor.release()


# --- the near-tie proof itself -------------------------------------------------------------------------------------

def test_near_tie_proof_accepts_ties_and_rejects_real_differences():
    import torch
    from vlm_near_tie import Row, near_tie

    from sparkle_fast.models.vlm_backends import Sampling

    greedy, sampled = Sampling(4), Sampling(4, temperature=0.7, seed=3)

    def row(tokens, first_logits, sampling):
        logits = torch.tensor([first_logits, [0.0, 0.0, 0.0, 1.0]])
        return Row("key", None, None, sampling, tokens, logits, f"answer {tokens}", 2)

    alone = row([0, 3], [5.0, 1.0, 4.9999995, 0.0], greedy)
    assert near_tie(row([0, 3], [5.0, 1.0, 4.9999995, 0.0], greedy), alone) is None  # same tokens
    flip = near_tie(row([2, 3], [4.9999995, 1.0, 5.0, 0.0], greedy), alone)  # a tie broken the other way
    assert flip.step == 0 and flip.gap == pytest.approx(5e-7, abs=1e-7)
    with pytest.raises(AssertionError, match="not a near-tie"):  # a real gap of 0.1 is a bug, not rounding
        near_tie(row([2, 3], [4.9, 1.0, 5.0, 0.0], greedy), row([0, 3], [5.0, 1.0, 4.9, 0.0], greedy))
    with pytest.raises(AssertionError, match="prefix"):
        near_tie(row([0], [5.0, 1.0, 4.0, 0.0], greedy), alone)
    sampled_alone = row([0, 3], [5.0, 1.0, 4.0, 0.0], sampled)
    assert near_tie(row([2, 3], [5.0000001, 1.0, 4.0, 0.0], sampled), sampled_alone).step == 0
    with pytest.raises(AssertionError, match="not rounding"):
        near_tie(row([2, 3], [5.0, 1.0, 4.5, 0.0], sampled), sampled_alone)
