"""Check an output folder against Sparkle's released layout and schemas, so trainers (Kiwi-Edit, ...) read it as is.

    problems = check_dataset("out/")      # [] when everything conforms; else one message per problem
    problems = check_dataset("release/")  # a folder from `sparkle-fast package`: check_release

What is checked, per theme that has a train CSV (a run's working folder):
  * prompts/{theme}_train.csv has exactly the columns prompt, src_video, tgt_video, task and at least one row; every
    path exists; ids are Sparkle_{theme}_NNNNNN; the metadata jsonl has one record per CSV row with Sparkle's fields
    and edit_type.
  * every jsonl under intermediate_data/{theme}/ that exists follows its README schema (field names and types);
    edited_video_score lines name 4 distinct non-first frames inside the video.
  * each CSV sample's videos follow the run's clip spec (config.json: fps, 4k+1 frames, at most max_frames, width x
    height; without a config.json, 16 fps and 4k+1), the edited, background and Canny videos have the source's size
    and length; its mask npz loads with Sparkle's recipe and has the source video's (T, H, W); its intermediate PNGs
    and videos exist.
A release is checked as a downloader gets it (check_release): shard names and members, SHA256SUMS, orphans, truncated
tars, and the same media checks on the files inside the shards. docs/RELEASE.md lists every check.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from sparkle_fast import layout

# --- the release (sparkle-fast package) ------------------------------------------------------------------------
# Names and internal paths as Sparkle's release README publishes them (the names are Sparkle's; the state file, the
# checksums file, rejected.jsonl and the webdataset variant are ours).
RELEASE_STATE = "release_state.json"  # the packager's shard ledger; marks a folder as a release
RELEASE_FORMATS = ("tar", "webdataset")
CHECKSUMS = "SHA256SUMS"
REJECTED = "rejected.jsonl"
CARD = "README.md"
WEBDATASET_DIR = "webdataset"
# One webdataset sample: {id}.{suffix} for each of these (the json holds the prompt and the metadata record).
WEBDATASET_MEMBERS = {"source_video": "source_video.mp4", "edited_video": "edited_video.mp4",
                      "source_video_mask": "source_video_mask.npz", "json": "json"}
THEME_KINDS = tuple(layout.THEME_ARTIFACTS)
_THEME = "|".join(layout.THEMES)
_PART = r"_part(?P<part>\d{2,})\.tar"
MAIN_SHARD = re.compile(rf"(?P<theme>{_THEME})_(?P<kind>{'|'.join(layout.THEME_ARTIFACTS)}){_PART}")
INTERMEDIATE_SHARD = re.compile(
    rf"intermediate_data/(?P<theme>{_THEME})_(?P<kind>{'|'.join(layout.INTERMEDIATE_ARTIFACTS)}){_PART}")
WEBDATASET_SHARD = re.compile(rf"{WEBDATASET_DIR}/(?P<theme>{_THEME}){_PART}")


def shard_name(theme: str, kind: str, part: int) -> str:
    """A shard's path in the release: {theme}_{kind}_partXX.tar at the root for source_video / edited_video,
    intermediate_data/{theme}_{kind}_partXX.tar for the six intermediate folders, webdataset/{theme}_partXX.tar for
    kind "webdataset"."""
    layout.check_theme(theme)
    if kind in layout.THEME_ARTIFACTS:
        return f"{theme}_{kind}_part{part:02d}.tar"
    if kind in layout.INTERMEDIATE_ARTIFACTS:
        return f"intermediate_data/{theme}_{kind}_part{part:02d}.tar"
    if kind == "webdataset":
        return f"{WEBDATASET_DIR}/{theme}_part{part:02d}.tar"
    raise ValueError(f"unknown shard kind {kind!r}")


def member_name(theme: str, kind: str, sample: str) -> str:
    """A file's path inside its shard: {theme}/{kind}/{id}{ext} (for intermediate shards relative to
    intermediate_data/, as Sparkle's README extracts them)."""
    if kind in layout.THEME_ARTIFACTS:
        return f"{theme}/{kind}/{sample}{layout.THEME_ARTIFACTS[kind]}"
    if kind in layout.INTERMEDIATE_ARTIFACTS:
        return f"{theme}/{kind}/{sample}{layout.INTERMEDIATE_ARTIFACTS[kind]}"
    raise ValueError(f"unknown member kind {kind!r}")


