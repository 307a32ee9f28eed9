"""The runner hands the run config to what a stage loads: the [vlm] backend choice is in force while the stage's
models load (the adapters' from_pretrained reads it), and adapters with use_run_config get the config."""

from __future__ import annotations

from sparkle_fast.driver.config import load_config
from sparkle_fast.driver.runner import load_stage_models
from sparkle_fast.models import vlm_backends


class _Adapter:
    def __init__(self):
        self.config = None

    def use_run_config(self, config):
        self.config = config


class _Stage:
    number, name, model_slots = 2, "edit", ("vlm",)

    def __init__(self):
        self.settings_seen = None

    def load_models(self, models_source):
        self.settings_seen = vlm_backends.current_settings()
        return {"vlm": _Adapter(), "other": object()}


def test_load_stage_models_applies_vlm_backend_and_run_config():
    config = load_config(overrides={"vlm.backend": "openai", "vlm.url": "http://127.0.0.1:9/v1", "vlm.model": "m"})
    stage = _Stage()
    try:
        models = load_stage_models(stage, "tiny", config)
        assert stage.settings_seen is config.vlm and stage.settings_seen.backend == "openai"
        assert models["vlm"].config is config
        load_stage_models(stage, "tiny", load_config())  # the next run's default: transformers again
        assert stage.settings_seen.backend == "transformers"
    finally:
        vlm_backends.use_settings(None)
