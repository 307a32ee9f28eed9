"""bait.min_votes (stage 4 passes config.bait.min_votes, 0 = None): run_bait -> ops.vote_and_pack, capped at the
pass count."""

from __future__ import annotations

import numpy as np

from sparkle_fast.bait import ScriptedTracker, run_bait

T, H, W = 17, 8, 12  # 16 fps: 2-FPS anchors at frames 0, 8, 16


def _grounding():
    return [[{"bbox_2d": [0, 0, 500, 500], "label": "a"}]] * 3  # three anchors, three passes


def _script(anchor, obj, frame, reverse):
    """Anchor 0 says the left half is foreground, anchor 8 the left two thirds, anchor 16 everything."""
    mask = np.zeros((H, W), bool)
    mask[:, : {0: W // 2, 8: 2 * W // 3, 16: W}[anchor]] = True
    return mask


def _mask(min_votes):
    frames = np.zeros((T, H, W, 3), np.uint8)
    result = run_bait(ScriptedTracker(_script), frames, _grounding(), min_votes=min_votes)
    assert result.ok and result.passes == 3
    return result.mask()


def test_min_votes_changes_the_vote():
    columns = lambda m: int(m[0, 0].sum())  # noqa: E731  foreground columns of frame 0's first row
    assert columns(_mask(None)) == 2 * W // 3  # strict majority: 2 of 3
    assert columns(_mask(1)) == W  # any pass
    assert columns(_mask(3)) == W // 2  # all three
    assert columns(_mask(7)) == W // 2  # more than the passes: all of them

