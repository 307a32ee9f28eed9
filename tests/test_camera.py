"""camera.analyze on synthetic clips of known motion (real photographs warped by known homographies), the
decision rule's hard cases, and the camera-motion CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparkle_fast import camera
from sparkle_fast.camera_synthetic import corner_error, make_clip
from sparkle_fast.driver.cli import main

SIZE = (288, 384)

CASES = {  # name: (make_clip kwargs, expected static)
    "static": (dict(motion="static"), True),
    "static-noise": (dict(motion="static", noise=3.0), True),
    "static-flicker": (dict(motion="static", flicker=0.2), True),
    "static-subject20": (dict(motion="static", subject_fraction=0.2, subject_speed=4.0), True),
    "pan-0.5": (dict(motion="pan", speed=0.5), False),
    "drift-0.25": (dict(motion="drift", speed=0.6, n_frames=8), False),
    "shake-1.5": (dict(motion="shake", speed=1.5), False),
    "zoom-1": (dict(motion="zoom", speed=1.0, noise=2.0), False),
    "rotate-1": (dict(motion="rotate", speed=1.0), False),
    "combo-5": (dict(motion="combo", speed=5.0), False),
    "pan-subject40": (dict(motion="pan", speed=3.0, subject_fraction=0.4, subject_speed=-3.0), False),
}


@pytest.fixture(scope="module")
def results():
    clips = {name: make_clip(size=SIZE, seed=i, **kw) for i, (name, (kw, _)) in enumerate(CASES.items())}
    out = camera.analyze_many([c.frames for c in clips.values()])  # one batch: every pair in one launch
    return clips, dict(zip(clips, out, strict=True))


@pytest.mark.parametrize("name", list(CASES))
def test_static_or_moving_decided_right(results, name):
    clips, res = results
    r = res[name]
    assert r.reason is None, r.reason
    assert r.static is CASES[name][1], (name, r.max_displacement_px, r.pair_displacement_px)
    assert r.pairs == len(clips[name].frames) - 1 and r.tracked_points >= 16


@pytest.mark.parametrize("name", ["static", "static-noise", "pan-0.5", "shake-1.5", "zoom-1", "rotate-1", "combo-5"])
def test_recovered_homographies_within_half_a_pixel(results, name):
    clips, res = results
    clip, r = clips[name], res[name]
    total = np.eye(3)
    for k, h in enumerate(r.homographies):
        total = h @ total
        assert corner_error(total, clip.homographies[k + 1], SIZE) <= 0.5


@pytest.mark.parametrize("name", ["static", "static-noise", "pan-0.5", "shake-1.5", "zoom-1", "rotate-1"])
def test_homographies_from_the_first_frame_within_half_a_pixel(results, name):
    clips, res = results
    clip, r = clips[name], res[name]
    assert r.from_first.shape == (len(clip.frames) - 1, 3, 3)
    for k, h in enumerate(r.from_first):
        assert corner_error(h, clip.homographies[k + 1], SIZE) <= 0.5


# The hard case of the issue: a large textured subject moving coherently in front of a static camera. Before the
# still-points test, 4 of these (the calibration grid's static clips with 40% subjects) measured 2-13 px: the pair
# homographies absorbed part of the subject. And its mirror image: the camera follows the subject (the subject still
# in the frame, the background moving), which a "find the still points" rule must not call static.
LARGE_SUBJECT = {  # name: (make_clip kwargs, expected static)
    "static-subject40-a": (dict(motion="static", subject_fraction=0.4, photo="coffee", seed=111), True),
    "static-subject40-b": (dict(motion="static", subject_fraction=0.4, photo="coffee", flicker=0.2, seed=113), True),
    "static-subject40-c": (dict(motion="static", subject_fraction=0.4, noise=3.0, seed=7), True),
    "static-subject40-d": (dict(motion="static", subject_fraction=0.4, photo="coffee", noise=3.0, seed=76), True),
    "follow-pan-subject40": (dict(motion="pan", speed=0.5, subject_fraction=0.4, subject_speed=0.0, noise=2.0,
                                  seed=5), False),
    "follow-zoom-subject40": (dict(motion="zoom", speed=1.0, subject_fraction=0.4, subject_speed=0.0, photo="coffee",
                                   noise=2.0, seed=6), False),
    # 0.25 px per pair is below the RANSAC threshold: one pair homography fitted background and subject at once and
    # measured 1.86 px (static) before the frame-0 tracks were used (truth: 2.5 px over the clip)
    "follow-rotate-0.25-subject40": (dict(motion="rotate", speed=0.25, subject_fraction=0.4, subject_speed=0.0,
                                          photo="coffee", noise=2.0, seed=151), False),
    "pan-0.25-subject40": (dict(motion="pan", speed=0.25, subject_fraction=0.4, noise=2.0, seed=9), False),
}


@pytest.fixture(scope="module")
def large_subject_results():
    clips = {name: make_clip(size=SIZE, n_frames=11, **{"subject_speed": 3.0, **kw})
             for name, (kw, _) in LARGE_SUBJECT.items()}
    return clips, dict(zip(clips, camera.analyze_many([c.frames for c in clips.values()]), strict=True))


@pytest.mark.parametrize("name", list(LARGE_SUBJECT))
def test_large_subject_static_or_moving_decided_right(large_subject_results, name):
    _, res = large_subject_results
    r = res[name]
    assert r.static is LARGE_SUBJECT[name][1], (name, r.max_displacement_px, r.pair_displacement_px, r.method)
    if r.static:
        assert r.method == "still-points" and r.max_displacement_px < 0.5
    else:
        assert r.method == "homography" and r.max_displacement_px > 2.0


def test_gain_normalization_ignores_a_moving_subject():
    """Flicker is divided out by the median pixel ratio to frame 0; a subject on a third of the frame does not move
    it, and the background's gray values come back equal to frame 0's (to rounding)."""
    clip = make_clip("static", size=(144, 192), n_frames=3, subject_fraction=0.3, subject_speed=6.0, seed=3)
    frames = clip.frames.astype(np.float32)
    frames[1] *= 0.8
    frames[2] *= 1.15
    frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    gray = np.asarray(camera._gray_frames(frames)).astype(int)
    same = np.abs(gray[1] - gray[0]) <= 2
    assert same.mean() > 0.6 and (np.abs(gray[2] - gray[0]) <= 2).mean() > 0.6


def test_h264_compressed_clip(tmp_path):
    from sparkle_fast.video import write_video

    moving = make_clip("pan", speed=1.0, size=(144, 192), n_frames=5, seed=1)
    still = make_clip("static", size=(144, 192), n_frames=5, seed=2)
    paths = [write_video(tmp_path / "moving.mp4", moving.frames, fps=2, crf=28),
             write_video(tmp_path / "still.mp4", still.frames, fps=2, crf=28)]
    r_moving, r_still = camera.analyze_many(paths, fps=2)
    assert r_still.static is True and r_still.max_displacement_px < 0.5
    assert r_moving.static is False and abs(r_moving.max_displacement_px - 4.0) < 1.0


def test_scene_cut_short_and_textureless_clips():
    cut = make_clip("static", size=(144, 192), n_frames=4, cut_at=2)
    flat = np.full((3, 144, 192, 3), 90, np.uint8)
    r_cut, r_one, r_flat = camera.analyze_many([cut.frames, cut.frames[:1], flat])
    assert r_cut.static is False and "scene cut" in r_cut.reason and "1 and 2" in r_cut.reason
    assert r_one.static is None and "too short" in r_one.reason
    assert r_flat.static is None and "textureless" in r_flat.reason


def test_corner_displacement_of_known_homographies():
    shift = np.array([[1, 0, 3.0], [0, 1, -4.0], [0, 0, 1]])
    assert camera.corner_displacement(shift, (10, 10)) == pytest.approx(5.0)
    assert camera.corner_displacement(np.eye(3), (10, 10)) == 0.0


def test_cli_json_lines_and_unreadable_video(tmp_path, capsys):
    from sparkle_fast.video import write_video

    good = write_video(tmp_path / "still.mp4", make_clip("static", size=(144, 192), n_frames=3).frames, fps=2)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    assert main(["camera-motion", str(good), str(bad), "--json", "--threshold-px", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["video"] for d in lines] == [str(good), str(bad)]
    assert lines[0]["static"] is True and lines[0]["error"] is None and lines[0]["pairs"] == 2
    assert lines[1]["static"] is None and lines[1]["error"] and "broken.mp4" in lines[1]["error"]
    assert {"max_displacement_px", "inlier_ratio"} <= set(lines[0])
    with pytest.raises(SystemExit) as exc:
        main(["camera-motion"])
    assert exc.value.code == 2


def test_real_clips_with_camera_motion_are_not_static(real_clips):
    """Real footage: a handheld phone clip, a clip with scene cuts and a panning animation are all rejected."""
    from sparkle_fast import camera

    results = {name: camera.analyze(str(path)) for name, path in real_clips.items()}
    assert all(result.static is False for result in results.values()), results
    assert "cut" in (results["bikes"].reason or "")


def test_calibration_script_quick_runs_and_counts_wrong_verdicts():
    """bench/calibrate_camera.py --quick: the table's rows and the wrong-verdict count (none on its quick cases)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "calibrate_camera.py"
    result = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 16 and all(row.rstrip(" |").endswith(("static", "moving")) for row in rows)
    assert "wrong verdicts" in result.stdout and ": 0 of 16" in result.stdout


