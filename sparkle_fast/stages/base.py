"""The stage interface shared by the five stages and every runner.

A runner gives a stage one Sample and a StageContext (the output layout, the resolved config, the loaded models and
the records earlier stages produced for this sample) and gets back a StageOutcome:
  done      the sample goes on; `record` (JSON) is what the stage produced for the jsonl files and later stages
  rejected  the stage's filter said no; `reason` says why (e.g. "EditScore overall 7.4 < 8.0")
  failed    an error (bad input, out of memory, a model that would not answer); `reason` holds the error; retried
Artifacts (frames, videos, masks) are written by the stage itself, atomically, under the layout's paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sparkle_fast.layout import SparkleLayout


@dataclass(frozen=True)
class Sample:
    """One source video with its theme and id (e.g. Sparkle_location_000123); prompt is given for openve3m."""

    id: str
    theme: str
    src_video: str
    prompt: str | None = None


@dataclass
class StageOutcome:
    status: str  # "done" | "rejected" | "failed"
    reason: str | None = None
    score: float | None = None
    record: dict | None = None
    timing: dict[str, float] = field(default_factory=dict)  # seconds: model, kernel, io

    def __post_init__(self) -> None:
        if self.status not in ("done", "rejected", "failed"):
            raise ValueError(f"status must be done, rejected or failed, got {self.status!r}")
        if self.status != "done" and not self.reason:
            raise ValueError(f"a {self.status} outcome needs a reason")

    @classmethod
    def done(cls, record: dict | None = None, score: float | None = None, **timing: float) -> StageOutcome:
        return cls("done", None, score, record, dict(timing))

    @classmethod
    def rejected(cls, reason: str, score: float | None = None, record: dict | None = None) -> StageOutcome:
        return cls("rejected", reason, score, record)

    @classmethod
    def failed(cls, reason: str) -> StageOutcome:
        return cls("failed", reason)


@dataclass
class StageContext:
    layout: SparkleLayout
    config: Any  # driver.config.PipelineConfig (stages read their thresholds from it)
    models: Any  # what the stage's load_models returned
    previous: dict[int, dict | None]  # stage number -> that stage's record for this sample


class Stage(Protocol):
    """What a runner needs from a stage."""

    number: int  # 1..5
    name: str  # e.g. "collect"
    model_slots: tuple[str, ...]  # the model folders it needs (sparkle_fast.models.slots), checked before any work

    def load_models(self, models_source: Any) -> Any:
        """Load the stage's models (tiny or from folders); called once per chunk."""

    def release_models(self, models: Any) -> None:
        """Give the models' memory back before the next stage loads its own."""

    def run(self, sample: Sample, context: StageContext) -> StageOutcome:
        """Process one sample. Expected failures are returned as outcomes; the runner also catches exceptions."""
