"""Check an output folder against Sparkle's released layout and schemas, so trainers (Kiwi-Edit, ...) read it as is.

    problems = check_dataset("out/")      # [] when everything conforms; else one message per problem

What is checked, per theme that has a train CSV:
  * prompts/{theme}_train.csv has exactly the columns prompt, src_video, tgt_video, task; every path exists; ids are
    Sparkle_{theme}_NNNNNN; the metadata jsonl has one record per CSV row with Sparkle's fields and edit_type.
  * every jsonl under intermediate_data/{theme}/ that exists follows its README schema (field names and types).
  * each CSV sample's source and edited videos are 16 fps with 4k+1 frames and the same size and length; its mask
    npz loads with Sparkle's recipe and has the source video's (T, H, W); its intermediate PNGs and videos exist.
"""

from __future__ import annotations

import csv
import math
import os
import re
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
    intermediate_data/, as Sparkle's README extracts them), or {id}.{suffix} in a webdataset shard (kind is then a
    WEBDATASET_MEMBERS key)."""
    if kind in layout.THEME_ARTIFACTS:
        return f"{theme}/{kind}/{sample}{layout.THEME_ARTIFACTS[kind]}"
    if kind in layout.INTERMEDIATE_ARTIFACTS:
        return f"{theme}/{kind}/{sample}{layout.INTERMEDIATE_ARTIFACTS[kind]}"
    if kind in WEBDATASET_MEMBERS:
        return f"{sample}.{WEBDATASET_MEMBERS[kind]}"
    raise ValueError(f"unknown member kind {kind!r}")


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


def _check_video_pair(src: Path, tgt: Path, sample: str) -> tuple[tuple[int, int, int] | None, list[str]]:
    from sparkle_fast.video import VideoError, probe

    try:
        a, b = probe(src), probe(tgt)
    except VideoError as exc:
        return None, [f"{sample}: {exc}"]
    problems = []
    for info in (a, b):
        if info.fps != 16:
            problems.append(f"{info.path}: {info.fps} fps, Sparkle videos are 16 fps")
        if (info.frame_count - 1) % 4:
            problems.append(f"{info.path}: {info.frame_count} frames, Sparkle videos have 4k+1")
    if (a.width, a.height, a.frame_count) != (b.width, b.height, b.frame_count):
        problems.append(f"{sample}: source {a.width}x{a.height}x{a.frame_count} and edited "
                        f"{b.width}x{b.height}x{b.frame_count} differ")
    return (a.frame_count, a.height, a.width), problems


def _check_mask(path: Path, expected_shape: tuple[int, int, int] | None) -> list[str]:
    """The mask must load with the recipe printed in Sparkle's README."""
    try:
        with np.load(path) as data:
            packed, shape = data["mask"], tuple(int(s) for s in data["shape"])
        mask = np.unpackbits(packed)[: math.prod(shape)].reshape(shape).astype(bool)
    except Exception as exc:  # any failure of the recipe is the finding
        return [f"{path}: does not load with Sparkle's recipe ({type(exc).__name__}: {exc})"]
    problems = []
    if packed.dtype != np.uint8 or packed.size != (math.prod(shape) + 7) // 8:
        problems.append(f"{path}: 'mask' is {packed.dtype} with {packed.size} bytes for shape {shape}")
    if expected_shape is not None and mask.shape != expected_shape:
        problems.append(f"{path}: mask shape {mask.shape}, the source video is {expected_shape}")
    return problems


def check_dataset(root: str | os.PathLike, *, check_videos: bool = True) -> list[str]:
    """Every way the folder at `root` departs from Sparkle's layout and schemas (empty list: conforms)."""
    out = layout.SparkleLayout(root)
    problems: list[str] = []
    themes = [t for t in layout.THEMES if out.train_csv(t).exists()]
    if not themes:
        return [f"{out.root}: no prompts/{{theme}}_train.csv for any theme"]
    for theme in themes:
        with open(out.train_csv(theme), newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != layout.TRAIN_CSV_COLUMNS:
                problems.append(f"{out.train_csv(theme)}: columns {reader.fieldnames}, expected "
                                f"{list(layout.TRAIN_CSV_COLUMNS)}")
                continue
            rows = list(reader)
        id_pattern = re.compile(rf"Sparkle_{theme}_\d{{6}}")
        metadata, found = _check_records(out.train_metadata(theme), METADATA_SCHEMA) \
            if out.train_metadata(theme).exists() else ([], [f"{out.train_metadata(theme)}: missing"])
        problems += found
        if sorted(r.get("id") for r in metadata) != sorted(r["task"] for r in rows):
            problems.append(f"{out.train_metadata(theme)}: ids differ from the CSV's tasks")
        problems += [f"{out.train_metadata(theme)}: {r['id']} has edit_type {r['metadata']['edit_type']!r}"
                     for r in metadata if isinstance(r.get("metadata"), dict)
                     and r["metadata"].get("edit_type") != layout.metadata_edit_type(theme)]
        for name, schema in RECORD_SCHEMAS.items():
            if out.records_file(theme, name).exists():
                problems += _check_records(out.records_file(theme, name), schema)[1]
        for row in rows:
            sample = row["task"]
            if not id_pattern.fullmatch(sample):
                problems.append(f"{out.train_csv(theme)}: task {sample!r} is not Sparkle_{theme}_NNNNNN")
            src, tgt = out.root / row["src_video"], out.root / row["tgt_video"]
            if (src, tgt) != (out.artifact(theme, "source_video", sample), out.artifact(theme, "edited_video", sample)):
                problems.append(f"{sample}: CSV paths {row['src_video']}, {row['tgt_video']} are not the layout's")
            missing = [p for p in (src, tgt) if not p.exists()]
            missing += [out.artifact(theme, kind, sample) for kind in layout.INTERMEDIATE_ARTIFACTS
                        if not out.artifact(theme, kind, sample).exists()]
            problems += [f"{sample}: missing {p}" for p in missing]
            shape = None
            if check_videos and src.exists() and tgt.exists():
                shape, found = _check_video_pair(src, tgt, sample)
                problems += found
            mask = out.artifact(theme, "source_video_mask", sample)
            if mask.exists():
                problems += _check_mask(mask, shape)
    return problems
