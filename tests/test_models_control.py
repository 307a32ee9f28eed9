"""Stage 5 Fun-Control on diffusers building blocks: the 52-channel conditioning layout, the reference image through
ref_conv, expert switching (the high-noise expert on the high-noise steps), seeded determinism, input errors, the run
config's [control] settings, load failures as per-sample failures, the VACE backend, tiny end to end."""

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
    """(expert, timestep, transformer input, reference latents or None) per transformer call."""
    calls = []
    for name in ("transformer", "transformer_2"):
        def hook(module, args, kwargs, name=name):
            ref = kwargs.get("ref_latents")
            calls.append((name, float(kwargs["timestep"][0]), kwargs["hidden_states"].detach().clone(),
                          None if ref is None else ref.detach().clone()))
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
    # The same edited frame, alone, is the reference image: its one latent frame goes to ref_conv.
    torch.testing.assert_close(calls[0][3], encode(first)[:, :, 0], rtol=1e-4, atol=1e-4)
    assert all(torch.equal(c[3], calls[0][3]) for c in calls)
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


def test_reference_tokens_are_one_frame_in_front_at_rotary_position_zero():
    """With ref_conv tied to the patch embedding's first 16 input channels, the reference path must equal diffusers'
    plain forward over a video with the reference latents as an extra frame 0 (VideoX-Fun's layout: reference
    tokens first, temporal position 0, dropped from the output)."""
    from sparkle_fast.models.tiny import tiny_wan_fun_control_transformer

    model = tiny_wan_fun_control_transformer(seed=5)
    with torch.no_grad():
        model.ref_conv.weight.copy_(model.patch_embedding.weight[:, :16, 0])
        model.ref_conv.bias.copy_(model.patch_embedding.bias)
    gen = torch.Generator().manual_seed(0)
    x, ref = torch.randn(1, 52, 3, 4, 6, generator=gen), torch.randn(1, 16, 4, 6, generator=gen)
    text, t = torch.randn(1, 8, 32, generator=gen), torch.tensor([700.0])
    frame0 = torch.cat([ref, torch.zeros(1, 36, 4, 6)], dim=1)[:, :, None]
    with torch.no_grad():
        got = model(x, t, text, ref_latents=ref, return_dict=False)[0]
        want = model(torch.cat([frame0, x], dim=2), t, text, return_dict=False)[0][:, :, 1:]
        plain = model(x, t, text, return_dict=False)[0]
    assert got.shape == x[:, :16].shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)  # the reference does change the prediction
    no_ref = tiny_wan_fun_control_transformer(seed=5, ref_conv=False)
    with pytest.raises(ValueError, match="no ref_conv"):
        no_ref(x, t, text, ref_latents=ref)


def test_latents_are_normalised_without_a_host_round_trip(fun, monkeypatch):
    """prepare_condition and reference_latents never copy a tensor to the host (they ran .cpu() per latent)."""
    pipe = fun.pipeline
    control = control_video_to_unit(CONTROL)
    start = torch.from_numpy(START).permute(2, 0, 1)[None].float() / 255

    def no_host(self, *args, **kwargs):
        raise AssertionError("a latent went through the host")

    monkeypatch.setattr(torch.Tensor, "cpu", no_host)
    monkeypatch.setattr(torch.Tensor, "numpy", no_host)
    with torch.no_grad():
        condition = pipe.prepare_condition(control, start, "cpu")
        reference = pipe.reference_latents(start, (1, 16) + tuple(condition.shape[2:]), "cpu")
    assert condition.shape == (1, 36, 3, 4, 4) and reference.shape == (1, 16, 4, 4)


@pytest.mark.gpu
def test_conditioning_on_cuda_stays_on_cuda_and_matches_cpu(fun):
    pipe = fun.pipeline
    control = control_video_to_unit(CONTROL)
    start = torch.from_numpy(START).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        want = pipe.prepare_condition(control, start, "cpu")
        pipe.vae.to("cuda")
        try:
            got = pipe.prepare_condition(control.cuda(), start.cuda(), "cuda")
        finally:
            pipe.vae.to("cpu")
    assert got.is_cuda
    torch.testing.assert_close(got.cpu(), want, rtol=1e-3, atol=1e-3)  # cuDNN vs CPU convolutions


def test_run_config_sets_sampling_and_image_inputs():
    from sparkle_fast.driver.config import load_config

    gen = FunControlGenerator.tiny(config=FunControlConfig(num_frames=5, height=32, width=32,
                                                           max_sequence_length=16))
    gen.use_run_config(load_config(overrides={"control.steps": 2, "control.guidance": 3.0, "control.seed": 7,
                                              "control.reference_image": False, "control.start_image": False}))
    assert gen.setup_error is None
    settings = gen.settings()
    assert (settings["mode"], settings["steps"], settings["guidance"], settings["shift"], settings["seed"]) == \
        ("stock", 2, 3.0, 5.0, 7)
    assert settings["start_image"] is False and settings["reference_image"] is False
    calls = record_inputs(gen.pipeline)
    gen.generate(CONTROL[:5], START, PROMPT)
    assert len(calls) == 4  # 2 steps, each with the unconditional pass (guidance 3 > 1)
    assert all(torch.equal(c[2][:, 32:], torch.zeros_like(c[2][:, 32:])) for c in calls)  # no start image
    assert all(c[3] is not None and not c[3].any() for c in calls)  # ref_conv gets zeros, as in VideoX-Fun


def test_save_load_round_trip_and_missing_file(tmp_path):
    from sparkle_fast.driver.config import load_config
    from sparkle_fast.models.slots import ModelFolderError, UnloadedModel
    from sparkle_fast.models.tiny import save_tiny_video_models
    from sparkle_fast.stages.common import load_slot_models

    root = save_tiny_video_models(tmp_path)
    folder = root / "wan22_fun_control"
    config = FunControlConfig(num_frames=5, height=32, width=32, num_inference_steps=2, guidance_scale=1.0,
                              max_sequence_length=16)
    loaded = FunControlGenerator.from_pretrained(folder, device="cpu", config=config)
    direct = FunControlGenerator.tiny(config=config)
    assert loaded.pipeline.accepts_reference
    assert np.array_equal(loaded.generate(CONTROL[:5], START, PROMPT), direct.generate(CONTROL[:5], START, PROMPT))

    # Distilled mode from a folder without LightX2V LoRAs: each sample fails with the reason, before any work.
    deferred = FunControlGenerator.from_pretrained(folder, device="cpu")
    deferred.use_run_config(load_config(overrides={"control.mode": "distilled"}))
    result = deferred.try_generate(CONTROL[:5], START, PROMPT, num_frames=5, height=32, width=32)
    assert not result.ok and "needs the distillation LoRAs" in result.reason and str(folder) in result.reason

    # Weights that cannot load: the stage gets a stand-in whose tasks fail with the reason; the run goes on.
    (folder / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    models = load_slot_models(root, {"control": (None, FunControlGenerator.from_pretrained)})
    assert isinstance(models["control"], UnloadedModel)
    failed = models["control"].try_generate(CONTROL[:5], START, PROMPT)
    assert not failed.ok and failed.reason.startswith(f"[control] {folder}") and "could not load" in failed.reason

    (folder / "fun_control.json").unlink()
    with pytest.raises(ModelFolderError, match=r"\[control\].*fun_control.json"):
        FunControlGenerator.from_pretrained(folder, device="cpu")
