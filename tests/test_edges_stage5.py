"""Stage 5's edge extractor choice ([edges] extractor = "canny" | "lineart"): the control video the generator gets,
the record, and the config's checks. Stand-in generator and scorer; the line-art model is the tiny random one."""

from __future__ import annotations

import numpy as np
import pytest

from sparkle_fast import layout, ops
from sparkle_fast.camera_synthetic import make_clip
from sparkle_fast.driver.config import ConfigError, load_config
from sparkle_fast.formats import save_mask
from sparkle_fast.models.base import TaskResult
from sparkle_fast.models.lineart import LineartDetector, LineartSlot
from sparkle_fast.stages import StageContext
from sparkle_fast.stages.base import Sample
from sparkle_fast.stages.stage5 import SynthesizeStage
from sparkle_fast.video import read_frames, write_image, write_video

SAMPLE = Sample("Sparkle_style_000000", "style", "unused.mp4")
T, H, W = 9, 32, 64


class RecordingControl:
    def __init__(self):
        self.control = None

    def try_generate(self, control, edited0, prompt, *, seed, num_frames, height, width):
        self.control = np.asarray(control.cpu() if hasattr(control, "cpu") else control)
        return TaskResult(ok=True, value=np.zeros((num_frames, height, width, 3), np.uint8))


class ConstantScorer:
    def score_frames(self, source_frames, edited_frames, instruction, passes=None):
        records = [{"SC_score": 9.0, "PQ_score": 9.0, "O_score": 9.0, "SC_score_reasoning": "", "PQ_score_reasoning":
                    "", "SC_raw_output": "", "PQ_raw_output": ""} for _ in source_frames]
        return TaskResult(ok=True, value=records, attempts=1)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A sample with stages 1-4's artifacts: source and background clips, a BAIT mask (left half), frame 0."""
    root = tmp_path_factory.mktemp("stage5")
    out = layout.SparkleLayout(root / "out")
    art = lambda kind: out.artifact(SAMPLE.theme, kind, SAMPLE.id)  # noqa: E731
    write_video(art("source_video"), make_clip("static", n_frames=T, size=(H, W), seed=1).frames, fps=16)
    write_video(art("edited_background_video"),
                make_clip("pan", n_frames=T, size=(H, W), photo="coffee", seed=2).frames, fps=16)
    mask = np.zeros((T, H, W), bool)
    mask[:, :, : W // 2] = True
    save_mask(art("source_video_mask"), mask)
    write_image(art("edited_frame0"), np.full((H, W, 3), 100, np.uint8))
    return out, mask


def _run(prepared, **overrides):
    out, _ = prepared
    config = load_config(overrides={"clip.width": W, "clip.height": H, "clip.max_frames": T, **overrides})
    control = RecordingControl()
    models = {"control": control, "scorer": ConstantScorer(), "lineart": LineartSlot("tiny")}
    context = StageContext(out, config, models, {2: {"prompt": "Make it a beach."}})
    outcome = SynthesizeStage().run(SAMPLE, context)
    assert outcome.status == "done", outcome.reason
    return outcome, control.control


def _decoded(prepared, kind):
    out, _ = prepared
    return read_frames(out.artifact(SAMPLE.theme, kind, SAMPLE.id)).frames.numpy()


def test_lineart_control_is_the_composed_line_maps(prepared):
    outcome, control = _run(prepared, **{"edges.extractor": "lineart", "edges.lineart_detect_resolution": 64})
    assert outcome.record["edges"] == {"extractor": "lineart", "coarse": False, "detect_resolution": 64,
                                       "mask_dilate": 0}
    detector = LineartDetector.tiny()  # the same seed as LineartSlot("tiny")
    source, background = _decoded(prepared, "source_video"), _decoded(prepared, "edited_background_video")
    src_lines = detector(source, detect_resolution=64)
    bg_lines = detector(background, detect_resolution=64)
    _, mask = prepared
    want = np.where(mask[..., None], src_lines[..., None], bg_lines[..., None]).repeat(3, axis=-1)
    np.testing.assert_array_equal(control, want)
    assert not np.array_equal(src_lines, bg_lines)  # the two sides really differ


def test_lineart_coarse_and_canny_records(prepared):
    coarse, coarse_control = _run(prepared, **{"edges.extractor": "lineart", "edges.lineart_coarse": True,
                                               "edges.lineart_detect_resolution": 64})
    assert coarse.record["edges"]["coarse"] is True
    canny, canny_control = _run(prepared, **{"canny.low": 50, "canny.high": 120})
    assert canny.record["edges"] == {"extractor": "canny", "low": 50, "high": 120, "mask_dilate": 0}
    source, background = _decoded(prepared, "source_video"), _decoded(prepared, "edited_background_video")
    _, mask = prepared
    np.testing.assert_array_equal(canny_control, ops.control_video(source, background, mask, 50, 120))
    assert not np.array_equal(canny_control, coarse_control)


def test_a_missing_lineart_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"\[lineart\].*sk_model.pth"):
        LineartSlot(tmp_path).get("cpu")


def test_config_checks_the_extractor():
    with pytest.raises(ConfigError, match="edges.extractor must be one of canny, lineart"):
        load_config(overrides={"edges.extractor": "hed"})
    with pytest.raises(ConfigError, match="lineart_detect_resolution must be >= 64"):
        load_config(overrides={"edges.lineart_detect_resolution": 32})


def test_a_demo_run_with_lineart_validates(tmp_path):
    """The demo (tiny models, tiny random line-art weights) with [edges] extractor = "lineart": every stage runs,
    stage 5's records say lineart, and `sparkle-fast validate` accepts the dataset."""
    import json

    from sparkle_fast.driver.cli import main
    from sparkle_fast.driver.demo import demo_config_path, run_demo
    from sparkle_fast.driver.manifest import Manifest

    config = tmp_path / "demo_lineart.toml"
    config.write_text(demo_config_path().read_text() + '\n[edges]\nextractor = "lineart"\n'
                      "lineart_detect_resolution = 64\n")
    out = tmp_path / "out"
    summary = run_demo(out, config_path=config)
    stages = summary["stages"]
    assert all(s["failed"] == 0 for s in stages.values()), stages
    assert stages["5"]["kept"] + stages["5"]["rejected"] >= 1, stages
    with Manifest(out / "manifest.sqlite") as manifest:
        records = [r.record for r in manifest.results(5) if r.record]
    assert records and all(r["edges"]["extractor"] == "lineart" for r in records)
    assert json.loads((out / "config.json").read_text())["edges"]["extractor"] == "lineart"
    assert main(["validate", str(out)]) == 0
