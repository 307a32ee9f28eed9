"""VLM throughput: the pipeline's VLM and EditScore requests through each backend, in requests/s and output tokens/s.

One "sample" of the workload is what stages 1-5 ask a VLM for one clip (ours, from the stages' code): the camera
verdict (a 2 fps clip), scene, instruction, round-1 grounding (2 images), caption (text only), round-2 grounding on
11 frames, and EditScore (SC with 2 images + PQ with 1, x passes) on frame 0, on the removal and on 4 video frames.
Answer lengths are fixed per request kind (min = max new tokens, no grammar: engine throughput at the stages'
answer lengths, the way `vllm bench throughput` measures at fixed lengths); prompt lengths follow from the prompts
and the image sizes. Implementations:

  transformers-batch1    one request per generate() (today's single-request path)
  transformers-batched   one generate() per request kind (left-padded batches)
  openai                 --url: an OpenAI-compatible server (vLLM / SGLang), all requests in flight at once
  vllm                   --vllm: vLLM's offline engine in this process (GPU node), one generate() for all

The pipeline's own calls (the adapters' tasks: prompts, JSON-schema-constrained decoding, parsing, retries) are
measured too, over the same samples:

  tasks-batch1           Qwen3VLAdapter / EditScoreAdapter single calls, one sample after another, batch_size 1
  tasks-batched          the *_many methods over all samples (rows of every sample in calls of --batch-size)
  tasks-openai           --url: the *_many methods on the openai backend (the server batches the requests)

Their output tokens are the answers re-tokenized (constrained answers end where their JSON ends, so lengths vary).

--quick: the tiny random Qwen3-VL on CPU, one sample with 2 round-2 frames and 1 EditScore pair, 4-token answers,
and 2 samples through the tasks (checks the script runs; CI).

    python bench/vlm.py --quick
    python bench/vlm.py --model /models/qwen3_vl --samples 8 --vllm --url http://127.0.0.1:8000/v1 --served NAME
    python bench/vlm.py --tasks-only --model DIR --url URL --served NAME   # only the tasks rows
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import Bench  # noqa: E402

from sparkle_fast.models.vlm import PROMPTS  # noqa: E402
from sparkle_fast.models.vlm_backends import Sampling, VLMRequest  # noqa: E402

# Answer tokens per request kind (ours: about what the stages' answers hold with a real Qwen3-VL).
ANSWER_TOKENS = {"verdict": 120, "scene": 60, "instruction": 120, "ground": 80, "caption": 60, "frame": 40,
                 "editscore": 150}
QUICK_ANSWER_TOKENS = {kind: 4 for kind in ANSWER_TOKENS}


def workload(samples: int, size: tuple[int, int], passes: int, seed: int = 0, frames: int = 11,
             score_pairs: int = 6) -> list[tuple[str, VLMRequest]]:
    """(kind, request) pairs of `samples` clips; images of size (H, W); `frames` round-2 frames and `score_pairs`
    EditScore image pairs per clip (frame 0, the removal, 4 video frames)."""
    rng = np.random.RandomState(seed)
    height, width = size
    out: list[tuple[str, VLMRequest]] = []

    def image():
        return (rng.rand(height, width, 3) * 255).astype(np.uint8)

    def text(prompt: str, *images):
        return VLMRequest([{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}], images=list(images))

    for _ in range(samples):
        clip = np.stack([image() for _ in range(10)])  # 81 frames at 16 fps, sampled at 2 fps
        out.append(("verdict", VLMRequest([{"type": "video"}, {"type": "text", "text": PROMPTS["camera_motion"]}],
                                          video=clip, video_fps=2.0)))
        frame0, edited, removed = image(), image(), image()
        out.append(("scene", text(PROMPTS["describe_scene"], frame0)))
        instruction = PROMPTS["write_instruction"].format(original_scene="A street with shops and parked cars.",
                                                          theme="location", subtheme="coast", scene="harbor at dusk")
        out.append(("instruction", text(instruction, frame0)))
        out.append(("ground", text(PROMPTS["ground_foreground"], frame0, edited)))
        out.append(("caption", text(PROMPTS["background_caption"].format(
            prompt="Replace the background with a harbor at dusk, boats rocking on the water."))))
        labels = "; ".join(["woman in a red coat", "brown dog", "leash"])
        out += [("frame", text(PROMPTS["ground_per_frame"].format(labels=labels), image())) for _ in range(frames)]
        pairs = [(frame0, edited), (frame0, removed)] + [(image(), image()) for _ in range(4)]
        for source, result in pairs[:score_pairs]:
            for _ in range(passes):
                out.append(("editscore", text("Rate the edit: success and over-editing. " * 8, source, result)))
                out.append(("editscore", text("Rate the image: naturalness and artifacts. " * 8, result)))
    return out


def run_backend(backend, requests, lengths, *, grouped: bool) -> int:
    """Generate every request (grouped by kind into one call each, or all at once); returns output tokens."""
    kinds = sorted({kind for kind, _ in requests})
    tokens = 0
    batches = ([[r for k, r in requests if k == kind] for kind in kinds] if grouped
               else [[r] for _, r in requests])
    kind_of = {id(r): k for k, r in requests}
    for batch in batches:
        n = lengths[kind_of[id(batch[0])]]
        backend.generate(batch, None, Sampling(n, min_new_tokens=n))
        tokens += n * len(batch)
    return tokens


def run_all_at_once(backend, requests, lengths) -> int:
    """All kinds submitted together (server / vLLM engine): one generate() per answer length."""
    tokens = 0
    by_length: dict[int, list[VLMRequest]] = {}
    for kind, request in requests:
        by_length.setdefault(lengths[kind], []).append(request)
    for n, batch in by_length.items():
        backend.generate(batch, None, Sampling(n, min_new_tokens=n))
        tokens += n * len(batch)
    return tokens


def task_inputs(samples: int, size: tuple[int, int], frames: int, seed: int = 1) -> list[dict]:
    """Per sample what the stages hand the adapters: a 16 fps clip, frame 0, its edit, round-2 frames and labels."""
    rng = np.random.RandomState(seed)
    height, width = size

    def image():
        return (rng.rand(height, width, 3) * 255).astype(np.uint8)

    labels = [["woman in a red coat", "brown dog", "leash"], ["man"], ["child", "kite"]]
    return [{"clip": np.stack([image() for _ in range(20)]), "frame0": image(), "edited": image(),
             "frames": [image() for _ in range(frames)], "labels": labels[i % len(labels)],
             "prompt": "Replace the background with a harbor at dusk, boats rocking on the water."}
            for i in range(samples)]


def run_tasks(vlm, scorer, inputs: list[dict], *, batched: bool) -> list:
    """Every VLM task and EditScore on frame 0 for every sample: single calls one sample at a time, or the *_many
    methods over all samples. Returns every TaskResult."""
    if not batched:
        per_sample = []
        for x in inputs:
            row = [vlm.camera_motion_verdict(x["clip"]), vlm.describe_scene(x["frame0"]),
                   vlm.write_instruction(x["frame0"], "A street with shops.", "location", "coast", "harbor"),
                   vlm.ground_foreground(x["frame0"], x["edited"]), vlm.background_caption(x["prompt"]),
                   vlm.ground_per_frame(x["frames"], x["labels"])]
            if scorer is not None:
                row.append(scorer.score_edit(x["frame0"], x["edited"], x["prompt"]))
            per_sample.append(row)
        return [result for task in zip(*per_sample, strict=True) for result in task]  # task-major, as below
    n = len(inputs)
    frame0 = [x["frame0"] for x in inputs]
    out = (vlm.camera_motion_verdict_many([x["clip"] for x in inputs]) + vlm.describe_scene_many(frame0)
           + vlm.write_instruction_many(frame0, ["A street with shops."] * n, ["location"] * n, ["coast"] * n,
                                        ["harbor"] * n)
           + vlm.ground_foreground_many(frame0, [x["edited"] for x in inputs])
           + vlm.background_caption_many([x["prompt"] for x in inputs])
           + vlm.ground_per_frame_many([x["frames"] for x in inputs], [x["labels"] for x in inputs]))
    if scorer is not None:
        out += scorer.score_edit_many(frame0, [x["edited"] for x in inputs], [x["prompt"] for x in inputs])
    return out


def answer_tokens(tokenizer, results) -> tuple[int, int]:
    """(generations, output tokens) of TaskResults: every attempt's answer, re-tokenized, plus its stop token."""
    answers = [a for r in results for a in r.answers]
    return len(answers), sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers)


