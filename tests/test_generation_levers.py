"""The generation speed levers of stage 3's Wan2.2 I2V and stage 5's Fun-Control (sparkle_fast/models/levers.py) on
the tiny models: each does what it says, reaches the pipeline from the run config, and is recorded.

- distilled Fun-Control: the LightX2V LoRAs fused once at load, the experts called at the pinned 4 timesteps;
- cfg_batch: one batch-2 forward equals the two passes (float32, max abs difference <= 1e-5 per expert call);
- cache: FirstBlockCache skips exactly the blocks the schedule predicts, counted, and forgets them between clips;
- fp8: torchao float8 block weights (CPU: weight-only; "dynamic" is refused without FP8 tensor cores);
- attention_backend: validated names, a clear error for a CUDA kernel on CPU;
- context_parallel: validated, a clear error without the GPUs and process group (gpu-marked test for the real path).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparkle_fast.driver.config import ConfigError, load_config
from sparkle_fast.models import cfg_batch, fp8
from sparkle_fast.models.control import FunControlConfig, FunControlGenerator
from sparkle_fast.models.i2v import LIGHTX2V_TIMESTEPS, I2VConfig, WanI2VGenerator, expert_for_timestep
from sparkle_fast.models.levers import GenerationLevers
from sparkle_fast.models.slots import model_settings

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
CONTROL = (RNG.random((5, 32, 32, 3)) > 0.8).astype(np.uint8) * 255
PROMPT = "a dog runs in the park"
GEOMETRY = dict(num_frames=5, height=32, width=32, max_sequence_length=16)
CFG_TOLERANCE = 1e-5  # float32: a batch-2 forward vs two batch-1 forwards differ only by summation order


OFF = GenerationLevers()


def i2v(levers=OFF, steps=3, guidance=3.0):
    return WanI2VGenerator.tiny(config=I2VConfig(**GEOMETRY, distilled=False, num_inference_steps=steps,
                                                 guidance_scale=guidance, levers=levers))


def fun(levers=OFF, steps=3, guidance=3.0):
    return FunControlGenerator.tiny(config=FunControlConfig(**GEOMETRY, num_inference_steps=steps,
                                                            guidance_scale=guidance, levers=levers))


def record_calls(pipeline) -> list:
    """(expert name, batch size) per expert forward that reaches the blocks (what the hooks let through)."""
    calls = []
    for name in ("transformer", "transformer_2"):
        def hook(module, args, kwargs, name=name):
            hidden = args[0] if args else kwargs["hidden_states"]
            calls.append((name, hidden.shape[0]))
        getattr(pipeline, name).blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    return calls


# ---------------------------------------------------------------------------------------------------------------
# The run config reaches the adapters, and the record says which levers ran
# ---------------------------------------------------------------------------------------------------------------

LEVER_OVERRIDES = {"cfg_batch": True, "cache": "first_block", "cache_threshold": 0.2, "fp8": "weight",
                   "attention_backend": "_native_math"}


@pytest.mark.parametrize("section", ["i2v", "control"])
def test_run_config_levers_reach_the_pipeline_and_the_record(section):
    config = load_config(overrides={**{f"{section}.{k}": v for k, v in LEVER_OVERRIDES.items()},
                                    f"{section}.mode": "stock"})
    gen = i2v() if section == "i2v" else fun()
    gen.use_run_config(config)
    assert gen.setup_error is None
    want = GenerationLevers(cfg_batch=True, cache="first_block", cache_threshold=0.2, fp8="weight",
                            attention_backend="_native_math")
    assert gen.config.levers == want and gen.lever_state.levers == want
    for expert in (gen.pipeline.transformer, gen.pipeline.transformer_2):
        assert cfg_batch.hook_of(expert) is not None
        assert expert.is_cache_enabled and expert._cache_config.threshold == 0.2
        assert fp8.float8_linear_count(expert) == 20  # 2 blocks x (4 self + 4 cross attention + 2 FFN linears)
        assert {m.processor._attention_backend for m in expert.modules() if hasattr(m, "processor")} == \
            {"_native_math"}
    recorded = model_settings(gen)["levers"]
    assert {k: recorded[k] for k in LEVER_OVERRIDES} == LEVER_OVERRIDES and recorded["fp8_layers"] == 40

    # Levers that can be switched back are: batching hooks removed, caches off, the default attention again.
    gen.use_run_config(load_config(overrides={f"{section}.mode": "stock", f"{section}.fp8": "weight"}))
    assert gen.setup_error is None
    for expert in (gen.pipeline.transformer, gen.pipeline.transformer_2):
        assert cfg_batch.hook_of(expert) is None and not expert.is_cache_enabled
        assert {m.processor._attention_backend for m in expert.modules() if hasattr(m, "processor")} == {None}
    # fp8 changed the weights: another value needs a fresh load, said per sample.
    gen.use_run_config(load_config(overrides={f"{section}.mode": "stock"}))
    assert "fp8 = 'weight' is already applied" in gen.setup_error


@pytest.mark.parametrize("key, value, message", [
    ("cache", "teacache", "cache must be one of 'none', 'first_block'"),
    ("cache_threshold", -1.0, "cache_threshold must be >= 0"),
    ("fp8", "int4", "fp8 must be one of 'none', 'weight', 'dynamic'"),
    ("attention_backend", "flash_hub", "download kernels at run time"),
    ("attention_backend", "fast", "attention_backend 'fast' is not one of"),
    ("context_parallel", 0, "context_parallel must be an integer >= 1"),
    ("context_parallel_kind", "tree", "context_parallel_kind must be one of ulysses, ring"),
])
def test_bad_lever_values_are_config_errors(key, value, message):
    with pytest.raises(ConfigError, match="control: .*" + message.replace("(", r"\(")):
        load_config(overrides={f"control.{key}": value})


def test_context_parallel_needs_a_backend_that_supports_it():
    with pytest.raises(ConfigError, match="context_parallel > 1 needs an attention backend"):
        load_config(overrides={"i2v.context_parallel": 2, "i2v.attention_backend": "_flash_3"})


# ---------------------------------------------------------------------------------------------------------------
# Distilled Fun-Control: LoRAs fused once at load, the pinned LightX2V schedule
# ---------------------------------------------------------------------------------------------------------------

def fake_lightx2v_lora(seed: int, rank: int = 4, dim: int = 24, ffn: int = 32) -> dict:
    """A LoRA in LightX2V's original-Wan key layout for the tiny experts (2 blocks, width 24, FFN 32)."""
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


