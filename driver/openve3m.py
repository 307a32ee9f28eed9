"""The paper's first step for OpenVE-3M: source/edited video pairs sampled at 2 FPS, scored frame pair by frame pair
with EditScore, kept when their mean overall is >= 8 (Sparkle: 940K source videos came out of it).

    sparkle-fast openve3m-filter PAIRS.csv --out KEPT.csv --models DIR    # then:
    sparkle-fast run --input KEPT.csv --themes openve3m --out OUT --models DIR

PAIRS.csv: columns src_video (or source_video), edited_video (or tgt_video) and prompt (OpenVE-3M's instruction);
relative paths are relative to the CSV. Every pair's scores go to KEPT.scores.jsonl as they are made (a rerun skips
the pairs already there, so a long filter resumes); KEPT.csv is rewritten from it at the end with the columns
src_video, prompt, theme (openve3m), editscore_mean and frames, which `sparkle-fast run` reads as an input CSV.
A pair that cannot be read or scored is recorded with its reason and left out; it never stops the filter.

What is Sparkle's: 2 FPS, the mean over frames of EditScore's overall, the threshold 8 and the instruction as the
prompt. What is ours: pairing the i-th 2-FPS frame of each video (up to the shorter one), and scoring the pairs of
one video in one batched call.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOURCE_COLUMNS = ("src_video", "source_video")
EDITED_COLUMNS = ("edited_video", "tgt_video")
KEPT_COLUMNS = ("src_video", "prompt", "theme", "editscore_mean", "frames")


@dataclass
class Pair:
    source: Path
    edited: Path
    prompt: str

    @property
    def key(self) -> str:
        return f"{self.source.resolve()}\n{self.edited.resolve()}\n{self.prompt}"


@dataclass
class PairsFile:
    pairs: list[Pair]
    problems: list[str] = field(default_factory=list)  # bad rows, one message each


def _column(fields: list[str], names: tuple[str, ...]) -> str | None:
    return next((name for name in names if name in fields), None)


def is_pairs_csv(path: str | os.PathLike) -> bool:
    """Whether a CSV's header names an edited-video column (an OpenVE-3M pairs file, not a run's input)."""
    with open(path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), [])
    return _column([h.strip() for h in header], EDITED_COLUMNS) is not None


def read_pairs(path: str | os.PathLike) -> PairsFile:
    """The pairs of a PAIRS.csv (module docstring). A ValueError names the file when its columns are wrong; a bad
    row is reported with its line number and skipped."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        src_col, edit_col = _column(fields, SOURCE_COLUMNS), _column(fields, EDITED_COLUMNS)
        if src_col is None or edit_col is None or "prompt" not in fields:
            raise ValueError(f"{path}: an OpenVE-3M pairs CSV needs the columns src_video (or source_video), "
                             f"edited_video (or tgt_video) and prompt; found {fields}")
        pairs, problems = [], []
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            src, edited, prompt = row.get(src_col, ""), row.get(edit_col, ""), row.get("prompt", "")
            if not src or not edited or not prompt:
                problems.append(f"{path}:{line}: empty {src_col}, {edit_col} or prompt; row skipped")
                continue
            resolve = lambda p: Path(p) if Path(p).is_absolute() else path.parent / p  # noqa: E731
            pairs.append(Pair(resolve(src), resolve(edited), " ".join(prompt.split())))
    return PairsFile(pairs, problems)


def sample_pair_frames(pair: Pair, fps: float = 2.0) -> tuple[Any, Any]:
    """uint8 (N, H, W, 3) frames of both videos at `fps` (the i-th of each, N = the shorter count); VideoError for
    an unreadable video."""
    from sparkle_fast.video import read_frames

    source = read_frames(pair.source, fps=fps).frames.numpy()
    edited = read_frames(pair.edited, fps=fps).frames.numpy()
    n = min(len(source), len(edited))
    return source[:n], edited[:n]