def measure_tasks(bench, model, processor, args, model_name: str) -> None:
    """The tasks rows (module docstring)."""
    from sparkle_fast.models.scorer import EditScoreAdapter, ScorerConfig
    from sparkle_fast.models.vlm import Qwen3VLAdapter, VLMConfig

    if args.quick or not args.model or args.short_answers:
        # Short answers for the tiny model (--quick: shorter still, so that CI stays cheap).
        config = VLMConfig(reasoning_chars=12, scene_chars=12, prompt_chars=16, caption_chars=12, label_chars=6,
                           max_objects=2) if args.quick else \
            VLMConfig(reasoning_chars=24, scene_chars=24, prompt_chars=32, caption_chars=24, label_chars=12,
                      max_objects=3)
        scorer_config = ScorerConfig(reasoning_chars=4 if args.quick else 16, max_new_tokens=64,
                                     passes=1 if args.quick else args.passes)
        height, width = (64, 64) if args.quick or not args.model else (int(v) for v in args.image_size.split("x"))
        samples, size, frames = (2, (64, 64), 2) if args.quick else (args.samples, (height, width), 11)
    else:
        config, scorer_config = VLMConfig(), ScorerConfig(passes=args.passes)
        height, width = (int(v) for v in args.image_size.split("x"))
        samples, size, frames = args.samples, (height, width), 11
    inputs = task_inputs(samples, size, frames)
    vlm = Qwen3VLAdapter(model, processor, config)
    scorer = EditScoreAdapter(model, processor, scorer_config)  # the same backbone, EditScore's prompts and passes
    case = {"model": model_name, "samples": samples, "tasks": "vlm+editscore", "image": f"{size[0]}x{size[1]}",
            "round2_frames": frames, "passes": scorer_config.passes}
    reference: list = []

    def record(impl, batched, note=""):
        results: list = []
        cpu: list = []

        def once():
            start = time.process_time()
            results[:] = run_tasks(vlm, scorer, inputs, batched=batched)
            cpu.append(time.process_time() - start)

        row = bench.measure(impl, once, case, note=note, repeat=1)
        # This process's CPU seconds (all threads): on a shared, loaded host wall time mostly measures the others.
        row["process_cpu_s"] = cpu[-1]
        generations, tokens = answer_tokens(processor.tokenizer, results)
        row.update(requests=generations, requests_per_s=generations / row["median_s"], output_tokens=tokens,
                   output_tokens_per_s=tokens / row["median_s"], results=len(results),
                   results_equal_to_batch1=(sum(a == b for a, b in zip(results, reference, strict=True))
                                            if reference else len(results)))
        print(f"  {impl}: {generations} generations, {row['requests_per_s']:.2f} requests/s, "
              f"{row['output_tokens_per_s']:.1f} output tokens/s, {row['process_cpu_s']:.1f} CPU s", flush=True)
        return results

    vlm.batch_size = scorer.batch_size = 1
    reference = record("tasks-batch1", batched=False, note="single calls, batch_size 1")
    vlm.batch_size = scorer.batch_size = args.batch_size
    record("tasks-batched", batched=True, note=f"*_many, batch_size {args.batch_size}")
    if args.url:
        from sparkle_fast.models.vlm_backends.openai_backend import OpenAIBackend

        vlm.backend = OpenAIBackend(args.url, args.served or model_name, concurrency=256)
        scorer.backend = OpenAIBackend(args.url, args.served or model_name, concurrency=256)
        record("tasks-openai", batched=True, note=args.url)
        vlm.backend.release()
        scorer.backend.release()


