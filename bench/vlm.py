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

--quick: the tiny random Qwen3-VL on CPU, one sample with 2 round-2 frames and 1 EditScore pair, 4-token answers
(checks the script runs; CI).

    python bench/vlm.py --quick
    python bench/vlm.py --model /models/qwen3_vl --samples 8 --vllm --url http://127.0.0.1:8000/v1 --served NAME
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


def main(argv=None) -> int:
    def extra(parser):
        parser.add_argument("--model", default="", help="a Qwen3-VL folder (default: the tiny random model)")
        parser.add_argument("--samples", type=int, default=4)
        parser.add_argument("--passes", type=int, default=4, help="EditScore passes")
        parser.add_argument("--image-size", default="720x1280", help="HxW of the frames")
        parser.add_argument("--url", default="", help="an OpenAI-compatible server to measure too")
        parser.add_argument("--served", default="", help="the server's model name")
        parser.add_argument("--vllm", action="store_true", help="measure vLLM's offline engine on --model")

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
    bench.compare_to("transformers-batch1")
    bench.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