def webdataset_member(kind: str, sample: str) -> str:
    """A file's name in a webdataset shard: {id}.{suffix} (webdataset groups a sample's files by the {id} key)."""
    if kind not in WEBDATASET_MEMBERS:
        raise ValueError(f"unknown webdataset member {kind!r}; expected one of {', '.join(WEBDATASET_MEMBERS)}")
    return f"{sample}.{WEBDATASET_MEMBERS[kind]}"


def scored_frame_problems(indices: Any, frame_count: int | None, where: str) -> list[str]:
    """Stage 5 scores 4 distinct non-first frames (Sparkle's README: [1, 26, 51, 76] for 81)."""
    if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        return [f"{where}: frame_indices must be a list of ints, got {indices!r}"]
    problems = []
    if len(indices) != 4 or len(set(indices)) != 4:
        problems.append(f"{where}: frame_indices {indices} are not 4 distinct frames (Sparkle scores 4)")
    if any(i < 1 for i in indices):
        problems.append(f"{where}: frame_indices {indices} include frame 0 (Sparkle scores non-first frames)")
    if frame_count is not None and any(i >= frame_count for i in indices):
        problems.append(f"{where}: frame_indices {indices} reach past the video's {frame_count} frames")
    return problems


NUMBER = (int, float)
BOX = "box"  # [x1, y1, x2, y2] numbers, or [] where the VLM failed (round 2 only)
OBJECT = {"bbox_2d": BOX, "label": str}
EDITSCORE = {"prompt_following": NUMBER, "consistency": NUMBER, "perceptual_quality": NUMBER, "overall": NUMBER,
             "SC_reasoning": str, "PQ_reasoning": str}
FRAME_SCORE = {"SC_score": NUMBER, "PQ_score": NUMBER, "O_score": NUMBER, "SC_score_reasoning": str,
               "PQ_score_reasoning": str, "SC_raw_output": str, "PQ_raw_output": str}
R1 = {"id": str, "prompt": str, "edit_type": str, "round1_labels": [str], "round1_objects": [OBJECT]}
RECORD_SCHEMAS = {
    "edited_frame0_score": {"id": str, "prompt": str, "editscore": EDITSCORE},
    "edited_frame0_foreground_removed_score": {"id": str, "prompt": str, "editscore": EDITSCORE},
    "foreground_grounding_r1": R1,
    "foreground_grounding_r2": {**R1, "frame_objects": [[OBJECT]]},
    "edited_video_score": {"id": str, "prompt": str, "frame_indices": [int], "editscore": [FRAME_SCORE]},
}
METADATA_SCHEMA = {"id": str, "prompt": str,
                   "metadata": {"edit_type": str, "chosen_keyword": (str, type(None)),
                                "original_scene": (str, type(None))}}


def schema_problems(value: Any, schema: Any, where: str) -> list[str]:
    """Differences between a JSON value and a schema: a type (or tuple of types), BOX, [item schema] or a dict of
    required fields (extra fields are allowed)."""
    if schema is BOX:
        ok = isinstance(value, list) and (len(value) == 0 or (
            len(value) == 4 and all(isinstance(v, NUMBER) and not isinstance(v, bool) for v in value)))
        return [] if ok else [f"{where}: expected [x1, y1, x2, y2] or [], got {value!r}"]
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        problems = []
        for key, sub in schema.items():
            if key not in value:
                problems.append(f"{where}: missing field {key!r}")
            else:
                problems += schema_problems(value[key], sub, f"{where}.{key}")
        return problems
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [p for i, item in enumerate(value) for p in schema_problems(item, schema[0], f"{where}[{i}]")]
    types = schema if isinstance(schema, tuple) else (schema,)
    if isinstance(value, bool) or not isinstance(value, types):
        names = "/".join("null" if t is type(None) else t.__name__ for t in types)
        return [f"{where}: expected {names}, got {value!r}"]
    return []


