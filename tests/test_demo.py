"""`sparkle-fast demo` end to end on CPU: five stages on tiny random models, a dataset that passes the layout
validator, an HTML report whose every media link resolves, and a rerun that redoes nothing."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sparkle_fast.driver.cli import main
from sparkle_fast.driver.manifest import Manifest
from sparkle_fast.layout_check import check_dataset


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        if tag in ("img", "video", "source"):
            self.links += [value for name, value in attrs if name == "src"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["demo", "--out", str(out)]) == 0
    return out


def test_demo_runs_every_stage_and_conforms(demo):
    summary = json.loads((demo / "summary.json").read_text())
    stages = summary["stages"]
    assert stages["1"]["rejected"] >= 1  # the panning clip
    assert stages["5"]["kept"] >= 1, stages  # at least one sample went through all five stages
    assert all(s["failed"] == 0 for s in stages.values()), stages
    assert stages["3"]["time"]["model"] > 0 and stages["5"]["time"]["kernel"] > 0
    assert check_dataset(demo) == []
    config = json.loads((demo / "config.json").read_text())
    assert config["thresholds"]["edit_frame0"] < 8.0  # the demo's own, lowered, thresholds are saved with the run


def test_demo_report_links_resolve(demo):
    report = demo / "report.html"
    text = report.read_text(encoding="utf-8")
    assert "random" in text and "not produced" in text  # the rejected clip has no intermediates
    parser = _Links()
    parser.feed(text)
    assert len(parser.links) >= 7
    missing = [link for link in parser.links if not (report.parent / link).is_file()]
    assert missing == []
    assert any(link.endswith("_mask_overlay.mp4") for link in parser.links)
    assert any("/edited_video/" in link for link in parser.links)


def test_demo_rerun_resumes_without_redoing_work(demo):
    with Manifest(demo / "manifest.sqlite") as manifest:
        before = [(r.sample_id, r.stage, r.attempts) for n in range(1, 6) for r in manifest.results(n)]
    csvs = {p: p.read_bytes() for p in Path(demo, "prompts").iterdir()}
    assert main(["demo", "--out", str(demo)]) == 0
    with Manifest(demo / "manifest.sqlite") as manifest:
        after = [(r.sample_id, r.stage, r.attempts) for n in range(1, 6) for r in manifest.results(n)]
    assert after == before
    assert {p: p.read_bytes() for p in Path(demo, "prompts").iterdir()} == csvs
