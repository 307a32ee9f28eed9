"""Qwen3-VL adapter: every task's whole call path on a tiny random model, and retries on recorded bad answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparkle_fast.models import json_answers as ja
from sparkle_fast.models.vlm import PROMPTS, Qwen3VLAdapter


@pytest.fixture(scope="module")
def vlm():
    adapter = Qwen3VLAdapter.tiny()
    yield adapter
    adapter.release()


@pytest.fixture(scope="module")
def frames():
    rng = np.random.RandomState(0)
    return (rng.rand(8, 72, 128, 3) * 255).astype(np.uint8)


def _all_answers_are_json(result):
    assert result.attempts == len(result.answers) >= 1
    for answer in result.answers:
        json.loads(answer)  # constrained decoding: even a random model writes well-formed JSON


def test_text_tasks_on_tiny_model(vlm, frames):
    scene = vlm.describe_scene(frames[0])
    instruction = vlm.write_instruction(frames[0], "a street", "location", "urban", "rooftop overlooking skyline")
    caption = vlm.background_caption("Replace the background with a beach at sunset.")
    for result in (scene, instruction, caption):
        assert result.ok and isinstance(result.value, str) and result.value and result.reason == ""
        _all_answers_are_json(result)
    assert len(scene.value) <= vlm.config.scene_chars


def test_camera_motion_verdict_on_tiny_model(vlm, frames):
    result = vlm.camera_motion_verdict(frames, fps=16.0)
    assert result.ok
    assert set(result.value) == {"reasoning", "camera_moving"} and isinstance(result.value["camera_moving"], bool)
    _all_answers_are_json(result)


def test_ground_foreground_on_tiny_model(vlm, frames):
    result = vlm.ground_foreground(frames[0], frames[1])
    _all_answers_are_json(result)
    if result.ok:  # a random model's boxes may all be degenerate; then the reason says so
        objects = result.value["round1_objects"]
        assert 1 <= len(objects) <= vlm.config.max_objects
        assert all(ja.clean_box(o["bbox_2d"]) == o["bbox_2d"] and o["label"] for o in objects)
        assert result.value["round1_labels"] == list(dict.fromkeys(o["label"] for o in objects))
    else:
        assert "no usable foreground object" in result.reason


def test_ground_per_frame_on_tiny_model(vlm, frames):
    labels = ["man", "red hat"]
    result = vlm.ground_per_frame(list(frames[:3]), labels)
    assert len(result.value) == 3
    for frame_objects in result.value:
        assert [o["label"] for o in frame_objects] == labels
        assert all(o["bbox_2d"] == [] or len(o["bbox_2d"]) == 4 for o in frame_objects)
    localized = any(o["bbox_2d"] for objs in result.value for o in objs)
    assert result.ok == localized
    _all_answers_are_json(result)


# --- retries on recorded answers -------------------------------------------------------------------------------
GOOD_BOXES = '```json\n[{"bbox_2d": [100, 50, 600, 990], "label": "woman"}]\n```'
RETRY_CASES = [
    # (task, scripted answers per attempt, ok, attempts, reason fragment)
    ("ground", ["Sorry, I can't help with that.", GOOD_BOXES], True, 2, ""),
    ("ground", ['[{"bbox_2d": [], "label": "woman"}]', '[{"bbox_2d": [1, 2, 3]}]', "[]"], False, 3,
     "no usable foreground object"),
    ("ground", ['[{"bbox_2d": [10, 20, 30, 40], "label": "dog"},]'], True, 1, ""),
    ("scene", ['{"scene": ', '{"scene": ""}', "```json\n{}\n```"], False, 3, "unusable answer after 3 attempt(s)"),
    ("scene", ["{'scene': 'A sunny plaza.'} That is all."], True, 1, ""),
    ("verdict", ['{"reasoning": "hmm", "camera_moving": "maybe"}', '{"reasoning": "pan", "camera_moving": "yes"}'],
     True, 2, ""),
    ("caption", ["", "", ""], False, 3, "empty answer"),
]


@pytest.mark.parametrize("task,answers,ok,attempts,reason", RETRY_CASES)
def test_retries_on_recorded_answers(vlm, frames, monkeypatch, task, answers, ok, attempts, reason):
    script = iter(answers)
    seeds = []

    def scripted_generate(requests, schema, key, *, sample_seed):
        seeds.append(sample_seed)
        return [next(script) for _ in requests]

    monkeypatch.setattr(vlm, "_generate", scripted_generate)
    call = {"ground": lambda: vlm.ground_foreground(frames[0], frames[1]),
            "scene": lambda: vlm.describe_scene(frames[0]),
            "verdict": lambda: vlm.camera_motion_verdict(frames),
            "caption": lambda: vlm.background_caption("Put the subject on a beach.")}[task]
    result = call()
    assert result.ok is ok
    assert result.attempts == attempts and result.answers == answers[:attempts]
    assert reason in result.reason
    assert seeds[0] is None and all(s is not None for s in seeds[1:])  # greedy first, then sampled retries
    if task == "ground" and ok:
        assert all(len(o["bbox_2d"]) == 4 for o in result.value["round1_objects"])


def test_model_errors_become_failed_results(vlm, frames, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(vlm, "_generate", broken)
    result = vlm.describe_scene(frames[0])
    assert not result.ok and result.attempts == vlm.config.attempts
    assert "generation failed: RuntimeError: CUDA out of memory" in result.reason


def test_ground_per_frame_keeps_failed_frames_as_empty_boxes(vlm, frames, monkeypatch):
    answers = {0: '[{"bbox_2d": [1, 2, 300, 400], "label": "man"}]', 1: "no idea"}

    def scripted_generate(requests, schema, key, *, sample_seed):
        return [answers[int(r.images[0][0, 0, 0] != frames[0][0, 0, 0])] for r in requests]

    monkeypatch.setattr(vlm, "_generate", scripted_generate)
    result = vlm.ground_per_frame([frames[0], frames[1]], ["man", "hat"])
    assert result.ok
    assert result.value[0] == [{"bbox_2d": [1, 2, 300, 400], "label": "man"}, {"bbox_2d": [], "label": "hat"}]
    assert result.value[1] == [{"bbox_2d": [], "label": "man"}, {"bbox_2d": [], "label": "hat"}]
    assert "frame 1" in result.reason
    assert not vlm.ground_per_frame([frames[0]], []).ok


def test_prompts_live_in_one_place():
    assert set(PROMPTS) == {"camera_motion", "describe_scene", "write_instruction", "ground_foreground",
                            "background_caption", "ground_per_frame"}
    text = PROMPTS["write_instruction"].format(original_scene="S", theme="T", subtheme="U", scene="V")
    assert '{"prompt": "..."}' in text and "S" in text


# --- backends ----------------------------------------------------------------------------------------------------

def test_every_answer_on_the_transformers_backend_holds_its_json_schema(vlm, frames):
    """xgrammar-constrained answers: compact JSON that the schema's own grammar accepts whole."""
    import xgrammar as xgr

    result = vlm.ground_per_frame(list(frames[:2]), ["man", "red hat"])
    grammars = vlm.backend.grammars()
    schema = ja.to_json_schema(ja.frame_grounding_schema(["man", "red hat"]))
    for answer in result.answers:
        matcher = xgr.GrammarMatcher(grammars.compiled(schema))
        assert matcher.accept_string(answer) and matcher.is_completed(), answer
        assert json.dumps(json.loads(answer), separators=(",", ":")) == answer


