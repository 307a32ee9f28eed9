"""`sparkle-fast export-bench`: Sparkle-Bench from a run, as Sparkle built it.

Sparkle-Bench is the samples that passed stages 1-4 and were rejected by stage 5's EditScore filter (the hard cases),
written in OpenVE-Bench's format:

    BENCH/{theme}_bench.csv            edited_type, prompt, original_video (source_videos/{theme}/{id}.mp4)
    BENCH/{theme}_metadata.jsonl       {"id", "prompt", "metadata": {"edit_type", "chosen_keyword", "original_scene"}}
    BENCH/source_videos/{theme}/{id}.mp4
    BENCH/ref_images/{theme}/{id}.png  the stage-3 clean background (edited_frame0_foreground_removed)
    MASKS/{theme}/{id}.npz             the stage-4 BAIT mask (Sparkle's packed npz; every bench sample has one)
    MASKS/{theme}/{id}_control.mp4     the stage-5 control video (edited_video_canny), when stage 5 wrote one

MASKS (default BENCH/masks) is what `sparkle-fast eval --masks` reads for the judge-free metrics; the masks and
control videos are ours (Sparkle-Bench does not ship them). samples="rejected" is Sparkle's rule (passed stages 1-4,
rejected by stage 5); samples="passed-4" exports every sample that passed stage 4, kept by stage 5 or not, so that a
run's own dataset (and its ablations, on the same inputs) can be evaluated on the same samples.

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
SAMPLE_RULES = ("rejected", "passed-4")


def _copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as source, atomic_write(dst) as target:
        shutil.copyfileobj(source, target)


def _chosen(manifest: Manifest, samples: str) -> list[str]:
    """Sample ids in manifest order: stage-5 rejects (Sparkle's rule) or every sample stage 4 kept."""
    if samples == "rejected":
        wanted = {r.sample_id for r in manifest.results(5, "rejected")}
    else:
        wanted = {r.sample_id for r in manifest.results(4, "done")}
    return [s.id for s in manifest.samples() if s.id in wanted]


def export_bench(out: str | os.PathLike, bench: str | os.PathLike, masks: str | os.PathLike | None = None,
                 samples: str = "rejected") -> dict[str, int]:
    """Write Sparkle-Bench for the run in `out` to `bench` and its masks / control videos to `masks` (default
    bench/masks); returns {theme: samples exported}. samples: "rejected" (Sparkle's rule) or "passed-4"."""
    if samples not in SAMPLE_RULES:
        raise ValueError(f"samples must be one of {SAMPLE_RULES}, got {samples!r}")
    out, bench = Path(out), Path(bench)
    masks = Path(masks) if masks is not None else bench / "masks"
    manifest_path = out / "manifest.sqlite"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: no manifest: run `sparkle-fast run` into {out} first")
    run = layout_mod.SparkleLayout(out)
    rows: dict[str, list[dict]] = {theme: [] for theme in BENCH_THEMES}
    metadata: dict[str, list[dict]] = {theme: [] for theme in BENCH_THEMES}
    with Manifest(manifest_path) as manifest:
        themes = {sample.id: sample.theme for sample in manifest.samples()}
        for sample in _chosen(manifest, samples):
            theme = themes[sample]
            edit = manifest.result(sample, 2)
            if theme not in BENCH_THEMES or edit is None or edit.record is None:
                continue
            video = Path("source_videos") / theme / f"{sample}.mp4"
            _copy(run.artifact(theme, "source_video", sample), bench / video)
            _copy(run.artifact(theme, "edited_frame0_foreground_removed", sample),
                  bench / "ref_images" / theme / f"{sample}.png")
            mask = run.artifact(theme, "source_video_mask", sample)
            if mask.is_file():
                _copy(mask, masks / theme / f"{sample}.npz")
            control = run.artifact(theme, "edited_video_canny", sample)
            if control.is_file():
                _copy(control, masks / theme / f"{sample}_control.mp4")
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
