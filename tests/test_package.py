"""`sparkle-fast package` and `validate` on a release: the README's shard names and members, previews, card and
checksums from kept samples only; packaging again adds shards without rewriting finished ones; kill -9 then rerun
gives the same bytes; validate names the file of an orphan, a truncated tar, a wrong frame count; the webdataset
format reads back with webdataset's own reader. Plus what trainers need: no CSV for a theme without kept samples,
4 scored frames for every clip length, the Kiwi-Edit crop note.

The run folder is built directly (manifest rows + tiny real media files), without running any model."""

from __future__ import annotations

import csv
import hashlib
import json
import signal
import subprocess
import sys
import tarfile
import warnings

import numpy as np
import pytest

from sparkle_fast import formats, layout, video
from sparkle_fast.driver import package
from sparkle_fast.driver.cli import main
from sparkle_fast.driver.manifest import Manifest, SampleRow
from sparkle_fast.layout_check import check_dataset

T, H, W = 5, 32, 48
CLIP = {"fps": 16, "max_frames": T, "width": W, "height": H}
CONFIG = {"clip": CLIP, "run": {"max_attempts": 2, "seed": 0}}
EDITSCORE = {"prompt_following": 9.0, "consistency": 8.0, "perceptual_quality": 8.5, "overall": 8.4,
             "SC_reasoning": "fine", "PQ_reasoning": "fine"}
FRAME_SCORE = {"SC_score": 9.0, "PQ_score": 8.5, "O_score": 8.7, "SC_score_reasoning": "ok",
               "PQ_score_reasoning": "ok", "SC_raw_output": "{}", "PQ_raw_output": "{}"}
# id -> fate: "kept", ("rejected", stage), "pending" (stage 3 not run yet)
FATES = {
    "Sparkle_location_000000": "kept", "Sparkle_location_000001": "kept", "Sparkle_location_000002": "kept",
    "Sparkle_location_000003": ("rejected", 2), "Sparkle_location_000004": ("rejected", 5),
    "Sparkle_location_000005": "pending",
    "Sparkle_season_000000": "kept", "Sparkle_time_000000": ("rejected", 1),
}
KEPT = sorted(s for s, fate in FATES.items() if fate == "kept")


def _clip(seed, frames=T):
    return np.random.default_rng(seed).integers(0, 255, (frames, H, W, 3), dtype=np.uint8)


def _finish(manifest, out, sample, theme, stage, seed):
    """Write the artifacts of `stage` for a sample and record it done, with Sparkle-shaped jsonl lines."""
    art = lambda kind: out.artifact(theme, kind, sample)  # noqa: E731
    prompt = f"Put {sample} on a beach."
    record = {}
    if stage == 1:
        video.write_video(art("source_video"), _clip(seed), fps=16)
        video.write_image(art("source_frame0"), _clip(seed)[0])
    elif stage == 2:
        video.write_image(art("edited_frame0"), _clip(seed + 1)[0])
        record = {"prompt": prompt, "chosen_keyword": f"coast: beach {seed % 2}", "original_scene": "a room",
                  "jsonl": {"edited_frame0_score": {"id": sample, "prompt": prompt, "editscore": EDITSCORE}}}
    elif stage == 3:
        video.write_image(art("edited_frame0_foreground_removed"), _clip(seed + 2)[0])
        video.write_video(art("edited_background_video"), _clip(seed + 3), fps=16)
        r1 = {"id": sample, "prompt": prompt, "edit_type": theme, "round1_labels": ["cat"],
              "round1_objects": [{"bbox_2d": [1, 2, 30, 40], "label": "cat"}]}
        record = {"jsonl": {"foreground_grounding_r1": r1, "edited_frame0_foreground_removed_score":
                            {"id": sample, "prompt": "Remove the cat.", "editscore": EDITSCORE}}}
    elif stage == 4:
        formats.save_mask(art("source_video_mask"), np.random.default_rng(seed).random((T, H, W)) < 0.3)
    elif stage == 5:
        video.write_video(art("edited_video_canny"), _clip(seed + 4), fps=16)
        video.write_video(art("edited_video"), _clip(seed + 5), fps=16)
        record = {"jsonl": {"edited_video_score": {"id": sample, "prompt": prompt, "frame_indices": [1, 2, 3, 4],
                                                   "editscore": [FRAME_SCORE] * 4}}}
    manifest.finish(sample, stage, "done", score=9.0, record=record)