def test_openai_request_body_carries_schema_sampling_and_lossless_media(frames):
    import base64
    import io

    import av
    from PIL import Image

    from sparkle_fast.models.vlm_backends import Sampling, VLMRequest
    from sparkle_fast.models.vlm_backends.openai_backend import OpenAIBackend

    backend = OpenAIBackend("http://127.0.0.1:9/v1/", "served-name")
    request = VLMRequest([{"type": "image"}, {"type": "video"}, {"type": "text", "text": PROMPTS["describe_scene"]}],
                         images=[frames[0]], video=frames[:4], video_fps=16.0, seed=11)
    schema = {"type": "object", "properties": {"scene": {"type": "string"}}, "required": ["scene"]}
    greedy = backend.body(request, schema, Sampling(40))
    assert greedy["model"] == "served-name" and greedy["max_tokens"] == 40 and greedy["temperature"] == 0.0
    assert "seed" not in greedy and "top_k" not in greedy
    assert greedy["response_format"] == {"type": "json_schema",
                                         "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    image_part, video_part, text_part = greedy["messages"][0]["content"]
    assert text_part == {"type": "text", "text": PROMPTS["describe_scene"]}
    png = base64.b64decode(image_part["image_url"]["url"].split(",", 1)[1])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), frames[0])  # PNG: the exact pixels
    mkv = base64.b64decode(video_part["video_url"]["url"].split(",", 1)[1])
    with av.open(io.BytesIO(mkv)) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert np.array_equal(decoded, frames[:4])  # FFV1: lossless
    sampled = backend.body(request, None, Sampling(40, temperature=0.7, top_p=0.9, top_k=50, seed=3, n=4))
    assert (sampled["temperature"], sampled["top_p"], sampled["top_k"], sampled["seed"], sampled["n"]) == \
        (0.7, 0.9, 50, 11, 4)  # the request's own seed wins over the call's
    assert "response_format" not in sampled
    backend.release()