def test_side_share_prefers_the_surrounding_set_over_a_denser_subject():
    """The background model is the one holding the larger share of each frame side's tracked points: a textured
    subject block with every point tracked loses to a plain background that tracks only a few points per side."""
    rows, cols = camera.CameraThresholds().cells
    r, c = np.divmod(np.arange(rows * cols), cols)
    subject = (r < 7) & (c < 9)                          # top-left block: touches the top and left sides
    sparse_background = ~subject & ((r + c) % 4 == 0)    # a plain background: one point in four tracks
    tracked = (subject | sparse_background)[None]
    share_subject = camera.side_share(subject[None], tracked, (rows, cols))
    share_background = camera.side_share(sparse_background[None], tracked, (rows, cols))
    assert subject.sum() > sparse_background.sum()       # counted in points, the subject would win
    assert share_background[0] > 2.0 > share_subject[0]


def test_camera_following_a_subject_on_a_plain_background_measures_the_background():
    """A 40% textured subject the camera follows (still in the frame) over a weakly textured photograph: the
    subject holds more tracked points than the background. Counting border points chose the subject's (zero)
    motion here, 4.97 px off at the last frame; shares of the frame sides choose the background."""
    clip = make_clip("pan", speed=0.5, photo="coffee", subject_fraction=0.4, subject_speed=0.0, noise=2.0,
                     n_frames=11, size=SIZE, seed=103)
    r = camera.analyze(clip.frames)
    assert r.static is False and r.method == "homography"
    assert max(corner_error(h, clip.homographies[k + 1], SIZE) for k, h in enumerate(r.from_first)) <= 0.5