def make_run(root):
    """A run folder: three kept location samples, one kept season sample, rejects at stages 1, 2 and 5 (whose
    artifacts stay in the working folder), one sample still in progress."""
    out = layout.SparkleLayout(root)
    with Manifest(out.root / "manifest.sqlite") as manifest:
        manifest.add_samples([SampleRow(s, s.split("_")[1], f"{s}.mp4", None) for s in FATES])
        manifest.record_config(CONFIG)
        for seed, (sample, fate) in enumerate(sorted(FATES.items())):
            theme = sample.split("_")[1]
            last = {"kept": 5, "pending": 2}.get(fate) if isinstance(fate, str) else fate[1] - 1
            for stage in range(1, last + 1):
                _finish(manifest, out, sample, theme, stage, 10 * seed)
            if isinstance(fate, tuple):
                if fate[1] == 1:
                    video.write_video(out.artifact(theme, "source_video", sample), _clip(seed), fps=16)
                if fate[1] == 5:  # the stage-5 reject has its control video and score line, not an edited video
                    video.write_video(out.artifact(theme, "edited_video_canny", sample), _clip(seed), fps=16)
                manifest.finish(sample, fate[1], "rejected", score=3.0, reason=f"EditScore {3.0 + seed:.1f} < 8",
                                record={"jsonl": {"edited_video_score": {
                                    "id": sample, "prompt": "p", "frame_indices": [1, 2, 3, 4],
                                    "editscore": [FRAME_SCORE] * 4}}} if fate[1] == 5 else None)
    (out.root / "config.json").write_text(json.dumps(CONFIG))
    return out


def shard_size(out):
    """Small enough that each location video shard holds one sample (three parts)."""
    biggest = max(p.stat().st_size for p in out.root.rglob("*.mp4"))
    return biggest + 512 + 1024 + 511


def tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run") / "out")


@pytest.fixture(scope="module")
def release(run_dir, tmp_path_factory):
    target = tmp_path_factory.mktemp("release") / "Sparkle"
    assert main(["package", str(run_dir.root), "--to", str(target), "--shard-size", str(shard_size(run_dir)),
                 "--preview", "2"]) == 0
    return target


