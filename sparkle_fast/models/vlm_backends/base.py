"""What every VLM backend shares: the request (chat content + its images / video), the sampling settings, and the
backend interface the adapters (models/vlm.py, models/scorer.py) call.

A backend only turns requests into raw answer strings. Prompts, schemas, parsing, retries and TaskResults stay in the
adapters, so they are the same on every backend:

  transformers  the model in this process, transformers' generate(), xgrammar-constrained (CPU, tests, small runs)
  vllm          vLLM's offline engine in this process: one batched generate() per call, structured outputs (GPU)
  openai        any OpenAI-compatible server (vLLM, SGLang, ...) through chat completions with a json_schema
                response_format; requests of one call are sent concurrently so the server batches them
"""

from __future__ import annotations

import base64
import io
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BACKENDS = ("transformers", "vllm", "openai")


@dataclass
class VLMRequest:
    """One generation.

    content:    chat content items in order: {"type": "image"}, {"type": "video"}, {"type": "text", "text": str}
    images:     the images the "image" items refer to, in order (PIL or uint8 (H, W, 3))
    video:      uint8 (T, H, W, 3) frames for the "video" item, or None
    video_fps:  the frame rate of `video` (the processor samples it at its own rate, 2 fps for Qwen3-VL)
    system:     an optional system message
    seed:       this request's sampling seed (overrides Sampling.seed; EditScore gives each pass its own)
    """

    content: list[dict]
    images: list = field(default_factory=list)
    video: np.ndarray | None = None
    video_fps: float | None = None
    system: str | None = None
    seed: int | None = None

    def messages(self) -> list[dict]:
        """Chat messages with typed content (the form transformers' chat templates and vLLM take)."""
        out = [{"role": "system", "content": [{"type": "text", "text": self.system}]}] if self.system else []
        return out + [{"role": "user", "content": list(self.content)}]


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens. temperature 0 is greedy (top_p / top_k / seed then unused); n answers per request (n > 1
    with greedy decoding gives n equal answers, made once)."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0        # 0: no top-k cut
    seed: int | None = None
    n: int = 1
    min_new_tokens: int = 0  # benchmarks: fixed answer lengths (min = max), as `vllm bench throughput` runs them

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


class BackendError(RuntimeError):
    """A backend that cannot be built or reached; the message says which and what to do."""


def row_schemas(json_schema: dict | Sequence[dict | None] | None, rows: int) -> list[dict | None]:
    """One JSON Schema (or None: unconstrained) per row: `json_schema` is one schema for every row, None, or a
    sequence with one entry per row (rows of one call may answer different schemas, e.g. round-2 grounding of
    samples with different labels)."""
    if json_schema is None or isinstance(json_schema, dict):
        return [json_schema] * rows
    schemas = list(json_schema)
    if len(schemas) != rows:
        raise ValueError(f"{len(schemas)} JSON schemas for {rows} requests: give one schema, or one per request")
    return schemas


class VLMBackend(ABC):
    """Raw answers for batches of requests, optionally constrained to a JSON Schema (json_answers.to_json_schema):
    one schema for every request, or a sequence with one schema (or None) per request (row_schemas)."""

    name = "base"

    @abstractmethod
    def generate(self, requests: Sequence[VLMRequest], json_schema: dict | Sequence[dict | None] | None,
                 sampling: Sampling) -> list[list[str]]:
        """sampling.n answers per request (outer list in request order). Raises on a model / server error."""

    def release(self) -> None:
        """Return the memory (or connections) the backend holds; the adapter is unusable afterwards."""

    def describe(self) -> dict[str, Any]:
        """What a run records about the backend (name, model, where)."""
        return {"backend": self.name}


def png_data_url(image) -> str:
    """A data: URL holding the image as PNG (lossless, so a server sees the pixels the transformers path sees)."""
    from sparkle_fast.models.base import to_pil

    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
