"""EditScore adapter: the `editscore` package's prompts, pass loop and score formulas over our own VLM object.

editscore.EditScore builds the SC prompt (editing success + over-editing, two images) and the PQ prompt
(naturalness + artifacts) and turns each pass's answers into scores:
  SC = min(SC scores) / (range/10), PQ = min(PQ scores) / (range/10), O = sqrt(SC * PQ),
  prompt_following = SC[0] / (range/10), consistency = SC[1] / (range/10),
then averages every field over the passes ("average_last": overall is the mean of the per-pass O, not
sqrt(mean SC * mean PQ)). Pass i samples with seed + i.

Passes (Sparkle's): the release README's published records are reproduced exactly by 4 passes averaged at score
range 25, each per-frame record by exactly one set of per-pass answers, and by no smaller pass count (one pass can
only give multiples of 0.4, and overall = sqrt(min(SC) * PQ)); tests/test_models_scorer.py searches the per-pass
answers and feeds them through this adapter. ScorerConfig.passes defaults to 4; the run config's [scorer] passes sets
it (use_run_config), a call's passes= overrides it.

One batched call: editscore asks its model for one answer at a time (evaluate: SC then PQ, pass after pass) or one
batch per pass (batch_evaluate). We run editscore's own code twice over a `_Recorder` model object: the first run
records every (prompt, images, seed) request it makes and gets placeholder answers; then all requests are generated
in ONE batched `generate` (rows = passes x prompts, each row sampling from its own seed with `SeededRowSampler`, so a
row's answer does not depend on its batch); the second run replays the answers, and editscore's formulas produce the
record. A seeded backend answers a repeated request the same way, so editscore's retry of an unparsable answer gets
the same answer, as it would from editscore's own seeded backends.

Many pairs at once (score_edit_many, score_frames_many, score_edited_video_many): editscore's code is run per pair
as above, and the rows of all pairs go through generate together, at most `batch_size` per call, each row with its
pass's seed, so a pair's result does not depend on its batch (up to the float differences of left padding).

Our `_EditScoreBackbone` is a Qwen2.5-VL or Qwen3-VL (+ EditScore's LoRA) on any device (editscore's own backends
move inputs to "cuda" unconditionally), with schema-constrained decoding of {"reasoning": "...", "score": [a, b]}.

Honesty: editscore replaces an unparsable answer with a random guess (evaluate) or a mid-range score
(batch_evaluate). We check every pass's answers and return a failed TaskResult instead of a made-up score.
Thresholds (stage 2: 8, stage 3: 8.5, stage 5: mean of 4 frames >= 8) belong to the run config, not here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sparkle_fast.models import json_answers as ja
from sparkle_fast.models.base import TaskResult, pick_device, pick_dtype, to_pil
from sparkle_fast.models.slots import check_model_folder

# Sparkle's pass count (derived from the README's records, FACTS.md section 2).
SPARKLE_PASSES = 4
_PLACEHOLDER = '{"reasoning": "", "score": [0, 0]}'


@dataclass(frozen=True)
class ScorerConfig:
    """EditScore's own sampling defaults (score range 25, temperature 0.7, top_p 0.9, top_k 20, 512 new tokens,
    seed 42) and Sparkle's 4 passes. batch_size: the most rows one generate call holds (stage 5's 4 frames x 2
    prompts x 4 passes = 32 fit in one call)."""

    score_range: int = 25
    passes: int = SPARKLE_PASSES
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 20
    max_new_tokens: int = 512
    seed: int = 42
    reasoning_chars: int = 1200
    constrained: bool = True
    batch_size: int = 32


@dataclass(frozen=True)
class ScoreRequest:
    """One generation: the images (PIL), the prompt text and the seed of its pass."""

    images: tuple
    prompt: str
    seed: int


class _Prepared:
    """What editscore's prepare_input returns: the images and the prompt, keyed by image identity and text."""

    def __init__(self, images, prompt: str):
        self.images = tuple(images if isinstance(images, list) else [images])
        self.prompt = prompt
        self.key = (prompt, tuple(id(im) for im in self.images))


