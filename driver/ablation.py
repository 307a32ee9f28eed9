"""`sparkle-fast run --ablation X --reuse-from RUN`: an ablation that starts from another run's finished stages.

An ablation swaps one part of the method (driver/config.py run.ablation): copy-paste and foreground-only change
stage 5, single-pass stage 4. The stages before that part are the method's own, so instead of running them again the
new output folder can be seeded with another run's results for them: the manifest rows (status, score, reason,
record, timing) and the artifacts those stages wrote are copied, and `run` then does only the changed stage and what
follows. The comparison is also cleaner: both datasets share the very same clips, edits, backgrounds (and masks),
so they differ only in the swapped part. Seeding needs a fresh --out (no manifest yet) and a source run made with
another run.ablation (normally the full method).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from sparkle_fast import layout as layout_mod
from sparkle_fast._io import atomic_write

from .manifest import Manifest

FIRST_CHANGED_STAGE = {"copy-paste": 5, "foreground-only": 5, "single-pass": 4}
STAGE_ARTIFACTS = {  # what each stage writes under the layout (a stage's jsonl lines live in its manifest record)
    1: ("source_video",),
    2: ("source_frame0", "edited_frame0"),
    3: ("edited_frame0_foreground_removed", "edited_background_video"),
    4: ("source_video_mask",),
}


def _copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as source, atomic_write(dst) as target:
        shutil.copyfileobj(source, target)


def reuse_stages(source: str | os.PathLike, out: str | os.PathLike, ablation: str) -> dict:
    """Seed `out` with `source`'s results of the stages before the one `ablation` changes; returns
    {"samples": n, "stages": [1, ...]}. Raises ValueError naming the folder when it cannot."""
    if ablation not in FIRST_CHANGED_STAGE:
        raise ValueError(f"--reuse-from needs --ablation ({', '.join(FIRST_CHANGED_STAGE)}), got {ablation!r}")
    source, out = Path(source), Path(out)
    if not (source / "manifest.sqlite").is_file():
        raise ValueError(f"--reuse-from {source}: no manifest.sqlite (not a `sparkle-fast run` output folder)")
    if (out / "manifest.sqlite").exists():
        raise ValueError(f"--reuse-from: {out} already holds a run; seed only a fresh --out")
    config_path = source / "config.json"
    before = json.loads(config_path.read_text())["run"].get("ablation", "") if config_path.is_file() else ""
    if before == ablation:
        raise ValueError(f"--reuse-from {source}: that run already has run.ablation {ablation!r}")
    stages = list(range(1, FIRST_CHANGED_STAGE[ablation]))
    src_layout, out_layout = layout_mod.SparkleLayout(source), layout_mod.SparkleLayout(out)
    with Manifest(source / "manifest.sqlite") as old:
        samples = old.samples()
        rows = {n: {r.sample_id: r for r in old.results(n)} for n in stages}
    with Manifest(out / "manifest.sqlite") as new:
        new.add_samples(samples)
        for sample in samples:
            for stage in stages:
                row = rows[stage].get(sample.id)
                if row is None:
                    break
                if row.status == "done":
                    for kind in STAGE_ARTIFACTS[stage]:
                        path = src_layout.artifact(sample.theme, kind, sample.id)
                        if path.is_file():
                            _copy(path, out_layout.artifact(sample.theme, kind, sample.id))
                # The artifacts first, then the row: a kill in between leaves the stage to run again.
                new.finish(sample.id, stage, row.status, score=row.score, reason=row.reason, record=row.record,
                           seconds=row.seconds, timing=row.timing)
                if row.status != "done":
                    break
    return {"samples": len(samples), "stages": stages}