def test_backend_settings_choose_and_explain(tmp_path):
    from sparkle_fast.models.vlm_backends import BackendError, BackendSettings, backend_from_settings

    assert backend_from_settings("vlm", tmp_path, BackendSettings()) is None  # transformers: the adapter loads
    remote = backend_from_settings("scorer", tmp_path, BackendSettings(backend="openai", url="http://h:1/v1",
                                                                       model="vlm", scorer_model="editscore"))
    assert (remote.url, remote.model) == ("http://h:1/v1", "editscore")
    remote.release()
    with pytest.raises(BackendError, match="must be one of"):
        backend_from_settings("vlm", tmp_path, BackendSettings(backend="tgi"))
    with pytest.raises(BackendError, match="needs a server URL"):
        backend_from_settings("vlm", tmp_path, BackendSettings(backend="openai", model="m"))
    with pytest.raises(BackendError, match="NO_SUCH_KEY_VAR"):
        backend_from_settings("vlm", tmp_path, BackendSettings(backend="openai", url="http://h:1/v1", model="m",
                                                               api_key_env="NO_SUCH_KEY_VAR"))


def test_lora_is_merged_once_into_a_cached_folder(tmp_path):
    """merged_lora_folder equals peft's merged model (logits), and a second call reuses the folder."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import Qwen3VLForConditionalGeneration

    from sparkle_fast.models.tiny import tiny_qwen3_vl
    from sparkle_fast.models.vlm_backends.lora import merged_lora_folder

    model, processor = tiny_qwen3_vl(3)
    model.save_pretrained(tmp_path / "backbone")
    processor.save_pretrained(tmp_path / "backbone")
    lora = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    lora.save_pretrained(tmp_path / "lora")

    folder = merged_lora_folder(tmp_path / "backbone", tmp_path / "lora", tmp_path / "cache")
    assert (folder / "merged.json").is_file() and not list((tmp_path / "cache").glob("*.partial"))
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert merged_lora_folder(tmp_path / "backbone", tmp_path / "lora", tmp_path / "cache") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # not merged again

    ids = torch.tensor([[1, 40, 41, 42, 43]])
    base = Qwen3VLForConditionalGeneration.from_pretrained(tmp_path / "backbone", dtype=torch.float32).eval()
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        reference = PeftModel.from_pretrained(base, tmp_path / "lora").merge_and_unload()(input_ids=ids).logits
        merged = Qwen3VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
        ours = merged(input_ids=ids).logits
    assert not torch.allclose(plain, reference)  # the LoRA changes the model, so the check below can fail
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="LoRA config"):
        merged_lora_folder(tmp_path / "backbone", tmp_path / "nothing", tmp_path / "cache")


def test_sample_video_takes_even_uniform_frames_at_two_fps():
    from sparkle_fast.models.vlm import sample_video

    clip = np.arange(81)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    picked = sample_video(clip, 16.0)[:, 0, 0, 0]
    assert len(picked) == 10 and picked[0] == 0 and picked[-1] == 80 and np.all(np.diff(picked) > 0)
    assert len(sample_video(clip[:8], 16.0)) == 2 and len(sample_video(clip[:3], 2.0)) == 4  # >= 2, even
    with pytest.raises(ValueError, match="no frames"):
        sample_video(clip[:0], 16.0)
