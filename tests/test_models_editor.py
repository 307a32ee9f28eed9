"""FLUX.2-klein adapter on a tiny random Flux2KleinPipeline: source size kept, seeded, removal prompts."""

from __future__ import annotations

import numpy as np
import pytest

from sparkle_fast.models.editor import EditorConfig, FluxKleinEditor, removal_instruction


@pytest.fixture(scope="module")
def editor():
    adapter = FluxKleinEditor.tiny(config=EditorConfig(num_inference_steps=2, max_sequence_length=32,
                                                       text_encoder_out_layers=(1,)))
    yield adapter
    adapter.release()


def test_edit_keeps_source_size_and_is_seeded(editor):
    source = (np.random.RandomState(0).rand(70, 100, 3) * 255).astype(np.uint8)  # not a multiple of 16
    first = editor.edit(source, "Replace the background with a beach at sunset.", seed=7)
    again = editor.edit(source, "Replace the background with a beach at sunset.", seed=7)
    assert first.size == (100, 70) and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(again))


def test_remove_builds_the_instruction_and_edits(editor):
    source = (np.random.RandomState(1).rand(64, 64, 3) * 255).astype(np.uint8)
    result = editor.remove(source, ["woman in brown hat", "the dog", "woman in brown hat"])
    assert result.ok
    assert result.value["instruction"] == "Remove the woman in brown hat and the dog."
    assert result.value["image"].size == (64, 64)


def test_bad_inputs_are_failed_results(editor):
    tiny_image = np.zeros((32, 80, 3), np.uint8)
    result = editor.try_edit(tiny_image, "anything")
    assert not result.ok and ">= 64 px" in result.reason
    assert not editor.remove(np.zeros((64, 64, 3), np.uint8), ["", "  "]).ok


def test_removal_instruction_forms():
    assert removal_instruction(["bald man"]) == "Remove the bald man."
    assert removal_instruction(["man", "hat", "a dog"]) == "Remove the man, the hat and a dog."