class _Recorder:
    """The model object editscore calls. Recording: note each (input, seed) and answer a placeholder; replaying:
    answer what the batched generation produced for that (input, seed)."""

    def __init__(self):
        self.requests: dict[tuple, ScoreRequest] = {}
        self.answers: dict[tuple, str] | None = None

    def prepare_input(self, images, prompt: str) -> _Prepared:
        return _Prepared([to_pil(im) for im in (images if isinstance(images, list) else [images])], prompt)

    def inference(self, inputs: _Prepared, seed: int | None = None) -> str:
        key = (inputs.key, int(seed or 0))
        if self.answers is None:
            self.requests.setdefault(key, ScoreRequest(inputs.images, inputs.prompt, int(seed or 0)))
            return _PLACEHOLDER
        return self.answers[key]

    def batch_inference(self, inputs_list, seed: int | None = None) -> list[str]:
        return [self.inference(inputs, seed) for inputs in inputs_list]


def _score_problem(answer: str, score_range: int) -> str | None:
    """Why an answer cannot be scored (editscore would guess), or None: it must hold >= 2 scores in 0..range."""
    from editscore.json_parser import parse_vlm_output_to_dict

    try:
        scores = parse_vlm_output_to_dict(answer)["score"]
    except Exception as exc:  # noqa: BLE001 - an unparsable answer is a recorded reason
        return f"unparsable ({type(exc).__name__})"
    if len(scores) < 2 or not all(isinstance(s, (int, float)) and 0 <= s <= score_range for s in scores):
        return f"scores {scores}"
    return None