def _check_records(path: Path, schema: dict) -> tuple[list[dict], list[str]]:
    try:
        records = layout.read_jsonl(path)
    except (OSError, ValueError) as exc:
        return [], [str(exc)]
    problems = [p for i, r in enumerate(records, 1) for p in schema_problems(r, schema, f"{path}:{i}")]
    ids = [r.get("id") for r in records]
    if len(ids) != len(set(ids)):
        problems.append(f"{path}: duplicate ids")
    return records, problems


def _clip_of(config: dict | None) -> dict:
    """The run's clip spec (fps, max_frames, width, height); without a config only Sparkle's 16 fps is known."""
    clip = (config or {}).get("clip") if isinstance(config, dict) else None
    return dict(clip) if isinstance(clip, dict) else {"fps": 16}


def _video_problems(info, label: str, clip: dict) -> list[str]:
    """One video against the clip spec: fps, 4k+1 frames, at most max_frames, width x height."""
    problems = []
    fps = clip.get("fps", 16)
    if info.fps != fps:
        problems.append(f"{label}: {info.fps} fps, the clip spec is {fps} fps")
    if (info.frame_count - 1) % 4:
        problems.append(f"{label}: {info.frame_count} frames, Sparkle videos have 4k+1")
    if "max_frames" in clip and info.frame_count > clip["max_frames"]:
        problems.append(f"{label}: {info.frame_count} frames, more than the clip spec's {clip['max_frames']}")
    if "width" in clip and (info.width, info.height) != (clip["width"], clip["height"]):
        problems.append(f"{label}: {info.width}x{info.height}, the clip spec is {clip['width']}x{clip['height']}")
    return problems


def _check_videos(videos: dict[str, tuple[Path, str]], sample: str, clip: dict
                  ) -> tuple[tuple[int, int, int] | None, list[str]]:
    """videos: {kind: (path to probe, label to report)} with "source_video" first. Each against the clip spec, and
    every other video against the source's size and length. Returns the source's (T, H, W)."""
    from sparkle_fast.video import VideoError, probe

    problems, infos = [], {}
    for kind, (path, label) in videos.items():
        try:
            infos[kind] = probe(path)
        except VideoError as exc:
            problems.append(f"{label}: {exc}".replace(str(path), label))
            continue
        problems += _video_problems(infos[kind], label, clip)
    source = infos.get("source_video")
    if source is None:
        return None, problems
    for kind, info in infos.items():
        if kind != "source_video" and (info.width, info.height, info.frame_count) != (
                source.width, source.height, source.frame_count):
            problems.append(f"{videos[kind][1]}: {info.width}x{info.height}x{info.frame_count} frames, the source "
                            f"video is {source.width}x{source.height}x{source.frame_count}")
    return (source.frame_count, source.height, source.width), problems


def _check_mask(path: Path, expected_shape: tuple[int, int, int] | None, label: str | None = None) -> list[str]:
    """The mask must load with the recipe printed in Sparkle's README."""
    label = label or str(path)
    try:
        with np.load(path) as data:
            packed, shape = data["mask"], tuple(int(s) for s in data["shape"])
        mask = np.unpackbits(packed)[: math.prod(shape)].reshape(shape).astype(bool)
    except Exception as exc:  # any failure of the recipe is the finding
        return [f"{label}: does not load with Sparkle's recipe ({type(exc).__name__}: {exc})"]
    problems = []
    if packed.dtype != np.uint8 or packed.size != (math.prod(shape) + 7) // 8:
        problems.append(f"{label}: 'mask' is {packed.dtype} with {packed.size} bytes for shape {shape}")
    if expected_shape is not None and mask.shape != expected_shape:
        problems.append(f"{label}: mask shape {mask.shape}, the source video is {expected_shape}")
    return problems