def test_distilled_fun_control_fuses_the_loras_once_and_runs_the_pinned_schedule(tmp_path):
    from safetensors.torch import save_file

    from sparkle_fast.models.control import save_fun_control
    from sparkle_fast.models.tiny import tiny_wan_fun_control

    folder = save_fun_control(tiny_wan_fun_control(), tmp_path / "wan22_fun_control")
    (folder / "lightx2v").mkdir()
    save_file(fake_lightx2v_lora(1), str(folder / "lightx2v" / "high_noise_model.safetensors"))
    save_file(fake_lightx2v_lora(2), str(folder / "lightx2v" / "low_noise_model.safetensors"))
    gen = FunControlGenerator.from_pretrained(folder, device="cpu")
    before = gen.pipeline.transformer.blocks[0].attn1.to_q.weight.detach().clone()
    config = load_config(overrides={"control.mode": "distilled"})
    gen.use_run_config(config)
    assert gen.setup_error is None and gen.loras is not None
    fused = gen.pipeline.transformer.blocks[0].attn1.to_q.weight.detach().clone()
    lora = fake_lightx2v_lora(1)
    torch.testing.assert_close(fused, before + lora["diffusion_model.blocks.0.self_attn.q.lora_up.weight"]
                               @ lora["diffusion_model.blocks.0.self_attn.q.lora_down.weight"], rtol=1e-4, atol=1e-5)
    gen.use_run_config(config)  # a second chunk's use_run_config: the LoRAs are not fused a second time
    assert torch.equal(gen.pipeline.transformer.blocks[0].attn1.to_q.weight, fused)

    seen = []
    for name in ("transformer", "transformer_2"):
        getattr(gen.pipeline, name).register_forward_pre_hook(
            lambda m, a, k, name=name: seen.append((name, float(k["timestep"][0]))), with_kwargs=True)
    gen.generate(CONTROL, IMAGE, PROMPT, num_frames=5, height=32, width=32)
    assert [t for _, t in seen] == pytest.approx(LIGHTX2V_TIMESTEPS, abs=1e-3)  # 4 calls: guidance 1, no uncond
    assert [n for n, _ in seen] == ["transformer", "transformer", "transformer_2", "transformer_2"]
    settings = model_settings(gen)
    assert (settings["mode"], settings["steps"], settings["guidance"]) == ("distilled", 4, 1.0)
    assert settings["distillation"][0].endswith("high_noise_model.safetensors")


