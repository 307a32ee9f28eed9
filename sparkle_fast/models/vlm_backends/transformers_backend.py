"""The transformers backend: a Qwen3-VL / Qwen2.5-VL model and its processor in this process, answers from
generate() with xgrammar-constrained decoding (grammar.py). Batches of requests run as one left-padded generate(),
each row constrained by its own grammar (rows of one call may answer different schemas).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sparkle_fast.models.base import free_memory, to_pil
from sparkle_fast.models.vlm_backends.base import Sampling, VLMBackend, VLMRequest, row_schemas


class TransformersBackend(VLMBackend):
    """model: a transformers *ForConditionalGeneration (eval mode, on its device); processor: its AutoProcessor.
    prompt_renderer: optional callable(request) -> prompt text, for backbones with their own template (EditScore-7B's
    Qwen2.5-VL template); by default the processor's chat template renders request.messages()."""

    name = "transformers"

    def __init__(self, model, processor, *, prompt_renderer=None):
        self.model = model
        self.processor = processor
        self.prompt_renderer = prompt_renderer
        self._grammars = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def release(self) -> None:
        device = self.device if self.model is not None else None
        self.model = None
        self.processor = None
        self._grammars = None
        free_memory(device)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": type(self.model).__name__ if self.model is not None else None}

    # -- pieces ---------------------------------------------------------------------------------------------------
    def stop_token_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
        im_end = self.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
        return sorted({int(t) for t in eos + [im_end] if t is not None and int(t) >= 0})

    def grammars(self):
        if self._grammars is None:
            from sparkle_fast.models.vlm_backends.grammar import JsonGrammars

            config = getattr(self.model.config, "text_config", self.model.config)
            self._grammars = JsonGrammars(self.processor.tokenizer, config.vocab_size, self.stop_token_ids())
        return self._grammars

    def render(self, request: VLMRequest) -> str:
        if self.prompt_renderer is not None:
            return self.prompt_renderer(request)
        return self.processor.apply_chat_template(request.messages(), add_generation_prompt=True, tokenize=False)

    def encode(self, requests: Sequence[VLMRequest]):
        """The processor's batch (left-padded) for the requests, on the model's device."""
        texts, images, videos, metadata = [], [], [], []
        for request in requests:
            texts.append(self.render(request))
            images += [to_pil(im) for im in request.images]
            if request.video is not None:
                videos.append(np.asarray(request.video))
                frames = len(request.video)
                metadata.append({"fps": float(request.video_fps or 2.0), "total_num_frames": frames,
                                 "frames_indices": list(range(frames))})
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "padding_side": "left", "return_tensors": "pt"}
        if images:
            kwargs["images"] = images
        if videos:
            kwargs["videos"] = videos
            kwargs["video_metadata"] = metadata
        return self.processor(**kwargs).to(self.device)

    # -- generation -----------------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[VLMRequest], json_schema: dict | Sequence[dict | None] | None,
                 sampling: Sampling) -> list[list[str]]:
        if not requests:
            return []
        copies = 1 if sampling.greedy else sampling.n
        batch = [request for request in requests for _ in range(copies)]
        schemas = [schema for schema in row_schemas(json_schema, len(requests)) for _ in range(copies)]
        inputs = self.encode(batch)
        processors: list[Any] = []
        if any(schema is not None for schema in schemas):
            shared = all(schema is schemas[0] for schema in schemas)
            processors.append(self.grammars().processor(schemas[0] if shared else schemas, len(batch)))
        if not sampling.greedy:
            # Each row samples from its own seeded stream (the request's seed, else the call's seed + copy index),
            # so a row's answer does not depend on the rows batched with it. Last: after the grammar's mask.
            from sparkle_fast.models.seeded_sampler import SeededRowSampler

            base = 0 if sampling.seed is None else sampling.seed
            seeds = [(request.seed if request.seed is not None else base) + copy
                     for request in requests for copy in range(copies)]
            processors.append(SeededRowSampler(seeds, temperature=sampling.temperature, top_k=sampling.top_k,
                                               top_p=sampling.top_p))
        # Greedy; when sampling, greedy over the sampler's one finite token per row is that row's seeded draw.
        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "do_sample": False, "temperature": None,
                                  "top_p": None, "top_k": None, "logits_processor": processors}
        if sampling.min_new_tokens:
            kwargs["min_new_tokens"] = sampling.min_new_tokens
        with torch.inference_mode():
            out = self.model.generate(**inputs, **kwargs)
        answers = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True,
                                              clean_up_tokenization_spaces=False)
        if sampling.greedy:
            return [[answer] * sampling.n for answer in answers]
        return [answers[i * copies:(i + 1) * copies] for i in range(len(requests))]
