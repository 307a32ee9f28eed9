"""The vllm backend: vLLM's offline engine (vllm.LLM) in this process, for a GPU node. Each generate() call is one
batched llm.generate() over all its requests (vLLM schedules them with continuous batching and prefix caching) with
structured outputs (xgrammar, no whitespace: the same masks as the transformers backend's grammar.py and as a vLLM
server started as in the README).

Written against vLLM's documented offline API (LLM, SamplingParams, StructuredOutputsParams, prompts as
{"prompt", "multi_modal_data"}); vLLM is imported only when the backend is built. It is NOT exercised by this
project's tests: CI has no GPU and the CPU build of vLLM is tested through its OpenAI-compatible server instead
(tests/test_vllm_server.py), which runs the same engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sparkle_fast.models.base import free_memory, to_pil
from sparkle_fast.models.vlm_backends.base import BackendError, Sampling, VLMBackend, VLMRequest, row_schemas

# Engine settings that make vLLM's masks equal the transformers backend's (grammar.py).
STRUCTURED_OUTPUTS = {"backend": "xgrammar", "disable_any_whitespace": True}


class VLLMBackend(VLMBackend):
    """model: a Hugging Face model folder (Qwen3-VL, or a merged EditScore backbone: see lora.merged_lora_folder).
    engine_kwargs go to vllm.LLM (e.g. tensor_parallel_size, gpu_memory_utilization, max_model_len)."""

    name = "vllm"

    def __init__(self, model: str, *, dtype: str = "auto", max_images: int = 2, max_videos: int = 1,
                 prompt_renderer=None, **engine_kwargs):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise BackendError("the vllm VLM backend needs vLLM in this environment (pip install vllm on a GPU node; "
                               "see README 'VLM backends'), or use backend = \"openai\" with a running server") \
                from exc
        from transformers import AutoProcessor

        self.model_path = str(model)
        self.processor = AutoProcessor.from_pretrained(self.model_path)
        self.prompt_renderer = prompt_renderer
        self.llm = LLM(model=self.model_path, dtype=dtype, limit_mm_per_prompt={"image": max_images,
                                                                                "video": max_videos},
                       structured_outputs_config=dict(STRUCTURED_OUTPUTS), **engine_kwargs)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_path}

    def release(self) -> None:
        self.llm = None
        self.processor = None
        free_memory()

    def prompt(self, request: VLMRequest) -> dict:
        """The request as a vLLM prompt dict: the chat template's text (one placeholder per image / video, which
        vLLM expands) and the images / video as multi_modal_data."""
        text = (self.prompt_renderer(request) if self.prompt_renderer is not None else
                self.processor.apply_chat_template(request.messages(), add_generation_prompt=True, tokenize=False))
        data: dict[str, Any] = {}
        if request.images:
            data["image"] = [to_pil(im) for im in request.images]
        if request.video is not None:
            frames = np.asarray(request.video)
            fps = float(request.video_fps or 2.0)
            metadata = {"fps": fps, "total_num_frames": len(frames), "frames_indices": list(range(len(frames))),
                        "duration": len(frames) / fps, "video_backend": "opencv", "do_sample_frames": True}
            data["video"] = [(frames, metadata)]
        return {"prompt": text, "multi_modal_data": data} if data else {"prompt": text}

    def sampling_params(self, json_schema: dict | None, sampling: Sampling, seed: int | None = None):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        kwargs: dict[str, Any] = {"n": sampling.n, "max_tokens": sampling.max_new_tokens,
                                  "min_tokens": sampling.min_new_tokens}
        if sampling.greedy:
            kwargs["temperature"] = 0.0
        else:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p,
                          seed=seed if seed is not None else sampling.seed,
                          top_k=sampling.top_k if sampling.top_k > 0 else -1)
        if json_schema is not None:
            kwargs["structured_outputs"] = StructuredOutputsParams(json=json_schema)
        return SamplingParams(**kwargs)

    def generate(self, requests: Sequence[VLMRequest], json_schema: dict | Sequence[dict | None] | None,
                 sampling: Sampling) -> list[list[str]]:
        if self.llm is None:
            raise BackendError("the vllm backend was released")
        # Structured outputs per request: rows of one call may answer different schemas.
        params = [self.sampling_params(schema, sampling, r.seed)
                  for r, schema in zip(requests, row_schemas(json_schema, len(requests)), strict=True)]
        outputs = self.llm.generate([self.prompt(r) for r in requests], params, use_tqdm=False)
        return [[completion.text for completion in output.outputs] for output in outputs]