# ---------------------------------------------------------------------------------------------------------------
# cfg_batch
# ---------------------------------------------------------------------------------------------------------------

def test_batched_guidance_equals_two_passes_per_expert_call():
    """The hook's batch-2 forward against the two plain forwards, on a Fun-Control expert with a reference image."""
    from sparkle_fast.models.tiny import tiny_wan_fun_control_transformer

    expert = tiny_wan_fun_control_transformer(3)
    g = torch.Generator().manual_seed(0)
    x, ref = torch.randn(1, 52, 2, 4, 4, generator=g), torch.randn(1, 16, 4, 4, generator=g)
    pos, neg = torch.randn(1, 16, 32, generator=g), torch.randn(1, 16, 32, generator=g)
    t = torch.tensor([937.5])

    def call(text):
        return expert(hidden_states=x, timestep=t, encoder_hidden_states=text, ref_latents=ref, return_dict=False)[0]

    with torch.no_grad():
        want_cond, want_uncond = call(pos), call(neg)
        hook = cfg_batch.install(expert)
        hook.expect(pos, neg)
        got_cond, got_uncond = call(pos), call(neg)
    assert (hook.batched, hook.served, hook.passthrough) == (1, 1, 0)
    assert (got_cond - want_cond).abs().max() <= CFG_TOLERANCE
    assert (got_uncond - want_uncond).abs().max() <= CFG_TOLERANCE
    assert not torch.allclose(want_cond, want_uncond)  # the two passes differ: the halves are not swapped


@pytest.mark.parametrize("make", [i2v, fun], ids=["i2v", "fun-control"])
def test_cfg_batch_generates_the_same_clip_with_half_the_expert_calls(make):
    plain, batched = make(steps=2), make(GenerationLevers(cfg_batch=True), steps=2)
    plain_calls, batched_calls = record_calls(plain.pipeline), record_calls(batched.pipeline)
    want, got = plain.generate(*([CONTROL] if make is fun else []), IMAGE, PROMPT), \
        batched.generate(*([CONTROL] if make is fun else []), IMAGE, PROMPT)
    assert np.abs(want.astype(int) - got).max() <= 1  # uint8 frames: float reordering may move one level
    assert [b for _, b in plain_calls] == [1, 1, 1, 1] and [b for _, b in batched_calls] == [2, 2]
    run = model_settings(batched)["levers"]
    assert (run["cfg_batched_forwards"], run["cfg_unbatched_forwards"]) == (2, 0)


def test_cfg_batch_with_guidance_one_changes_nothing():
    gen = i2v(GenerationLevers(cfg_batch=True), steps=2, guidance=1.0)
    calls = record_calls(gen.pipeline)
    gen.generate(IMAGE, PROMPT)
    assert [b for _, b in calls] == [1, 1]
    assert model_settings(gen)["levers"]["cfg_batched_forwards"] == 0


# ---------------------------------------------------------------------------------------------------------------
# Step cache
# ---------------------------------------------------------------------------------------------------------------

def expected_cache_counts(gen, steps: int, passes: int, always_skip: bool) -> dict:
    """What FirstBlockCache must do on the tiny experts: per expert and pass ("cond", "uncond"), the first forward
    runs every block and, when the threshold is never exceeded, each later forward runs block 0 only."""
    sched = type(gen.pipeline.scheduler).from_config(gen.pipeline.scheduler.config)
    sched.set_timesteps(steps)
    per_expert = {}
    for t in sched.timesteps:
        name = expert_for_timestep(float(t), gen.config.boundary_ratio)
        per_expert[name] = per_expert.get(name, 0) + 1
    blocks = len(gen.pipeline.transformer.blocks)
    forwards = steps * passes
    skipped = sum(passes * (n - 1) * (blocks - 1) for n in per_expert.values()) if always_skip else 0
    assert len(per_expert) == 2  # both experts run, so both caches are exercised
    return {"forwards": forwards, "blocks_ran": forwards * blocks - skipped, "blocks_skipped": skipped}


