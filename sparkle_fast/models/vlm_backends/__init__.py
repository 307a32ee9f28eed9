"""Where the VLM tasks (models/vlm.py) and EditScore (models/scorer.py) get their answers: a backend per process.

  transformers  (default) the model in this process, transformers' generate(); CPU, tests, small runs
  vllm          vLLM's offline engine in this process (GPU node): batched requests, structured outputs
  openai        an OpenAI-compatible server (vLLM / SGLang) at [vlm] url, json_schema response_format

The driver's [vlm] config section (driver/config.py) carries the choice; `use_settings(section)` makes it the default
for every adapter built with from_pretrained afterwards. See docs/VLM_BACKENDS.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkle_fast.models.vlm_backends.base import (
    BACKENDS,
    BackendError,
    Sampling,
    VLMBackend,
    VLMRequest,
    png_data_url,
    row_schemas,
)

__all__ = ["BACKENDS", "BackendError", "BackendSettings", "Sampling", "VLMBackend", "VLMRequest",
           "backend_from_settings", "current_settings", "png_data_url", "row_schemas", "use_settings"]


@dataclass
class BackendSettings:
    """The [vlm] section: which backend, and for `openai` where the server is and what its models are called.

    backend:       "transformers", "vllm" or "openai"
    url:           openai: the server's base URL, e.g. http://127.0.0.1:8000/v1
    model:         openai: the served name of the Qwen3-VL model
    scorer_url:    openai: the EditScore server's URL when it is another server (default: url)
    scorer_model:  openai: the served name of the EditScore backbone (LoRA merged: vlm_backends.lora)
    api_key_env:   openai: the environment variable holding the API key ("" = no key)
    concurrency:   openai: requests in flight at once
    merged_cache:  vllm: where EditScore's merged backbone folders are kept ("" = <scorer folder>/merged)
    """

    backend: str = "transformers"
    url: str = ""
    model: str = ""
    scorer_url: str = ""
    scorer_model: str = ""
    api_key_env: str = ""
    concurrency: int = 32
    merged_cache: str = ""


_CURRENT = BackendSettings()


def use_settings(settings: Any) -> None:
    """Make `settings` (a BackendSettings or the driver's [vlm] section) the default of from_pretrained."""
    global _CURRENT
    _CURRENT = settings if settings is not None else BackendSettings()


def current_settings() -> Any:
    return _CURRENT


def backend_from_settings(slot: str, folder: Any, settings: Any = None, *, prompt_renderer=None) \
        -> VLMBackend | None:
    """The backend a model slot ("vlm" or "scorer") runs on under `settings`, or None for transformers (the adapter
    then loads the model itself). folder: the slot's model folder (the vllm backend loads it; for "scorer" pass the
    merged backbone folder)."""
    settings = settings if settings is not None else _CURRENT
    kind = getattr(settings, "backend", "transformers")
    if kind not in BACKENDS:
        raise BackendError(f"[vlm] backend must be one of {', '.join(BACKENDS)}, got {kind!r}")
    if kind == "transformers":
        return None
    if kind == "openai":
        from sparkle_fast.models.vlm_backends.openai_backend import OpenAIBackend

        url = (settings.scorer_url or settings.url) if slot == "scorer" else settings.url
        model = settings.scorer_model if slot == "scorer" else settings.model
        return OpenAIBackend(url, model, api_key_env=settings.api_key_env, concurrency=settings.concurrency)
    from sparkle_fast.models.vlm_backends.vllm_backend import VLLMBackend

    return VLLMBackend(str(Path(folder)), prompt_renderer=prompt_renderer)
