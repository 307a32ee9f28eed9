"""The model calls one sample makes, as steps: which model slot each uses, what it waits for, and its size.

This is the step graph the plan (driver/plan.py) schedules and costs. It is the steps the five stages run
(sparkle_fast/stages/stage1..5.py, each stage's steps(); tests/test_step_runner.py checks that they agree), one row
per model call family, in pipeline order:

  stage 1  camera_filter [kernels]   camera_verdict [vlm]
  stage 2  scene_instruction [vlm]   edit_frame0 [editor]   score_edit [scorer]
  stage 3  ground_r1 [vlm]   remove_foreground [editor]   score_removal [scorer]   caption_background [vlm]
           animate_background [i2v]
  stage 4  ground_r2 [vlm]   track [sam3] (BAIT's vote and bit packing run inside it: the passes' masks stay in memory)
  stage 5  render [control] (the control video is composed inside it)   score_video [scorer]

`after` lists the steps whose outputs a step reads. A stage starts when the previous one is done (the manifest's
rule), so round-2 grounding waits for the background video although it reads only the clip and the round-1 labels:
on a GPU that cannot hold the VLM beside the I2V model this costs one VLM load per chunk more than letting it share
the caption's residency would.

Token and size figures are per call at Sparkle's clip spec (81 frames, 1280x720); they are the project's estimates
of what the stages send (prompt lengths measured on our prompts, image tokens from Qwen3-VL's 32-pixel merged
patches), not Sparkle's published numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

IMAGE_TOKENS_720P = 900  # Qwen3-VL: 16-px patches merged 2x2 -> (1280/32) * (720/32)


@dataclass(frozen=True)
class StepSpec:
    """One step: a model call family of one stage."""

    stage: int
    name: str
    slot: str | None  # a model slot (sparkle_fast.models.slots), or None for kernel work
    after: tuple[str, ...] = ()
    kind: str = "kernel"  # "vlm" | "diffusion" | "tracker" | "kernel": which cost formula applies
    calls: float = 1.0  # calls per sample
    # vlm: tokens in and out per call (passes of EditScore count as calls)
    input_tokens: int = 0
    output_tokens: int = 0
    # diffusion: what is generated (frames = 1 for an image) and how many references condition it
    frames: int = 0
    references: int = 0
    extra: dict = field(default_factory=dict)


def step_graph(clip_frames: int = 81, anchor_frames: int = 11, scorer_passes: int = 4,
               scored_frames: int = 4) -> list[StepSpec]:
    """The steps of one sample in pipeline order (see the module docstring)."""
    img = IMAGE_TOKENS_720P
    return [
        StepSpec(1, "camera_filter", None),
        StepSpec(1, "camera_verdict", "vlm", ("camera_filter",), "vlm", 1, input_tokens=8 * img // 4 + 400,
                 output_tokens=300),  # 8 sampled frames at quarter size, chain-of-thought answer
        StepSpec(2, "scene_instruction", "vlm", ("camera_verdict",), "vlm", 2, input_tokens=img + 500,
                 output_tokens=120),  # describe the scene, then write the instruction
        StepSpec(2, "edit_frame0", "editor", ("scene_instruction",), "diffusion", 1, frames=1, references=1),
        StepSpec(2, "score_edit", "scorer", ("edit_frame0",), "vlm", scorer_passes, input_tokens=2 * img + 700,
                 output_tokens=150),
        StepSpec(3, "ground_r1", "vlm", ("score_edit",), "vlm", 1, input_tokens=2 * img + 400, output_tokens=200),
        StepSpec(3, "remove_foreground", "editor", ("ground_r1",), "diffusion", 1, frames=1, references=1),
        StepSpec(3, "score_removal", "scorer", ("remove_foreground",), "vlm", scorer_passes,
                 input_tokens=2 * img + 700, output_tokens=150),
        StepSpec(3, "caption_background", "vlm", ("score_removal",), "vlm", 1, input_tokens=300, output_tokens=120),
        StepSpec(3, "animate_background", "i2v", ("caption_background",), "diffusion", 1, frames=clip_frames,
                 references=0, extra={"steps": 4, "cfg": False}),
        StepSpec(4, "ground_r2", "vlm", ("animate_background",), "vlm", anchor_frames, input_tokens=img + 300,
                 output_tokens=150),
        StepSpec(4, "track", "sam3", ("ground_r2",), "tracker", 1, frames=clip_frames,
                 extra={"passes": 2 * anchor_frames}),
        StepSpec(5, "render", "control", ("track", "animate_background"), "diffusion", 1, frames=clip_frames, references=1,
                 extra={"steps": 50, "cfg": True}),
        StepSpec(5, "score_video", "scorer", ("render",), "vlm", scorer_passes * scored_frames,
                 input_tokens=2 * img + 700, output_tokens=150),
    ]


def model_major_phases(steps: list[StepSpec]) -> list[tuple[str | None, list[str]]]:
    """Group the steps into phases, model-major: a phase holds one slot resident and runs every step of that slot
    whose inputs are ready; kernel steps (slot None) join whichever phase first has their inputs.

    Greedy over the pipeline order: the next phase's slot is that of the earliest unfinished model step; within a
    phase, steps are added until no more of that slot become ready. Returns [(slot, [step names])]."""
    by_name = {s.name: s for s in steps}
    unknown = {a for s in steps for a in s.after if a not in by_name}
    if unknown:
        raise ValueError(f"step graph: unknown dependencies {sorted(unknown)}")
    done: set[str] = set()
    phases: list[tuple[str | None, list[str]]] = []

    def ready(step: StepSpec) -> bool:
        return step.name not in done and all(a in done for a in step.after)

    while len(done) < len(steps):
        kernels = [s.name for s in steps if s.slot is None and ready(s)]
        pending_models = [s for s in steps if s.slot is not None and s.name not in done]
        if kernels and (not pending_models or not ready(pending_models[0])):
            if phases and phases[-1][0] is not None:  # kernel work rides in the running phase, after its model
                phases[-1][1].extend(kernels)
            else:
                phases.append((None, kernels))
            done.update(kernels)
            continue
        if not pending_models:
            break
        first = next((s for s in pending_models if ready(s)), None)
        if first is None:
            raise ValueError("step graph has a cycle or an unreachable step")
        slot, names = first.slot, []
        progressed = True
        while progressed:
            progressed = False
            for s in steps:
                if ready(s) and (s.slot == slot or s.slot is None):
                    names.append(s.name)
                    done.add(s.name)
                    progressed = True
        phases.append((slot, names))
    return phases
