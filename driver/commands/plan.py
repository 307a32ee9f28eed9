"""`sparkle-fast plan`: which models are resident when, whether they fit the GPU, and what a kept clip costs."""

from __future__ import annotations

import json
import sys

NAME = "plan"
HELP = "plan GPU memory (from configs and safetensors headers, no weights loaded) and estimate GPU-hours"


def add_arguments(parser) -> None:
    parser.add_argument("--models", required=True, help="the --models DIR of a run (one sub-folder per slot), or "
                        "'tiny' for the tiny random models")
    parser.add_argument("--gpu", default="H100", help="GPU for memory and the cost model: H100 (default), H200, "
                        "A100, L40S")
    parser.add_argument("--gpu-memory", type=float, default=None, metavar="GIB",
                        help="GPU memory in GiB (replaces the named GPU's)")
    parser.add_argument("--chunk-size", type=int, default=256, help="samples per chunk (model loads are amortised "
                        "over a chunk; default 256)")
    parser.add_argument("--stage5-steps", type=int, default=None, help="stage 5 sampling steps (default 50, "
                        "Fun-Control's); with --stage5-no-cfg for a distilled schedule")
    parser.add_argument("--stage5-no-cfg", action="store_true", help="stage 5 without classifier-free guidance")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")


def run(args) -> int:
    import tempfile

    from sparkle_fast.driver.plan import PlanError, format_plan, make_plan

    overrides = {}
    if args.stage5_steps is not None:
        overrides["render"] = args.stage5_steps
    if args.stage5_no_cfg:
        overrides["render.cfg"] = False
    with tempfile.TemporaryDirectory(prefix="sparkle-plan-") as scratch:
        models = args.models
        if models == "tiny":
            from sparkle_fast.models.tiny import save_tiny_models

            models = save_tiny_models(scratch)
        try:
            plan = make_plan(models, gpu=args.gpu, gpu_memory_gib=args.gpu_memory, chunk_size=args.chunk_size,
                             steps_override=overrides)
        except PlanError as exc:
            print(f"sparkle-fast plan: {exc}", file=sys.stderr)
            return 2
    print(json.dumps(plan.to_dict(), indent=2) if args.json else format_plan(plan))
    if not plan.fits:
        for problem in plan.problems:
            print(f"sparkle-fast plan: {problem}", file=sys.stderr)
        return 1
    return 0