class EditScoreAdapter:
    """EditScore over a VLM backbone. score_edit -> edited_frame0_score fields; score_frames -> edited_video_score's
    per-frame records. Images: PIL or uint8 (H, W, 3)."""

    def __init__(self, model=None, processor=None, config: ScorerConfig | None = None, *,
                 backbone_type: str = "qwen3_vl", backend=None):
        from sparkle_fast.models.vlm_backends.transformers_backend import TransformersBackend

        self.model = model
        self.processor = processor
        self.config = config or ScorerConfig()
        self.backbone_type = backbone_type
        # Where answers come from (models/vlm_backends): this model in-process unless a vllm / openai backend is given.
        self.backend = backend or TransformersBackend(model, processor, prompt_renderer=self._render)
        self._scorers: dict[int, Any] = {}
        self._schema = ja.Object((("reasoning", ja.Text(self.config.reasoning_chars)),
                                  ("score", ja.Array(item=ja.Integer(0, self.config.score_range),
                                                     min_items=2, max_items=2))))
        self.generate_calls = 0  # batched generate calls made (one per task unless rows exceed batch_size)
        # The most rows one generate call holds (None: config.batch_size); the runner sets it from the run config.
        self.batch_size: int | None = None

    # -- loading --------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder, *, device=None, dtype=None, config: ScorerConfig | None = None):
        """Load the scorer slot: folder/backbone (Qwen2.5-VL or Qwen3-VL) and, if present, folder/lora merged in."""
        from transformers import AutoProcessor

        folder = check_model_folder("scorer", folder)
        backbone = folder / "backbone"
        backbone_type = json.loads((backbone / "config.json").read_text())["model_type"]
        remote = cls._remote_backend(folder, backbone, backbone_type)
        if remote is not None:
            return cls(config=config, backbone_type=backbone_type, backend=remote)
        if backbone_type == "qwen2_5_vl":
            from transformers import Qwen2_5_VLForConditionalGeneration as model_class
        else:
            from transformers import Qwen3VLForConditionalGeneration as model_class
        device = pick_device(device)
        model = model_class.from_pretrained(backbone, dtype=pick_dtype(device, dtype))
        if (folder / "lora").is_dir():
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, folder / "lora").merge_and_unload()
        processor = AutoProcessor.from_pretrained(backbone)
        return cls(model.to(device).eval(), processor, config, backbone_type=backbone_type)

    @classmethod
    def tiny(cls, *, seed: int = 1, config: ScorerConfig | None = None):
        """A random tiny Qwen3-VL backbone on CPU with short reasoning, for tests and the demo."""
        from sparkle_fast.models.tiny import tiny_qwen3_vl

        model, processor = tiny_qwen3_vl(seed)
        return cls(model, processor, config or ScorerConfig(reasoning_chars=16, max_new_tokens=64))

    def use_run_config(self, run_config) -> None:
        """Take the run config's [scorer] passes (the runner calls this after loading the stage's models)."""
        section = getattr(run_config, "scorer", None)
        if section is not None:
            self.config = dataclasses.replace(self.config, passes=self._passes(section.passes))

    @staticmethod
    def _remote_backend(folder, backbone, backbone_type: str):
        """The vllm / openai backend the [vlm] settings choose (vlm_backends.use_settings), or None. vllm loads the
        backbone with the LoRA merged once into a cached folder (vlm_backends.lora)."""
        from sparkle_fast.models.vlm_backends import backend_from_settings, current_settings

        settings = current_settings()
        model_folder = backbone
        if getattr(settings, "backend", "transformers") == "vllm" and (folder / "lora").is_dir():
            from sparkle_fast.models.vlm_backends.lora import merged_lora_folder

            model_folder = merged_lora_folder(backbone, folder / "lora", settings.merged_cache or folder / "merged")
        renderer = None
        if backbone_type == "qwen2_5_vl":
            from editscore.mllm_tools.qwen25vl import apply_chat_template

            def renderer(request):
                return apply_chat_template(request.content[-1]["text"], num_images=len(request.images))
        return backend_from_settings("scorer", model_folder, settings, prompt_renderer=renderer)

    def release(self) -> None:
        self.backend.release()
        self.model = None
        self.processor = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- generation -----------------------------------------------------------------------------------------
    def _text(self, images: Sequence, prompt: str) -> str:
        if self.backbone_type == "qwen2_5_vl":
            # EditScore-7B was trained on its own template (system prompt, "<imgN>: " before each image).
            from editscore.mllm_tools.qwen25vl import apply_chat_template

            return apply_chat_template(prompt, num_images=len(images))
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                                  tokenize=False)

    def _render(self, request) -> str:
        """The prompt text of a backend request (transformers backend): _text of its images and prompt."""
        return self._text(request.images, request.content[-1]["text"])

    def _generate(self, requests: Sequence[ScoreRequest]) -> list[str]:
        """One answer per request, from one batched backend call; request i samples with requests[i].seed only
        (the transformers backend's SeededRowSampler, a server's per-request seed), so the answers do not depend on
        the batch. Temperature 0 makes every pass greedy (the backend-equality tests use it)."""
        from sparkle_fast.models.vlm_backends import Sampling, VLMRequest

        if not requests:
            return []
        batch = [VLMRequest([{"type": "image"} for _ in r.images] + [{"type": "text", "text": r.prompt}],
                            images=list(r.images), seed=r.seed) for r in requests]
        max_new = self.config.max_new_tokens
        if self.config.constrained:
            max_new = min(max_new, ja.schema_max_chars(self._schema) + 1)
        sampling = Sampling(max_new, temperature=self.config.temperature, top_p=self.config.top_p,
                            top_k=self.config.top_k)
        json_schema = ja.to_json_schema(self._schema) if self.config.constrained else None
        self.generate_calls += 1
        answers = self.backend.generate(batch, json_schema, sampling)
        return [a[0].strip() for a in answers]

    @property
    def rows_per_call(self) -> int:
        """The most rows one generate call holds: batch_size if set, else config.batch_size."""
        return max(1, int(self.batch_size or self.config.batch_size))

    def _generate_all(self, requests: Sequence[ScoreRequest]) -> list[str]:
        """_generate in calls of at most rows_per_call rows (one call when they fit)."""
        step = self.rows_per_call
        answers: list[str] = []
        for start in range(0, len(requests), step):
            answers += self._generate(list(requests[start:start + step]))
        return answers

    def _editscore(self, passes: int):
        """editscore.EditScore with `passes` passes; an unknown backbone name makes it load no model of its own."""
        if passes not in self._scorers:
            from editscore import EditScore

            self._scorers[passes] = EditScore(backbone="sparkle_fast", score_range=self.config.score_range,
                                              num_pass=passes, seed=self.config.seed,
                                              temperature=self.config.temperature, reduction="average_last")
        return self._scorers[passes]

    def _run_batched(self, passes: int, task: Callable[[Any], Any]) -> tuple[Any, list[str], list[str]]:
        """Run editscore's `task(scorer)` with every generation of every pass made in one batched call.
        Returns (task's result, the generated answers, problems with them); raises what the task or generation
        raises."""
        outcome = self._run_batched_many(passes, [task])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _run_batched_many(self, passes: int, tasks: Sequence[Callable[[Any], Any]]) -> list[Any]:
        """_run_batched over many tasks, with the rows of all of them in as few generate calls as rows_per_call
        allows. Each row keeps its pass's seed, so a task's answers do not depend on its batch. One outcome per task:
        (result, answers, problems), or the exception its recording, generation or replay raised. When a batched
        generation raises, each task's rows are generated alone, so one bad input fails only its own task."""
        scorer = self._editscore(passes)
        outcomes: list[Any] = [None] * len(tasks)
        recorders: dict[int, _Recorder] = {}
        for index, task in enumerate(tasks):
            recorder = _Recorder()
            scorer.model = recorder
            try:
                task(scorer)  # recording run: collects the requests, answers placeholders
                recorders[index] = recorder
            except Exception as exc:  # noqa: BLE001 - recorded per task
                outcomes[index] = exc
        keys = {index: list(recorder.requests) for index, recorder in recorders.items()}
        rows = [recorders[index].requests[key] for index in recorders for key in keys[index]]
        try:
            flat = self._generate_all(rows)
            answers, start = {}, 0
            for index in recorders:
                answers[index] = flat[start:start + len(keys[index])]
                start += len(keys[index])
        except Exception:  # noqa: BLE001 - retried task by task below
            answers = {}
            for index, recorder in recorders.items():
                try:
                    answers[index] = self._generate_all([recorder.requests[key] for key in keys[index]])
                except Exception as exc:  # noqa: BLE001
                    outcomes[index] = exc
        for index, recorder in recorders.items():
            if index not in answers:
                continue
            recorder.answers = dict(zip(keys[index], answers[index], strict=True))
            scorer.model = recorder
            try:
                problems = self._answer_problems(passes, recorder.answers, recorder.requests)
                # replaying run: editscore's formulas over the real answers
                outcomes[index] = (tasks[index](scorer), answers[index], problems)
            except Exception as exc:  # noqa: BLE001
                outcomes[index] = exc
        return outcomes

    def _passes(self, passes: int | None) -> int:
        passes = self.config.passes if passes is None else int(passes)
        if passes < 1:
            raise ValueError(f"EditScore passes must be >= 1, got {passes}")
        return passes

    def _answer_problems(self, passes: int, answers: dict[tuple, str], requests: dict[tuple, ScoreRequest]) \
            -> list[str]:
        """Every pass's answers must hold two in-range scores (else editscore would guess or put a mid-range score
        in, and only pass 0's raw output would show it)."""
        pq_prompt = self._editscore(passes).PQ_prompt
        problems = []
        for key, answer in answers.items():
            problem = _score_problem(answer, self.config.score_range)
            if problem:
                request = requests[key]
                head = "PQ" if request.prompt == pq_prompt else "SC"
                problems.append(f"pass {request.seed - self.config.seed}: unusable {head} answer ({problem}): "
                                f"{answer[:80]!r}")
        return problems

    # -- tasks ----------------------------------------------------------------------------------------------
    def score_edit_many(self, sources: Sequence, edits: Sequence, instructions: Sequence[str], *,
                        passes: int | None = None) -> list[TaskResult]:
        """score_edit over many (source, edited, instruction) triples (parallel lists): every pass of every pair in
        as few generate calls as rows_per_call allows; each row keeps its pass's seed (config.seed + pass), so a
        pair's result does not depend on its batch. One TaskResult per pair, each what score_edit gives."""
        _same_lengths("score_edit_many", sources=sources, edits=edits, instructions=instructions)
        passes = self._passes(passes)
        tasks = []
        for source, edited, instruction in zip(sources, edits, instructions, strict=True):
            try:  # PIL once, before recording: the recorder keys requests by the images' identity
                images = [to_pil(source), to_pil(edited)]
            except Exception as exc:  # noqa: BLE001 - a bad image fails its own pair
                tasks.append(_raiser(exc))
                continue
            tasks.append((lambda im, text: (lambda es: es.evaluate(im, text)))(images, instruction))
        return [self._edit_result(outcome) for outcome in self._run_batched_many(passes, tasks)]

    def score_edit(self, source, edited, instruction: str, *, passes: int | None = None) -> TaskResult:
        """Score one edit (source image -> edited image under `instruction`), `passes` passes (default
        config.passes, Sparkle's 4) averaged, all generated in one batched call (score_edit_many's one-item case).

        value = {"prompt_following", "consistency", "perceptual_quality", "overall", "SC_reasoning",
        "PQ_reasoning"}: the "editscore" object of Sparkle's edited_frame0_score.jsonl (floats 0..10; the
        reasoning texts are the last pass's, as editscore returns them).
        """
        return self.score_edit_many([source], [edited], [instruction], passes=passes)[0]

    @staticmethod
    def _edit_result(outcome) -> TaskResult:
        if isinstance(outcome, Exception):  # scoring failure is a recorded reject reason, not a crash
            return TaskResult(ok=False, reason=f"EditScore failed: {type(outcome).__name__}: {outcome}", attempts=1)
        raw, answers, problems = outcome
        record = {key: float(raw[key]) for key in ("prompt_following", "consistency", "perceptual_quality", "overall")}
        record.update(SC_reasoning=str(raw["SC_reasoning"]), PQ_reasoning=str(raw["PQ_reasoning"]))
        if problems:
            return TaskResult(ok=False, value=record, answers=answers, attempts=len(answers),
                              reason="EditScore could not use every answer (editscore would guess a score): "
                                     + "; ".join(problems))
        bad = [k for k in ("prompt_following", "consistency", "perceptual_quality", "overall")
               if not (math.isfinite(record[k]) and 0.0 <= record[k] <= 10.0)]
        if bad:
            return TaskResult(ok=False, value=record, answers=answers, attempts=len(answers),
                              reason=f"EditScore scores out of 0..10: {bad}")
        return TaskResult(ok=True, value=record, answers=answers, attempts=len(answers))

    def score_frames_many(self, items: Sequence[tuple[Sequence, Sequence, str]], *,
                          passes: int | None = None) -> list[TaskResult]:
        """score_frames over many (source_frames, edited_frames, instruction) items: all frames and passes of all
        items in as few generate calls as rows_per_call allows (each row with its pass's seed). One TaskResult per
        item, each what score_frames gives."""
        passes = self._passes(passes)
        results: list[TaskResult | None] = [None] * len(items)
        tasks, where = [], []
        for index, (source_frames, edited_frames, instruction) in enumerate(items):
            if len(source_frames) != len(edited_frames) or not len(source_frames):
                results[index] = TaskResult(ok=False, reason=f"need equal, non-zero frame counts, got "
                                                             f"{len(source_frames)} source and {len(edited_frames)} "
                                                             f"edited frames")
                continue
            try:
                pairs = [[to_pil(s), to_pil(e)] for s, e in zip(source_frames, edited_frames, strict=True)]
            except Exception as exc:  # noqa: BLE001 - a bad frame fails its own item
                tasks.append(_raiser(exc))
                where.append(index)
                continue
            tasks.append((lambda p, text: (lambda es: es.batch_evaluate(p, [text] * len(p))))(pairs, instruction))
            where.append(index)
        for index, outcome in zip(where, self._run_batched_many(passes, tasks), strict=True):
            results[index] = self._frames_result(outcome)
        return results

    def score_frames(self, source_frames: Sequence, edited_frames: Sequence, instruction: str, *,
                     passes: int | None = None) -> TaskResult:
        """Score frame pairs (e.g. frames [1, 26, 51, 76] of source and synthesized video) with editscore's batch
        path, `passes` passes averaged; all frames and passes in one batched call (score_frames_many's one-item
        case).

        value = one record per frame: {"SC_score", "PQ_score", "O_score", "SC_score_reasoning",
        "PQ_score_reasoning", "SC_raw_output", "PQ_raw_output"} (Sparkle's edited_video_score.jsonl entries; the
        reasoning and raw outputs are pass 0's, as editscore keeps them). ok is False when any pass's answer did not
        hold two scores in range (editscore would have put a mid-range score there).
        """
        return self.score_frames_many([(source_frames, edited_frames, instruction)], passes=passes)[0]

    @staticmethod
    def _frames_result(outcome) -> TaskResult:
        if isinstance(outcome, Exception):
            return TaskResult(ok=False, reason=f"EditScore failed: {type(outcome).__name__}: {outcome}", attempts=1)
        raw, answers, problems = outcome
        records = []
        for item in raw:
            record = {k: float(item[k]) for k in ("SC_score", "PQ_score", "O_score")}
            record.update({k: str(item[k]) for k in ("SC_score_reasoning", "PQ_score_reasoning", "SC_raw_output",
                                                     "PQ_raw_output")})
            records.append(record)
        if problems:
            return TaskResult(ok=False, value=records, answers=answers, attempts=len(answers),
                              reason="; ".join(problems))
        return TaskResult(ok=True, value=records, answers=answers, attempts=len(answers))