def score_pair(scorer: Any, pair: Pair, fps: float = 2.0, threshold: float = 8.0) -> dict:
    """One pair's line of KEPT.scores.jsonl: {"src_video", "edited_video", "prompt", "frames", "mean_overall",
    "kept", "reason", "editscore": [per-frame records]}. Never raises for a bad pair."""
    from sparkle_fast.models.scorer import mean_overall
    from sparkle_fast.video import VideoError

    record: dict[str, Any] = {"src_video": str(pair.source), "edited_video": str(pair.edited), "prompt": pair.prompt,
                              "frames": 0, "mean_overall": None, "kept": False, "reason": None, "editscore": []}
    try:
        source, edited = sample_pair_frames(pair, fps)
    except (VideoError, OSError) as exc:
        record["reason"] = f"unreadable video: {exc}"
        return record
    record["frames"] = int(len(source))
    if len(source) == 0:
        record["reason"] = "no frames at 2 FPS"
        return record
    scored = scorer.score_frames(list(source), list(edited), pair.prompt)
    if not scored.ok:
        record["reason"] = f"EditScore: {scored.reason}"
        record["editscore"] = scored.value or []
        return record
    mean = mean_overall(scored.value)
    record.update(mean_overall=mean, editscore=scored.value, kept=mean >= threshold)
    if mean < threshold:
        record["reason"] = f"mean EditScore overall {mean:.2f} < {threshold} over {len(source)} frame pairs"
    return record


def scores_path(kept_csv: str | os.PathLike) -> Path:
    kept_csv = Path(kept_csv)
    return kept_csv.with_name(kept_csv.stem + ".scores.jsonl")


def _done_records(path: Path) -> dict[str, dict]:
    """The pairs a previous filter run scored (a torn last line, from a kill, is ignored and redone)."""
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            key = f"{Path(record['src_video']).resolve()}\n{Path(record['edited_video']).resolve()}\n{record['prompt']}"
        except (ValueError, KeyError, TypeError):
            continue
        done[key] = record
    return done


def write_kept_csv(path: str | os.PathLike, records: list[dict]) -> Path:
    """KEPT.csv from scored records (kept ones, input order), atomically."""
    import io

    from sparkle_fast._io import atomic_write

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(KEPT_COLUMNS)
    for r in records:
        if r["kept"]:
            writer.writerow([r["src_video"], r["prompt"], "openve3m", f"{r['mean_overall']:.6f}", r["frames"]])
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue().encode("utf-8"))
    return Path(path)


def filter_pairs(pairs_csv: str | os.PathLike, kept_csv: str | os.PathLike, scorer: Any, *, fps: float = 2.0,
                 threshold: float = 8.0, log: Callable[[str], None] | None = None) -> dict:
    """Score every pair not scored yet, append each to the scores jsonl, then write KEPT.csv. Returns a summary
    {"pairs", "scored_now", "kept", "rejected", "problems", "kept_csv", "scores"}."""
    log = log or (lambda message: None)
    pairs = read_pairs(pairs_csv)
    for problem in pairs.problems:
        log(f"input: {problem}")
    jsonl = scores_path(kept_csv)
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    done = _done_records(jsonl)
    records, scored_now = [], 0
    with open(jsonl, "a", encoding="utf-8") as out:
        for index, pair in enumerate(pairs.pairs, start=1):
            record = done.get(pair.key)
            if record is None:
                record = score_pair(scorer, pair, fps, threshold)
                out.write(json.dumps(record) + "\n")
                out.flush()
                done[pair.key] = record
                scored_now += 1
                log(f"[openve3m-filter] {index}/{len(pairs.pairs)} {pair.source.name}: "
                    + ("kept" if record["kept"] else record["reason"]))
            records.append(record)
    write_kept_csv(kept_csv, records)
    kept = sum(1 for r in records if r["kept"])
    return {"pairs": len(pairs.pairs), "scored_now": scored_now, "kept": kept, "rejected": len(records) - kept,
            "problems": pairs.problems, "kept_csv": str(kept_csv), "scores": str(jsonl)}
