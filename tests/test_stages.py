"""The five stages' logic on stand-in models (fast), model-folder checks, and stage 1 on real clips. The stages on
the tiny random models run end to end in tests/test_demo.py."""

from __future__ import annotations

import numpy as np
import pytest

from sparkle_fast import layout
from sparkle_fast.camera_synthetic import make_clip
from sparkle_fast.driver.config import load_config
from sparkle_fast.layout_check import RECORD_SCHEMAS, schema_problems
from sparkle_fast.models.base import TaskResult
from sparkle_fast.models.slots import ModelFolderError
from sparkle_fast.stages import StageContext, StageOutcome, all_stages
from sparkle_fast.stages.base import Sample
from sparkle_fast.stages.stage1 import CollectStage
from sparkle_fast.stages.stage2 import EditStage
from sparkle_fast.video import probe, read_image, write_image, write_video

CONFIG = load_config(overrides={"clip.width": 96, "clip.height": 64, "clip.max_frames": 17})


class FakeVLM:
    """Answers as the real adapter's tasks do, with values set by the test."""

    def __init__(self, moving=False, scene="a kitchen", prompt="Replace the background with a beach."):
        self.moving, self.scene, self.prompt, self.calls = moving, scene, prompt, []

    def camera_motion_verdict(self, frames, fps=16.0):
        self.calls.append(("verdict", np.asarray(frames).shape, fps))
        return TaskResult(ok=True, value={"reasoning": "looked", "camera_moving": self.moving})

    def describe_scene(self, frame0):
        return TaskResult(ok=True, value=self.scene)

    def write_instruction(self, frame0, original_scene, theme, subtheme, scene):
        self.calls.append(("instruction", original_scene, theme, subtheme, scene))
        return TaskResult(ok=True, value=self.prompt)


class FakeEditor:
    def try_edit(self, image, instruction, *, seed=None):
        return TaskResult(ok=True, value=255 - np.asarray(image))


class FakeScorer:
    def __init__(self, overall):
        self.overall = overall

    def score_edit(self, source, edited, instruction):
        return TaskResult(ok=True, value={"prompt_following": 9.0, "consistency": 9.0, "perceptual_quality": 9.0,
                                          "overall": self.overall, "SC_reasoning": "", "PQ_reasoning": ""})


def _clip(tmp_path, motion, name="clip.mp4"):
    frames = make_clip(motion, n_frames=20, size=(64, 96), subject_fraction=0.12, seed=3).frames
    return str(write_video(tmp_path / name, frames, fps=16))


def _context(tmp_path, models, previous=None, config=CONFIG):
    return StageContext(layout.SparkleLayout(tmp_path / "out"), config, models, previous or {})


def test_stages_follow_the_protocol():
    stages = all_stages()
    assert [s.number for s in stages] == [1, 2, 3, 4, 5]
    assert len({s.name for s in stages}) == 5
    from sparkle_fast.models.slots import SLOTS

    assert all(slot in SLOTS for s in stages for slot in s.model_slots)


def test_missing_models_folder_names_slot_and_path(tmp_path):
    for stage in all_stages():
        with pytest.raises(ModelFolderError) as error:
            stage.load_models(str(tmp_path / "models"))
        assert str(tmp_path / "models") in str(error.value)
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelFolderError, match=r"\[sam3\].*sam3"):
        all_stages()[3].load_models(tmp_path / "models")


def test_stage1_keeps_a_fixed_camera_and_writes_the_clip(tmp_path):
    sample = Sample("Sparkle_time_000000", "time", _clip(tmp_path, "static"))
    vlm = FakeVLM(moving=False)
    outcome = CollectStage().run(sample, _context(tmp_path, {"vlm": vlm}))
    assert outcome.status == "done", outcome.reason
    assert outcome.record["frames"] == 17 and (outcome.record["height"], outcome.record["width"]) == (64, 96)
    assert outcome.record["camera"]["static"] is True
    out = layout.SparkleLayout(tmp_path / "out")
    info = probe(out.artifact("time", "source_video", sample.id))
    assert (info.frame_count, info.fps, info.width, info.height) == (17, 16, 96, 64)
    assert read_image(out.artifact("time", "source_frame0", sample.id)).shape == (64, 96, 3)
    assert vlm.calls[0][1] == (17, 64, 96, 3)
    assert set(outcome.timing) == {"model", "kernel", "io"}


def test_stage1_rejections(tmp_path):
    stage = CollectStage()
    moving = stage.run(Sample("Sparkle_time_000001", "time", _clip(tmp_path, "pan", "pan.mp4")),
                       _context(tmp_path, {"vlm": FakeVLM()}))
    assert moving.status == "rejected" and moving.record["camera"]["static"] is False
    said_moving = stage.run(Sample("Sparkle_time_000002", "time", _clip(tmp_path, "static")),
                            _context(tmp_path, {"vlm": FakeVLM(moving=True)}))
    assert said_moving.status == "rejected" and "VLM says the camera moves" in said_moving.reason
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 50)
    unreadable = stage.run(Sample("Sparkle_time_000003", "time", str(broken)), _context(tmp_path, {"vlm": None}))
    assert unreadable.status == "rejected" and "unreadable video" in unreadable.reason and str(broken) in \
        unreadable.reason
    out = layout.SparkleLayout(tmp_path / "out")
    assert not out.artifact("time", "source_video", "Sparkle_time_000001").exists()  # only kept clips are written


