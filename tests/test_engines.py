"""sparkle_fast.engines: ONNX exports of the per-frame networks equal PyTorch, the adapters give the same outputs
with the exported graphs plugged in, the CLI, the config and the cache keys; gpu-marked: TensorRT engines.

Tolerances (float32 ONNX under onnxruntime's CPU kernels against PyTorch's): atol 1e-4 + rtol 1e-4 on every output
(measured differences are ~1e-6: the same math, other summation orders). Adapter outputs after thresholds or uint8
rounding: masks equal, frames within 1 gray level.

Each graph is exported once per module (into one engine cache, which the adapter tests then reuse through the same
cache keys): exports are the slow part (the dynamo exporter traces the model).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from sparkle_fast.engines import cache as engine_cache  # noqa: E402
from sparkle_fast.engines import targets  # noqa: E402
from sparkle_fast.engines.build import ensure_onnx  # noqa: E402
from sparkle_fast.engines.plug import WanChunkedDecode, use_engine  # noqa: E402
from sparkle_fast.engines.runtime import OnnxRuntimeGraph, TorchGraph  # noqa: E402

ATOL = RTOL = 1e-4


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("engine_cache")


@pytest.fixture(scope="module")
def tracker():
    from sparkle_fast.models.tracker import Sam3Tracker

    return Sam3Tracker.tiny(device="cpu")


@pytest.fixture(scope="module")
def sam3_onnx(tracker, cache_dir):
    (spec,) = targets.sam3_graphs(tracker.model)
    return spec, ensure_onnx(spec, "fp32", cache_dir)


@pytest.fixture(scope="module")
def i2v():
    from sparkle_fast.models.i2v import WanI2VGenerator

    return WanI2VGenerator.tiny()


@pytest.fixture(scope="module")
def vae_onnx(i2v, cache_dir):
    specs = targets.vae_graphs(i2v.pipeline.vae, latent_hw=(4, 4))
    return specs, [ensure_onnx(spec, "fp32", cache_dir) for spec in specs]


@pytest.fixture(scope="module")
def detector():
    from sparkle_fast.models.lineart import LineartDetector

    return LineartDetector.tiny(seed=0)


@pytest.fixture(scope="module")
def lineart_onnx(detector, cache_dir):
    from sparkle_fast.models.lineart import detect_size

    specs = targets.lineart_graphs(detector, detect_hw=detect_size(720, 1280, detector.detect_resolution))
    return specs, [ensure_onnx(spec, "fp32", cache_dir) for spec in specs]


def assert_close(onnx_outputs, torch_outputs):
    assert len(onnx_outputs) == len(torch_outputs)
    for k, (a, b) in enumerate(zip(onnx_outputs, torch_outputs, strict=True)):
        assert a.shape == b.shape, f"output {k}: {tuple(a.shape)} vs {tuple(b.shape)}"
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL, msg=lambda m, k=k: f"output {k}: {m}")


# ------------------------------------------------------------------------------------------------------------------
# ONNX parity (float32, onnxruntime CPU)
# ------------------------------------------------------------------------------------------------------------------

def test_sam3_image_encoder_onnx_equals_transformers(tracker, sam3_onnx):
    spec, path = sam3_onnx
    assert json.loads(path.with_suffix(".json").read_text())["exporter"] == "dynamo"
    runner = OnnxRuntimeGraph(path)
    assert runner.input_names == ["pixel_values"] and runner.output_names == list(targets.SAM3_OUTPUTS)
    size = tracker.model.config.image_size
    for batch in (1, 3):  # dynamic batch; the export example had 2
        pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            reference = tracker.model.get_image_features(pixels, return_dict=True)
        expected = (*reference.fpn_hidden_states, *reference.fpn_position_encoding)
        assert_close(runner(pixels), expected)


def test_wan_decoder_chunk_graphs_equal_diffusers_decode(i2v):
    """The first/step formulation itself (PyTorch, no export): bit-exact against AutoencoderKLWan.decode."""
    vae = i2v.pipeline.vae
    first, step = (TorchGraph(spec.module) for spec in targets.vae_graphs(vae, latent_hw=(4, 4)))
    for shape in ((1, 16, 1, 4, 4), (2, 16, 4, 6, 4)):  # one latent frame only; batch 2, non-square, 4 frames
        z = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[2]))
        with torch.inference_mode():
            expected = vae.decode(z, return_dict=False)[0]
            ours = WanChunkedDecode(vae, first, step)(z, return_dict=False)[0]
        assert ours.shape == expected.shape == (shape[0], 3, 1 + 4 * (shape[2] - 1), shape[3] * 8, shape[4] * 8)
        assert torch.equal(ours, expected)


def test_wan_decoder_onnx_equals_diffusers_decode(i2v, vae_onnx):
    vae = i2v.pipeline.vae
    specs, paths = vae_onnx
    first, step = (OnnxRuntimeGraph(p) for p in paths)
    assert step.input_names[0] == "latent" and len(step.input_names) == len(first.output_names)
    for shape in ((1, 16, 3, 4, 4), (2, 16, 2, 6, 8)):  # dynamic batch, h, w (export example: 2 x 4 x 6)
        z = torch.randn(*shape, generator=torch.Generator().manual_seed(7))
        with torch.inference_mode():
            expected = vae.decode(z, return_dict=False)[0]
        ours = WanChunkedDecode(vae, first, step)(z, return_dict=False)[0]
        assert_close([ours], [expected])


def test_lineart_generator_onnx_equals_pytorch(detector, lineart_onnx):
    specs, paths = lineart_onnx
    assert [s.name for s in specs] == ["generator", "generator_coarse"]
    for spec, path in zip(specs, paths, strict=True):
        runner = OnnxRuntimeGraph(path)
        for shape in ((1, 3, 16, 24), (3, 3, 32, 8)):
            x = torch.rand(*shape, generator=torch.Generator().manual_seed(shape[0]))
            with torch.inference_mode():
                expected = spec.module(x)
            assert_close(runner(x), [expected])


# ------------------------------------------------------------------------------------------------------------------
# Adapters with the exported graphs plugged in
# ------------------------------------------------------------------------------------------------------------------

def _track(tracker, video, anchor=3, box=(10, 8, 60, 40)):
    clip = tracker.open_clip(video)
    clip.start_pass("p", anchor, np.asarray([box]), reverse=False)
    masks = [clip.track("p", f).numpy() for f in range(anchor, len(video))]
    encodes = clip.encoder_calls
    clip.close()
    return np.stack(masks), encodes


def test_tracker_masks_equal_with_onnxruntime_encoder(tracker, sam3_onnx, cache_dir):
    video = (np.random.default_rng(0).random((6, 48, 64, 3)) * 255).astype(np.uint8)
    calls = []
    try:
        expected, _ = _track(tracker, video)
        assert use_engine(tracker, "onnxruntime", cache_dir=cache_dir) == "sam3"
        plugged = tracker.model.get_image_features
        plugged.runner = _counting(plugged.runner, calls)
        ours, encodes = _track(tracker, video)
    finally:
        use_engine(tracker, "torch")
    assert "get_image_features" not in vars(tracker.model), "torch must restore the model's own encoder"
    assert len(calls) == encodes == 3, "every encoded frame must go through the ONNX graph, once"
    assert expected.any() and not expected.all()
    assert np.array_equal(ours, expected)


def _counting(runner, calls):
    def call(*inputs):
        calls.append(tuple(inputs[0].shape))
        return runner(*inputs)

    return call


def test_i2v_video_equal_with_onnxruntime_vae_decoder(i2v, vae_onnx, cache_dir):
    from PIL import Image

    image = Image.fromarray((np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8))
    prompt = "a dog runs in park"
    try:
        expected = i2v.generate(image, prompt, seed=2)
        assert use_engine(i2v, "onnxruntime", cache_dir=cache_dir) == "vae"
        assert isinstance(i2v.pipeline.vae.decode, WanChunkedDecode)
        ours = i2v.generate(image, prompt, seed=2)
    finally:
        use_engine(i2v, "torch")
    assert "decode" not in vars(i2v.pipeline.vae)
    assert ours.shape == expected.shape and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1
    assert np.mean(ours == expected) > 0.999


def test_lineart_lines_equal_with_onnxruntime_generator(detector, lineart_onnx, cache_dir):
    frames = (np.random.default_rng(2).random((3, 40, 56, 3)) * 255).astype(np.uint8)
    try:
        expected = detector(frames, detect_resolution=64)
        assert use_engine(detector, "onnxruntime", cache_dir=cache_dir, frame_hw=(720, 1280)) == "lineart"
        ours = detector(frames, detect_resolution=64)
        ours_coarse = detector(frames, detect_resolution=64, coarse=True)
    finally:
        use_engine(detector, "torch")
    assert isinstance(detector.model, torch.nn.Module)
    # uint8 after truncation: 1 gray level where the float value sits on an integer boundary
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1
    assert np.mean(ours == expected) > 0.99
    assert np.abs(ours_coarse.astype(int) - detector(frames, detect_resolution=64, coarse=True)).max() <= 1


def test_run_config_engines_section_switches_the_tracker(tracker, sam3_onnx, cache_dir):
    from sparkle_fast.driver.config import ENGINE_CHOICES, ConfigError, load_config

    assert ENGINE_CHOICES == targets.ENGINE_CHOICES
    config = load_config(overrides={"engines.sam3": "onnxruntime", "engines.cache_dir": str(cache_dir)})
    try:
        tracker.use_run_config(config)
        assert "get_image_features" in vars(tracker.model)
        tracker.use_run_config(load_config())  # the default: torch
        assert "get_image_features" not in vars(tracker.model)
    finally:
        use_engine(tracker, "torch")
    with pytest.raises(ConfigError, match="engines.vae must be one of"):
        load_config(overrides={"engines.vae": "trt"})
    with pytest.raises(ConfigError, match="engines.precision"):
        load_config(overrides={"engines.precision": "int8"})


def test_run_config_engines_section_switches_the_lineart_slot(lineart_onnx, cache_dir):
    """Stage 5 loads the line-art detector on first use: the [engines] choice given to the slot applies then."""
    from sparkle_fast.driver.config import load_config
    from sparkle_fast.models.lineart import LineartSlot

    engine = LineartSlot("tiny")
    engine.use_run_config(load_config(overrides={"engines.lineart": "onnxruntime",
                                                 "engines.cache_dir": str(cache_dir)}))
    plain = LineartSlot("tiny")
    plain.use_run_config(load_config())  # the default: torch
    assert not isinstance(engine.get().model, torch.nn.Module)
    assert isinstance(plain.get().model, torch.nn.Module)
    frames = (np.random.default_rng(3).random((2, 40, 56, 3)) * 255).astype(np.uint8)
    ours, expected = engine.get()(frames, detect_resolution=64), plain.get()(frames, detect_resolution=64)
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1


# ------------------------------------------------------------------------------------------------------------------
# CLI, missing TensorRT, cache keys
# ------------------------------------------------------------------------------------------------------------------

def test_cli_export_writes_onnx_files(tmp_path, capsys):
    from sparkle_fast.driver.cli import main

    assert main(["engines", "export", "--models", "tiny", "--slot", "lineart", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("lineart_generator", "lineart_generator_coarse"):
        assert (tmp_path / f"{name}.onnx").is_file() and f"{name}: " in out
        assert json.loads((tmp_path / f"{name}.json").read_text())["exporter"] == "dynamo"


def test_cli_build_without_tensorrt_exports_and_says_so(lineart_onnx, cache_dir, capsys):
    """`engines build` on a machine without TensorRT or a GPU: the ONNX files land in the cache (here found there:
    the module's fixture exported them with the same keys, through the same ensure_onnx), then exit status 3 and a
    message that says building an engine needs TensorRT and a CUDA GPU."""
    from sparkle_fast.driver.cli import main
    from sparkle_fast.driver.commands.engines import EXIT_NO_TENSORRT
    from sparkle_fast.engines.build import tensorrt_ready

    if tensorrt_ready() is None:
        pytest.skip("TensorRT and a GPU are here: the gpu tests build engines")
    status = main(["engines", "build", "--models", "tiny", "--slot", "lineart", "--cache", str(cache_dir),
                   "--precision", "fp32"])
    captured = capsys.readouterr()
    assert status == EXIT_NO_TENSORRT == 3
    assert "needs TensorRT and a CUDA GPU" in captured.err and "no TensorRT engine was built" in captured.err
    listed = [line.split(": ONNX ", 1)[1] for line in captured.out.splitlines() if ": ONNX " in line]
    assert sorted(listed) == sorted(str(p) for p in lineart_onnx[1])
    assert not (cache_dir / "engines").exists()


def test_cli_errors(tmp_path, capsys):
    from sparkle_fast.driver.cli import main

    assert main(["engines", "build", "--models", str(tmp_path / "nope"), "--cache", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["engines", "build", "--models", "tiny", "--slot", "sam3", "--precision", "fp8",
                 "--cache", str(tmp_path)]) == 2
    assert "fp8" in capsys.readouterr().err


def test_missing_tensorrt_names_the_extra(monkeypatch):
    from sparkle_fast.engines.build import import_tensorrt, tensorrt_ready
    from sparkle_fast.engines.runtime import TensorRTGraph

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt now raises ImportError
    with pytest.raises(targets.EngineUnavailable, match=r"pip install -e '\.\[engines\]'"):
        import_tensorrt()
    assert "TensorRT is not installed" in tensorrt_ready()
    with pytest.raises(targets.EngineUnavailable, match="engines"):
        TensorRTGraph("missing.plan")


def test_tensorrt_choice_without_tensorrt_is_a_clear_error(tracker, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(targets.EngineUnavailable, match="TensorRT is not installed"):
        use_engine(tracker, "tensorrt")
    assert "get_image_features" not in vars(tracker.model)


def test_engine_cache_keys_change_with_everything_they_name(tracker):
    (spec,) = targets.sam3_graphs(tracker.model)
    weights = engine_cache.weights_hash(spec.weights)
    base = engine_cache.engine_path(engine_cache.Path("c"), spec, "bf16", weights, "NVIDIA H100", "11.4.0")
    (bigger,) = targets.sam3_graphs(tracker.model, max_batch=16)
    variants = [
        engine_cache.engine_path(engine_cache.Path("c"), spec, "bf16", weights, "NVIDIA H200", "11.4.0"),
        engine_cache.engine_path(engine_cache.Path("c"), spec, "bf16", weights, "NVIDIA H100", "10.13.0"),
        engine_cache.engine_path(engine_cache.Path("c"), spec, "fp16", weights, "NVIDIA H100", "11.4.0"),
        engine_cache.engine_path(engine_cache.Path("c"), bigger, "bf16", weights, "NVIDIA H100", "11.4.0"),
        engine_cache.engine_path(engine_cache.Path("c"), spec, "bf16", "0" * 16, "NVIDIA H100", "11.4.0"),
    ]
    assert len({base, *variants}) == 6
    assert base == engine_cache.engine_path(engine_cache.Path("c"), spec, "bf16", weights, "NVIDIA H100", "11.4.0")
    # the weights hash sees a one-element change
    param = next(spec.module.parameters())
    with torch.no_grad():
        saved = param.view(-1)[0].clone()
        param.view(-1)[0] += 1.0
        try:
            assert engine_cache.weights_hash(spec.weights) != weights
        finally:
            param.view(-1)[0] = saved
    assert engine_cache.weights_hash(spec.weights) == weights


def test_profile_shapes_from_dims(i2v):
    first, step = targets.vae_graphs(i2v.pipeline.vae, latent_hw=(90, 160), max_batch=2)
    low, high = step.shapes_for("min"), step.shapes_for("max")
    assert low["latent"] == (1, 16, 1, 90, 160) and high["latent"] == (2, 16, 1, 90, 160)
    # every cache's spatial size is the latent's times its level's scale (tiny VAE: 1, 2, 4, 8)
    scales = {shape[3] // 90 for name, shape in low.items() if name.startswith("cache_in")}
    assert scales == {1, 2, 4, 8}


# ------------------------------------------------------------------------------------------------------------------
# TensorRT (gpu-marked: skipped without CUDA; also skipped when TensorRT is not installed)
# ------------------------------------------------------------------------------------------------------------------

def _trt_runner(spec, tmp_path, precision):
    pytest.importorskip("tensorrt")
    from sparkle_fast.engines.build import ensure_engine
    from sparkle_fast.engines.runtime import TensorRTGraph

    return TensorRTGraph(ensure_engine(spec, precision=precision, cache_dir=tmp_path))


@pytest.mark.gpu
@pytest.mark.parametrize("precision, tol", [("fp32", 2e-3), ("bf16", 6e-2)])
def test_tensorrt_sam3_encoder_equals_pytorch(tmp_path, precision, tol):
    from sparkle_fast.models.tracker import Sam3Tracker

    tracker = Sam3Tracker.tiny(device="cuda")
    (spec,) = targets.sam3_graphs(tracker.model, max_batch=4)
    runner = _trt_runner(spec, tmp_path, precision)
    pixels = torch.randn(3, 3, 112, 112, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    with torch.inference_mode():
        expected = spec.module(pixels)
    for ours, ref in zip(runner(pixels), expected, strict=True):
        torch.testing.assert_close(ours.float(), ref.float(), atol=tol, rtol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("precision, tol", [("fp32", 2e-3), ("bf16", 6e-2)])
def test_tensorrt_vae_decode_equals_diffusers(tmp_path, precision, tol):
    from sparkle_fast.models.tiny import tiny_wan_parts

    vae = tiny_wan_parts(0)[2].cuda()
    specs = targets.vae_graphs(vae, latent_hw=(4, 6), max_batch=2)
    first, step = (_trt_runner(spec, tmp_path, precision) for spec in specs)
    z = torch.randn(2, 16, 3, 4, 6, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    with torch.inference_mode():
        expected = vae.decode(z, return_dict=False)[0]
    ours = WanChunkedDecode(vae, first, step)(z, return_dict=False)[0]
    torch.testing.assert_close(ours.float(), expected.float(), atol=tol, rtol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("precision, tol", [("fp32", 2e-3), ("bf16", 6e-2)])
def test_tensorrt_lineart_equals_pytorch(tmp_path, precision, tol):
    from sparkle_fast.models.lineart import LineartDetector

    detector = LineartDetector.tiny(device="cuda")
    specs = targets.lineart_graphs(detector, detect_hw=(32, 48), max_batch=4)
    x = torch.rand(3, 3, 32, 48, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    for spec in specs:
        runner = _trt_runner(spec, tmp_path, precision)
        with torch.inference_mode():
            expected = spec.module(x)
        torch.testing.assert_close(runner(x)[0].float(), expected.float(), atol=tol, rtol=tol)


def test_bench_engines_quick_runs_on_cpu(cache_dir, sam3_onnx, vae_onnx, lineart_onnx, tmp_path, monkeypatch):
    """bench/engines.py --quick end to end on CPU (eager and onnxruntime rows for each target); the engine cache is
    this module's, whose ONNX files have the same keys as the bench's tiny models (same seeds), so nothing is
    exported again."""
    import importlib.util
    from pathlib import Path

    bench_dir = Path(__file__).resolve().parents[1] / "bench"
    monkeypatch.syspath_prepend(str(bench_dir))
    spec = importlib.util.spec_from_file_location("bench_engines", bench_dir / "engines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "engines.json"
    assert module.main(["--quick", "--device", "cpu", "--repeat", "1", "--cache", str(cache_dir),
                        "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {(r["case"]["target"], r["impl"]) for r in rows} == {
        (t, i) for t in ("sam3_image_encoder", "vae_decode", "lineart_generator") for i in ("eager", "onnxruntime")}
    for row in rows:
        assert row["ms_per_frame"] > 0 and row["max_abs_diff_vs_eager"] <= 1e-3, row
