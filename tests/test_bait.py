"""BAIT's logic checked exactly with a scripted tracker (known masks), and Sparkle r2 grounding loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sparkle_fast.bait import (
    GroundingFileError,
    ScriptedTracker,
    find_r2_record,
    load_r2_records,
    plan_passes,
    run_bait,
    select_anchors,
    usable_box,
)
from sparkle_fast.formats import load_mask
from sparkle_fast.models.json_answers import normalize_bbox
from sparkle_fast.ops.vote_pack import vote_masks_reference

T, H, W = 17, 12, 20  # 16 fps: 2-FPS slots at frames 0, 8, 16


def box(label, bbox):
    return {"label": label, "bbox_2d": bbox}


def frames(t=T, h=H, w=W):
    return np.zeros((t, h, w, 3), dtype=np.uint8)


def random_script(seed=0, density=0.5):
    """Masks that depend on (anchor, object, frame, direction) only, reproducibly."""
    def script(anchor, obj, frame, reverse):
        rng = np.random.default_rng([seed, anchor, obj, frame, int(reverse)])
        return rng.random((H, W)) < density
    return script


def expected_vote(script, passes_spec, t=T):
    """The rule written out: per pass, per covered frame, the union of its objects; strict majority vote."""
    stack = np.zeros((len(passes_spec), t, H, W), dtype=bool)
    for i, (anchor, k, forward, backward) in enumerate(passes_spec):
        for f in range(t):
            if forward and f >= anchor:
                rev = False
            elif backward and f < anchor:
                rev = True
            else:
                continue
            for j in range(k):
                stack[i, f] |= script(anchor, j, f, rev)
    return vote_masks_reference(stack)


# --- boxes and anchors --------------------------------------------------------------------------------------------


def test_usable_box_follows_sparkle_rule_and_rejects_unusable():
    assert usable_box([100, 200, 500, 800], 1280, 720) == normalize_bbox([100, 200, 500, 800], 1280, 720)
    assert usable_box([], W, H) is None
    assert usable_box([1, 2, 3], W, H) is None
    assert usable_box([0, 0, float("nan"), 10], W, H) is None
    assert usable_box(["a", 0, 5, 5], W, H) is None
    assert usable_box([500, 500, 100, 900], W, H) is None  # reversed x collapses to zero width (Sparkle's quirk)
    assert usable_box([-50, -50, 2000, 1500], W, H) == (0, 0, W - 1, H - 1)  # out of range: clamped
    assert usable_box([1000, 1000, 1200, 1200], W, H) is None  # entirely outside: zero area after clamping


def test_select_anchors_skips_empty_slots_and_duplicate_labels():
    grounding = [
        [box("a", []), box("b", [])],                                   # slot 0: nothing usable
        [box("a", [0, 0, 500, 500]), box("b", []), box("a", [0, 0, 900, 900])],  # slot 1: a only, first box
        [box("b", [100, 100, 600, 700])],                               # slot 2: b only ("a" missing)
        [box("a", [0, 0, 500, 500])],                                   # slot 3: past the clip
    ]
    anchors, notes = select_anchors(grounding, [0, 8, 16], W, H)
    assert [(a.slot, a.frame, a.labels) for a in anchors] == [(1, 8, ("a",)), (2, 16, ("b",))]
    assert anchors[0].boxes.tolist() == [list(normalize_bbox([0, 0, 500, 500], W, H))]
    assert anchors[0].boxes.dtype == np.int64
    assert len(notes) == 1 and "ignored" in notes[0]
    assert plan_passes(anchors, "single")[0].backward is False
    with pytest.raises(ValueError, match="mode"):
        plan_passes(anchors, "both")


# --- the tracking plan and the vote ---------------------------------------------------------------------------------


def test_directions_and_frames_covered_follow_the_rule():
    grounding = [[box("a", [0, 0, 500, 500]), box("b", [500, 500, 900, 900])], [box("a", [])],
                 [box("a", [100, 100, 400, 400])]]
    tracker = ScriptedTracker(random_script())
    result = run_bait(tracker, frames(), grounding)
    assert result.ok and result.anchors == [0, 16] and result.passes == 2
    calls = tracker.calls
    # anchor 0: forward 0..16 only (no reverse from frame 0); anchor 16: forward 16, backward 16..0
    assert [f for a, r, f in calls if a == 0 and not r] == list(range(T))
    assert not [c for c in calls if c[0] == 0 and c[1]]
    assert [f for a, r, f in calls if a == 16 and not r] == [16]
    assert [f for a, r, f in calls if a == 16 and r] == list(range(16, -1, -1))
    assert result.steps == len(calls)
    assert result.encoder_calls == T  # every frame once, whatever the number of passes


def test_lockstep_order_steps_each_frame_for_all_passes_together():
    grounding = [[box("a", [0, 0, 500, 500])]] * 3
    tracker = ScriptedTracker(random_script())
    run_bait(tracker, frames(), grounding)
    forward = [f for _, r, f in tracker.calls if not r]
    backward = [f for _, r, f in tracker.calls if r]
    assert forward == sorted(forward) and backward == sorted(backward, reverse=True)
    assert tracker.calls.index(next(c for c in tracker.calls if c[1])) == len(forward)  # forward sweep first


@pytest.mark.parametrize("size", [(12, 20), (11, 13)])
def test_vote_runs_through_the_ops_with_packed_or_bool_passes(size):
    """The vote is ops.vote_and_pack (recorded by record_backends): over passes bit-packed frame by frame when a
    frame's H*W is a multiple of 8 (12x20), over bool passes otherwise (11x13, frames not byte-aligned)."""
    from sparkle_fast.ops._dispatch import record_backends

    h, w = size

    def script(anchor, obj, frame, reverse):
        return np.random.default_rng([7, anchor, obj, frame, int(reverse)]).random((h, w)) < 0.5

    grounding = [[box("a", [0, 0, 999, 999])], [box("a", [100, 100, 600, 600])], [box("a", [0, 0, 500, 999])]]
    with record_backends() as used:
        result = run_bait(ScriptedTracker(script), frames(h=h, w=w), grounding)
    stack = np.zeros((3, T, h, w), bool)  # anchors 0, 8, 16; the pass from frame 0 has no backward half
    for i, anchor in enumerate((0, 8, 16)):
        for f in range(T):
            if f >= anchor or anchor > 0:
                stack[i, f] = script(anchor, 0, f, f < anchor)
    assert result.ok
    np.testing.assert_array_equal(result.mask(), stack.sum(axis=0) >= 2)
    assert used["vote_and_pack"] == "reference"
    assert ("pack_bits" in used) == ((h * w) % 8 == 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vote_equals_union_then_strict_majority(seed):
    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c"]
    grounding = []
    for _ in range(3):  # slots 0, 8, 16 with a random subset of usable boxes
        items = []
        for label in labels:
            if rng.random() < 0.6:
                x0, y0 = rng.integers(0, 500, 2)
                items.append(box(label, [int(x0), int(y0), int(x0) + 300, int(y0) + 300]))
            else:
                items.append(box(label, []))
        grounding.append(items)
    grounding[1] = [box("a", [0, 0, 400, 400])]  # at least one anchor
    script = random_script(seed, density=0.3)
    anchors, _ = select_anchors(grounding, [0, 8, 16], W, H)
    result = run_bait(ScriptedTracker(script), frames(), grounding)
    assert result.ok and result.shape == (T, H, W)
    want = expected_vote(script, [(a.frame, len(a.boxes), True, a.frame > 0) for a in anchors])
    np.testing.assert_array_equal(result.mask(), want)


def test_ties_are_background_and_majority_is_foreground():
    fg = np.ones((H, W), dtype=bool)

    def script(anchor, obj, frame, reverse):  # anchors 0 and 8 say foreground, anchor 16 says background
        return fg if anchor in (0, 8) else ~fg

    two = [[box("a", [0, 0, 500, 500])], [], [box("a", [0, 0, 500, 500])]]  # anchors 0, 16: a 1-1 tie
    assert not run_bait(ScriptedTracker(script), frames(), two).mask().any()
    three = [[box("a", [0, 0, 500, 500])]] * 3  # 2 of 3
    assert run_bait(ScriptedTracker(script), frames(), three).mask().all()


def test_single_pass_baseline_is_forward_only_from_the_first_anchor():
    script = random_script(3)
    grounding = [[box("a", [])], [box("a", [0, 0, 600, 600]), box("b", [100, 100, 900, 900])],
                 [box("a", [0, 0, 500, 500])]]
    tracker = ScriptedTracker(script)
    result = run_bait(tracker, frames(), grounding, mode="single")
    assert result.ok and result.passes == 1 and result.anchors == [8, 16]
    assert {(a, r) for a, r, _ in tracker.calls} == {(8, False)}
    mask = result.mask()
    assert not mask[:8].any()
    np.testing.assert_array_equal(mask, expected_vote(script, [(8, 2, True, False)]))


def test_zero_usable_anchors_is_a_rejection_with_the_reason():
    tracker = ScriptedTracker(random_script())
    result = run_bait(tracker, frames(), [[box("a", [])], [box("b", [900, 900, 100, 100])], []])
    assert not result.ok and "no usable anchor" in result.reason and result.packed is None
    assert tracker.opened == 0
    assert not run_bait(tracker, frames(), []).ok


def test_tracker_failure_is_a_result_not_a_crash():
    result = run_bait(ScriptedTracker(lambda a, o, f, r: np.ones((H + 1, W), bool)), frames(),
                      [[box("a", [0, 0, 500, 500])]])
    assert not result.ok and "tracking failed" in result.reason and "expected bool" in result.reason


def test_one_frame_clip_and_explicit_anchor_frames():
    script = random_script(5)
    result = run_bait(ScriptedTracker(script), frames(t=1), [[box("a", [0, 0, 999, 999])]])
    assert result.ok and result.shape == (1, H, W)
    np.testing.assert_array_equal(result.mask(), expected_vote(script, [(0, 1, True, False)], t=1))
    result = run_bait(ScriptedTracker(script), frames(t=5), [[box("a", [0, 0, 999, 999])]], anchor_frames=[4])
    assert result.anchors == [4]
    np.testing.assert_array_equal(result.mask(), expected_vote(script, [(4, 1, True, True)], t=5))


def test_bad_frames_are_a_clear_error():
    with pytest.raises(ValueError, match=r"uint8 RGB \(T, H, W, 3\)"):
        run_bait(ScriptedTracker(random_script()), np.zeros((3, 4, 5), np.uint8), [])


def test_saved_npz_is_sparkle_format(tmp_path):
    script = random_script(7)
    result = run_bait(ScriptedTracker(script), torch.zeros((T, H, W, 3), dtype=torch.uint8),
                      [[box("a", [0, 0, 500, 500])], [box("a", [500, 500, 999, 999])], [box("b", [0, 0, 999, 999])]])
    path = result.save(tmp_path / "m.npz")
    with np.load(path) as data:
        t, h, w = data["shape"]
        raw = np.unpackbits(data["mask"])[: t * h * w].reshape(t, h, w).astype(bool)  # Sparkle's README recipe
    np.testing.assert_array_equal(raw, result.mask())
    np.testing.assert_array_equal(load_mask(path), result.mask())
    summary = result.summary()
    assert summary["frames"] == T and summary["passes"] == 3 and summary["encoder_calls"] == T


# --- Sparkle r2 records ----------------------------------------------------------------------------------------------


def write_jsonl(path, records, extra_lines=()):
    path.write_text("\n".join([json.dumps(r) for r in records] + list(extra_lines)) + "\n")
    return path


def r2(sample_id, frame_objects):
    return {"id": sample_id, "prompt": "p", "edit_type": "location", "round1_labels": ["woman", "hat"],
            "round1_objects": [], "frame_objects": frame_objects}


def test_load_r2_records_with_empty_and_out_of_range_boxes(tmp_path):
    fo = [[{"bbox_2d": [448, 26, 765, 998], "label": "woman"}, {"bbox_2d": [], "label": "hat"}],
          [{"bbox_2d": [], "label": "woman"}, {"bbox_2d": [], "label": "hat"}],
          [{"bbox_2d": [-20, 950, 1100, 1300], "label": "woman"}, "junk"]]
    path = write_jsonl(tmp_path / "r2.jsonl", [r2("Sparkle_location_000000", fo), r2("Sparkle_location_000001", [])],
                       extra_lines=["", "   "])
    records = load_r2_records(path)
    assert sorted(records) == ["Sparkle_location_000000", "Sparkle_location_000001"]
    rec = find_r2_record(path, "Sparkle_location_000000")
    assert rec.labels == ["woman", "hat"] and rec.edit_type == "location" and len(rec.frame_objects) == 3
    anchors, _ = select_anchors(rec.frame_objects, [0, 8, 16], 1280, 720)
    assert [(a.frame, a.labels) for a in anchors] == [(0, ("woman",)), (16, ("woman",))]
    assert anchors[1].boxes.tolist() == [[0, 684, 1279, 719]]  # clamped into the frame


def test_r2_errors_name_the_file_and_what_is_wrong(tmp_path):
    with pytest.raises(GroundingFileError, match="no such grounding file"):
        load_r2_records(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(r2("x", [])) + "\n{not json\n")
    with pytest.raises(GroundingFileError, match=r"bad.jsonl:2: not JSON"):
        load_r2_records(bad)
    r1 = write_jsonl(tmp_path / "r1.jsonl", [{"id": "x", "round1_objects": []}])
    with pytest.raises(GroundingFileError, match="frame_objects"):
        load_r2_records(r1)
    two = write_jsonl(tmp_path / "two.jsonl", [r2("a", []), r2("b", [])])
    with pytest.raises(GroundingFileError, match="no record with id 'c'"):
        find_r2_record(two, "c")
    with pytest.raises(GroundingFileError, match="holds 2 records"):
        find_r2_record(two)
    assert find_r2_record(write_jsonl(tmp_path / "one.jsonl", [r2("a", [])])).id == "a"


# --- the `bait` command ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_and_grounding(tmp_path_factory):
    from sparkle_fast.video import write_video

    folder = tmp_path_factory.mktemp("bait_cli")
    video = write_video(folder / "Sparkle_location_000007.mp4",
                        (np.random.default_rng(0).random((9, 32, 48, 3)) * 255).astype(np.uint8), fps=16)
    fo = [[box("woman", [100, 100, 600, 900])], [box("woman", []), box("hat", [300, 0, 700, 400])]]
    grounding = write_jsonl(folder / "r2.jsonl", [r2("Sparkle_location_000007", fo), r2("other", [])])
    return video, grounding


def test_cli_writes_the_mask_and_prints_the_summary(clip_and_grounding, tmp_path, capsys):
    from sparkle_fast.driver.cli import main

    video, grounding = clip_and_grounding
    out = tmp_path / "mask.npz"
    assert main(["bait", str(video), "--grounding", str(grounding), "--models", "tiny", "--device", "cpu",
                 "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["id"] == "Sparkle_location_000007"  # from the file name
    assert (summary["frames"], summary["height"], summary["width"]) == (9, 32, 48)
    assert summary["anchors"] == [0, 8] and summary["passes"] == 2 and summary["encoder_calls"] == 9
    assert summary["seconds"] > 0
    assert load_mask(out).shape == (9, 32, 48)


def test_cli_errors_exit_2_with_a_clear_message(clip_and_grounding, tmp_path, capsys):
    from sparkle_fast.driver.cli import main

    video, grounding = clip_and_grounding
    out = str(tmp_path / "m.npz")
    assert main(["bait", str(tmp_path / "none.mp4"), "--grounding", str(grounding), "--out", out]) == 2
    assert "cannot read the video" in capsys.readouterr().err
    assert main(["bait", str(video), "--grounding", str(tmp_path / "no.jsonl"), "--out", out]) == 2
    assert "no such grounding file" in capsys.readouterr().err
    assert main(["bait", str(video), "--grounding", str(grounding), "--id", "nope", "--out", out]) == 2
    assert "no record with id 'nope'" in capsys.readouterr().err
    assert main(["bait", str(video), "--grounding", str(grounding), "--models", str(tmp_path), "--out", out]) == 2
    assert "[sam3]" in capsys.readouterr().err
    assert main(["bait", str(video), "--grounding", str(grounding), "--id", "other", "--device", "cpu",
                 "--out", out]) == 1  # no anchors: rejected with the reason, nothing written
    assert "no usable anchor" in json.loads(capsys.readouterr().out)["reason"]
    assert not (tmp_path / "m.npz").exists()
