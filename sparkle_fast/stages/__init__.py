"""The five Sparkle stages, one module each (stage1 .. stage5, landing with their issues), on one interface
(base.Stage): a function of one sample, its inputs and the models it needs, returning artifacts and a keep/reject
decision with a reason. Stages know nothing about the CLI, the manifest, GPU counts or Ray."""

from sparkle_fast.stages.base import Sample, Stage, StageContext, StageOutcome

__all__ = ["Sample", "Stage", "StageContext", "StageOutcome"]
