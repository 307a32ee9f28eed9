"""Model folder layout: real from_pretrained loading of tiny saved models, and the documented errors."""

from __future__ import annotations

import json
import shutil

import pytest

from sparkle_fast.models import slots


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from sparkle_fast.models.tiny import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("models"))


def test_tiny_layout_passes_the_check(models_dir):
    folders = slots.check_models_dir(models_dir)
    assert set(folders) == set(slots.PIPELINE_SLOTS) == {"vlm", "editor", "scorer", "sam3", "i2v", "control"}
    assert folders["editor"] == models_dir / "flux2_klein"


def test_missing_root_and_slot_folders_are_named(tmp_path):
    with pytest.raises(slots.ModelFolderError, match="missing folder"):
        slots.check_models_dir(tmp_path / "absent")
    (tmp_path / "qwen3_vl").mkdir()
    with pytest.raises(slots.ModelFolderError) as info:
        slots.check_models_dir(tmp_path)
    problems = info.value.problems
    assert any(p.startswith("[editor]") and "flux2_klein" in p and "missing folder" in p for p in problems)
    assert any(p.startswith("[scorer]") and "editscore" in p for p in problems)
    assert any(p.startswith("[vlm]") and "config.json" in p for p in problems)


def test_missing_file_is_named(models_dir, tmp_path):
    copy = tmp_path / "flux2_klein"
    shutil.copytree(models_dir / "flux2_klein", copy)
    (copy / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(slots.ModelFolderError) as info:
        slots.check_model_folder("editor", copy)
    assert info.value.problems == [f"[editor] {copy / 'vae'}: no weights (*.safetensors)"]


def test_wrong_model_type_is_named(models_dir, tmp_path):
    copy = tmp_path / "qwen3_vl"
    shutil.copytree(models_dir / "qwen3_vl", copy)
    config = json.loads((copy / "config.json").read_text())
    config["model_type"] = "llava"
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(slots.ModelFolderError, match="model_type is 'llava', expected 'qwen3_vl'"):
        slots.check_model_folder("vlm", copy)
    # The adapters check before loading: the same error comes out of from_pretrained.
    from sparkle_fast.models.vlm import Qwen3VLAdapter

    with pytest.raises(slots.ModelFolderError, match="wrong model"):
        Qwen3VLAdapter.from_pretrained(copy, device="cpu")
    # A FLUX folder holding another pipeline.
    flux = tmp_path / "flux"
    shutil.copytree(models_dir / "flux2_klein", flux)
    (flux / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(slots.ModelFolderError, match="expected 'Flux2KleinPipeline'"):
        slots.check_model_folder("editor", flux)


def test_lora_folder_without_weights_is_named(models_dir, tmp_path):
    copy = tmp_path / "editscore"
    shutil.copytree(models_dir / "editscore", copy)
    (copy / "lora" / "adapter_model.safetensors").unlink()
    with pytest.raises(slots.ModelFolderError, match="adapter_model.safetensors"):
        slots.check_model_folder("scorer", copy)


def test_all_adapters_load_from_folders(models_dir):
    from sparkle_fast.models.editor import FluxKleinEditor
    from sparkle_fast.models.scorer import EditScoreAdapter
    from sparkle_fast.models.vlm import Qwen3VLAdapter

    vlm = Qwen3VLAdapter.from_pretrained(models_dir / "qwen3_vl", device="cpu")
    assert type(vlm.model).__name__ == "Qwen3VLForConditionalGeneration"
    assert type(vlm.processor).__name__ == "Qwen3VLProcessor"
    editor = FluxKleinEditor.from_pretrained(models_dir / "flux2_klein", device="cpu")
    assert type(editor.pipeline).__name__ == "Flux2KleinPipeline"
    scorer = EditScoreAdapter.from_pretrained(models_dir / "editscore", device="cpu")
    assert scorer.backbone_type == "qwen3_vl"
    assert type(scorer.model).__name__ == "Qwen3VLForConditionalGeneration"  # LoRA merged: plain model again
    for adapter in (vlm, editor, scorer):
        adapter.release()
