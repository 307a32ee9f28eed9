"""`sparkle-fast demo`: the five stages end to end on CPU in a few minutes, with tiny random models.

    make_demo_clips(folder)   three short clips: two fixed cameras with a moving subject, one panning camera
    write_demo_inputs(folder) the clips and folder/inputs.csv (src_video, theme: each clip's theme given)
    run_demo(out)             inputs.csv -> run_pipeline (config: sparkle_fast/data/demo.toml, models "tiny") ->
                              out/report.html

Sample identity: the demo names each clip's theme in its CSV, so its sample ids (Sparkle_{theme}_{n}, numbered in CSV
order) do not depend on the clips' bytes; a folder input would draw themes from the files' content hashes, and the
clips' bytes depend on the encoder build (see docs/DETERMINISM.md).

The models are random, so their edits, videos, masks and scores are noise; the demo shows that every stage runs,
what each writes, how decisions are recorded and where the time goes. Its thresholds are lowered in its own config
file (saved as out/config.json and shown in the report); no code path knows it is a demo.
"""

from __future__ import annotations

import os
from pathlib import Path

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "sparkle_fast" / "data" / "demo.toml"
# (camera motion, photograph, seed, theme): the panning clip is there to be rejected by stage 1's camera filter.
DEMO_CLIPS = (("static", "astronaut", 0, "location"), ("static", "coffee", 1, "time"), ("pan", "rocket", 2, "season"))
DEMO_CSV = "inputs.csv"
RANDOM_MODELS_NOTE = (
    "The models in this demo are tiny and randomly initialised (same classes as Qwen3-VL, FLUX.2-klein, EditScore, "
    "SAM3 and Wan2.2, a few hundred kilobytes each). Their prompts, edits, masks, videos and scores are noise: what "
    "this report shows is that every stage runs, what each writes and why each sample was kept or rejected. The "
    "EditScore thresholds are lowered in the demo's config (below) so that samples get through; Sparkle's are "
    "8 / 8.5 / 8. The camera filter of stage 1 is real and rejects the panning clip.")


def demo_config_path() -> Path:
    """The demo's config file (packaged as sparkle_fast/data/demo.toml)."""
    import sparkle_fast

    packaged = Path(sparkle_fast.__file__).resolve().parent / "data" / "demo.toml"
    return packaged if packaged.exists() else DEMO_CONFIG


def make_demo_clips(folder: str | os.PathLike, *, n_frames: int = 17, size: tuple[int, int] = (64, 96)) -> list[Path]:
    """Write the demo's input clips (16 fps H.264) into `folder`; returns their paths."""
    from sparkle_fast.camera_synthetic import make_clip
    from sparkle_fast.video import write_video

    folder = Path(folder)
    paths = []
    for index, (motion, photo, seed, _) in enumerate(DEMO_CLIPS):
        clip = make_clip(motion, n_frames=n_frames, size=size, subject_fraction=0.12, photo=photo, seed=seed)
        paths.append(write_video(folder / f"demo_{index}_{motion}_{photo}.mp4", clip.frames, fps=16))
    return paths


def write_demo_inputs(folder: str | os.PathLike) -> Path:
    """The demo's clips (make_demo_clips) and folder/inputs.csv naming each clip's theme; returns the CSV's path.
    Written last and atomically: a CSV present means every clip it lists was written."""
    from sparkle_fast._io import atomic_write

    folder = Path(folder)
    paths = make_demo_clips(folder)
    lines = ["src_video,theme"] + [f"{path.name},{theme}" for path, (*_, theme) in zip(paths, DEMO_CLIPS, strict=True)]
    csv_path = folder / DEMO_CSV
    with atomic_write(csv_path) as handle:
        handle.write(("\n".join(lines) + "\n").encode())
    return csv_path


def run_demo(out: str | os.PathLike, *, config_path: str | os.PathLike | None = None, log=None,
             devices: list[str] | None = None) -> dict:
    """Make the clips (once), run all five stages with tiny models, write the report. Returns the run summary with
    "report" (the report's path) added. Rerunning resumes like `sparkle-fast run`. devices: as run_pipeline's."""
    from .config import load_config
    from .report import write_report
    from .run import run_pipeline

    out = Path(out)
    inputs = out / "demo_input" / DEMO_CSV
    if not inputs.exists():  # first run, or a run killed while writing them: (re)write the clips, then the CSV
        write_demo_inputs(inputs.parent)
    config = load_config(config_path or demo_config_path())
    summary = run_pipeline(inputs, out, config, models="tiny", log=log, devices=devices)
    summary["report"] = str(write_report(out, title="sparkle-fast demo: the five stages on tiny random models",
                                         note=RANDOM_MODELS_NOTE))
    return summary