def main(argv=None) -> int:
    def extra(parser):
        parser.add_argument("--model", default="", help="a Qwen3-VL folder (default: the tiny random model)")
        parser.add_argument("--samples", type=int, default=4)
        parser.add_argument("--passes", type=int, default=4, help="EditScore passes")
        parser.add_argument("--image-size", default="720x1280", help="HxW of the frames")
        parser.add_argument("--url", default="", help="an OpenAI-compatible server to measure too")
        parser.add_argument("--served", default="", help="the server's model name")
        parser.add_argument("--vllm", action="store_true", help="measure vLLM's offline engine on --model")
        parser.add_argument("--batch-size", type=int, default=16, help="rows per generate call of the *_many rows")
        parser.add_argument("--tasks-only", action="store_true", help="only the tasks rows")
        parser.add_argument("--short-answers", action="store_true",
                            help="the tiny model's answer bounds for the tasks rows (a random --model)")

    bench, args = Bench.from_args("vlm", argv, __doc__.splitlines()[0], extra)
    from sparkle_fast.models.vlm_backends.transformers_backend import TransformersBackend

    if args.quick or not args.model:
        from sparkle_fast.models.tiny import tiny_qwen3_vl

        model, processor = tiny_qwen3_vl(0)
        samples, size, passes, lengths = (1, (64, 64), 1, QUICK_ANSWER_TOKENS) if args.quick else \
            (args.samples, (64, 64), args.passes, ANSWER_TOKENS)
        model_name = "tiny-random-qwen3-vl"
    else:
        import torch
        from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

        dtype = torch.bfloat16 if bench.device.startswith("cuda") else torch.float32
        model = Qwen3VLForConditionalGeneration.from_pretrained(args.model, dtype=dtype).to(bench.device).eval()
        processor = AutoProcessor.from_pretrained(args.model)
        height, width = (int(v) for v in args.image_size.split("x"))
        samples, size, passes, lengths = args.samples, (height, width), args.passes, ANSWER_TOKENS
        model_name = Path(args.model).name
    requests = workload(samples, size, passes, frames=2 if args.quick else 11, score_pairs=1 if args.quick else 6)
    case = {"model": model_name, "samples": samples, "requests": len(requests), "image": f"{size[0]}x{size[1]}",
            "passes": passes}
    output_tokens = sum(lengths[kind] for kind, _ in requests)

    def record(impl, fn, note=""):
        started = time.perf_counter()
        row = bench.measure(impl, fn, case, note=note, repeat=max(1, bench.repeat if not args.quick else 1))
        row["requests_per_s"] = len(requests) / row["median_s"]
        row["output_tokens"] = output_tokens
        row["output_tokens_per_s"] = output_tokens / row["median_s"]
        print(f"  {impl}: {row['requests_per_s']:.2f} requests/s, {row['output_tokens_per_s']:.1f} output tokens/s "
              f"({time.perf_counter() - started:.1f} s measured)", flush=True)

    if args.tasks_only:
        measure_tasks(bench, model, processor, args, model_name)
        bench.compare_to("tasks-batch1")
        bench.finish()
        return 0
    local = TransformersBackend(model, processor)
    record("transformers-batch1", lambda: run_backend(local, requests, lengths, grouped=False))
    record("transformers-batched", lambda: run_backend(local, requests, lengths, grouped=True))
    if args.url:
        from sparkle_fast.models.vlm_backends.openai_backend import OpenAIBackend

        server = OpenAIBackend(args.url, args.served or model_name, concurrency=256)
        record("openai", lambda: run_all_at_once(server, requests, lengths), note=args.url)
        server.release()
    if args.vllm:
        local.release()
        from sparkle_fast.models.vlm_backends.vllm_backend import VLLMBackend

        engine = VLLMBackend(args.model)
        record("vllm", lambda: run_all_at_once(engine, requests, lengths))
        engine.release()
    else:
        measure_tasks(bench, model, processor, args, model_name)
    bench.compare_to("transformers-batch1")
    bench.compare_to("tasks-batch1")
    bench.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
