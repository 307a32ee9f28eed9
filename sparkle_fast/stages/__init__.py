"""The five Sparkle stages, one module each (stage1 .. stage5), on one interface (base.Stage). Each stage is a short
sequence of steps (steps.py: one model slot per step, over a batch of samples) that produce its artifacts and a
keep/reject decision with a reason; run(sample) runs them for one sample with all its models loaded. Stages know
nothing about the CLI, the manifest, GPU counts or Ray.

    all_stages() -> [CollectStage(), EditStage(), BackgroundStage(), BaitStage(), SynthesizeStage()]
"""

from sparkle_fast.stages.base import Sample, Stage, StageContext, StageOutcome


def all_stages() -> list:
    """One instance of each stage, in order (imported lazily: the stages pull in the model libraries)."""
    from sparkle_fast.stages.stage1 import CollectStage
    from sparkle_fast.stages.stage2 import EditStage
    from sparkle_fast.stages.stage3 import BackgroundStage
    from sparkle_fast.stages.stage4 import BaitStage
    from sparkle_fast.stages.stage5 import SynthesizeStage

    return [CollectStage(), EditStage(), BackgroundStage(), BaitStage(), SynthesizeStage()]


__all__ = ["Sample", "Stage", "StageContext", "StageOutcome", "all_stages"]
