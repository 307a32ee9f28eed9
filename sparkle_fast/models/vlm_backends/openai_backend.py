"""The openai backend: any OpenAI-compatible chat-completions server (a vLLM or SGLang server the user runs, or one
started for the tests), with the answer's JSON Schema as `response_format` {"type": "json_schema"}.

Images travel as PNG data URLs (lossless), a video as a lossless FFV1/Matroska data URL (vLLM decodes it with its
OpenCV video loader). The requests of one generate() call are sent concurrently so that the server's continuous
batching sees them together. Greedy is temperature 0; sampled requests pass `seed`, `top_p` and, when set, `top_k`
(a vLLM / SGLang extension of the API).
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from sparkle_fast.models.vlm_backends.base import (
    BackendError,
    Sampling,
    VLMBackend,
    VLMRequest,
    png_data_url,
    row_schemas,
)


def video_data_url(frames: np.ndarray, fps: float) -> str:
    """uint8 (T, H, W, 3) RGB frames as a lossless FFV1 video in Matroska, as a data: URL."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"video: expected uint8 (T, H, W, 3) frames, got {frames.dtype} {frames.shape}")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=max(1, int(round(fps))))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="bgr0")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return "data:video/x-matroska;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def openai_messages(request: VLMRequest) -> list[dict]:
    """The request as OpenAI chat messages: image items become image_url parts, the video item a video_url part."""
    images = iter(request.images)
    parts: list[dict] = []
    for item in request.content:
        kind = item.get("type")
        if kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": png_data_url(next(images))}})
        elif kind == "video":
            if request.video is None:
                raise ValueError("a video content item without request.video")
            parts.append({"type": "video_url",
                          "video_url": {"url": video_data_url(request.video, request.video_fps or 2.0)}})
        elif kind == "text":
            parts.append({"type": "text", "text": item["text"]})
        else:
            raise ValueError(f"unknown content item type {kind!r}")
    messages = [{"role": "system", "content": request.system}] if request.system else []
    return messages + [{"role": "user", "content": parts}]


class OpenAIBackend(VLMBackend):
    """url: the server's base URL (e.g. http://127.0.0.1:8000/v1); model: the served model name; api_key: a key or
    None (read from the environment variable api_key_env when set); concurrency: requests in flight at once."""

    name = "openai"

    def __init__(self, url: str, model: str, *, api_key: str | None = None, api_key_env: str = "",
                 timeout_s: float = 600.0, concurrency: int = 32):
        import httpx

        if not url:
            raise BackendError("the openai VLM backend needs a server URL ([vlm] url, e.g. http://127.0.0.1:8000/v1)")
        if not model:
            raise BackendError("the openai VLM backend needs the served model's name ([vlm] model)")
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise BackendError(f"[vlm] api_key_env names {api_key_env!r}, which is not set in the environment")
        self.url = url.rstrip("/")
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s,
                                    limits=httpx.Limits(max_connections=concurrency))
        self.concurrency = max(1, concurrency)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "url": self.url, "model": self.model}

    def release(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def body(self, request: VLMRequest, json_schema: dict | None, sampling: Sampling) -> dict:
        """The chat-completions request body for one request."""
        body: dict[str, Any] = {"model": self.model, "messages": openai_messages(request),
                                "max_tokens": sampling.max_new_tokens, "n": sampling.n}
        if sampling.min_new_tokens:  # a vLLM / SGLang extension
            body["min_tokens"] = sampling.min_new_tokens
        if sampling.greedy:
            body["temperature"] = 0.0
        else:
            body.update(temperature=sampling.temperature, top_p=sampling.top_p)
            seed = request.seed if request.seed is not None else sampling.seed
            if seed is not None:
                body["seed"] = seed
            if sampling.top_k:
                body["top_k"] = sampling.top_k
        if json_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": json_schema, "strict": True}}
        return body

    def _post(self, body: dict) -> list[str]:
        response = self._client.post("/chat/completions", json=body)
        if response.status_code != 200:
            raise BackendError(f"{self.url}/chat/completions answered {response.status_code}: "
                               f"{response.text[:500]}")
        choices = sorted(response.json()["choices"], key=lambda c: c.get("index", 0))
        return [choice["message"].get("content") or "" for choice in choices]

    def generate(self, requests: Sequence[VLMRequest], json_schema: dict | Sequence[dict | None] | None,
                 sampling: Sampling) -> list[list[str]]:
        if self._client is None:
            raise BackendError("the openai backend was released")
        schemas = row_schemas(json_schema, len(requests))  # one body per request, each with its own schema
        bodies = [self.body(request, schema, sampling) for request, schema in zip(requests, schemas, strict=True)]
        if len(bodies) == 1:
            return [self._post(bodies[0])]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(bodies))) as pool:
            return list(pool.map(self._post, bodies))

    def ready(self) -> bool:
        """Whether the server answers /models and serves self.model."""
        import httpx

        try:
            response = self._client.get("/models", timeout=5.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and any(m.get("id") == self.model for m in response.json().get("data", []))
