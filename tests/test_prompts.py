"""VLM prompt templates: ours by default, overridden from a TOML file ([run] prompts_file), placeholders checked."""

from __future__ import annotations

import numpy as np
import pytest

from sparkle_fast.driver.config import ConfigError, load_config
from sparkle_fast.models.vlm import PROMPTS, PromptFileError, Qwen3VLAdapter, load_prompts
from sparkle_fast.models.vlm_backends.base import VLMBackend


class EchoBackend(VLMBackend):
    """Records each request's text and answers a fixed JSON string."""

    name = "echo"

    def __init__(self, answer):
        self.answer, self.texts = answer, []

    def generate(self, requests, json_schema, sampling):
        self.texts += [" ".join(c["text"] for c in r.content if c["type"] == "text") for r in requests]
        return [[self.answer] for _ in requests]


def test_a_prompts_file_overrides_what_it_names(tmp_path):
    path = tmp_path / "prompts.toml"
    path.write_text('describe_scene = "Where is this? Answer {\\"scene\\": ...}"\n'
                    'background_caption = "Caption the background of: {prompt}"\n')
    prompts = load_prompts(path)
    assert prompts["describe_scene"] == 'Where is this? Answer {"scene": ...}'  # sent as written
    assert prompts["camera_motion"] == PROMPTS["camera_motion"]  # not named: ours
    config = load_config(overrides={"run.prompts_file": str(path)})
    backend = EchoBackend('{"scene": "a street"}')
    adapter = Qwen3VLAdapter(backend=backend)
    adapter.use_run_config(config)
    assert adapter.describe_scene(np.zeros((8, 8, 3), np.uint8)).value == "a street"
    assert backend.texts == ['Where is this? Answer {"scene": ...}']
    adapter.use_run_config(load_config())  # "" = ours again
    assert adapter.prompts == PROMPTS


def test_bad_prompts_files_are_named(tmp_path):
    with pytest.raises(PromptFileError, match="no such prompts file"):
        load_prompts(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('write_instruction = "Make it {theme}"\nground_everything = "x"\n')
    with pytest.raises(PromptFileError) as info:
        load_prompts(bad)
    message = str(info.value)
    assert "bad.toml" in message and "unknown prompt 'ground_everything'" in message
    assert "write_instruction must use the placeholders ['original_scene', 'scene', 'subtheme', 'theme']" in message
    with pytest.raises(ConfigError, match="run.prompts_file: .*bad.toml"):
        load_config(overrides={"run.prompts_file": str(bad)})
