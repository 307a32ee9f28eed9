"""`sparkle-fast eval`: judge and measure result videos on a Sparkle-Bench-format benchmark (driver/eval.py)."""

from __future__ import annotations

import argparse

NAME = "eval"
HELP = ("score result videos on a benchmark with a VLM judge (Sparkle-Bench's six dimensions or OpenVE-Bench's "
        "background change) and judge-free metrics; optionally lay a run's or model's outputs out first")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bench", required=True, help="the benchmark folder ({edit_type}_bench.csv, "
                        "{edit_type}_metadata.jsonl, source_videos/; `sparkle-fast export-bench` writes one)")
    parser.add_argument("--results", required=True, action="append",
                        help="a results folder in the inference layout {edit_type}/{subtheme}---{scene_key}/"
                             "{id}_edited.mp4; repeat to evaluate several (e.g. full method and ablations)")
    parser.add_argument("--judge", default="tiny",
                        help="'tiny' (random tiny Qwen3-VL: tests, demo), a local Qwen3-VL folder, an "
                             "OpenAI-compatible endpoint URL (with --judge-model), or 'none' (metrics only)")
    parser.add_argument("--judge-model", help="the served model name at an endpoint --judge")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY",
                        help="environment variable holding the endpoint's API key (none is sent when it is unset)")
    parser.add_argument("--protocol", choices=("sparkle", "openve"), default="sparkle",
                        help="sparkle: Sparkle-Bench's six dimensions; openve: OpenVE-Bench's background-change "
                             "three (default sparkle)")
    parser.add_argument("--masks", help="folder of {edit_type}/{id}.npz masks and {id}_control.mp4 control videos "
                                        "for the judge-free metrics (default: BENCH/masks when it exists)")
    parser.add_argument("--layout-from", action="append", metavar="SRC",
                        help="first copy outputs into the matching --results folder in the inference layout: a "
                             "`sparkle-fast run` folder or a folder of {id}.mp4 / {id}_edited.mp4; one per --results")
    parser.add_argument("--edit-types", help="comma-separated edit types (default: every one the bench has)")
    parser.add_argument("--no-metrics", action="store_true", help="skip the judge-free metrics")
    parser.add_argument("--judge-frames", type=int, default=8, help="frames of each video shown to the judge")
    parser.add_argument("--report", help="write an HTML report comparing the results folders to this path")


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from sparkle_fast.driver.eval import BenchError, evaluate
    from sparkle_fast.models.slots import ModelFolderError

    judge = None if args.judge == "none" else args.judge
    edit_types = [t.strip() for t in args.edit_types.split(",") if t.strip()] if args.edit_types else None
    try:
        summaries = evaluate(args.bench, args.results, judge, protocol=args.protocol, masks=args.masks,
                             edit_types=edit_types, layout_from=args.layout_from, metrics=not args.no_metrics,
                             judge_model=args.judge_model, api_key_env=args.api_key_env,
                             judge_frames=args.judge_frames)
        if args.report:
            from sparkle_fast.driver.eval_report import write_eval_report

            path = write_eval_report(args.report, args.bench, summaries, masks=args.masks)
            print(f"report: {path}", file=sys.stderr)
    except (BenchError, ModelFolderError, ValueError, OSError) as exc:
        print(f"sparkle-fast eval: {exc}", file=sys.stderr)
        return 2
    print(json.dumps([{"results": s["results"], "judge": s["judge"], "protocol": s["protocol"], **s["macro"]}
                      for s in summaries], indent=2))
    return 0
