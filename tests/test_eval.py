"""`sparkle-fast eval`: the README's score files from a tiny judge on a small bench, scores in 1..5 with dimensions
2-6 capped at the first, failures recorded with reasons, reruns that skip what is scored, the inference layout, an
OpenAI-compatible endpoint judge (a local fake server), and the report comparing result folders."""

from __future__ import annotations

import csv
import json
import threading
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from sparkle_fast import layout, video
from sparkle_fast.driver.cli import main
from sparkle_fast.driver.eval import BenchSample, read_bench
from sparkle_fast.driver.eval_judge import cap_scores, load_protocol
from sparkle_fast.driver.manifest import Manifest
from sparkle_fast.formats import save_mask
from sparkle_fast.metrics import METRIC_KEYS

T, H, W = 9, 48, 64
SPARKLE_KEYS = {"id", "prompt", "edit_type", "subtheme", "scene", "scores", "result"}


def _frames(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (H // 8, W // 8, 3)).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    return np.stack([np.roll(base, t, axis=1) for t in range(T)])


def _bench(tmp_path: Path) -> tuple[Path, dict]:
    """A two-theme bench (3 samples) with masks and control videos, plus a folder of outputs named {id}.mp4 for two
    of them (the third has no output)."""
    bench, outputs = tmp_path / "bench", tmp_path / "model_outputs"
    samples = {"time": [("Sparkle_time_000001", "night: neon city street")],
               "season": [("Sparkle_season_000000", "winter: snowy pine forest"),
                          ("Sparkle_season_000003", "autumn: maple park")]}
    mask = np.zeros((T, H, W), bool)
    mask[:, 12:36, 20:44] = True
    seed = 0
    for theme, items in samples.items():
        rows, meta = [], []
        for sample_id, keyword in items:
            seed += 1
            source = _frames(seed)
            rel = f"source_videos/{theme}/{sample_id}.mp4"
            video.write_video(bench / rel, source, fps=16)
            save_mask(bench / "masks" / theme / f"{sample_id}.npz", mask)
            control = np.repeat(__import__("sparkle_fast").ops.canny(source)[..., None], 3, axis=-1)
            video.write_video(bench / "masks" / theme / f"{sample_id}_control.mp4", control, fps=16)
            if sample_id != "Sparkle_season_000003":
                edited = source.copy()
                edited[~mask] = 255 - edited[~mask]  # a new background, the foreground kept
                video.write_video(outputs / f"{sample_id}.mp4", edited, fps=16)
            rows.append({"edited_type": theme, "prompt": f"Put the subject in a {keyword}", "original_video": rel})
            meta.append(layout.metadata_record(theme, sample_id, rows[-1]["prompt"], keyword, "a room"))
        with open(bench / f"{theme}_bench.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["edited_type", "prompt", "original_video"])
            writer.writeheader()
            writer.writerows(rows)
        layout.write_jsonl(bench / f"{theme}_metadata.jsonl", meta)
    return bench, outputs


def test_protocols_and_cap():
    sparkle = load_protocol("sparkle")
    assert sparkle.dimensions == ("Instruction Compliance", "Overall Visual Quality", "Foreground Integrity",
                                  "Foreground Motion Consistency", "Background Dynamics", "Background Visual Quality")
    assert "must not exceed the score for Instruction Compliance" in sparkle.text
    assert len(load_protocol("openve").dimensions) == 3
    assert cap_scores([3, 5, 1, 4, 3, 2]) == [3, 3, 1, 3, 3, 2]
    with pytest.raises(ValueError, match="--protocol"):
        load_protocol("vbench")


def test_inference_layout_path(tmp_path):
    bench, _ = _bench(tmp_path)
    samples = read_bench(bench)
    assert [s.id for s in samples] == ["Sparkle_season_000000", "Sparkle_season_000003", "Sparkle_time_000001"]
    sample = BenchSample("Sparkle_location_000172", "location", "p", "landmark",
                         "ancient stone ruins with wind-swept grass", Path("x.mp4"))
    assert sample.result_path("R").as_posix() == \
        "R/location/landmark---ancient_stone_ruins_with_wind-swept_grass/Sparkle_location_000172_edited.mp4"


def test_eval_tiny_judge_writes_the_readme_score_files(tmp_path, capsys):
    bench, outputs = _bench(tmp_path)
    results = tmp_path / "results"
    argv = ["eval", "--bench", str(bench), "--results", str(results), "--layout-from", str(outputs),
            "--judge", "tiny"]
    assert main(argv) == 0
    assert (results / "time" / "night---neon_city_street" / "Sparkle_time_000001_edited.mp4").is_file()
    time_scores = layout.read_jsonl(results / "time_tiny_sparkle_score.jsonl")
    season_scores = layout.read_jsonl(results / "season_tiny_sparkle_score.jsonl")
    assert [r["id"] for r in time_scores] == ["Sparkle_time_000001"]
    assert [r["id"] for r in season_scores] == ["Sparkle_season_000000"]
    for record in time_scores + season_scores:
        assert set(record) == SPARKLE_KEYS
        scores = record["scores"]
        assert len(scores) == 6 and all(isinstance(s, int) and 1 <= s <= 5 for s in scores)
        assert all(s <= scores[0] for s in scores[1:])
        lines = record["result"].splitlines()
        assert lines[0].startswith("Brief reasoning:") and lines[1].startswith("Instruction Compliance: ")
    assert time_scores[0]["subtheme"] == "night" and time_scores[0]["scene"] == "neon city street"
    (failure,) = layout.read_jsonl(results / "season_tiny_sparkle_failures.jsonl")
    assert failure["id"] == "Sparkle_season_000003" and failure["reason"].startswith("no result video at ")
    # Judge-free metrics: the kept foreground is perfect, the edge map is the source's (background edges flipped
    # colours keep their place), a missing output has no record.
    (metrics,) = layout.read_jsonl(results / "time_metrics.jsonl")
    assert set(metrics) == {"id", *METRIC_KEYS, "notes"}
    assert metrics["fg_psnr"] > 35 and metrics["fg_ssim"] > 0.95 and metrics["bg_motion"] > 0.5
    summary = json.loads((results / "eval_tiny_sparkle.json").read_text())
    assert summary["macro"]["scored"] == 2 and summary["macro"]["failed"] == 1
    # A rerun skips what is scored and measured: the files are unchanged.
    before = {p.name: p.read_bytes() for p in results.glob("*.jsonl")}
    report = tmp_path / "report.html"
    assert main(argv[:-2] + ["--judge", "tiny", "--report", str(report)]) == 0
    assert {p.name: p.read_bytes() for p in results.glob("*.jsonl")} == before
    text = report.read_text(encoding="utf-8")
    assert text.count('<table class="comparison">') == 1 and "season / winter" in text
    assert text.count("<svg") == 6 * (2 + 3)  # six dimensions for 2 edit types and their 3 subthemes


def test_eval_errors_name_the_problem(tmp_path, capsys):
    assert main(["eval", "--bench", str(tmp_path), "--results", str(tmp_path / "r"), "--judge", "none"]) == 2
    assert "bench.csv" in capsys.readouterr().err
    bench, outputs = _bench(tmp_path)
    assert main(["eval", "--bench", str(bench), "--results", str(tmp_path / "r"), "--judge", "nowhere/qwen"]) == 2
    assert "not 'tiny', an http(s):// endpoint, or a Qwen3-VL folder" in capsys.readouterr().err
    assert main(["eval", "--bench", str(bench), "--results", str(tmp_path / "r"), "--judge", "http://127.0.0.1:9"]) == 2
    assert "--judge-model" in capsys.readouterr().err


class _FakeServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat-completions server: answers a fixed JSON verdict (an over-high score in dimension 3
    to be capped), and records each request body and Authorization header."""

    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, body, self.headers.get("Authorization")))
        answer = {"reasoning": "background matches", "instruction_compliance": 3,
                  "visual_temporal_seamlessness": 2, "physical_consistency": 5}
        payload = json.dumps({"choices": [{"index": 0, "message": {"content": json.dumps(answer)}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_eval_endpoint_judge_openve_protocol(tmp_path, monkeypatch):
    bench, outputs = _bench(tmp_path)
    server = HTTPServer(("127.0.0.1", 0), _FakeServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("JUDGE_KEY", "secret")
    _FakeServer.seen = []
    try:
        results = tmp_path / "results"
        assert main(["eval", "--bench", str(bench), "--results", str(results), "--layout-from", str(outputs),
                     "--judge", f"http://127.0.0.1:{server.server_port}/v1", "--judge-model", "Qwen/Qwen3-VL-32B",
                     "--api-key-env", "JUDGE_KEY", "--protocol", "openve", "--edit-types", "time",
                     "--no-metrics"]) == 0
    finally:
        server.shutdown()
    (record,) = layout.read_jsonl(results / "time_Qwen_Qwen3-VL-32B_openve_score.jsonl")
    assert record["scores"] == [3, 2, 3]  # physical consistency 5 capped at instruction compliance 3
    assert "Physical Consistency: 5" in record["result"]  # the judge's own answer is kept as it said it
    (path, body, auth), = _FakeServer.seen
    assert path == "/v1/chat/completions" and auth == "Bearer secret"
    assert body["model"] == "Qwen/Qwen3-VL-32B" and body["temperature"] == 0.0
    assert body["response_format"]["type"] == "json_schema"
    parts = body["messages"][-1]["content"]
    assert sum(p["type"] == "image_url" for p in parts) == 2 * 8  # --judge-frames 8 of each 9-frame video
    assert not (results / "time_metrics.jsonl").exists()


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.tables = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in ("video", "img"):
            self.links += [value for name, value in attrs if name == "src"]
        if tag == "table" and ("class", "comparison") in attrs:
            self.tables += 1


@pytest.fixture(scope="module")
def demo_and_ablation(tmp_path_factory):
    """One of the demo's fixed-camera clips run with tiny models by the full method, then --ablation copy-paste
    seeded with the full run's stages 1-4 (--reuse-from: only stage 5 runs again). Thresholds at 0 so that the
    sample reaches the end; the demo's other settings as they are."""
    from sparkle_fast.driver.demo import demo_config_path, make_demo_clips

    root = tmp_path_factory.mktemp("ablation")
    for path in make_demo_clips(root / "clips")[1:]:
        path.unlink()  # one static clip is enough (the demo test covers the others)
    common = ["--input", str(root / "clips"), "--config", str(demo_config_path()), "--device", "cpu",
              "--set", "thresholds.edit_frame0=0", "--set", "thresholds.foreground_removal=0",
              "--set", "thresholds.edited_video=0"]
    assert main(["run", "--out", str(root / "full"), *common]) == 0
    assert main(["run", "--out", str(root / "copy_paste"), "--ablation", "copy-paste", "--reuse-from",
                 str(root / "full"), *common]) == 0
    return root


def test_ablation_run_and_full_run_evaluated_together(demo_and_ablation, capsys):
    root = demo_and_ablation
    full, ablation = root / "full", root / "copy_paste"
    assert json.loads((ablation / "config.json").read_text())["run"]["ablation"] == "copy-paste"
    assert json.loads((full / "config.json").read_text())["run"]["ablation"] == ""
    with Manifest(ablation / "manifest.sqlite") as manifest, Manifest(full / "manifest.sqlite") as reference:
        kept = manifest.results(5, "done")
        # Stages 1-4 were reused, not rerun: the same records; stage 5 ran with the ablation.
        for stage in (1, 2, 3, 4):
            mine, theirs = manifest.results(stage), reference.results(stage)
            assert [(r.sample_id, r.status, r.record) for r in mine] == [(r.sample_id, r.status, r.record)
                                                                         for r in theirs]
    assert kept and all(r.record["ablation"] == "copy-paste" for r in kept)
    assert all((ablation / r.sample_id.split("_")[1] / "edited_video" / f"{r.sample_id}.mp4").is_file() for r in kept)
    assert main(["run", "--input", str(root / "clips"), "--out", str(root / "again"), "--reuse-from", str(full)]) == 2
    assert "--reuse-from needs --ablation" in capsys.readouterr().err
    # An ablation into the full run's folder is refused before any work.
    assert main(["run", "--input", str(root / "clips"), "--out", str(full), "--ablation", "copy-paste"]) == 2
    assert "give each ablation its own --out" in capsys.readouterr().err

    bench = root / "bench"
    assert main(["export-bench", str(full), "--bench", str(bench), "--samples", "passed-4"]) == 0
    samples = read_bench(bench)
    assert len(samples) == len(kept) >= 1
    report = root / "report" / "eval.html"
    assert main(["eval", "--bench", str(bench), "--results", str(root / "r_full"), "--results",
                 str(root / "r_copy_paste"), "--layout-from", str(full), "--layout-from", str(ablation),
                 "--judge", "tiny", "--report", str(report)]) == 0
    for results in (root / "r_full", root / "r_copy_paste"):
        for sample in samples:
            assert sample.result_path(results).is_file()
        records = [r for t in {s.edit_type for s in samples}
                   for r in layout.read_jsonl(results / f"{t}_tiny_sparkle_score.jsonl")]
        assert len(records) == len(samples)
        for record in records:
            assert set(record) == SPARKLE_KEYS and len(record["scores"]) == 6
            assert all(1 <= s <= 5 for s in record["scores"]) and max(record["scores"][1:]) <= record["scores"][0]
    # Copy-paste's video is the very composite the control video's edges come from (source inside the mask,
    # background outside), so its edges follow the control video far better than the tiny random generator's; and
    # it keeps the source's foreground pixels (up to H.264) where the tiny BAIT mask has any.
    for sample in samples:
        [full_m] = [r for r in layout.read_jsonl(root / "r_full" / f"{sample.edit_type}_metrics.jsonl")
                    if r["id"] == sample.id]
        [paste_m] = [r for r in layout.read_jsonl(root / "r_copy_paste" / f"{sample.edit_type}_metrics.jsonl")
                     if r["id"] == sample.id]
        assert paste_m["edge_f1"] > full_m["edge_f1"] + 0.1, (paste_m, full_m)
        assert full_m["flicker"] is not None and paste_m["bg_motion"] is not None
        if full_m["fg_psnr"] is None:  # the random tracker's mask may be empty: then the note says so
            assert any("mask is empty" in note for note in full_m["notes"] + paste_m["notes"])
        else:
            assert paste_m["fg_psnr"] > full_m["fg_psnr"] + 5
    text = report.read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(text)
    assert parser.tables == 1 and "r_full" in text and "r_copy_paste" in text and "<svg" in text
    assert [link for link in parser.links if not (report.parent / link).is_file()] == []
    assert len(parser.links) == len(samples) * 4  # source, two results, control


def test_ablation_config_values_and_reuse_errors(tmp_path):
    from sparkle_fast.driver.ablation import reuse_stages
    from sparkle_fast.driver.config import ConfigError, load_config

    assert load_config(overrides={"run.ablation": "single-pass"}).run.ablation == "single-pass"
    with pytest.raises(ConfigError, match="run.ablation must be one of"):
        load_config(overrides={"run.ablation": "copy_paste"})
    with pytest.raises(ValueError, match="no manifest.sqlite"):
        reuse_stages(tmp_path / "nothing", tmp_path / "out", "copy-paste")
    with pytest.raises(ValueError, match="needs --ablation"):
        reuse_stages(tmp_path / "nothing", tmp_path / "out", "")


def _stage_inputs(tmp_path):
    """A layout holding what stages 4 and 5 read for one sample (source, background video, mask, edited frame 0),
    and the records of stages 2 and 3."""
    from sparkle_fast.camera_synthetic import make_clip
    from sparkle_fast.stages.base import Sample

    out = layout.SparkleLayout(tmp_path / "out")
    sample = Sample("Sparkle_time_000000", "time", "clip.mp4")
    source = make_clip("static", n_frames=9, size=(64, 96), subject_fraction=0.12, seed=3).frames
    background = make_clip("static", n_frames=9, size=(64, 96), subject_fraction=0.0, photo="coffee", seed=4).frames
    mask = np.zeros((9, 64, 96), bool)
    mask[:, 16:48, 24:72] = True
    video.write_video(out.artifact("time", "source_video", sample.id), source, fps=16)
    video.write_video(out.artifact("time", "edited_background_video", sample.id), background, fps=16)
    video.write_image(out.artifact("time", "edited_frame0", sample.id), background[0])
    save_mask(out.artifact("time", "source_video_mask", sample.id), mask)
    previous = {2: {"prompt": "Replace the background with a cafe."},
                3: {"r1": {"round1_labels": ["person"],
                           "round1_objects": [{"bbox_2d": [250, 250, 750, 750], "label": "person"}]}}}
    return out, sample, mask, previous


@pytest.mark.parametrize("ablation", ["", "foreground-only", "copy-paste"])
def test_stage5_ablations(tmp_path, ablation):
    """foreground-only: the control video keeps the source's edges inside the mask and nothing outside; copy-paste:
    the final video is the source inside the mask over the background video, and the control model is not called."""
    from sparkle_fast.driver.config import load_config
    from sparkle_fast.models.base import TaskResult
    from sparkle_fast.stages.base import StageContext
    from sparkle_fast.stages.stage5 import SynthesizeStage

    out, sample, mask, previous = _stage_inputs(tmp_path)
    calls = []

    class Control:  # returns its control video as the "generated" one
        def try_generate(self, control, start_image, prompt, **kwargs):
            calls.append(prompt)
            return TaskResult(ok=True, value=np.asarray(control.cpu()).copy())

    class Scorer:
        def score_frames(self, source_frames, edited_frames, instruction, *, passes=None):
            return TaskResult(ok=True, value=[{"SC_score": 9.0, "PQ_score": 9.0, "O_score": 9.0,
                                               "SC_score_reasoning": "", "PQ_score_reasoning": "",
                                               "SC_raw_output": "", "PQ_raw_output": ""} for _ in source_frames])

    config = load_config(overrides={"clip.width": 96, "clip.height": 64, "clip.max_frames": 9,
                                    "run.ablation": ablation})
    context = StageContext(out, config, {"control": Control(), "scorer": Scorer()}, previous)
    outcome = SynthesizeStage().run(sample, context)
    assert outcome.status == "done", outcome.reason
    assert outcome.record.get("ablation", "") == ablation
    control = video.read_frames(out.artifact("time", "edited_video_canny", sample.id)).frames.numpy()
    final = video.read_frames(out.artifact("time", "edited_video", sample.id)).frames.numpy().astype(int)
    outside_edges = int((control[~mask] > 127).sum())
    if ablation == "foreground-only":
        assert outside_edges == 0 and int((control[mask] > 127).sum()) > 0
    else:
        assert outside_edges > 0  # background guidance
    if ablation == "copy-paste":
        assert calls == []
        source = video.read_frames(out.artifact("time", "source_video", sample.id)).frames.numpy().astype(int)
        background = video.read_frames(out.artifact("time", "edited_background_video",
                                                     sample.id)).frames.numpy().astype(int)
        assert np.abs(final[mask] - source[mask]).mean() < 4  # H.264 loss only
        assert np.abs(final[~mask] - background[~mask]).mean() < 4
    else:
        assert calls == ["Replace the background with a cafe."]


@pytest.mark.parametrize("ablation,passes", [("", 2), ("single-pass", 1)])  # 9 frames at 2 FPS: anchors 0, 8
def test_stage4_single_pass_ablation(tmp_path, ablation, passes):
    """single-pass: one forward tracking pass from the first anchor and no vote, instead of one pass per anchor."""
    from sparkle_fast.bait import ScriptedTracker
    from sparkle_fast.driver.config import load_config
    from sparkle_fast.models.base import TaskResult
    from sparkle_fast.stages.base import StageContext
    from sparkle_fast.stages.stage4 import BaitStage

    out, sample, mask, previous = _stage_inputs(tmp_path)

    class Grounder:
        def ground_per_frame(self, frames, labels):
            return TaskResult(ok=True, value=[[{"bbox_2d": [250, 250, 750, 750], "label": label} for label in labels]
                                              for _ in frames])

    tracker = ScriptedTracker(lambda anchor, index, frame, reverse: mask[frame])
    config = load_config(overrides={"clip.width": 96, "clip.height": 64, "clip.max_frames": 9,
                                    "run.ablation": ablation})
    outcome = BaitStage().run(sample, StageContext(out, config, {"vlm": Grounder(), "sam3": tracker}, previous))
    assert outcome.status == "done", outcome.reason
    bait = outcome.record["bait"]
    assert bait["mode"] == ("single" if ablation else "bait") and bait["passes"] == passes
    anchors = {anchor for anchor, _, _ in tracker.calls}
    reverses = {reverse for _, reverse, _ in tracker.calls}
    assert (anchors, reverses) == (({0}, {False}) if ablation else ({0, 8}, {False, True}))
