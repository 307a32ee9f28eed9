"""The whole pipeline through the step runner: per-step time, batch sizes and model loads.

    python bench/pipeline.py [--copies 4] [--batch 8] [--models tiny|DIR] [--quick]

The demo's three clips (driver/demo.py), each remuxed into --copies distinct files (the same frames; a metadata tag
makes the bytes, hence the sample ids, differ), run through `run_pipeline` with the demo's config and the given
[batch] size for the VLM, EditScore and editor slots (the demo itself runs at 1). One row per step that ran:
seconds per sample (the step's wall time over its samples), its calls, mean batch, and its slot's loads and load
seconds. With the tiny models on a CPU the figures show the runner's behaviour (batching, loads), not model speed; on
a GPU give --models with real or full-size random-weight folders.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Bench  # noqa: E402

from sparkle_fast.driver.config import load_config  # noqa: E402
from sparkle_fast.driver.demo import demo_config_path, make_demo_clips  # noqa: E402
from sparkle_fast.driver.run import run_pipeline  # noqa: E402


def remux_copy(source: Path, target: Path, tag: str) -> None:
    """target: source's packets unchanged (no re-encode) with a metadata comment, so its bytes differ."""
    import av

    with av.open(str(source)) as inp, av.open(str(target), "w", format="mp4") as out:
        out.metadata["comment"] = tag
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        for packet in inp.demux(stream):
            if packet.dts is None:
                continue
            packet.stream = copy
            out.mux(packet)


def main(argv=None) -> int:
    def extra(parser):
        parser.add_argument("--copies", type=int, default=4, help="copies of each demo clip (3 clips)")
        parser.add_argument("--batch", type=int, default=8, help="[batch] vlm, scorer and editor")
        parser.add_argument("--models", default="tiny", help='"tiny" or a --models folder')

    bench, args = Bench.from_args("pipeline", argv, __doc__.splitlines()[0], extra)
    copies = 1 if bench.quick else args.copies
    config = load_config(demo_config_path(), overrides={"batch.vlm": args.batch, "batch.scorer": args.batch,
                                                        "batch.editor": args.batch})
    with tempfile.TemporaryDirectory(prefix="sparkle-bench-pipeline-") as folder:
        clips, inputs = Path(folder) / "clips", Path(folder) / "inputs"
        inputs.mkdir()
        for clip in make_demo_clips(clips):
            for k in range(copies):
                remux_copy(clip, inputs / f"{clip.stem}_{k:03d}.mp4", f"copy {k}")
        summary = run_pipeline(inputs, Path(folder) / "out", config, models=args.models, log=lambda message: None,
                               progress=lambda label, done, total: None)
    slots = summary.get("slots", {})
    for step in summary.get("steps", []):
        if not step["items"]:
            continue
        slot = slots.get(step["slot"] or "", {})
        per_item = step["seconds"] / step["items"]
        row = {"case": {"stage": step["stage"], "step": step["step"], "slot": step["slot"] or "kernels",
                        "samples": step["items"]},
               "impl": f"local-runner batch {args.batch}", "device": bench.device,
               "median_s": per_item, "min_s": per_item, "max_s": per_item, "iqr_s": 0.0,
               "calls": step["calls"], "mean_batch": step["mean_batch"], "outcomes": step["outcomes"],
               "slot_loads": slot.get("loads", 0), "slot_load_seconds": slot.get("load_seconds", 0.0),
               "peak_gpu_bytes": step["peak_gpu_bytes"], "note": "seconds per sample at this step"}
        bench.rows.append(row)
        print(f"{step['stage']} {step['step']:<20} {row['case']['slot']:<8} {step['items']:4d} samples "
              f"{step['calls']:4d} calls  batch {step['mean_batch']:5.2f}  {per_item * 1e3:9.1f} ms/sample  "
              f"loads {row['slot_loads']} ({row['slot_load_seconds']:.2f} s)", flush=True)
    print(f"wall {summary['wall_seconds']:.1f} s, peak resident model bytes {summary.get('peak_resident_bytes')}")
    bench.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