def test_first_block_cache_skips_the_blocks_it_should_and_counts_them():
    plain = i2v(steps=3)
    want = plain.generate(IMAGE, PROMPT)
    never = i2v(GenerationLevers(cache="first_block", cache_threshold=0.0), steps=3)
    assert np.array_equal(never.generate(IMAGE, PROMPT), want)  # threshold 0: every block runs, the same clip
    assert model_settings(never)["levers"]["cache_blocks"] == expected_cache_counts(never, 3, 2, False)

    always = i2v(GenerationLevers(cache="first_block", cache_threshold=1e9), steps=3)
    first = always.generate(IMAGE, PROMPT)
    counts = model_settings(always)["levers"]["cache_blocks"]
    assert counts == expected_cache_counts(always, 3, 2, True) and counts["blocks_skipped"] > 0
    assert not np.array_equal(first, want)  # skipping blocks changed the clip
    # The cache starts empty for every clip: the second clip is the first one again, with the same counts.
    assert np.array_equal(always.generate(IMAGE, PROMPT), first)
    assert model_settings(always)["levers"]["cache_blocks"] == counts


def test_cache_with_cfg_batch_on_fun_control_counts_batched_forwards():
    gen = fun(GenerationLevers(cache="first_block", cache_threshold=1e9, cfg_batch=True), steps=4)
    gen.generate(CONTROL, IMAGE, PROMPT)
    # One batched forward per step: the unconditional half never reaches the blocks on its own.
    assert model_settings(gen)["levers"]["cache_blocks"] == expected_cache_counts(gen, 4, 1, True)


# ---------------------------------------------------------------------------------------------------------------
# FP8
# ---------------------------------------------------------------------------------------------------------------

def test_fp8_weight_only_converts_the_block_linears_and_stays_close():
    from sparkle_fast.models.tiny import tiny_wan_transformer

    expert = tiny_wan_transformer(36, seed=5)
    g = torch.Generator().manual_seed(0)
    x, text, t = torch.randn(1, 36, 2, 4, 4, generator=g), torch.randn(1, 16, 32, generator=g), torch.tensor([500.])
    with torch.no_grad():
        want = expert(x, t, text, return_dict=False)[0]
        assert fp8.quantize_expert(expert, "weight", "cpu") == 20
        got = expert(x, t, text, return_dict=False)[0]
    assert fp8.float8_linear_count(expert) == 20
    assert expert.blocks[0].attn1.to_q.weight.qdata.dtype == torch.float8_e4m3fn
    assert not isinstance(getattr(expert.proj_out.weight, "qdata", None), torch.Tensor)  # output projection kept
    # float8 e4m3 keeps 3 mantissa bits: a relative error of a few percent on random weights, not more.
    assert (got - want).abs().max() <= 0.1 * want.abs().max() and not torch.equal(got, want)


def test_fp8_dynamic_is_refused_without_fp8_tensor_cores():
    with pytest.raises(RuntimeError, match=r"compute capability >= 8.9.*H100/H200.*runs on cpu"):
        fp8.quantize_expert(torch.nn.Module(), "dynamic", "cpu")
    gen = fun()
    gen.use_run_config(load_config(overrides={"control.fp8": "dynamic"}))
    result = gen.try_generate(CONTROL, IMAGE, PROMPT)
    assert not result.ok and "fp8 = \"dynamic\"" in result.reason and "[control]" in result.reason


@pytest.mark.gpu
def test_fp8_dynamic_on_hopper_matches_bf16():
    from diffusers import WanTransformer3DModel

    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("needs FP8 tensor cores (compute capability >= 8.9)")
    torch.manual_seed(0)
    expert = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=64, in_channels=36,
                                   out_channels=16, text_dim=128, freq_dim=256, ffn_dim=512, num_layers=2,
                                   cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=64)
    expert = expert.to("cuda", torch.bfloat16).eval()
    x = torch.randn(1, 36, 3, 16, 16, device="cuda", dtype=torch.bfloat16)
    text = torch.randn(1, 32, 128, device="cuda", dtype=torch.bfloat16)
    t = torch.tensor([500.0], device="cuda")
    with torch.no_grad():
        want = expert(x, t, text, return_dict=False)[0].float()
        assert fp8.quantize_expert(expert, "dynamic", "cuda") == 20
        got = expert(x, t, text, return_dict=False)[0].float()
    assert fp8.float8_linear_count(expert) == 20
    assert (got - want).abs().max() <= 0.1 * want.abs().max()


# ---------------------------------------------------------------------------------------------------------------
# Attention backend, context parallelism
# ---------------------------------------------------------------------------------------------------------------

