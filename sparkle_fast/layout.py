"""The released Sparkle dataset layout: where every artifact of a sample lives, and the CSV / jsonl index files.

    OUT/
      prompts/{theme}_train.csv                 prompt, src_video, tgt_video, task   (also a Kiwi-Edit training CSV)
      prompts/{theme}_train_metadata.jsonl      {"id", "prompt", "metadata": {"edit_type", "chosen_keyword",
                                                 "original_scene"}}
      {theme}/source_video/{id}.mp4             the 81-frame 16 fps source clip
      {theme}/edited_video/{id}.mp4             the final clip
      intermediate_data/{theme}/
        source_frame0/{id}.png  edited_frame0/{id}.png  edited_frame0_foreground_removed/{id}.png
        edited_background_video/{id}.mp4  source_video_mask/{id}.npz  edited_video_canny/{id}.mp4
        edited_frame0_score.jsonl  edited_frame0_foreground_removed_score.jsonl  foreground_grounding_r1.jsonl
        foreground_grounding_r2.jsonl  edited_video_score.jsonl

Paths in the CSV are relative to OUT (e.g. location/source_video/Sparkle_location_000000.mp4), as in the release.
Index files are always rewritten whole and atomically from the run's records, never appended to.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sparkle_fast._io import atomic_write

THEMES = ("location", "season", "time", "style", "openve3m")

# Artifact folders under intermediate_data/{theme}/ and their file suffix.
INTERMEDIATE_ARTIFACTS = {
    "source_frame0": ".png",
    "edited_frame0": ".png",
    "edited_frame0_foreground_removed": ".png",
    "edited_background_video": ".mp4",
    "source_video_mask": ".npz",
    "edited_video_canny": ".mp4",
}
# Artifact folders under {theme}/.
THEME_ARTIFACTS = {"source_video": ".mp4", "edited_video": ".mp4"}
# The per-theme jsonl files under intermediate_data/{theme}/.
RECORD_FILES = (
    "edited_frame0_score",
    "edited_frame0_foreground_removed_score",
    "foreground_grounding_r1",
    "foreground_grounding_r2",
    "edited_video_score",
)
TRAIN_CSV_COLUMNS = ("prompt", "src_video", "tgt_video", "task")


def sample_id(theme: str, index: int) -> str:
    """Sparkle's sample id: Sparkle_{theme}_{index:06d}."""
    check_theme(theme)
    if index < 0:
        raise ValueError(f"sample index must be >= 0, got {index}")
    return f"Sparkle_{theme}_{index:06d}"


def metadata_edit_type(theme: str) -> str:
    """edit_type as written inside the metadata jsonl (openve3m is spelled out there)."""
    check_theme(theme)
    return "openve3m_background_change" if theme == "openve3m" else theme


def check_theme(theme: str) -> None:
    if theme not in THEMES:
        raise ValueError(f"unknown theme {theme!r}; Sparkle's themes are {', '.join(THEMES)}")


@dataclass(frozen=True)
class SparkleLayout:
    """Paths of one output folder in Sparkle's released layout."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    def artifact(self, theme: str, kind: str, sample: str) -> Path:
        """Path of one artifact: kind is a folder name (source_video, edited_frame0, source_video_mask, ...)."""
        check_theme(theme)
        if kind in THEME_ARTIFACTS:
            return self.root / theme / kind / f"{sample}{THEME_ARTIFACTS[kind]}"
        if kind in INTERMEDIATE_ARTIFACTS:
            return self.root / "intermediate_data" / theme / kind / f"{sample}{INTERMEDIATE_ARTIFACTS[kind]}"
        raise ValueError(f"unknown artifact kind {kind!r}; expected one of "
                         f"{', '.join([*THEME_ARTIFACTS, *INTERMEDIATE_ARTIFACTS])}")

    def records_file(self, theme: str, name: str) -> Path:
        check_theme(theme)
        if name not in RECORD_FILES:
            raise ValueError(f"unknown record file {name!r}; expected one of {', '.join(RECORD_FILES)}")
        return self.root / "intermediate_data" / theme / f"{name}.jsonl"

    def train_csv(self, theme: str) -> Path:
        check_theme(theme)
        return self.root / "prompts" / f"{theme}_train.csv"

    def train_metadata(self, theme: str) -> Path:
        check_theme(theme)
        return self.root / "prompts" / f"{theme}_train_metadata.jsonl"

    def relative(self, path: Path) -> str:
        """A path as the CSV writes it: relative to the root, with forward slashes."""
        return path.relative_to(self.root).as_posix()

    def train_row(self, theme: str, sample: str, prompt: str) -> dict[str, str]:
        """One row of {theme}_train.csv for a finished sample."""
        return {
            "prompt": prompt,
            "src_video": self.relative(self.artifact(theme, "source_video", sample)),
            "tgt_video": self.relative(self.artifact(theme, "edited_video", sample)),
            "task": sample,
        }


def metadata_record(theme: str, sample: str, prompt: str, chosen_keyword: str | None,
                    original_scene: str | None) -> dict:
    """One line of {theme}_train_metadata.jsonl."""
    return {
        "id": sample,
        "prompt": prompt,
        "metadata": {"edit_type": metadata_edit_type(theme), "chosen_keyword": chosen_keyword,
                     "original_scene": original_scene},
    }


def write_jsonl(path: str | os.PathLike, records: Iterable[Mapping]) -> Path:
    """Write records as JSON lines (UTF-8, non-ASCII kept), atomically, replacing any previous file."""
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    with atomic_write(path) as handle:
        handle.write(text.encode("utf-8"))
    return Path(path)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Records of a jsonl file; a line that is not a JSON object raises ValueError naming the file and line."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    return records


def write_train_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, str]]) -> Path:
    """Write {theme}_train.csv (columns prompt, src_video, tgt_video, task) atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TRAIN_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: row[column] for column in TRAIN_CSV_COLUMNS})
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue().encode("utf-8"))
    return Path(path)