def _raiser(exc: Exception) -> Callable[[Any], Any]:
    """A task that fails with `exc` (an input that could not be prepared) when editscore would run it."""
    def task(_scorer):
        raise exc
    return task


def _same_lengths(method: str, **lists) -> None:
    """Parallel lists of a *_many call must have one entry per item."""
    lengths = {name: len(values) for name, values in lists.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{method}: the parallel lists must have one entry per item, got lengths {lengths}")


def score_edited_video_many(scorer: EditScoreAdapter, items: Sequence[tuple[str, str, Any, Any]],
                            frame_indices: Sequence[int] | None = None, *, passes: int | None = None) \
        -> list[TaskResult]:
    """Stage 5's scoring over many samples: items are (sample_id, prompt, source_video, edited_video); the frames
    and passes of all samples go through the scorer together (score_frames_many). One TaskResult per item, each
    what score_edited_video gives for it."""
    from sparkle_fast.models.control import score_frame_indices

    results: list[TaskResult | None] = [None] * len(items)
    jobs, where, meta = [], [], []
    for index, (sample_id, prompt, source_video, edited_video) in enumerate(items):
        if len(source_video) != len(edited_video):
            results[index] = TaskResult(ok=False, reason=f"source video has {len(source_video)} frames, edited video "
                                                         f"{len(edited_video)}: they must match")
            continue
        indices = list(frame_indices) if frame_indices is not None else score_frame_indices(len(edited_video))
        jobs.append(([source_video[i] for i in indices], [edited_video[i] for i in indices], prompt))
        where.append(index)
        meta.append((sample_id, prompt, indices))
    many = getattr(scorer, "score_frames_many", None)  # a stand-in scorer may only score one video at a time
    scores = many(jobs, passes=passes) if callable(many) else [scorer.score_frames(*job, passes=passes) for job in jobs]
    for index, (sample_id, prompt, indices), scored in zip(where, meta, scores, strict=True):
        if not scored.ok:
            results[index] = scored
            continue
        record = {"id": sample_id, "prompt": prompt, "frame_indices": indices, "editscore": scored.value}
        results[index] = TaskResult(ok=True, value=record, answers=scored.answers, attempts=scored.attempts)
    return results


def score_edited_video(scorer: EditScoreAdapter, sample_id: str, prompt: str, source_video, edited_video,
                       frame_indices: Sequence[int] | None = None, *, passes: int | None = None) -> TaskResult:
    """Stage 5's scoring: EditScore on 4 uniformly spaced non-first frames ([1, 26, 51, 76] for 81 frames); the
    one-item case of score_edited_video_many.

    source_video, edited_video: uint8 (T, H, W, 3), numpy or torch, same T. value = the line of Sparkle's
    edited_video_score.jsonl: {"id", "prompt", "frame_indices", "editscore": [per-frame records]}; compare
    mean_overall(value["editscore"]) with the config's threshold (8 in Sparkle) to keep or reject.
    """
    return score_edited_video_many(scorer, [(sample_id, prompt, source_video, edited_video)], frame_indices,
                                   passes=passes)[0]


def mean_overall(records: Sequence[dict]) -> float:
    """Stage 5's statistic: the mean O_score of the per-frame records (compare with the config's threshold)."""
    return float(sum(r["O_score"] for r in records) / len(records))
