"""`sparkle-fast check-models`: each slot of a tiny models folder reported from configs and safetensors headers
(no weight loaded), the differences from Sparkle's setup named, and a broken folder exiting non-zero."""

from __future__ import annotations

import argparse
import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from sparkle_fast.models import check


def fake_lightx2v_lora(blocks=2, dim=24, ffn=32, rank=2) -> dict:
    """LightX2V's original-Wan key layout, covering every block linear layer of the tiny experts."""
    state = {}
    for block in range(blocks):
        shapes = {f"{attn}.{proj}": (dim, dim) for attn in ("self_attn", "cross_attn") for proj in "qkvo"}
        shapes.update({"ffn.0": (ffn, dim), "ffn.2": (dim, ffn)})
        for name, (out_dim, in_dim) in shapes.items():
            prefix = f"diffusion_model.blocks.{block}.{name}"
            state[f"{prefix}.lora_down.weight"] = torch.zeros(rank, in_dim)
            state[f"{prefix}.lora_up.weight"] = torch.zeros(out_dim, rank)
            state[f"{prefix}.alpha"] = torch.tensor(float(rank))
    state["diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight"] = torch.zeros(rank, dim)  # Wan2.1 I2V only
    return state


def header_only_safetensors(path, shapes: dict) -> None:
    """A safetensors header claiming tensors of these shapes, with no data (check-models must not need it)."""
    header = {name: {"dtype": "BF16", "shape": list(shape), "data_offsets": [0, 0]} for name, shape in shapes.items()}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from sparkle_fast.models.tiny import save_tiny_models

    root = save_tiny_models(tmp_path_factory.mktemp("models"))
    (root / "wan22_i2v" / "lightx2v").mkdir()
    for name in ("high_noise_model", "low_noise_model"):
        save_file(fake_lightx2v_lora(), str(root / "wan22_i2v" / "lightx2v" / f"{name}.safetensors"))
    return root


def _run(models, capsys, *extra) -> tuple[int, str]:
    from sparkle_fast.driver.commands import check_models as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    code = command.run(parser.parse_args([str(models), *extra]))
    return code, capsys.readouterr().out


def test_tiny_folder_reported_slot_by_slot_without_loading_weights(models_dir, capsys, monkeypatch):
    import safetensors.torch

    def no_loading(*args, **kwargs):
        raise AssertionError("check-models loaded weights")

    monkeypatch.setattr(safetensors.torch, "load_file", no_loading)
    monkeypatch.setattr(torch, "load", no_loading)
    reports = {r.slot: r for r in check.check_models(models_dir)}
    assert set(check.SLOTS) & set(reports) >= {"vlm", "editor", "scorer", "sam3", "i2v", "control"}
    assert all(r.status != "wrong" for r in reports.values()), [r.problems for r in reports.values()]
    # Tiny random models: every sized slot differs from Sparkle's, and says so.
    assert reports["vlm"].status == "differs" and "Sparkle used Qwen3-VL-32B" in " ".join(reports["vlm"].notes)
    assert "Qwen3-VL" in reports["scorer"].holds and "Qwen3-VL backbone" in " ".join(reports["scorer"].notes)
    assert "[scorer] passes = 4 (Sparkle: 4)" in reports["scorer"].notes
    # LightX2V coverage of both experts: all 20 block linear layers, the Wan2.1-only k_img key ignored.
    coverage = next(n for n in reports["i2v"].notes if n.startswith("LightX2V"))
    assert "covers 20/20 block linear layers of transformer " in coverage
    assert "covers 20/20 block linear layers of transformer_2 " in coverage and "1 LoRA modules" in coverage
    assert "in_channels 52" in reports["control"].holds and "ref_conv: yes" in reports["control"].holds

    code, out = _run(models_dir, capsys)
    assert code == 0 and "vlm: DIFFERS" in out and "Sparkle: Qwen3-VL-32B" in out and "0 wrong" in out


def test_broken_folder_exits_non_zero_naming_each_problem(models_dir, tmp_path, capsys):
    import shutil

    root = tmp_path / "models"
    for sub in ("qwen3_vl", "wan22_i2v", "wan22_fun_control"):
        shutil.copytree(models_dir / sub, root / sub)
    # A Qwen3-VL-8B-sized header (no data): named by its parameter count.
    vlm_weights = next((root / "qwen3_vl").glob("*.safetensors"))
    header_only_safetensors(vlm_weights, {"model.language_model.embed_tokens.weight": (8_770_000_000,)})
    # Fun-Control experts with I2V's 36 input channels; I2V without its LoRAs under Sparkle's distilled mode.
    for expert in ("transformer", "transformer_2"):
        path = root / "wan22_fun_control" / expert / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "in_channels": 36}))
    shutil.rmtree(root / "wan22_i2v" / "lightx2v")

    reports = {r.slot: r for r in check.check_models(root)}
    assert reports["vlm"].holds.startswith("Qwen3-VL-8B") and reports["vlm"].status == "differs"
    assert reports["editor"].status == "wrong" and "missing folder" in reports["editor"].problems[0]
    assert reports["control"].status == "wrong" and any("in_channels 36, expected 52" in p
                                                         for p in reports["control"].problems)
    assert reports["i2v"].status == "wrong" and any("mode 'distilled'" in p for p in reports["i2v"].problems)
    code, out = _run(root, capsys)
    assert code == 1 and "vlm: DIFFERS  Qwen3-VL-8B" in out and "control: WRONG" in out
    # `sparkle-fast run` refuses the same before any work; the stock schedule needs no LoRA.
    from sparkle_fast.driver.config import load_config
    from sparkle_fast.models.slots import ModelFolderError

    with pytest.raises(ModelFolderError, match=r"\[i2v\].*needs the distillation LoRAs"):
        check.check_run_settings(root, load_config(), ["i2v", "control"])
    config = tmp_path / "stock.toml"
    config.write_text('[i2v]\nmode = "stock"\n')
    check.check_run_settings(root, load_config(config), ["i2v", "control"])
    stock = {r.slot: r for r in check.check_models(root, load_config(config))}
    assert stock["i2v"].status == "differs" and not stock["i2v"].problems


def test_safetensors_header_errors_name_the_file(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match="x.safetensors: header length"):
        check.safetensors_header(bad)
