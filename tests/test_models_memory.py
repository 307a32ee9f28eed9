"""Load, run, release, load again: a released adapter leaves no tensors behind (the driver swaps models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparkle_fast.models.base import live_tensor_bytes


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from sparkle_fast.models.tiny import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("models"), with_lora=False)


def _cycle(kind, folder, device):
    from sparkle_fast.models.editor import EditorConfig, FluxKleinEditor
    from sparkle_fast.models.scorer import EditScoreAdapter, ScorerConfig
    from sparkle_fast.models.vlm import Qwen3VLAdapter, VLMConfig

    image = (np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8)
    if kind == "vlm":
        adapter = Qwen3VLAdapter.from_pretrained(folder / "qwen3_vl", device=device,
                                                 config=VLMConfig(caption_chars=8))
        assert adapter.background_caption("Replace the background with snow.").ok
    elif kind == "editor":
        adapter = FluxKleinEditor.from_pretrained(
            folder / "flux2_klein", device=device,
            config=EditorConfig(num_inference_steps=1, max_sequence_length=16, text_encoder_out_layers=(1,)))
        assert adapter.edit(image, "snow").size == (64, 64)
    else:
        adapter = EditScoreAdapter.from_pretrained(folder / "editscore", device=device,
                                                   config=ScorerConfig(reasoning_chars=2, max_new_tokens=24))
        from sparkle_fast.models.base import to_pil
        from sparkle_fast.models.scorer import ScoreRequest

        assert adapter._generate([ScoreRequest((to_pil(image),), "rate", 0)])[0].startswith("{")
    adapter.release()


@pytest.mark.parametrize("kind", ["vlm", "editor", "scorer"])
def test_release_returns_host_memory(models_dir, kind):
    _cycle(kind, models_dir, "cpu")  # warm-up: lazy imports and library caches settle
    after_first = live_tensor_bytes()
    _cycle(kind, models_dir, "cpu")
    after_second = live_tensor_bytes()
    # A leaked model would hold at least its parameters (>= 100 kB for the smallest tiny model).
    assert after_second - after_first < 16_384


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["vlm", "editor", "scorer"])
def test_release_returns_gpu_memory(models_dir, kind):
    _cycle(kind, models_dir, "cuda")
    torch.cuda.synchronize()
    after_first = torch.cuda.memory_allocated()
    _cycle(kind, models_dir, "cuda")
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == after_first
