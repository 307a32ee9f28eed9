"""`sparkle-fast export-bench`: Sparkle-Bench from a run, as Sparkle built it.

Sparkle-Bench is the samples that passed stages 1-4 and were rejected by stage 5's EditScore filter (the hard cases),
written in OpenVE-Bench's format:

    BENCH/{theme}_bench.csv            edited_type, prompt, original_video (source_videos/{theme}/{id}.mp4)
    BENCH/{theme}_metadata.jsonl       {"id", "prompt", "metadata": {"edit_type", "chosen_keyword", "original_scene"}}
    BENCH/source_videos/{theme}/{id}.mp4
    BENCH/ref_images/{theme}/{id}.png  the stage-3 clean background (edited_frame0_foreground_removed)

Only the four keyword themes form the benchmark (openve3m samples are left out, as in Sparkle). Files are copied
atomically and the index files rewritten whole, so an export can be repeated or interrupted safely.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

from sparkle_fast import layout as layout_mod
from sparkle_fast._io import atomic_write

from .manifest import Manifest

BENCH_THEMES = ("location", "season", "time", "style")
BENCH_CSV_COLUMNS = ("edited_type", "prompt", "original_video")


def _copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as source, atomic_write(dst) as target:
        shutil.copyfileobj(source, target)


def export_bench(out: str | os.PathLike, bench: str | os.PathLike) -> dict[str, int]:
    """Write Sparkle-Bench for the run in `out` to `bench`; returns {theme: samples exported}."""
    out, bench = Path(out), Path(bench)
    manifest_path = out / "manifest.sqlite"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: no manifest: run `sparkle-fast run` into {out} first")
    run = layout_mod.SparkleLayout(out)
    rows: dict[str, list[dict]] = {theme: [] for theme in BENCH_THEMES}
    metadata: dict[str, list[dict]] = {theme: [] for theme in BENCH_THEMES}
    with Manifest(manifest_path) as manifest:
        themes = {sample.id: sample.theme for sample in manifest.samples()}
        for result in manifest.results(5, "rejected"):
            theme = themes[result.sample_id]
            edit = manifest.result(result.sample_id, 2)
            if theme not in BENCH_THEMES or edit is None or edit.record is None:
                continue
            sample = result.sample_id
            video = Path("source_videos") / theme / f"{sample}.mp4"
            _copy(run.artifact(theme, "source_video", sample), bench / video)
            _copy(run.artifact(theme, "edited_frame0_foreground_removed", sample),
                  bench / "ref_images" / theme / f"{sample}.png")
            prompt = edit.record["prompt"]
            rows[theme].append({"edited_type": theme, "prompt": prompt, "original_video": video.as_posix()})
            metadata[theme].append(layout_mod.metadata_record(theme, sample, prompt, edit.record.get("chosen_keyword"),
                                                              edit.record.get("original_scene")))
    exported = {}
    for theme in BENCH_THEMES:
        if not rows[theme]:
            continue
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=BENCH_CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows[theme])
        with atomic_write(bench / f"{theme}_bench.csv") as handle:
            handle.write(buffer.getvalue().encode("utf-8"))
        layout_mod.write_jsonl(bench / f"{theme}_metadata.jsonl", metadata[theme])
        exported[theme] = len(rows[theme])
    return exported