def test_attention_backend_math_matches_default_and_cuda_kernels_are_refused_on_cpu():
    from sparkle_fast.models.attention_backend import set_backend
    from sparkle_fast.models.tiny import tiny_wan_transformer

    expert = tiny_wan_transformer(36, seed=4)
    g = torch.Generator().manual_seed(0)
    x, text, t = torch.randn(1, 36, 2, 4, 4, generator=g), torch.randn(1, 16, 32, generator=g), torch.tensor([500.])
    with torch.no_grad():
        want = expert(x, t, text, return_dict=False)[0]
        set_backend(expert, "_native_math", "cpu")
        got = expert(x, t, text, return_dict=False)[0]
    assert (got - want).abs().max() <= 1e-5  # float32: the math kernel vs the one SDPA picks
    with pytest.raises(RuntimeError, match="'flash' is a CUDA kernel"):
        set_backend(expert, "flash", "cpu")
    gen = i2v()
    gen.use_run_config(load_config(overrides={"i2v.attention_backend": "_flash_3", "i2v.mode": "stock"}))
    assert "attention_backend '_flash_3' is a CUDA kernel and the model runs on cpu" in gen.setup_error
    result = gen.try_generate(IMAGE, PROMPT)
    assert not result.ok and "_flash_3" in result.reason


def test_attention_backend_whose_package_is_missing_names_it():
    """A CUDA kernel whose package is not installed (checked by diffusers' own requirement test, no GPU needed)."""
    from sparkle_fast.models.attention_backend import backend_problem

    if not installed("flash_attn"):
        assert "'flash' is not usable here" in backend_problem("flash", "cuda") and \
            "flash-attn" in backend_problem("flash", "cuda")
    if not installed("sageattention"):
        assert "sageattention" in backend_problem("sage", "cuda")
    assert backend_problem("native", "cpu") is None and backend_problem("", "cpu") is None


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_context_parallel_without_gpus_is_a_clear_per_sample_error():
    gen = fun()
    gen.use_run_config(load_config(overrides={"control.context_parallel": 2}))
    assert "context_parallel = 2 splits one clip over 2 GPUs and needs 2 CUDA devices" in gen.setup_error
    assert "torchrun --nproc-per-node 2" in gen.setup_error
    assert not gen.try_generate(CONTROL, IMAGE, PROMPT).ok


def _context_parallel_worker(rank: int, world: int, port: int, out_path: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    try:
        gen = FunControlGenerator.tiny(config=FunControlConfig(
            num_frames=5, height=64, width=64, num_inference_steps=2, guidance_scale=1.0, max_sequence_length=16,
            levers=GenerationLevers(context_parallel=world)))
        assert gen.setup_error is None
        gen.pipeline.to(f"cuda:{rank}")
        rng = np.random.default_rng(0)
        control = (rng.random((5, 64, 64, 3)) > 0.8).astype(np.uint8) * 255
        video = gen.generate(control, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), PROMPT)
        if rank == 0:
            np.save(out_path, video)
    finally:
        dist.destroy_process_group()


@pytest.mark.gpu
def test_context_parallel_over_two_gpus_matches_one(tmp_path):
    import socket

    import torch.multiprocessing as mp

    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_context_parallel_worker, args=(2, port, str(tmp_path / "cp.npy")), nprocs=2, join=True)
    single = FunControlGenerator.tiny(config=FunControlConfig(num_frames=5, height=64, width=64,
                                                              num_inference_steps=2, guidance_scale=1.0,
                                                              max_sequence_length=16))
    single.pipeline.to("cuda:0")
    rng = np.random.default_rng(0)
    control = (rng.random((5, 64, 64, 3)) > 0.8).astype(np.uint8) * 255
    want = single.generate(control, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), PROMPT)
    assert np.abs(np.load(tmp_path / "cp.npy").astype(int) - want).max() <= 2


def test_quick_bench_covers_every_lever_that_runs_on_cpu():
    """bench/generation.py --quick (run by tests/test_bench.py) has a row for each lever a CPU can run."""
    import importlib.util
    import sys
    from pathlib import Path

    bench_dir = Path(__file__).resolve().parents[1] / "bench"
    sys.path.insert(0, str(bench_dir))
    try:
        spec = importlib.util.spec_from_file_location("bench_generation", bench_dir / "generation.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(bench_dir))
    rows = module.distilled_rows(False, "cpu") + module.stock_rows(False, "cpu")
    levers = [lev for _, _, lev in rows]
    assert any(lev.cfg_batch for lev in levers) and any(lev.cache == "first_block" for lev in levers)
    assert any(lev.fp8 == "weight" for lev in levers) and any(lev.attention_backend for lev in levers)
    assert any(lev.cfg_batch and lev.cache != "none" and lev.fp8 != "none" for lev in levers)  # a combination
    assert [impl for impl, _, _ in rows].count("baseline") == 2  # one per schedule, the speed-ups' reference
