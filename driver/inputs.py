"""What a run works on: `--input` as a folder of videos or a CSV, turned into samples with Sparkle ids.

Folder: every file with a video suffix, sorted by path; each gets a theme drawn deterministically from the run's
themes (from the seed and the file's content hash, so adding files never reshuffles earlier ones).
CSV: columns src_video (required; relative paths are relative to the CSV), prompt and theme (optional; a prompt
is required for the openve3m theme, whose prompts come with the input). OpenVE-3M source/edited pairs (a CSV with an
edited_video or tgt_video column) go through the paper's EditScore pre-filter first: `sparkle-fast openve3m-filter`
(driver/openve3m.py) writes the kept pairs as an input CSV of this form (theme openve3m); given here directly, such a
CSV is refused with that instruction.

The same video listed twice (same content) is one sample. Within a theme, ids are numbered in input order:
Sparkle_{theme}_000000, ... A bad CSV row is reported with its line number and skipped; it never stops the run.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from sparkle_fast import layout

from .manifest import SampleRow

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts")


@dataclass
class Inputs:
    samples: list[SampleRow]
    problems: list[str] = field(default_factory=list)  # bad rows and duplicates, one message each


def _content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pick_theme(themes: list[str], seed: int, content: str) -> str:
    keyword_themes = [t for t in themes if t != "openve3m"]  # openve3m needs a prompt from the input
    if not keyword_themes:
        raise ValueError("a folder input needs at least one of the themes location, season, time, style")
    index = int(hashlib.sha256(f"{seed}:{content}".encode()).hexdigest(), 16) % len(keyword_themes)
    return keyword_themes[index]


def read_inputs(path: str | os.PathLike, themes: list[str], seed: int = 0) -> Inputs:
    """Samples for a folder of videos or a CSV (see the module docstring). Raises ValueError for an input that is
    neither, or a folder with no videos."""
    path = Path(path)
    if path.is_dir():
        entries = [(p, None, None) for p in sorted(path.rglob("*")) if p.suffix.lower() in VIDEO_SUFFIXES]
        if not entries:
            raise ValueError(f"{path}: no video files ({', '.join(VIDEO_SUFFIXES)}) in this folder")
        problems: list[str] = []
    elif path.suffix.lower() == ".csv" and path.is_file():
        entries, problems = _read_csv(path, themes)
    else:
        raise ValueError(f"{path}: --input must be a folder of videos or a .csv file with a src_video column")

    samples, problems, seen, counters = [], list(problems), {}, {}
    for video, prompt, theme in entries:
        if not video.is_file():
            problems.append(f"{video}: no such video file; skipped")
            continue
        content = _content_hash(video)
        if content in seen:
            problems.append(f"{video}: same content as {seen[content]}; kept once")
            continue
        seen[content] = video
        theme = theme or _pick_theme(themes, seed, content)
        index = counters.get(theme, 0)
        counters[theme] = index + 1
        samples.append(SampleRow(layout.sample_id(theme, index), theme, str(video.resolve()), prompt))
    return Inputs(samples, problems)


def _read_csv(path: Path, themes: list[str]):
    entries, problems = [], []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        from .openve3m import EDITED_COLUMNS

        if any(name in (reader.fieldnames or []) for name in EDITED_COLUMNS):
            raise ValueError(f"{path}: has an edited-video column ({', '.join(EDITED_COLUMNS)}): an OpenVE-3M pairs "
                             f"file. Filter it first: sparkle-fast openve3m-filter {path} --out KEPT.csv (EditScore at "
                             "2 FPS, mean overall >= 8), then --input KEPT.csv --themes openve3m")
        if "src_video" not in (reader.fieldnames or []):
            raise ValueError(f"{path}: no src_video column (found {reader.fieldnames}); expected src_video[, "
                             "prompt, theme]")
        for line, row in enumerate(reader, start=2):
            src = (row.get("src_video") or "").strip()
            theme = (row.get("theme") or "").strip() or None
            prompt = (row.get("prompt") or "").strip() or None
            if not src:
                problems.append(f"{path}:{line}: empty src_video; row skipped")
            elif theme is not None and theme not in layout.THEMES:
                problems.append(f"{path}:{line}: unknown theme {theme!r} (expected one of {', '.join(layout.THEMES)})"
                                "; row skipped")
            elif theme is not None and theme not in themes:
                problems.append(f"{path}:{line}: theme {theme!r} is not among this run's themes; row skipped")
            elif theme == "openve3m" and prompt is None:
                problems.append(f"{path}:{line}: the openve3m theme needs a prompt; row skipped")
            else:
                video = Path(src) if Path(src).is_absolute() else path.parent / src
                entries.append((video, prompt, theme))
    return entries, problems