def test_a_clips_result_does_not_depend_on_its_batch():
    """RANSAC draws are keyed by the pair's index within its clip: a clip analyzed alone, first or last in a batch
    gets the same homographies and verdict (a borderline clip once flipped between 1.97 and 2.04 px by position)."""
    clips = [make_clip(motion, speed=speed, subject_fraction=0.4, subject_speed=s_speed, photo="coffee", noise=2.0,
                       n_frames=6, size=(144, 192), seed=seed).frames
             for motion, speed, s_speed, seed in (("rotate", 0.5, 0.0, 1), ("pan", 1.0, 3.0, 2), ("zoom", 1.0, 3.0, 3))]
    alone = camera.analyze(clips[2])
    for batch in (clips, clips[::-1]):
        r = camera.analyze_many(batch)[[id(c) for c in batch].index(id(clips[2]))]
        assert r.method == alone.method == "homography"
        assert np.array_equal(r.homographies, alone.homographies) and np.array_equal(r.from_first, alone.from_first)
        assert r.max_displacement_px == alone.max_displacement_px and r.static == alone.static


def test_fast_camera_with_a_subject_is_followed_frame_by_frame():
    """A combined pan/zoom/rotation at 3 px per sampled frame with a 40% subject: 30 px from frame 0 by the end.
    Tracked straight from frame 0, the background was lost late and the fit followed the subject (67 px off at the
    last frame); followed frame by frame, every frame 0 -> t homography is within 1 px (measured 0.59 px)."""
    clip = make_clip("combo", speed=3.0, photo="coffee", subject_fraction=0.4, subject_speed=3.0, noise=2.0,
                     n_frames=11, size=SIZE, seed=146)
    r = camera.analyze(clip.frames)
    assert r.static is False
    assert max(corner_error(h, clip.homographies[k + 1], SIZE) for k, h in enumerate(r.from_first)) <= 1.0


def test_accuracy_script_quick_runs():
    """bench/camera_accuracy.py --quick: one table row for 4 moving-camera clips with a 40% subject, none static;
    measured at 3 of 4 within 0.5 px with a median worst corner error of 0.23 px (CPU, this commit's camera filter),
    so fewer than 3 or a median above 0.35 px is a regression."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "camera_accuracy.py"
    result = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("| 40%")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "4" and cells[4] == "0"
    assert int(cells[2]) >= 3 and float(cells[3]) <= 0.35, row