def test_release_follows_the_readme(release, run_dir):
    names = tree(release)
    shards = sorted(n for n in names if n.endswith(".tar"))
    assert [n for n in shards if "/" not in n] == [
        *(f"location_edited_video_part{i:02d}.tar" for i in range(3)),
        *(f"location_source_video_part{i:02d}.tar" for i in range(3)),
        "season_edited_video_part00.tar", "season_source_video_part00.tar"]
    intermediate = [n for n in shards if n.startswith("intermediate_data/")]
    assert {n.split("/")[1].rsplit("_part", 1)[0] for n in intermediate} == {
        f"{theme}_{kind}" for theme in ("location", "season") for kind in layout.INTERMEDIATE_ARTIFACTS}
    members = {}
    for name in shards:
        with tarfile.open(release / name) as tar:
            for info in tar.getmembers():
                assert (info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode) == (
                    package.TAR_MTIME, 0, 0, "", "", 0o644) and info.isreg()
                members[info.name] = (name, tar.extractfile(info).read())
    for sample in KEPT:
        theme = sample.split("_")[1]
        for kind, ext in {**layout.THEME_ARTIFACTS, **layout.INTERMEDIATE_ARTIFACTS}.items():
            shard, data = members[f"{theme}/{kind}/{sample}{ext}"]  # the README's internal path
            assert shard.startswith("intermediate_data/" if kind in layout.INTERMEDIATE_ARTIFACTS else theme)
            assert data == run_dir.artifact(theme, kind, sample).read_bytes()
    assert len(members) == len(KEPT) * 8
    # Previews: the first 2 kept samples of each theme, every folder; prompts only for themes with kept samples.
    assert sorted(p for p in names if p.startswith("location/")) == [
        f"location/{k}/Sparkle_location_00000{i}.mp4" for k in ("edited_video", "source_video") for i in (0, 1)]
    assert len([p for p in names if p.startswith("intermediate_data/location/") and "Sparkle_" in p]) == 12
    assert sorted(p for p in names if p.startswith("prompts/")) == [
        "prompts/location_train.csv", "prompts/location_train_metadata.jsonl", "prompts/season_train.csv",
        "prompts/season_train_metadata.jsonl"]
    with open(release / "prompts/location_train.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["task"] for r in rows] == KEPT[:3]
    assert rows[0]["src_video"] == "location/source_video/Sparkle_location_000000.mp4"
    # No rejected (or pending) sample anywhere but rejected.jsonl.
    not_kept = [s for s in FATES if s not in KEPT]
    for name, data in names.items():
        if name != "rejected.jsonl" and not name.endswith(".tar"):
            assert not any(s in name or s.encode() in data for s in not_kept), name
    assert not any(s in m for m in members for s in not_kept)
    rejected = {r["id"]: r for r in layout.read_jsonl(release / "rejected.jsonl")}
    assert set(rejected) == {"Sparkle_location_000003", "Sparkle_location_000004", "Sparkle_time_000000"}
    assert (rejected["Sparkle_location_000004"]["stage"], rejected["Sparkle_location_000004"]["status"]) == (5,
                                                                                                           "rejected")
    assert "edited_video_score" in rejected["Sparkle_location_000004"]["records"]
    # Checksums in sha256sum's format cover every other file.
    sums = dict(reversed(line.split("  ")) for line in (release / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == set(names) - {"SHA256SUMS"}
    assert all(hashlib.sha256(names[n]).hexdigest() == digest for n, digest in sums.items())
    card = (release / "README.md").read_text()
    assert "| location | 3 |" in card and "| season | 1 |" in card and "| 5 synthesize | rejected | 1 |" in card
    assert "| location | coast (" in card and "np.unpackbits" in card and '"max_frames": 5' in card
    assert "EditScore #" in card
    assert check_dataset(release) == []


def test_extracting_the_shards_resolves_every_csv_path(release, tmp_path):
    """As the README says: `tar -xf` every root shard at the root and every intermediate shard in
    intermediate_data/: every CSV path and every intermediate of every row resolves."""
    target = tmp_path / "download"
    for shard in sorted(release.glob("*.tar")):
        with tarfile.open(shard) as tar:
            tar.extractall(target, filter="data")
    for shard in sorted((release / "intermediate_data").glob("*.tar")):
        with tarfile.open(shard) as tar:
            tar.extractall(target / "intermediate_data", filter="data")
    extracted = layout.SparkleLayout(target)
    for theme in ("location", "season"):
        with open(release / "prompts" / f"{theme}_train.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                assert (target / row["src_video"]).is_file() and (target / row["tgt_video"]).is_file()
                for kind in layout.INTERMEDIATE_ARTIFACTS:
                    assert extracted.artifact(theme, kind, row["task"]).is_file()


def test_validate_command_on_a_release(release, capsys):
    assert main(["validate", str(release)]) == 0
    assert "conforms to Sparkle's release" in capsys.readouterr().out


def _copy_release(release, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(release, copy)
    return copy


def _add_orphan_member(copy):
    shard = copy / "location_source_video_part02.tar"
    with tarfile.open(shard) as tar:
        members = [(i.name, tar.extractfile(i).read()) for i in tar.getmembers()]
    extra = ("location/source_video/Sparkle_location_000004.mp4", members[0][1])
    package.write_tar(shard, [*members, extra])
    return f"{shard}:location/source_video/Sparkle_location_000004.mp4: orphan"


def _add_orphan_preview(copy):
    path = copy / "location" / "edited_video" / "Sparkle_location_000003.mp4"
    path.write_bytes(b"a rejected sample's video")
    return f"{path}: orphan"


def _truncate(copy):
    shard = copy / "intermediate_data" / "location_edited_background_video_part00.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # a download cut short (the tail past the archive is padding)
    return f"{shard}: truncated tar"


def _wrong_frame_count(copy):
    shard = copy / "location_edited_video_part01.tar"
    longer = copy.parent / "longer.mp4"
    video.write_video(longer, _clip(99, frames=9), fps=16)
    package.write_tar(shard, [("location/edited_video/Sparkle_location_000001.mp4", longer)])
    return f"{shard}:location/edited_video/Sparkle_location_000001.mp4: 9 frames"


def _missing_shard(copy):
    shard = copy / "location_source_video_part01.tar"
    shard.unlink()
    return f"{shard}: listed in SHA256SUMS but missing"


def _member_path_without_theme(copy):
    shard = copy / "season_edited_video_part00.tar"
    with tarfile.open(shard) as tar:
        (info,) = tar.getmembers()
        data = tar.extractfile(info).read()
    package.write_tar(shard, [("edited_video/Sparkle_season_000000.mp4", data)])
    return f"{shard}:edited_video/Sparkle_season_000000.mp4: not a member Sparkle's README names"


@pytest.mark.parametrize("break_it", [_add_orphan_member, _add_orphan_preview, _truncate, _wrong_frame_count,
                                      _missing_shard, _member_path_without_theme],
                         ids=["orphan-member", "orphan-preview", "truncated-tar", "frame-count", "missing-shard",
                              "member-path"])
def test_validate_names_the_file(release, tmp_path, break_it):
    copy = _copy_release(release, tmp_path)
    expected = break_it(copy)
    problems = check_dataset(copy)
    assert any(p.startswith(expected) for p in problems), problems


def test_packaging_again_adds_shards_without_rewriting_finished_ones(tmp_path):
    out = make_run(tmp_path / "out")
    target = tmp_path / "release"
    size = shard_size(out)
    first = package.package_release(out.root, target, shard_bytes=size, preview=1)
    shard_files = sorted(target.rglob("*.tar"))
    stats = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shard_files}
    again = package.package_release(out.root, target)  # the release's own shard size and preview
    assert again["shards_written"] == [] and first["shards_written"]
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shard_files} == stats
    # The pending sample finishes: new shards for location's videos; full shards untouched; the open
    # intermediate shard (under the size) is rewritten with the new sample.
    with Manifest(out.root / "manifest.sqlite") as manifest:
        for stage in (3, 4, 5):
            _finish(manifest, out, "Sparkle_location_000005", "location", stage, 500)
    third = package.package_release(out.root, target)
    assert "location_source_video_part03.tar" in third["shards_written"]
    state = json.loads((target / "release_state.json").read_text())
    for path, stat in stats.items():
        name = path.relative_to(target).as_posix()
        if state["shards"][name]["finished"]:
            assert (path.stat().st_ino, path.stat().st_mtime_ns) == stat, name
            assert name not in third["shards_written"]
    with tarfile.open(target / "location_source_video_part03.tar") as tar:
        assert tar.getnames() == ["location/source_video/Sparkle_location_000005.mp4"]
    assert check_dataset(target) == []


def test_packaging_refuses_bad_requests(run_dir, tmp_path, capsys):
    assert main(["package", str(tmp_path / "nothing"), "--to", str(tmp_path / "r")]) == 2
    assert "no manifest" in capsys.readouterr().err
    assert main(["package", str(run_dir.root), "--to", str(run_dir.root / "release")]) == 2
    assert "outside the run folder" in capsys.readouterr().err
    assert main(["package", str(run_dir.root), "--to", str(tmp_path / "r"), "--shard-size", "lots"]) == 2
    assert "--shard-size 'lots'" in capsys.readouterr().err
    assert package.parse_size("5GB") == 5 * 10**9 and package.parse_size("300KiB") == 300 * 1024
    empty = tmp_path / "empty_run"
    with Manifest(empty / "manifest.sqlite") as manifest:
        manifest.add_samples([SampleRow("Sparkle_style_000000", "style", "a.mp4", None)])
        manifest.finish("Sparkle_style_000000", 1, "rejected", reason="the camera moves")
    assert main(["package", str(empty), "--to", str(tmp_path / "r2")]) == 2
    assert "nothing to release: no sample has finished stage 5 (1 not kept, 0 in progress)" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()


KILLER = """
import os, signal, sys
from sparkle_fast.driver import package

target, after = sys.argv[4], int(sys.argv[5])
calls = {"n": 0}

def killing(real):
    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            os.kill(os.getpid(), signal.SIGKILL)  # as kill -9 from outside: no cleanup runs
        return real(*args, **kwargs)
    return wrapper

if target == "member":  # inside a shard, between two members: a partial temporary shard is on disk
    package._tar_member = killing(package._tar_member)
else:  # after a shard is renamed into place, before the ledger records it
    package.save_state = killing(package.save_state)
package.package_release(sys.argv[1], sys.argv[2], shard_bytes=int(sys.argv[3]), preview=2)
"""


@pytest.mark.parametrize("target,after", [("member", 5), ("state", 3)])
def test_killed_packaging_then_rerun_gives_the_same_release(run_dir, release, tmp_path, target, after):
    killed_release = tmp_path / "Sparkle"
    size = shard_size(run_dir)
    killed = subprocess.run([sys.executable, "-c", KILLER, str(run_dir.root), str(killed_release), str(size),
                             target, str(after)], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = [p for p in killed_release.rglob("*") if p.is_file()]
    assert left
    if target == "member":
        assert any(p.name.endswith(".tmp") for p in left)  # the partial shard, under a temporary name only
    for shard in killed_release.rglob("*.tar"):  # whatever is in place is whole
        assert package.sha256_file(shard) == package.sha256_file(release / shard.relative_to(killed_release))
    assert main(["package", str(run_dir.root), "--to", str(killed_release), "--shard-size", str(size),
                 "--preview", "2"]) == 0
    assert tree(killed_release) == tree(release)
    assert not list(killed_release.rglob("*.tmp"))


def test_webdataset_format_reads_back_with_webdataset(run_dir, tmp_path):
    import webdataset as wds

    target = tmp_path / "wds"
    assert main(["package", str(run_dir.root), "--to", str(target), "--format", "webdataset",
                 "--shard-size", str(3 * shard_size(run_dir))]) == 0
    shards = sorted(str(p) for p in (target / "webdataset").glob("location_part*.tar"))
    assert len(shards) >= 2 and not list(target.glob("*_source_video_part*.tar"))
    seen = []
    for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
        key = sample["__key__"]
        seen.append(key)
        record = json.loads(sample["json"])
        assert record["id"] == key and record["prompt"] == f"Put {key} on a beach."
        assert record["metadata"]["edit_type"] == "location"
        assert sample["source_video.mp4"] == run_dir.artifact("location", "source_video", key).read_bytes()
        assert sample["edited_video.mp4"] == run_dir.artifact("location", "edited_video", key).read_bytes()
        assert sample["source_video_mask.npz"] == run_dir.artifact("location", "source_video_mask", key).read_bytes()
    assert seen == KEPT[:3]
    assert check_dataset(target) == []
    assert main(["package", str(run_dir.root), "--to", str(target), "--format", "tar"]) == 2  # one format per release


def test_no_train_csv_for_a_theme_without_kept_samples(tmp_path):
    from sparkle_fast.driver.run import write_index_files

    out = make_run(tmp_path / "out")
    out.train_csv("time").parent.mkdir(parents=True, exist_ok=True)
    out.train_csv("time").write_text("prompt,src_video,tgt_video,task\n")  # left by an older version
    with Manifest(out.root / "manifest.sqlite") as manifest:
        rows = write_index_files(manifest, out)
    assert rows == {"location": 3, "season": 1, "time": 0}
    assert not out.train_csv("time").exists() and not out.train_metadata("time").exists()
    assert out.train_csv("location").exists() and out.records_file("time", "edited_frame0_score").exists()


def test_four_distinct_scored_frames_for_every_clip_length():
    from sparkle_fast.models.control import score_frame_indices

    assert score_frame_indices(81) == [1, 26, 51, 76]  # Sparkle's README
    assert score_frame_indices(13) == [1, 4, 7, 10] and score_frame_indices(25) == [1, 8, 15, 22]
    for frames in range(5, 82, 4):  # every 4k+1 length the clip spec allows that has 4 non-first frames
        indices = score_frame_indices(frames)
        assert len(set(indices)) == 4 and indices == sorted(indices) and indices[0] == 1 and indices[-1] < frames
        steps = {b - a for a, b in zip(indices, indices[1:])}
        assert len(steps) == 1, (frames, indices)  # uniformly spaced


def test_config_says_when_kiwi_edit_crops_the_clip(tmp_path):
    from sparkle_fast.driver.config import KiwiCropWarning, load_config

    with pytest.warns(KiwiCropWarning, match="1280x720 .* read 1280x704"):
        load_config()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(overrides={"clip.width": 96, "clip.height": 64})
