"""VideoX-Fun -> ours: a tiny Fun-Control checkpoint saved in VideoX-Fun's layout (original Wan key names,
high_noise_model/ + low_noise_model/, ref_conv like Wan2.2-Fun-A14B-Control) converts back to the same weights, with
the experts on the right names, and loads and generates with the reference image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sparkle_fast.models.convert_videox_fun import ConversionError, convert_videox_fun_checkpoint, main

# diffusers name -> original Wan name, written here independently of the converter (which uses diffusers' map).
TO_ORIGINAL = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn1", "self_attn"), ("attn2", "cross_attn"),
    (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."), (".to_out.0.", ".o."),
    ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"),
    (".norm2.", ".norm3."),  # diffusers' cross-attention norm is Wan's norm3
    ("proj_out", "head.head"),
]


def to_videox_fun(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        new = key
        if key == "scale_shift_table":
            new = "head.modulation"
        elif key.endswith(".scale_shift_table"):
            new = key.replace("scale_shift_table", "modulation")
        for ours, theirs in TO_ORIGINAL:
            new = new.replace(ours, theirs)
        out[new] = value.clone().contiguous()
    return out


def write_videox_fun(root, high, low, extras=None):
    for folder, model in (("high_noise_model", high), ("low_noise_model", low)):
        (root / folder).mkdir(parents=True)
        c = model.config
        config = {"_class_name": "WanModel", "model_type": "i2v", "dim": c.num_attention_heads * c.attention_head_dim,
                  "num_heads": c.num_attention_heads, "in_dim": c.in_channels, "out_dim": c.out_channels,
                  "ffn_dim": c.ffn_dim, "freq_dim": c.freq_dim, "num_layers": c.num_layers, "eps": c.eps,
                  "text_len": 512}
        (root / folder / "config.json").write_text(json.dumps(config))
        state = to_videox_fun(model.state_dict())
        state.update(extras or {})
        save_file(state, str(root / folder / "diffusion_pytorch_model.safetensors"))


@pytest.fixture()
def experts():
    from sparkle_fast.models.tiny import tiny_wan_fun_control_transformer

    return tiny_wan_fun_control_transformer(seed=11), tiny_wan_fun_control_transformer(seed=12)


def test_round_trip_with_ref_conv_loads_and_generates(tmp_path, experts):
    from sparkle_fast.models.control import WanFunControlTransformer3DModel
    from sparkle_fast.models.tiny import tiny_wan_i2v

    high, low = experts
    assert high.ref_conv is not None
    write_videox_fun(tmp_path / "src", high, low)
    tiny_wan_i2v(0).save_pretrained(tmp_path / "i2v")  # a diffusers Wan folder: vae, text encoder, UniPC scheduler
    dst = convert_videox_fun_checkpoint(tmp_path / "src", tmp_path / "dst", components_from=tmp_path / "i2v")
    for ours, original in (("transformer", high), ("transformer_2", low)):
        model = WanFunControlTransformer3DModel.from_pretrained(dst / ours)
        assert model.config.in_channels == 52 and model.config.num_attention_heads == 2
        assert model.config.add_ref_conv and model.config.in_dim_ref_conv == 16
        got, want = model.state_dict(), original.state_dict()
        assert set(got) == set(want) and "ref_conv.weight" in got
        assert all(torch.equal(got[k], want[k]) for k in want), ours
        x = torch.randn(1, 52, 2, 4, 4, generator=torch.Generator().manual_seed(0))
        text = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(1))
        ref = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            kwargs = dict(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=text,
                          ref_latents=ref, return_dict=False)
            torch.testing.assert_close(model(**kwargs)[0], original(**kwargs)[0])
    marker = json.loads((dst / "fun_control.json").read_text())
    assert marker["high_noise_expert"] == "transformer" and marker["converted_from"]["transformer"] == \
        "high_noise_model" and marker["boundary_ratio"] == 0.9 and marker["ref_conv"] is True
    assert not (dst / "scheduler").exists()  # the loader builds Euler with shift 5

    # The converted folder loads as the control slot and generates, with the edited frame as reference image. A
    # scheduler config left in the folder (here Euler with shift 1, what a diffusers Wan config loads as) is not
    # what runs: Euler with shift 5.
    from diffusers import FlowMatchEulerDiscreteScheduler

    from sparkle_fast.models.control import FunControlConfig, FunControlGenerator

    FlowMatchEulerDiscreteScheduler(shift=1.0).save_pretrained(dst / "scheduler")
    gen = FunControlGenerator.from_pretrained(dst, device="cpu", config=FunControlConfig(
        num_frames=5, height=32, width=32, num_inference_steps=2, guidance_scale=1.0, max_sequence_length=16))
    assert gen.pipeline.accepts_reference and gen.pipeline.scheduler.config.shift == 5.0
    want = FlowMatchEulerDiscreteScheduler(shift=5.0)
    want.set_timesteps(2)
    gen.pipeline.scheduler.set_timesteps(2)
    assert torch.equal(gen.pipeline.scheduler.timesteps, want.timesteps)
    references = []
    gen.pipeline.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: references.append(kwargs.get("ref_latents")), with_kwargs=True)
    rng = np.random.default_rng(0)
    out = gen.generate(rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8),
                       rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "a dog runs")
    assert out.shape == (5, 32, 32, 3) and out.dtype == np.uint8
    assert references and references[0].shape == (1, 16, 4, 4) and references[0].abs().sum() > 0
    assert gen.settings()["reference_image"] is True


def test_camera_adapter_refused_and_old_conversions_named(tmp_path, experts):
    from sparkle_fast.models.control import load_fun_control
    from sparkle_fast.models.slots import ModelLoadError
    from sparkle_fast.models.tiny import save_tiny_video_models

    write_videox_fun(tmp_path / "src", *experts, extras={"control_adapter.conv.weight": torch.zeros(24, 24, 2, 2)})
    with pytest.raises(ConversionError, match="camera-control adapter"):
        convert_videox_fun_checkpoint(tmp_path / "src", tmp_path / "dst")
    # A folder converted before ref_conv was supported names the fix instead of running without ref_conv.
    root = save_tiny_video_models(tmp_path / "models")
    marker_path = root / "wan22_fun_control" / "fun_control.json"
    marker = json.loads(marker_path.read_text())
    marker["videox_fun_extras"] = {"transformer": ["ref_conv.bias", "ref_conv.weight"]}
    marker_path.write_text(json.dumps(marker))
    with pytest.raises(ModelLoadError, match="convert the VideoX-Fun checkpoint again"):
        load_fun_control(root / "wan22_fun_control")


def test_errors_name_the_problem(tmp_path, experts):
    with pytest.raises(ConversionError, match="no such folder"):
        convert_videox_fun_checkpoint(tmp_path / "absent", tmp_path / "dst")
    (tmp_path / "src" / "high_noise_model").mkdir(parents=True)
    with pytest.raises(ConversionError, match="config.json"):
        convert_videox_fun_checkpoint(tmp_path / "src", tmp_path / "dst")
    assert main([str(tmp_path / "absent"), str(tmp_path / "dst")]) == 2

    from sparkle_fast.models.tiny import tiny_wan_transformer

    i2v_expert = tiny_wan_transformer(36)
    write_videox_fun(tmp_path / "i2v_src", i2v_expert, i2v_expert)  # no ref_conv, 36 channels
    with pytest.raises(ConversionError, match="in_channels 36, expected 52"):
        convert_videox_fun_checkpoint(tmp_path / "i2v_src", tmp_path / "dst2")