def _check_index(out: layout.SparkleLayout, theme: str) -> tuple[list[dict] | None, list[str]]:
    """prompts/{theme}_train.csv and its metadata jsonl: columns, ids, one metadata record per row, edit_type.
    Returns the rows (None when the CSV's columns are wrong) and the problems."""
    with open(out.train_csv(theme), newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != layout.TRAIN_CSV_COLUMNS:
            return None, [f"{out.train_csv(theme)}: columns {reader.fieldnames}, expected "
                          f"{list(layout.TRAIN_CSV_COLUMNS)}"]
        rows = list(reader)
    problems = []
    if not rows:
        problems.append(f"{out.train_csv(theme)}: a header without rows (Kiwi-Edit's train.py stops on it); a theme "
                        f"without kept samples should have no CSV")
    id_pattern = re.compile(rf"Sparkle_{theme}_\d{{6}}")
    problems += [f"{out.train_csv(theme)}: task {r['task']!r} is not Sparkle_{theme}_NNNNNN" for r in rows
                 if not id_pattern.fullmatch(r["task"])]
    metadata, found = _check_records(out.train_metadata(theme), METADATA_SCHEMA) \
        if out.train_metadata(theme).exists() else ([], [f"{out.train_metadata(theme)}: missing"])
    problems += found
    if sorted(str(r.get("id")) for r in metadata) != sorted(r["task"] for r in rows):
        problems.append(f"{out.train_metadata(theme)}: ids differ from the CSV's tasks")
    problems += [f"{out.train_metadata(theme)}: {r['id']} has edit_type {r['metadata']['edit_type']!r}"
                 for r in metadata if isinstance(r.get("metadata"), dict)
                 and r["metadata"].get("edit_type") != layout.metadata_edit_type(theme)]
    for row in rows:
        sample = row["task"]
        if (row["src_video"], row["tgt_video"]) != (out.relative(out.artifact(theme, "source_video", sample)),
                                                    out.relative(out.artifact(theme, "edited_video", sample))):
            problems.append(f"{sample}: CSV paths {row['src_video']}, {row['tgt_video']} are not the layout's")
    return rows, problems


def _check_theme_records(out: layout.SparkleLayout, theme: str, tasks: set[str] | None,
                         frame_counts: dict[str, int]) -> list[str]:
    """The five jsonl files of a theme: schemas, scored frames; with `tasks`, lines of ids without a CSV row."""
    problems = []
    for name, schema in RECORD_SCHEMAS.items():
        path = out.records_file(theme, name)
        if not path.exists():
            continue
        records, found = _check_records(path, schema)
        problems += found
        if tasks is not None:
            problems += [f"{path}: orphan line: {r.get('id')} has no row in {out.train_csv(theme).name}"
                         for r in records if r.get("id") not in tasks]
        if name == "edited_video_score":
            for number, record in enumerate(records, 1):
                problems += scored_frame_problems(record.get("frame_indices"), frame_counts.get(record.get("id")),
                                                  f"{path}:{number}")
                scores = record.get("editscore")
                if isinstance(scores, list) and isinstance(record.get("frame_indices"), list) \
                        and len(scores) != len(record["frame_indices"]):
                    problems.append(f"{path}:{number}: {len(scores)} editscore entries for "
                                    f"{len(record['frame_indices'])} frame_indices")
    return problems


def _read_config(path: Path) -> tuple[dict | None, list[str]]:
    if not path.is_file():
        return None, []
    try:
        return json.loads(path.read_text(encoding="utf-8")), []
    except (OSError, json.JSONDecodeError) as exc:
        return None, [f"{path}: not readable JSON ({exc})"]


def check_dataset(root: str | os.PathLike, *, check_videos: bool = True) -> list[str]:
    """Every way the folder at `root` departs from Sparkle's layout and schemas (empty list: conforms). A release
    (a folder with release_state.json, written by `sparkle-fast package`) is checked by check_release; a run's
    working folder keeps its rejected samples' artifacts, so orphans are not sought there."""
    root = Path(root)
    if (root / RELEASE_STATE).exists():
        return check_release(root, check_videos=check_videos)
    out = layout.SparkleLayout(root)
    config, problems = _read_config(root / "config.json")
    clip = _clip_of(config)
    themes = [t for t in layout.THEMES if out.train_csv(t).exists()]
    if not themes:
        return [f"{out.root}: no prompts/{{theme}}_train.csv for any theme (a theme gets one when a sample of it "
                f"finishes stage 5)"]
    for theme in themes:
        rows, found = _check_index(out, theme)
        problems += found
        if rows is None:
            continue
        frame_counts = {}
        for row in rows:
            sample = row["task"]
            src, tgt = out.artifact(theme, "source_video", sample), out.artifact(theme, "edited_video", sample)
            missing = [p for p in (src, tgt) if not p.exists()]
            missing += [out.artifact(theme, kind, sample) for kind in layout.INTERMEDIATE_ARTIFACTS
                        if not out.artifact(theme, kind, sample).exists()]
            problems += [f"{sample}: missing {p}" for p in missing]
            shape = None
            if check_videos and src.exists() and tgt.exists():
                videos = {kind: (out.artifact(theme, kind, sample), str(out.artifact(theme, kind, sample)))
                          for kind in ("source_video", "edited_video", "edited_background_video",
                                       "edited_video_canny") if out.artifact(theme, kind, sample).exists()}
                shape, found = _check_videos(videos, sample, clip)
                problems += found
                if shape is not None:
                    frame_counts[sample] = shape[0]
            mask = out.artifact(theme, "source_video_mask", sample)
            if mask.exists():
                problems += _check_mask(mask, shape)
        problems += _check_theme_records(out, theme, None, frame_counts)
    return problems


# --- the release -----------------------------------------------------------------------------------------------

def _read_tar(path: Path) -> tuple[list[tarfile.TarInfo], list[str]]:
    """A shard's members, and its problems: unreadable, or truncated (a member's data past the end of the file, or
    no end-of-archive marker after the last member: tarfile itself reads a cut archive as a shorter one)."""
    try:
        with tarfile.open(path, "r:") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError) as exc:
        return [], [f"{path}: truncated tar or not a tar: unreadable ({type(exc).__name__}: {exc})"]
    size = path.stat().st_size
    problems, end = [], 0
    for info in members:
        if info.offset_data + info.size > size:
            problems.append(f"{path}: truncated tar: member {info.name} needs bytes up to "
                            f"{info.offset_data + info.size}, the file has {size}")
        end = max(end, info.offset_data + (info.size + 511) // 512 * 512)
    with open(path, "rb") as handle:
        handle.seek(end)
        marker = handle.read(1024)
    if len(marker) < 1024 or marker.strip(b"\0"):
        problems.append(f"{path}: truncated tar: no end-of-archive marker after its last member (byte {end} of "
                        f"{size})")
    return members, problems


def _member_bytes(path: Path, info: tarfile.TarInfo) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(info.offset_data)
        return handle.read(info.size)


def _check_checksums(root: Path, files: list[str]) -> list[str]:
    path = root / CHECKSUMS
    if not path.is_file():
        return [f"{path}: missing"]
    problems, listed = [], {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", digest):
            problems.append(f"{path}:{number}: not a `sha256sum` line: {line!r}")
            continue
        listed[name] = digest
    for name, digest in listed.items():
        target = root / name
        if not target.is_file():
            problems.append(f"{target}: listed in {CHECKSUMS} but missing")
            continue
        sha = hashlib.sha256()
        with open(target, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        if sha.hexdigest() != digest:
            problems.append(f"{target}: SHA-256 differs from {CHECKSUMS} (changed or truncated after packaging)")
    problems += [f"{root / name}: not listed in {CHECKSUMS}" for name in files
                 if name not in listed and name != CHECKSUMS]
    return problems


def _classify(name: str, fmt: str) -> tuple[str, tuple] | None:
    """What a release file is: ("shard", (theme, kind, part)), ("preview", (theme, kind, id)), ("records", (theme,))
    or ("index", ()); None for a file that has no place in the release."""
    if name in (CARD, CHECKSUMS, RELEASE_STATE, REJECTED):
        return "index", ()
    for pattern, allowed in ((MAIN_SHARD, fmt == "tar"), (INTERMEDIATE_SHARD, True), (WEBDATASET_SHARD,
                                                                                      fmt == "webdataset")):
        match = pattern.fullmatch(name)
        if match and allowed:
            kind = match.groupdict().get("kind") or "webdataset"
            return "shard", (match["theme"], kind, int(match["part"]))
    parts = name.split("/")
    if len(parts) == 2 and parts[0] == "prompts":
        for theme in layout.THEMES:
            if parts[1] in (f"{theme}_train.csv", f"{theme}_train_metadata.jsonl"):
                return "index", ()
    if len(parts) == 3 and parts[0] in layout.THEMES and parts[1] in layout.THEME_ARTIFACTS:
        sample = parts[2].removesuffix(layout.THEME_ARTIFACTS[parts[1]])
        if sample != parts[2] and re.fullmatch(rf"Sparkle_{parts[0]}_\d{{6}}", sample):
            return "preview", (parts[0], parts[1], sample)
    if len(parts) == 3 and parts[0] == "intermediate_data" and parts[1] in layout.THEMES \
            and parts[2].removesuffix(".jsonl") in layout.RECORD_FILES and parts[2].endswith(".jsonl"):
        return "records", (parts[1],)
    if len(parts) == 4 and parts[0] == "intermediate_data" and parts[1] in layout.THEMES \
            and parts[2] in layout.INTERMEDIATE_ARTIFACTS:
        sample = parts[3].removesuffix(layout.INTERMEDIATE_ARTIFACTS[parts[2]])
        if sample != parts[3] and re.fullmatch(rf"Sparkle_{parts[1]}_\d{{6}}", sample):
            return "preview", (parts[1], parts[2], sample)
    return None


def _member_kind(theme: str, kind: str, member: str) -> tuple[str, str] | None:
    """(kind, sample id) of a shard member named as the README says, else None."""
    if kind == "webdataset":
        match = re.fullmatch(rf"(Sparkle_{theme}_\d{{6}})\.(.+)", member)
        kinds = {suffix: k for k, suffix in WEBDATASET_MEMBERS.items()}
        return (kinds[match[2]], match[1]) if match and match[2] in kinds else None
    ext = {**layout.THEME_ARTIFACTS, **layout.INTERMEDIATE_ARTIFACTS}[kind]
    match = re.fullmatch(rf"{theme}/{kind}/(Sparkle_{theme}_\d{{6}}){re.escape(ext)}", member)
    return (kind, match[1]) if match else None


def check_release(root: str | os.PathLike, *, check_videos: bool = True) -> list[str]:
    """Every way a release folder (`sparkle-fast package`) departs from Sparkle's published release.

    Names of the shards and their members; SHA256SUMS; every CSV row's videos and intermediates present in the
    shards (so every CSV path resolves after extracting them as the README says); no orphan (a shard member,
    preview file or jsonl line without a CSV row, a file with no place in the layout, a sample also in
    rejected.jsonl); previews equal to their shard copies; the videos inside the shards against the run's clip spec
    (fps, 4k+1 frames, at most max_frames, width x height) and each other; masks load with Sparkle's recipe and
    have the source video's (T, H, W); stage 5 scored 4 distinct non-first frames. Problems name the file (a shard
    member as SHARD.tar:MEMBER)."""
    root = Path(root)
    state, problems = _read_config(root / RELEASE_STATE)
    if not isinstance(state, dict) or state.get("format") not in RELEASE_FORMATS:
        return problems or [f"{root / RELEASE_STATE}: not a release state written by `sparkle-fast package`"]
    fmt, clip = state["format"], _clip_of(state.get("config"))
    out = layout.SparkleLayout(root)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    temporaries = [f for f in files if f.rsplit("/", 1)[-1].startswith(".") and f.endswith(".tmp")]
    problems += [f"{root / f}: a partial file left by an interrupted packaging; rerun `sparkle-fast package`"
                 for f in temporaries]
    files = [f for f in files if f not in temporaries]
    problems += _check_checksums(root, files)

    tasks: dict[str, set[str]] = {}
    for theme in layout.THEMES:
        if out.train_csv(theme).exists():
            rows, found = _check_index(out, theme)
            problems += found
            tasks[theme] = {r["task"] for r in rows or []}
    if not tasks:
        problems.append(f"{root}: no prompts/{{theme}}_train.csv for any theme")
    rejected_path = root / REJECTED
    if rejected_path.exists():
        try:
            rejected = {r.get("id") for r in layout.read_jsonl(rejected_path)}
        except (OSError, ValueError) as exc:
            problems.append(str(exc))
            rejected = set()
        problems += [f"{rejected_path}: {sample} is listed as not kept but has a row in prompts/{theme}_train.csv"
                     for theme, ids in tasks.items() for sample in sorted(ids & rejected)]

    shards: dict[str, tuple[str, str, int]] = {}
    previews: dict[tuple[str, str, str], str] = {}
    for name in files:
        found = _classify(name, fmt)
        if found is None:
            problems.append(f"{root / name}: orphan: no place in Sparkle's release layout")
        elif found[0] == "shard":
            shards[name] = found[1]
        elif found[0] == "preview":
            theme, kind, sample = found[1]
            previews[(theme, kind, sample)] = name
            if sample not in tasks.get(theme, ()):
                problems.append(f"{root / name}: orphan: {sample} has no row in prompts/{theme}_train.csv")
    series: dict[tuple[str, str], list[int]] = {}
    for theme, kind, part in shards.values():
        series.setdefault((theme, kind), []).append(part)
        if theme not in tasks:
            problems.append(f"{root / shard_name(theme, kind, part)}: orphan: no prompts/{theme}_train.csv")
    for (theme, kind), parts in sorted(series.items()):
        if sorted(parts) != list(range(len(parts))):
            problems.append(f"{root}: {theme} {kind} shards are parts {sorted(parts)}, expected 00 to "
                            f"{len(parts) - 1:02d} with none missing")

    index: dict[tuple[str, str, str], tuple[str, tarfile.TarInfo]] = {}
    for name, (theme, kind, _) in sorted(shards.items()):
        members, found = _read_tar(root / name)
        problems += found
        if [m.name for m in members] != sorted(m.name for m in members):
            problems.append(f"{root / name}: members are not in sorted order")
        for info in members:
            where = f"{root / name}:{info.name}"
            parsed = _member_kind(theme, kind, info.name) if info.isreg() else None
            if parsed is None:
                problems.append(f"{where}: not a member Sparkle's README names ({theme}/{kind}/{{id}}.ext)"
                                if kind != "webdataset" else f"{where}: not a webdataset member {{id}}.{{suffix}}")
                continue
            member_kind, sample = parsed
            if kind == "webdataset":  # the same kinds exist in the intermediate shards: keep them apart
                member_kind = f"webdataset/{member_kind}"
            if sample not in tasks.get(theme, ()):
                problems.append(f"{where}: orphan: {sample} has no row in prompts/{theme}_train.csv")
            if (theme, member_kind, sample) in index:
                problems.append(f"{where}: duplicate: also in {root / index[(theme, member_kind, sample)][0]}")
            index[(theme, member_kind, sample)] = (name, info)

    main_kinds = [f"webdataset/{k}" for k in WEBDATASET_MEMBERS] if fmt == "webdataset" \
        else list(layout.THEME_ARTIFACTS)
    for theme, ids in sorted(tasks.items()):
        for sample in sorted(ids):
            for kind in [*main_kinds, *layout.INTERMEDIATE_ARTIFACTS]:
                if (theme, kind, sample) not in index:
                    series, _, member_kind = kind.rpartition("/")
                    pattern = shard_name(theme, series or kind, 0).replace("part00", "partXX")
                    member = webdataset_member(member_kind, sample) if series else member_name(theme, kind, sample)
                    problems.append(f"{sample}: {member} is in no {pattern} shard, so its CSV row does not resolve "
                                    f"after extracting" if not series else f"{sample}: {member} is in no {pattern} "
                                    f"shard")
            if fmt == "webdataset" and (theme, "webdataset/json", sample) in index:
                shard, info = index[(theme, "webdataset/json", sample)]
                try:
                    record = json.loads(_member_bytes(root / shard, info))
                    ok = isinstance(record, dict) and record.get("id") == sample and isinstance(record.get("prompt"),
                                                                                                str)
                except ValueError:
                    ok = False
                if not ok:
                    problems.append(f"{root / shard}:{info.name}: not a JSON object with this sample's id and prompt")
    for (theme, kind, sample), name in sorted(previews.items()):
        key = (theme, f"webdataset/{kind}" if fmt == "webdataset" and kind in THEME_KINDS else kind, sample)
        if key in index:
            shard, info = index[key]
            if (root / name).read_bytes() != _member_bytes(root / shard, info):
                problems.append(f"{root / name}: differs from its copy {root / shard}:{info.name}")

    frame_counts: dict[str, int] = {}
    if check_videos:
        problems += _check_release_media(root, tasks, index, clip, frame_counts, fmt)
    for theme in tasks:
        problems += _check_theme_records(out, theme, tasks[theme], frame_counts)
    return problems


def _check_release_media(root: Path, tasks: dict[str, set[str]], index: dict, clip: dict,
                         frame_counts: dict[str, int], fmt: str) -> list[str]:
    """Probe every sample's videos and load its masks from the shards (each member copied to a temporary file)."""
    import tempfile

    problems = []
    with tempfile.TemporaryDirectory(prefix="sparkle_validate_") as scratch:
        for theme, ids in sorted(tasks.items()):
            for sample in sorted(ids):
                videos, masks = {}, []
                wds = [f"webdataset/{k}" for k in ("source_video", "edited_video", "source_video_mask")]
                for key in ("source_video", "edited_video", "edited_background_video", "edited_video_canny",
                            "source_video_mask", *(wds if fmt == "webdataset" else ())):
                    if (theme, key, sample) not in index:
                        continue  # reported as not in any shard
                    shard, info = index[(theme, key, sample)]
                    kind = key.rpartition("/")[2]
                    path = Path(scratch) / f"{key.replace('/', '_')}{Path(info.name).suffix}"
                    path.write_bytes(_member_bytes(root / shard, info))
                    label = f"{root / shard}:{info.name}"
                    if kind == "source_video_mask":
                        masks.append((path, label))
                    elif kind in videos:  # the webdataset copy of a video: its own entry, checked the same way
                        videos[key] = (path, label)
                    else:
                        videos[kind] = (path, label)
                shape = None
                if "source_video" in videos:
                    shape, found = _check_videos(videos, sample, clip)
                    problems += found
                    if shape is not None:
                        frame_counts[sample] = shape[0]
                for path, label in masks:
                    problems += _check_mask(path, shape, label)
    return problems
