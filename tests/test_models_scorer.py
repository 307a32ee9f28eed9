"""EditScore adapter: the editscore package's prompts, pass loop and formulas, on scripted answers and a tiny backbone.

The published-record tests take the EditScore values Sparkle released (README, edited_frame0_score.jsonl and
edited_video_score.jsonl examples), search for per-pass integer answers that EditScore's formula maps to them, feed
those answers through the real adapter (editscore's own evaluate / batch_evaluate, our batching and replay) and
compare the published floats exactly.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from sparkle_fast.models.scorer import EditScoreAdapter, ScorerConfig, ScoreRequest, mean_overall

FRAME0_FIELDS = {"prompt_following", "consistency", "perceptual_quality", "overall", "SC_reasoning", "PQ_reasoning"}
VIDEO_FIELDS = {"SC_score", "PQ_score", "O_score", "SC_score_reasoning", "PQ_score_reasoning", "SC_raw_output",
                "PQ_raw_output"}
RANGE = 25

# Sparkle's release README (showlab/Sparkle), the jsonl examples for Sparkle_location_000000.
PUBLISHED_FRAME0 = {"prompt_following": 9.7, "consistency": 8.8, "perceptual_quality": 8.5,
                    "overall": 8.62887857991077}
PUBLISHED_FRAMES = [  # edited_video_score.jsonl, frames [1, 26, 51, 76]: (SC_score, PQ_score, O_score)
    (9.0, 8.5, 8.719958110896453), (8.3, 8.5, 8.388302424289282),
    (9.1, 7.4, 8.143194240945185), (8.9, 7.8, 8.318623075017307)]


@pytest.fixture(scope="module")
def scorer():
    adapter = EditScoreAdapter.tiny(config=ScorerConfig(reasoning_chars=6, max_new_tokens=48))
    yield adapter
    adapter.release()


@pytest.fixture(scope="module")
def images():
    rng = np.random.RandomState(0)
    return [(rng.rand(64, 64, 3) * 255).astype(np.uint8) for _ in range(4)]


def _answer(scores, reasoning="r") -> str:
    return f'{{"reasoning": "{reasoning}", "score": [{scores[0]}, {scores[1]}]}}'


def _scripted(adapter, monkeypatch, answer_for):
    """Replace generation by answer_for(request, pass index, head) with head "SC" or "PQ"; records the calls."""
    calls = []

    def generate(requests):
        calls.append(list(requests))
        pq_prompt = next(iter(adapter._scorers.values())).PQ_prompt
        return [answer_for(r, r.seed - adapter.config.seed, "PQ" if r.prompt == pq_prompt else "SC")
                for r in requests]

    monkeypatch.setattr(adapter, "_generate", generate)
    return calls


# --- decomposing the published values into per-pass answers (a small search, not stored answers) ---------------

def _pass_pairs(passes, sc_min_sum, sc_exact, pq_sum, overall):
    """All multisets of `passes` (min SC score, min PQ score) integer pairs in 0..RANGE whose PQ scores sum to pq_sum,
    whose SC minima sum to sc_exact (or at most sc_min_sum when sc_exact is None), and whose mean of
    sqrt(SC/2.5 * PQ/2.5) is `overall` (to 1e-9). Prunes with sqrt(m p) <= (m + p) / 2."""
    target, found = overall * passes * RANGE / 10, []

    def extend(i, m0, p0, sm, sp, ss, acc):
        left = passes - i
        if left == 0:
            if sp == pq_sum and (sc_exact is None or sm == sc_exact) and abs(ss - target) < 1e-7:
                found.append(tuple(acc))
            return
        for m in range(m0, RANGE + 1):
            for p in range(p0 if m == m0 else 0, RANGE + 1):
                sm2, sp2 = sm + m, sp + p
                if sm2 > sc_min_sum or sp2 > pq_sum or pq_sum - sp2 > RANGE * (left - 1):
                    continue
                if sc_exact is not None and sc_exact - sm2 > RANGE * (left - 1):
                    continue
                ss2 = ss + math.sqrt(m * p)
                if ss2 + (sc_min_sum - sm2 + pq_sum - sp2) / 2 < target - 1e-7:
                    continue
                extend(i + 1, m, p, sm2, sp2, ss2, acc + [(m, p)])

    extend(0, 0, 0, 0, 0, 0.0, [])
    return found


def _integer_sum(value, passes):
    total = value * passes * RANGE / 10
    return round(total) if abs(total - round(total)) < 1e-9 else None


def _mean(values):
    return np.mean(values)  # editscore averages the passes with np.mean


def decompose_frame(sc, pq, o, passes):
    """Per-pass (SC answer, PQ answer) lists whose EditScore batch record is exactly (sc, pq, o), all pass orders
    of every decomposition; [] when none exists."""
    sc_sum, pq_sum = _integer_sum(sc, passes), _integer_sum(pq, passes)
    if sc_sum is None or pq_sum is None:
        return []
    unit, out = RANGE / 10, []
    for pairs in _pass_pairs(passes, sc_sum, sc_sum, pq_sum, o):
        for order in dict.fromkeys(itertools.permutations(pairs)):
            got = (_mean([m / unit for m, _ in order]), _mean([p / unit for _, p in order]),
                   _mean([math.sqrt(m / unit * (p / unit)) for m, p in order]))
            if got == (sc, pq, o):  # bit-exact, including np.mean's summation order
                out.append([((m, min(RANGE, m + 1)), (p, p)) for m, p in order])
    return out


def decompose_frame0(record, passes):
    """Per-pass (SC answer [success, over-editing], PQ answer) lists whose EditScore evaluate record equals
    `record` exactly."""
    a_sum, b_sum = _integer_sum(record["prompt_following"], passes), _integer_sum(record["consistency"], passes)
    p_sum = _integer_sum(record["perceptual_quality"], passes)
    if None in (a_sum, b_sum, p_sum):
        return []
    unit = RANGE / 10
    for pairs in _pass_pairs(passes, min(a_sum, b_sum), None, p_sum, record["overall"]):
        for order in dict.fromkeys(itertools.permutations(pairs)):
            # min(a, b) = m: one side is m, the other takes a share of what is left of its sum.
            for a_is_min in itertools.product((True, False), repeat=passes):
                a = [m if is_min else None for (m, _), is_min in zip(order, a_is_min, strict=True)]
                b = [None if is_min else m for (m, _), is_min in zip(order, a_is_min, strict=True)]
                for side, total in ((a, a_sum), (b, b_sum)):
                    free = [i for i, v in enumerate(side) if v is None]
                    rest = total - sum(v for v in side if v is not None)
                    for i in free:  # fill greedily from each pass's minimum upwards
                        side[i] = order[i][0]
                        rest -= order[i][0]
                    for i in free:
                        add = min(rest, RANGE - side[i])
                        side[i] += add
                        rest -= add
                    if rest != 0:
                        break
                else:
                    if any(min(x, y) != m for x, y, (m, _) in zip(a, b, order, strict=True)):
                        continue
                    got = {"prompt_following": _mean([x / unit for x in a]),
                           "consistency": _mean([y / unit for y in b]),
                           "perceptual_quality": _mean([p / unit for _, p in order]),
                           "overall": _mean([math.sqrt(m / unit * (p / unit)) for m, p in order])}
                    if got == record:
                        return [[((x, y), (p, p)) for x, y, (_, p) in zip(a, b, order, strict=True)]]
    return []


def test_published_frame0_record_reproduced_from_four_passes(scorer, images, monkeypatch):
    assert decompose_frame0(PUBLISHED_FRAME0, 1) == []  # one pass cannot give it
    solutions = decompose_frame0(PUBLISHED_FRAME0, 4)
    assert solutions, "no 4-pass decomposition of the published edited_frame0 record"
    per_pass = solutions[0]
    calls = _scripted(scorer, monkeypatch, lambda r, i, head: _answer(per_pass[i][0 if head == "SC" else 1]))
    result = scorer.score_edit(images[0], images[1], "Shift the background to a rooftop.", passes=4)
    assert result.ok, result.reason
    assert {k: result.value[k] for k in PUBLISHED_FRAME0} == PUBLISHED_FRAME0  # exact floats
    # All 4 passes x (SC, PQ) in one generate call, each pass with its own seed (EditScore's seed + i).
    assert len(calls) == 1 and len(calls[0]) == 8
    assert sorted({r.seed for r in calls[0]}) == [42, 43, 44, 45]


def test_published_frame_records_reproduced_with_unique_decompositions(scorer, images, monkeypatch):
    per_frame = []
    for sc, pq, o in PUBLISHED_FRAMES:
        multisets = {tuple(sorted(order)) for order in decompose_frame(sc, pq, o, 4)}
        assert len(multisets) == 1, (sc, pq, o, multisets)  # one set of per-pass answers per record
        assert all(not decompose_frame(sc, pq, o, n) for n in (1, 2, 3))
        per_frame.append(decompose_frame(sc, pq, o, 4)[0])  # one pass order np.mean reproduces bit for bit
    frame_of = {}

    def answer(request, i, head):
        frame = frame_of.setdefault(tuple(map(id, request.images)), len(frame_of))  # frames in first-seen order
        return _answer(per_frame[frame][i][0 if head == "SC" else 1])

    calls = _scripted(scorer, monkeypatch, answer)
    sources, edited = images[:1] * 4, [np.full((64, 64, 3), v, np.uint8) for v in (10, 20, 30, 40)]
    result = scorer.score_frames(sources, edited, "Shift the background to a rooftop.")  # default: 4 passes
    assert result.ok, result.reason
    assert [(r["SC_score"], r["PQ_score"], r["O_score"]) for r in result.value] == PUBLISHED_FRAMES
    assert len(calls) == 1 and len(calls[0]) == 4 * 2 * 4  # frames x prompts x passes in one call


def test_default_is_four_passes_and_one_pass_is_sqrt_of_minima(scorer, images, monkeypatch):
    assert ScorerConfig().passes == 4
    calls = _scripted(scorer, monkeypatch, lambda r, i, head: _answer((20, 18)) if head == "SC"
                      else _answer((22, 19), "natural"))
    result = scorer.score_edit(images[0], images[1], "Replace the background with a beach.", passes=1)
    assert result.ok and set(result.value) == FRAME0_FIELDS and len(calls[0]) == 2
    value = result.value
    assert value["prompt_following"] == pytest.approx(20 / 2.5) and value["consistency"] == pytest.approx(18 / 2.5)
    assert value["perceptual_quality"] == pytest.approx(19 / 2.5)
    assert value["overall"] == pytest.approx(math.sqrt((18 / 2.5) * (19 / 2.5)))
    assert value["SC_reasoning"] == "r" and value["PQ_reasoning"] == "natural"
    # editscore's own prompt text, with the instruction and the 0..25 range substituted in.
    prompts = [r.prompt for r in calls[0]]
    assert any("Editing instruction: Replace the background with a beach." in p for p in prompts)
    assert all("From scale 0 to 25" in p for p in prompts)
    calls.clear()
    assert scorer.score_edit(images[0], images[1], "Replace the background.").ok
    assert len(calls) == 1 and len(calls[0]) == 8  # the default: 4 passes


def test_unusable_answer_in_any_pass_fails_instead_of_guessing(scorer, images, monkeypatch):
    _scripted(scorer, monkeypatch, lambda r, i, head: "I cannot rate this image." if (i, head) == (2, "PQ")
              else _answer((20, 20)))
    result = scorer.score_edit(images[0], images[1], "Replace the background.")
    assert not result.ok and "pass 2: unusable PQ answer" in result.reason
    _scripted(scorer, monkeypatch, lambda r, i, head: '{"reasoning": "r", "score": [30, 1]}' if i == 3
              else _answer((25, 20)))
    broken = scorer.score_frames(images[:2], images[2:], "Replace the background.")
    assert not broken.ok and "pass 3: unusable SC answer" in broken.reason
    assert not scorer.score_frames(images[:2], images[:1], "x").ok


def test_batched_passes_equal_one_call_per_row_on_the_tiny_backbone(scorer, images):
    """Each row samples from its own seed, so the batched call answers exactly what one call per row answers."""
    from sparkle_fast.models.base import to_pil

    pil = [to_pil(im) for im in images]
    requests = [ScoreRequest((pil[0], pil[1]), "Rate the edit: replace the background.", 42 + i) for i in range(2)]
    requests += [ScoreRequest((pil[1],), "Rate the image quality.", 42 + i) for i in range(2)]
    batched = scorer._generate(requests)
    assert batched == [scorer._generate([r])[0] for r in requests]
    assert batched[0] != batched[1] or batched[2] != batched[3]  # the passes' seeds differ


def test_tiny_backbone_whole_path(scorer, images):
    single = scorer.score_edit(images[0], images[1], "Replace the background with a forest.", passes=2)
    assert single.ok, single.reason
    assert set(single.value) == FRAME0_FIELDS and len(single.answers) == 4
    assert all(0.0 <= single.value[k] <= 10.0 for k in ("prompt_following", "consistency", "perceptual_quality",
                                                          "overall"))
    frames = scorer.score_frames(images[:2], images[2:], "Replace the background with a forest.", passes=1)
    assert frames.ok and len(frames.value) == 2
    for record in frames.value:
        assert record["O_score"] == pytest.approx(math.sqrt(record["SC_score"] * record["PQ_score"]))
        assert record["SC_raw_output"].lstrip().startswith("{")


def test_edited_video_record_is_sparkles(scorer, monkeypatch):
    from sparkle_fast.layout_check import RECORD_SCHEMAS, schema_problems
    from sparkle_fast.models.scorer import score_edited_video

    _scripted(scorer, monkeypatch, lambda r, i, head: _answer((25, 20)))
    rng = np.random.RandomState(1)
    source = (rng.rand(81, 16, 16, 3) * 255).astype(np.uint8)
    edited = (rng.rand(81, 16, 16, 3) * 255).astype(np.uint8)
    result = score_edited_video(scorer, "Sparkle_time_000004", "Make it night.", source, edited)
    assert result.ok and result.value["frame_indices"] == [1, 26, 51, 76]
    assert schema_problems(result.value, RECORD_SCHEMAS["edited_video_score"], "record") == []
    assert len(result.value["editscore"]) == 4 and mean_overall(result.value["editscore"]) == pytest.approx(8.0)
    mismatched = score_edited_video(scorer, "x", "p", source, edited[:5])
    assert not mismatched.ok and "must match" in mismatched.reason


@pytest.mark.gpu
def test_batched_passes_equal_one_call_per_row_on_cuda(images):
    """The per-row CUDA generators: a batched call answers what one call per row answers (fp32 tiny backbone)."""
    import torch

    from sparkle_fast.models.base import to_pil

    adapter = EditScoreAdapter.tiny(config=ScorerConfig(reasoning_chars=6, max_new_tokens=48))
    adapter.model.to("cuda")
    pil = [to_pil(im) for im in images]
    requests = [ScoreRequest((pil[0], pil[1]), "Rate the edit.", 42 + i) for i in range(4)]
    requests += [ScoreRequest((pil[1],), "Rate the image quality.", 42 + i) for i in range(4)]
    batched = adapter._generate(requests)
    assert batched == [adapter._generate([r])[0] for r in requests]
    assert next(adapter.model.parameters()).device.type == "cuda" and torch.cuda.is_available()
    adapter.release()