@pytest.mark.parametrize("overall,status", [(8.5, "done"), (7.9, "rejected")])
def test_stage2_keyword_prompt_edit_and_threshold(tmp_path, overall, status):
    sample = Sample("Sparkle_location_000004", "location", _clip(tmp_path, "static"))
    context = _context(tmp_path, {"vlm": FakeVLM()})
    assert CollectStage().run(sample, context).status == "done"
    vlm = FakeVLM()
    models = {"vlm": vlm, "editor": FakeEditor(), "scorer": FakeScorer(overall)}
    outcome = EditStage().run(sample, _context(tmp_path, models, {1: {}}))
    assert outcome.status == status and outcome.score == overall
    record = outcome.record
    from sparkle_fast.themes import load_themes

    keyword = load_themes().sample_keyword("location", sample.id, seed=CONFIG.run.seed)
    assert record["chosen_keyword"] == keyword.chosen_keyword == f"{vlm.calls[0][3]}: {vlm.calls[0][4]}"
    assert record["prompt"] == vlm.prompt and record["original_scene"] == vlm.scene
    line = record["jsonl"]["edited_frame0_score"]
    assert schema_problems(line, RECORD_SCHEMAS["edited_frame0_score"], "line") == []
    out = layout.SparkleLayout(tmp_path / "out")
    source0 = read_image(out.artifact("location", "source_frame0", sample.id)).numpy()
    edited0 = read_image(out.artifact("location", "edited_frame0", sample.id)).numpy()
    assert np.array_equal(edited0, 255 - source0)
    if status == "rejected":
        assert "7.90 < 8.0" in outcome.reason


def test_stage2_openve3m_uses_the_given_prompt(tmp_path):
    sample = Sample("Sparkle_openve3m_000000", "openve3m", _clip(tmp_path, "static"), prompt="Make it snow.")
    assert CollectStage().run(sample, _context(tmp_path, {"vlm": FakeVLM()})).status == "done"
    vlm = FakeVLM()
    outcome = EditStage().run(sample, _context(tmp_path, {"vlm": vlm, "editor": FakeEditor(),
                                                          "scorer": FakeScorer(9.0)}, {1: {}}))
    assert outcome.status == "done" and outcome.record["prompt"] == "Make it snow."
    assert outcome.record["chosen_keyword"] is None and not [c for c in vlm.calls if c[0] == "instruction"]


# --- which implementation each stage's ops reached (runner records "backends") -------------------------------------


class FakeGrounder:
    def ground_per_frame(self, frames, labels):
        return TaskResult(ok=True, value=[[{"bbox_2d": [200, 200, 700, 800], "label": label} for label in labels]
                                          for _ in frames])


class FakeControl:
    def try_generate(self, control, start_image, prompt, *, seed=None, num_frames=None, height=None, width=None):
        return TaskResult(ok=True, value=np.asarray(control.cpu()).copy())


class FakeFrameScorer:
    def score_frames(self, source_frames, edited_frames, instruction, *, passes=None):
        return TaskResult(ok=True, value=[{"SC_score": 9.0, "PQ_score": 9.0, "O_score": 9.0, "SC_score_reasoning": "",
                                           "PQ_score_reasoning": "", "SC_raw_output": "", "PQ_raw_output": ""}
                                          for _ in source_frames])


def _with_models(stage, models):
    """The stage with ready stand-ins for its models (the step runner uses given_models; whole-stage calls use
    load_models)."""
    stage.given_models = models
    stage.load_models = lambda source: models
    stage.release_models = lambda loaded: None
    return stage


class _EditStub:
    """Stage 2/3 stand-in: writes the artifacts and records later stages read (no kernel op)."""

    model_slots = ()

    def __init__(self, number):
        self.number, self.name = number, f"stub{number}"

    def load_models(self, source):
        return None

    def release_models(self, models):
        pass

    def run(self, sample, context):
        from sparkle_fast.video import read_frames

        art = lambda kind: context.layout.artifact(sample.theme, kind, sample.id)  # noqa: E731
        frames = read_frames(art("source_video")).frames.numpy()
        if self.number == 2:
            write_image(art("edited_frame0"), 255 - frames[0])
            return StageOutcome.done({"prompt": "Replace the background with a beach."})
        write_video(art("edited_background_video"), frames[::-1].copy(), fps=16)
        return StageOutcome.done({"r1": {"round1_labels": ["person"],
                                         "round1_objects": [{"bbox_2d": [200, 200, 700, 800], "label": "person"}]}})


