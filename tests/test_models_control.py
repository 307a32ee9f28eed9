"""Stage 5 Fun-Control on diffusers building blocks: the 52-channel conditioning layout, expert switching (the
high-noise expert on the high-noise steps), seeded determinism, input errors, the VACE backend, tiny end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparkle_fast.models.control import (
    CHANNEL_LAYOUT,
    FunControlConfig,
    FunControlGenerator,
    control_video_to_unit,
    score_frame_indices,
)

RNG = np.random.default_rng(0)
CONTROL = (RNG.random((9, 32, 32, 3)) > 0.8).astype(np.uint8) * 255
START = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
PROMPT = "a dog runs in the park"


def record_inputs(pipeline) -> list:
    calls = []
    for name in ("transformer", "transformer_2"):
        def hook(module, args, kwargs, name=name):
            calls.append((name, float(kwargs["timestep"][0]), kwargs["hidden_states"].detach().clone()))
        getattr(pipeline, name).register_forward_pre_hook(hook, with_kwargs=True)
    return calls


@pytest.fixture(scope="module")
def fun():
    return FunControlGenerator.tiny()


def test_score_frame_indices():
    assert score_frame_indices(81) == [1, 26, 51, 76]
    assert score_frame_indices(3) == [1, 2]
    with pytest.raises(ValueError):
        score_frame_indices(1)


def test_channel_layout_of_the_transformer_input(fun):
    pipe = fun.pipeline
    calls = record_inputs(pipe)
    fun.generate(CONTROL, START, PROMPT)
    x = calls[0][2]
    assert [n for _, n in CHANNEL_LAYOUT] == [16, 16, 4, 16] and x.shape == (1, 52, 3, 4, 4)
    # Recompute each block independently with the VAE.
    z = pipe.vae.config.z_dim
    mean = torch.tensor(pipe.vae.config.latents_mean).view(1, z, 1, 1, 1)
    std = torch.tensor(pipe.vae.config.latents_std).view(1, z, 1, 1, 1)

    def encode(pixels):
        with torch.no_grad():
            return (pipe.vae.encode(pixels).latent_dist.mode() - mean) / std

    control = torch.from_numpy(CONTROL).float().permute(3, 0, 1, 2)[None] / 255 * 2 - 1
    torch.testing.assert_close(x[:, 16:32], encode(control), rtol=1e-4, atol=1e-4)
    assert torch.equal(x[:, 32:36, 0], torch.ones_like(x[:, 32:36, 0]))
    assert torch.equal(x[:, 32:36, 1:], torch.zeros_like(x[:, 32:36, 1:]))
    first = torch.from_numpy(START).float().permute(2, 0, 1)[None, :, None] / 255 * 2 - 1
    image_video = torch.cat([first, torch.zeros(1, 3, 8, 32, 32)], dim=2)
    torch.testing.assert_close(x[:, 36:52], encode(image_video), rtol=1e-4, atol=1e-4)
    # The noise block is the only part that changes between steps; the conditioning is constant.
    assert all(torch.equal(c[2][:, 16:], x[:, 16:]) for c in calls)
    assert not torch.equal(calls[1][2][:, :16], x[:, :16])


def test_high_noise_expert_runs_the_high_noise_steps():
    gen = FunControlGenerator.tiny(config=FunControlConfig(num_frames=5, height=32, width=32, distilled=True,
                                                           max_sequence_length=16))
    calls = record_inputs(gen.pipeline)
    gen.generate(CONTROL[:5], START, PROMPT)
    assert [(c[0], round(c[1], 2)) for c in calls] == [("transformer", 1000.0), ("transformer", 937.5),
                                                       ("transformer_2", 833.33), ("transformer_2", 625.0)]
    assert all(c[2].shape[0] == 1 for c in calls)


def test_guidance_runs_an_unconditional_pass():
    gen = FunControlGenerator.tiny(config=FunControlConfig(num_frames=5, height=32, width=32, num_inference_steps=2,
                                                           guidance_scale=5.0, max_sequence_length=16))
    calls = record_inputs(gen.pipeline)
    gen.generate(CONTROL[:5], START, PROMPT)
    assert len(calls) == 4 and calls[0][0] == calls[1][0] == "transformer"


def test_seeded_determinism_and_control_matters(fun):
    a = fun.generate(CONTROL, START, PROMPT, seed=1)
    assert a.shape == (9, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, fun.generate(CONTROL, START, PROMPT, seed=1))
    assert not np.array_equal(a, fun.generate(CONTROL, START, PROMPT, seed=2))
    assert not np.array_equal(a, fun.generate(255 - CONTROL, START, PROMPT, seed=1))


def test_input_errors(fun):
    with pytest.raises(ValueError, match="control video has 5 frames but 9 were requested"):
        fun.generate(CONTROL[:5], START, PROMPT)
    with pytest.raises(ValueError, match="control video is 16x32"):
        fun.generate(CONTROL[:, :, :16], START, PROMPT)
    with pytest.raises(ValueError, match="start_image is 16x32"):
        fun.generate(CONTROL, START[:, :16], PROMPT)
    with pytest.raises(ValueError, match="longer than max_sequence_length"):
        fun.generate(CONTROL, START, "dog " * 30)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        control_video_to_unit(CONTROL.astype(np.float32))
    result = fun.try_generate(CONTROL[:5], START, PROMPT)
    assert not result.ok and "9 were requested" in result.reason


def test_wrong_channel_count_is_rejected():
    from sparkle_fast.models.control import WanFunControlPipeline
    from sparkle_fast.models.tiny import tiny_wan_parts, tiny_wan_transformer

    tokenizer, text_encoder, vae = tiny_wan_parts()
    with pytest.raises(ValueError, match="52 input channels"):
        WanFunControlPipeline(tokenizer, text_encoder, vae, None, tiny_wan_transformer(36))


def test_vace_backend_same_interface():
    gen = FunControlGenerator.tiny(backend="vace", config=FunControlConfig(num_frames=5, height=32, width=32,
                                                                           distilled=True, max_sequence_length=16))
    calls = record_inputs(gen.pipeline)
    out = gen.generate(CONTROL[:5], START, PROMPT)
    assert out.shape == (5, 32, 32, 3) and out.dtype == np.uint8
    assert [c[0] for c in calls] == ["transformer", "transformer", "transformer_2", "transformer_2"]
    assert np.array_equal(out, gen.generate(CONTROL[:5], START, PROMPT))


def test_save_load_round_trip_and_missing_file(tmp_path):
    from sparkle_fast.models.slots import ModelFolderError
    from sparkle_fast.models.tiny import save_tiny_video_models

    root = save_tiny_video_models(tmp_path)
    config = FunControlConfig(num_frames=5, height=32, width=32, num_inference_steps=2, guidance_scale=1.0,
                              max_sequence_length=16)
    loaded = FunControlGenerator.from_pretrained(root / "wan22_fun_control", device="cpu", config=config)
    direct = FunControlGenerator.tiny(config=config)
    assert np.array_equal(loaded.generate(CONTROL[:5], START, PROMPT), direct.generate(CONTROL[:5], START, PROMPT))
    (root / "wan22_fun_control" / "fun_control.json").unlink()
    with pytest.raises(ModelFolderError, match=r"\[control\].*fun_control.json"):
        FunControlGenerator.from_pretrained(root / "wan22_fun_control", device="cpu")
