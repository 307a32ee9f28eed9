"""Stage 3 background video: the LightX2V 4-step schedule, expert switching, LoRA fusing, input errors, tiny end to
end runs of the real WanImageToVideoPipeline on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparkle_fast.models import i2v
from sparkle_fast.models.i2v import I2VConfig, WanI2VGenerator

IMAGE = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
PROMPT = "a dog runs in the park"


def record_expert_calls(pipeline) -> list:
    """Hooks on both experts: every call appends (expert, timestep, batch size, input channels)."""
    calls = []
    for name in ("transformer", "transformer_2"):
        def hook(module, args, kwargs, name=name):
            hidden = kwargs["hidden_states"]
            calls.append((name, float(kwargs["timestep"][0]), hidden.shape[0], hidden.shape[1]))
        getattr(pipeline, name).register_forward_pre_hook(hook, with_kwargs=True)
    return calls


@pytest.fixture(scope="module")
def generator():
    return WanI2VGenerator.tiny()


def test_pinned_scheduler_gives_the_lightx2v_timesteps():
    scheduler = i2v.pinned_sigmas_scheduler()
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == pytest.approx([1000.0, 937.5, 2500 / 3, 625.0], abs=1e-3)
    assert scheduler.sigmas.tolist() == pytest.approx([1.0, 0.9375, 2 / 3 * 1.25, 0.625, 0.0], abs=1e-6)
    with pytest.raises(ValueError, match="pinned to 4 steps"):
        scheduler.set_timesteps(50)


def test_stock_scheduler_is_the_trap():
    """The reason the wrapper exists: the stock set_timesteps(4) gives other timesteps."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    stock = FlowMatchEulerDiscreteScheduler(shift=5.0)
    stock.set_timesteps(4)
    assert stock.timesteps.tolist() != pytest.approx(list(i2v.LIGHTX2V_TIMESTEPS), abs=1.0)


def test_expert_rule():
    assert [i2v.expert_for_timestep(t, 0.9) for t in i2v.LIGHTX2V_TIMESTEPS] == ["high", "high", "low", "low"]
    assert i2v.expert_for_timestep(900.0, 0.9) == "high" and i2v.expert_for_timestep(899.9, 0.9) == "low"


def test_four_calls_at_lightx2v_timesteps_high_then_low_no_uncond(generator):
    calls = record_expert_calls(generator.pipeline)
    frames = generator.generate(IMAGE, PROMPT)
    assert frames.shape == (9, 32, 32, 3) and frames.dtype == np.uint8
    assert [c[0] for c in calls] == ["transformer", "transformer", "transformer_2", "transformer_2"]
    assert [c[1] for c in calls] == pytest.approx([1000.0, 937.5, 2500 / 3, 625.0], abs=1e-3)
    assert all(c[2] == 1 for c in calls), "guidance 1 must not batch an unconditional pass"
    assert all(c[3] == 36 for c in calls)