@pytest.mark.parametrize("pinned", [None, "triton"])
def test_runner_records_the_implementation_each_stage_reached(tmp_path, monkeypatch, pinned):
    """A run through stages 1, 4 and 5 (2 and 3 stand-ins) records per stage the ops it called and where they ran:
    the references on the CPU by default; the Triton kernels (here under the interpreter) when the run is pinned with
    SPARKLE_FAST_BACKEND=triton, except find_homographies, which has no Triton kernel and resolves as auto."""
    from sparkle_fast import camera
    from sparkle_fast.bait import ScriptedTracker
    from sparkle_fast.driver.manifest import Manifest, SampleRow
    from sparkle_fast.driver.runner import LocalRunner
    from sparkle_fast.stages import stage1
    from sparkle_fast.stages.stage4 import BaitStage
    from sparkle_fast.stages.stage5 import SynthesizeStage

    if pinned:
        monkeypatch.setenv("SPARKLE_FAST_BACKEND", pinned)
    # a small point grid: the Triton interpreter takes seconds per Lucas-Kanade program
    small = camera.CameraThresholds(cells=(4, 6), refine_cells=(4, 6))
    monkeypatch.setattr(stage1, "_thresholds", lambda config: small)
    sample = SampleRow("Sparkle_time_000000", "time", _clip(tmp_path, "static"), None)

    def square(anchor, index, frame, reverse):
        mask = np.zeros((64, 96), bool)
        mask[20:44, 30:60] = True
        return mask

    stages = [_with_models(CollectStage(), {"vlm": FakeVLM()}), _EditStub(2), _EditStub(3),
              _with_models(BaitStage(), {"vlm": FakeGrounder(), "sam3": ScriptedTracker(square)}),
              _with_models(SynthesizeStage(), {"control": FakeControl(), "scorer": FakeFrameScorer()})]
    out = layout.SparkleLayout(tmp_path / "out")
    with Manifest(tmp_path / "out" / "manifest.sqlite") as manifest:
        manifest.add_samples([sample])
        LocalRunner(chunk_size=4, max_attempts=1).run(stages, manifest, out, CONFIG, "tiny")
        results = {n: manifest.result(sample.id, n) for n in range(1, 6)}
    assert [results[n].status for n in range(1, 6)] == ["done"] * 5, [results[n].reason for n in range(1, 6)]
    backends = {n: results[n].record.get("backends") for n in range(1, 6)}
    want = pinned or "reference"
    assert backends[1] == {"rgb_to_gray": want, "select_points": want, "track_points": want}
    assert backends[2] is None and backends[3] is None  # no kernel op: no entry
    assert backends[4] == {"pack_bits": want, "unpack_bits": want, "vote_and_pack": want}
    assert backends[5] == {"control_video": want}
    assert out.artifact("time", "edited_video_canny", sample.id).exists()


def test_record_backends_nests_and_a_pinned_backend_an_op_lacks_resolves_as_auto(monkeypatch):
    """ops._dispatch: every open record_backends() log sees a call; SPARKLE_FAST_BACKEND=triton leaves an op without a
    Triton kernel (find_homographies) on its own choice, while asking for that backend by name is a clear error."""
    from sparkle_fast import ops
    from sparkle_fast.ops._dispatch import BackendUnavailableError, record_backends

    src = np.random.default_rng(0).uniform(0, 100, (1, 24, 2)).astype(np.float32)
    monkeypatch.setenv("SPARKLE_FAST_BACKEND", "triton")
    with record_backends() as outer:
        ops.pack_bits(np.ones(9, bool), backend="reference")
        with record_backends() as inner:
            ops.find_homographies(src, src + 1)
    assert inner == {"find_homographies": "reference"}
    assert outer == {"find_homographies": "reference", "pack_bits": "reference"}
    with pytest.raises(BackendUnavailableError, match="find_homographies has no 'triton' implementation"):
        ops.find_homographies(src, src + 1, backend="triton")


def test_stage1_batch_gives_each_sample_the_outcome_it_gets_alone(tmp_path):
    """run_batch: one outcome per sample, in order, each equal (decision, record, the ops its clip reached) to what
    the sample gets in a batch of its own; an unreadable video in the batch is only its own rejection."""
    from sparkle_fast.driver.runner import run_group

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 50)
    samples = [Sample("Sparkle_time_000000", "time", _clip(tmp_path, "static")),
               Sample("Sparkle_time_000001", "time", str(broken)),
               Sample("Sparkle_time_000002", "time", _clip(tmp_path, "pan", "pan.mp4"))]
    stage = CollectStage()
    out = layout.SparkleLayout(tmp_path / "out")
    contexts = [_context(tmp_path, {"vlm": FakeVLM()}) for _ in samples]
    together = run_group(stage, samples, contexts, out)
    alone = [run_group(stage, [s], [c], out)[0] for s, c in zip(samples, contexts, strict=True)]
    assert [o.status for o in together] == ["done", "rejected", "rejected"]
    for a, b in zip(together, alone, strict=True):
        assert (a.status, a.reason, a.record) == (b.status, b.reason, b.record)
    assert together[0].record["backends"] == {"rgb_to_gray": "reference", "select_points": "reference",
                                              "track_points": "reference"}
    assert together[2].record["backends"]["find_homographies"] == "reference"
    assert "unreadable video" in together[1].reason