def test_seeded_determinism(generator):
    a = generator.generate(IMAGE, PROMPT, seed=3)
    b = generator.generate(IMAGE, PROMPT, seed=3)
    c = generator.generate(IMAGE, PROMPT, seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_input_errors(generator):
    with pytest.raises(ValueError, match="image is 48x32"):
        generator.generate(np.zeros((32, 48, 3), np.uint8), PROMPT)
    with pytest.raises(ValueError, match="longer than max_sequence_length=16"):
        generator.generate(IMAGE, " ".join(["dog"] * 40))
    with pytest.raises(ValueError, match="4k\\+1"):
        generator.generate(IMAGE, PROMPT, num_frames=8)
    with pytest.raises(ValueError, match="multiples of 16"):
        generator.generate(IMAGE, PROMPT, height=40)
    result = generator.try_generate(np.zeros((32, 48, 3), np.uint8), PROMPT)
    assert not result.ok and "image is 48x32" in result.reason


def test_resize_inputs_is_documented_alternative():
    gen = WanI2VGenerator.tiny(config=I2VConfig(num_frames=5, height=32, width=32, max_sequence_length=16,
                                                resize_inputs=True))
    assert gen.generate(np.zeros((40, 48, 3), np.uint8), PROMPT).shape == (5, 32, 32, 3)


def fake_lightx2v_lora(seed: int, rank: int = 4, dim: int = 24, ffn: int = 32) -> dict:
    """A LoRA in LightX2V's original-Wan key layout (diffusion_model.blocks.N.<module>.lora_down/up + alpha)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for block in range(2):
        shapes = {f"{attn}.{proj}": (dim, dim) for attn in ("self_attn", "cross_attn") for proj in "qkvo"}
        shapes.update({"ffn.0": (ffn, dim), "ffn.2": (dim, ffn)})
        for name, (out_dim, in_dim) in shapes.items():
            prefix = f"diffusion_model.blocks.{block}.{name}"
            state[f"{prefix}.lora_down.weight"] = torch.randn(rank, in_dim, generator=g) * 0.3
            state[f"{prefix}.lora_up.weight"] = torch.randn(out_dim, rank, generator=g) * 0.3
            state[f"{prefix}.alpha"] = torch.tensor(float(rank))
    return state


def test_lightx2v_lora_fuses_into_both_experts_and_changes_them():
    gen = WanI2VGenerator.tiny()
    pipe = gen.pipeline
    before = {n: getattr(pipe, n).blocks[0].attn1.to_q.weight.detach().clone() for n in ("transformer",
                                                                                          "transformer_2")}
    x = torch.randn(1, 36, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([1000.0])

    def outputs():
        with torch.no_grad():
            return {n: getattr(pipe, n)(hidden_states=x, timestep=t, encoder_hidden_states=text,
                                        return_dict=False)[0] for n in ("transformer", "transformer_2")}

    out_before = outputs()
    high, low = fake_lightx2v_lora(1), fake_lightx2v_lora(2)
    i2v.fuse_lightx2v_loras(pipe, high, low)
    out_after = outputs()
    for name, lora in (("transformer", high), ("transformer_2", low)):
        module = getattr(pipe, name)
        assert not any("lora" in k for k in module.state_dict()), "LoRA layers must be fused and unloaded"
        down = lora["diffusion_model.blocks.0.self_attn.q.lora_down.weight"]
        up = lora["diffusion_model.blocks.0.self_attn.q.lora_up.weight"]
        torch.testing.assert_close(module.blocks[0].attn1.to_q.weight, before[name] + up @ down,
                                   rtol=1e-4, atol=1e-5)
        assert not torch.allclose(out_before[name], out_after[name])


def test_lora_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="high_noise_model.safetensors"):
        i2v._load_lora_source(tmp_path / "high_noise_model.safetensors")


def test_write_background_video(generator, tmp_path):
    from sparkle_fast.video import probe

    path = generator.generate_to_file(tmp_path / "edited_background_video" / "x.mp4", IMAGE, PROMPT)
    info = probe(path)
    assert (info.width, info.height) == (32, 32) and info.frame_count == 9


def test_defaults_are_sparkles():
    cfg = I2VConfig()
    assert (cfg.num_frames, cfg.height, cfg.width, cfg.fps) == (81, 720, 1280, 16)
    assert cfg.distilled and cfg.boundary_ratio == 0.9 and cfg.sigmas == (1.0, 0.75, 0.5, 0.25) and cfg.shift == 5


def test_sequential_experts_keeps_one_resident():
    gen = WanI2VGenerator.tiny()
    swapper = i2v.apply_speed_options(gen.pipeline, i2v.SpeedOptions(sequential_experts=True), "cpu")
    swapper.moves.clear()
    gen.generate(IMAGE, PROMPT, num_frames=5)
    # high expert loaded for steps 1-2, then swapped out before the low expert comes in; no swap back.
    assert swapper.moves == [("transformer", "cpu"), ("transformer", "cpu"), ("transformer_2", "cpu")]
    swapper.remove()


def test_loading_from_folder_and_missing_weights(tmp_path):
    from sparkle_fast.models.slots import ModelFolderError
    from sparkle_fast.models.tiny import tiny_wan_i2v

    folder = tmp_path / "wan22_i2v"
    tiny_wan_i2v(0).save_pretrained(folder)
    (folder / "lightx2v").mkdir()
    from safetensors.torch import save_file

    save_file(fake_lightx2v_lora(1), str(folder / "lightx2v" / "high_noise_model.safetensors"))
    save_file(fake_lightx2v_lora(2), str(folder / "lightx2v" / "low_noise_model.safetensors"))
    gen = WanI2VGenerator.from_pretrained(folder, device="cpu", config=I2VConfig(num_frames=5, height=32, width=32,
                                                                                 max_sequence_length=16))
    assert gen.generate(IMAGE, PROMPT).shape == (5, 32, 32, 3)
    (folder / "transformer_2" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelFolderError) as info:
        WanI2VGenerator.from_pretrained(folder, device="cpu")
    assert info.value.problems == [f"[i2v] {folder / 'transformer_2'}: no weights (*.safetensors)"]


def test_distilled_schedule_only_with_the_loras(tmp_path):
    """No LightX2V LoRAs: the 4-step schedule is refused at load with what to do; the stock schedule (the run
    config's [i2v] mode = "stock") runs its own steps and guidance with shift 5 whatever the folder's scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from sparkle_fast.driver.config import load_config
    from sparkle_fast.models.slots import ModelLoadError
    from sparkle_fast.models.tiny import tiny_wan_i2v

    folder = tmp_path / "wan22_i2v"
    tiny_wan_i2v(0).save_pretrained(folder)
    FlowMatchEulerDiscreteScheduler(shift=1.0).save_pretrained(folder / "scheduler")
    small = dict(num_frames=5, height=32, width=32, max_sequence_length=16)
    with pytest.raises(ModelLoadError, match="needs the distillation LoRAs") as info:
        WanI2VGenerator.from_pretrained(folder, device="cpu", config=I2VConfig(**small))
    assert str(folder / "lightx2v") in str(info.value) and 'mode = "stock"' in str(info.value)
    assert i2v.distillation_problem("i2v", folder, I2VConfig(experts_distilled=True)) is None
    # A folder's LoRAs are never fused for the stock schedule.
    assert i2v.fuse_distillation(None, "i2v", folder, I2VConfig(distilled=False)) is None

    gen = WanI2VGenerator.from_pretrained(folder, device="cpu")  # settings deferred to the run config
    gen.use_run_config(load_config(overrides={"i2v.mode": "stock", "i2v.steps": 2, "i2v.guidance": 2.0}))
    gen.config = i2v.dataclasses.replace(gen.config, **small)
    assert gen.setup_error is None and gen.settings()["mode"] == "stock" and gen.loras is None
    calls = record_expert_calls(gen.pipeline)
    assert gen.generate(IMAGE, PROMPT).shape == (5, 32, 32, 3)
    want = FlowMatchEulerDiscreteScheduler(shift=5.0)
    want.set_timesteps(2)
    assert [c[1] for c in calls[::2]] == pytest.approx(want.timesteps.tolist())  # shift 5, not the folder's 1
    assert len(calls) == 4  # guidance 2 > 1: an unconditional pass per step

    distilled = WanI2VGenerator.from_pretrained(folder, device="cpu")
    distilled.use_run_config(load_config())  # [i2v] mode "distilled" (Sparkle's) without LoRAs
    result = distilled.try_generate(IMAGE, PROMPT)
    assert not result.ok and "needs the distillation LoRAs" in result.reason
