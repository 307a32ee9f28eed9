"""Qwen3-VL adapter: the six VLM tasks of Sparkle's stages 1-4 on transformers' Qwen3VLForConditionalGeneration.

Every task: one prompt template (PROMPTS, all in one place), one JSON answer schema, schema-constrained decoding
(xgrammar, through the backend), tolerant parsing, and bounded retries (greedy first, then sampling with new
seeds). A task returns a TaskResult; it never raises for a bad answer. Generation goes through a backend
(models/vlm_backends: transformers, vllm or openai); prompts, schemas, parsing and retries are the same on each.

  camera_motion_verdict(frames, fps)          stage 1 fine filter: reasoning, then yes/no on residual camera motion
  describe_scene(frame0)                      stage 2: original_scene
  write_instruction(frame0, scene, theme,..)  stage 2: the editing prompt
  ground_foreground(source0, edited0)         stage 3: round-1 labels + boxes (0..1000 grid, on the source frame)
  background_caption(prompt)                  stage 3: caption of the new background for the I2V model
  ground_per_frame(frames, labels)            stage 4: round-2 frame_objects, one list per frame (batched)

Each task has a batched form over many samples (camera_motion_verdict_many, describe_scene_many, ...,
ground_per_frame_many) that returns one TaskResult per sample, each what the single call gives: the rows of all
samples go through generate() together, at most `batch_size` per call (left-padded; rows of one call may answer
different JSON schemas), and the rows whose answers do not parse are retried together. The single calls are the
one-item case. Results equal one-at-a-time results up to the float differences of left padding, which can flip a
greedy token where two logits nearly tie (tests/test_vlm_batch.py proves each such flip is a near-tie).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sparkle_fast.models import json_answers as ja
from sparkle_fast.models.base import TaskResult, pick_device, pick_dtype
from sparkle_fast.models.slots import check_model_folder
from sparkle_fast.models.vlm_backends import Sampling, VLMBackend, backend_from_settings
from sparkle_fast.models.vlm_backends import VLMRequest as _Request

# Our prompt texts. Sparkle does not publish its prompts; its paper says what each step asks (stage 1: judge residual
# camera motion, reasoning first; stage 2: describe the original scene, then write an instruction for a randomly
# chosen subtheme and scene; stage 3: ground the foreground; stage 4: re-locate it on 2-FPS frames), and its README
# gives the answers' JSON shapes. Override any of them from a TOML file: config [run] prompts_file, load_prompts().
PROMPTS = {
    "camera_motion": (
        "You are given a video clip. Decide whether the camera moves at any point (pan, tilt, zoom, shake, "
        "tracking, handheld drift), as opposed to only objects moving in front of a fixed camera. Look at the "
        "background: if it shifts, scales or rotates, the camera moves. Reason briefly first, then answer. "
        'Answer with JSON only: {"reasoning": "...", "camera_moving": "yes" or "no"}'
    ),
    "describe_scene": (
        "Describe the scene of this image in one or two sentences: the place, the setting and the background, "
        "not the people or objects in front. "
        'Answer with JSON only: {"scene": "..."}'
    ),
    "write_instruction": (
        "This image shows the following scene: {original_scene}\n"
        "Write one instruction for an image editor that replaces the background of this image with a new one "
        "for the theme \"{theme}\", subtheme \"{subtheme}\", scene \"{scene}\". Keep every foreground subject "
        "exactly as it is; describe the new background vividly, including elements that can move (water, "
        "leaves, clouds, lights), and make it fit the subject's pose and the camera view. "
        'Answer with JSON only: {{"prompt": "..."}}'
    ),
    "ground_foreground": (
        "The first image is an original frame; the second image is the same frame after its background was "
        "replaced. Find every foreground object that was preserved in the edit (people, animals, held or "
        "touched objects, parts of them such as hands or hats) and locate each in the FIRST image. "
        'Answer with JSON only: a list of {"bbox_2d": [x1, y1, x2, y2], "label": "short description"} with '
        "coordinates in 0..1000 relative to the image width and height."
    ),
    "background_caption": (
        "Here is an instruction that replaces the background of a video: \"{prompt}\"\n"
        "Write a caption of the new background alone, without any foreground subject, as a short description "
        "of a video with its natural motion. "
        'Answer with JSON only: {{"caption": "..."}}'
    ),
    "ground_per_frame": (
        "Locate each of these objects in the image: {labels}. "
        'Answer with JSON only: a list with one {{"bbox_2d": [x1, y1, x2, y2], "label": "..."}} per object, in '
        'the order given, coordinates in 0..1000 relative to the image width and height; use "bbox_2d": [] '
        "for an object that is not visible."
    ),
}


class PromptFileError(ValueError):
    """A prompts file that is missing, unreadable or not of the documented shape; the message names the file."""


# The templates filled in with str.format (their literal braces are doubled); the others are used as they are.
FORMATTED_PROMPTS = {"write_instruction": ("original_scene", "theme", "subtheme", "scene"),
                     "background_caption": ("prompt",), "ground_per_frame": ("labels",)}


def _placeholders(template: str) -> set[str]:
    import string

    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def load_prompts(path) -> dict[str, str]:
    """PROMPTS with the templates a TOML file overrides: top-level string keys among PROMPTS' names, e.g.
    `describe_scene = "..."`. The templates in FORMATTED_PROMPTS keep their {placeholders} exactly (write_instruction:
    original_scene, theme, subtheme, scene; background_caption: prompt; ground_per_frame: labels) and double literal
    braces ({{ }}); the others are sent as written.
    The JSON answer shape is enforced by schema-constrained decoding whatever the text says."""
    import tomllib
    from pathlib import Path

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PromptFileError(f"{path}: no such prompts file") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PromptFileError(f"{path}: unreadable prompts file ({type(exc).__name__}: {exc})") from exc
    problems, prompts = [], dict(PROMPTS)
    for key, value in raw.items():
        if key not in PROMPTS:
            problems.append(f"unknown prompt {key!r} (known: {', '.join(PROMPTS)})")
        elif not isinstance(value, str) or not value.strip():
            problems.append(f"{key} must be a non-empty string")
        elif key in FORMATTED_PROMPTS:
            try:
                found = _placeholders(value)
            except ValueError as exc:
                problems.append(f"{key}: not a valid template ({exc}); write literal braces as {{{{ and }}}}")
                continue
            wanted = set(FORMATTED_PROMPTS[key])
            if found != wanted:
                problems.append(f"{key} must use the placeholders {sorted(wanted)}, found {sorted(found)}")
            prompts[key] = value
        else:
            prompts[key] = value
    if problems:
        raise PromptFileError(f"{path}: " + "; ".join(problems))
    return prompts


VIDEO_FPS = 2.0  # Qwen3-VL's video sampling rate


def sample_video(frames: np.ndarray, fps: float, target_fps: float = VIDEO_FPS) -> np.ndarray:
    """frames (T, H, W, 3) at `fps` -> uniformly spaced frames at about target_fps: an even count (Qwen3-VL merges
    frame pairs), at least 2, first and last frame included (np.linspace indices, rounded)."""
    total = len(frames)
    if total == 0:
        raise ValueError("sample_video: the clip has no frames")
    count = max(2, int(round(total / float(fps) * target_fps)))
    count += count % 2
    return frames[np.linspace(0, total - 1, count).round().astype(int)]


@dataclass(frozen=True)
class VLMConfig:
    """Answer bounds and retry policy. Lengths are characters of the answer's strings; max_new_tokens is derived
    from the schema (an upper bound on its characters) capped at max_new_tokens_cap."""

    reasoning_chars: int = 800
    scene_chars: int = 400
    prompt_chars: int = 500
    caption_chars: int = 400
    label_chars: int = 60
    max_objects: int = 8
    attempts: int = 3            # 1 greedy + 2 sampled retries
    retry_temperature: float = 0.7
    seed: int = 0
    constrained: bool = True     # schema-constrained decoding (DESIGN: on for every VLM task)
    max_new_tokens_cap: int = 2048
    frame_batch_size: int = 8    # requests per generate() call unless the adapter's batch_size is set


class Qwen3VLAdapter:
    """Qwen3-VL tasks over a loaded model + processor.

    Build with `from_pretrained(folder)` (real weights, bf16 on GPU, or the backend chosen by
    vlm_backends.use_settings), `tiny()` (random tiny model, CPU) or `Qwen3VLAdapter(backend=...)`;
    `release()` drops the model and returns its memory. Images are PIL or uint8 (H, W, 3) arrays; videos are
    uint8 (T, H, W, 3) arrays.
    """

    def __init__(self, model=None, processor=None, config: VLMConfig | None = None, *,
                 backend: VLMBackend | None = None):
        if backend is None:
            from sparkle_fast.models.vlm_backends.transformers_backend import TransformersBackend

            backend = TransformersBackend(model, processor)
        self.backend = backend
        self.model = getattr(backend, "model", None) if backend.name == "transformers" else None
        self.processor = getattr(backend, "processor", None)
        self.config = config or VLMConfig()
        self.prompts = dict(PROMPTS)  # the templates in use (use_run_config: a run's prompts_file)
        # The most requests one generate() call holds (None: config.frame_batch_size). The runner sets it from the
        # run config (adapter.batch_size = N); the *_many methods and ground_per_frame chunk their rows by it.
        self.batch_size: int | None = None
        self.generate_calls = 0  # backend generate() calls made (tests and the run summary count batching)

    def use_run_config(self, config) -> None:
        """Take the run config's prompts_file (driver [run] section; "" = the packaged PROMPTS)."""
        path = getattr(getattr(config, "run", None), "prompts_file", "")
        self.prompts = load_prompts(path) if path else dict(PROMPTS)

    # -- loading --------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder, *, device=None, dtype=None, config: VLMConfig | None = None, settings=None):
        """Load a Qwen3-VL folder (checked first: ModelFolderError names what is missing or wrong), on the backend
        that `settings` (a driver [vlm] section; default: vlm_backends.use_settings's) chooses."""
        from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

        backend = backend_from_settings("vlm", folder, settings)
        if backend is not None:
            return cls(config=config, backend=backend)
        folder = check_model_folder("vlm", folder)
        device = pick_device(device)
        model = Qwen3VLForConditionalGeneration.from_pretrained(folder, dtype=pick_dtype(device, dtype))
        processor = AutoProcessor.from_pretrained(folder)
        return cls(model.to(device).eval(), processor, config)

    @classmethod
    def tiny(cls, *, seed: int = 0, config: VLMConfig | None = None):
        """A random tiny Qwen3-VL on CPU (tests, demo); small answer bounds so generation stays short."""
        from sparkle_fast.models.tiny import tiny_qwen3_vl

        model, processor = tiny_qwen3_vl(seed)
        small = VLMConfig(reasoning_chars=24, scene_chars=24, prompt_chars=32, caption_chars=24, label_chars=12,
                          max_objects=3)
        return cls(model, processor, config or small)

    def release(self) -> None:
        """Drop the model, processor and compiled grammars, and return their memory (CUDA cache included)."""
        self.backend.release()
        self.model = None
        self.processor = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- generation -----------------------------------------------------------------------------------------
    @property
    def rows_per_call(self) -> int:
        """The most requests one generate() call holds: batch_size if set, else config.frame_batch_size."""
        return max(1, int(self.batch_size or self.config.frame_batch_size))

    def _max_new_tokens(self, schema: Any) -> int:
        return min(ja.schema_max_chars(schema) + 1, self.config.max_new_tokens_cap)

    def _generate(self, requests: Sequence[_Request], schema: Any, schema_key: Any, *, sample_seed: int | None):
        """Raw answers (one string per request) from one backend call. Greedy when sample_seed is None, else seeded
        sampling (every row with seed sample_seed, drawn from its own stream: a row's answer does not depend on its
        batch). schema: one answer schema for every request, or a list with one per request (schema_key names the
        schema, kept for callers). Rows with different schemas share one call: with constrained decoding each row
        stops where its grammar ends, so the call's token budget (the largest row's) does not change a row's answer.
        """
        schemas = list(schema) if isinstance(schema, list) else [schema] * len(requests)
        if len(schemas) != len(requests):
            raise ValueError(f"{len(schemas)} schemas for {len(requests)} requests")
        max_new = max(self._max_new_tokens(s) for s in schemas) if schemas else 1
        if sample_seed is None:
            sampling = Sampling(max_new)
        else:
            sampling = Sampling(max_new, temperature=self.config.retry_temperature, top_p=0.9, top_k=50,
                                seed=sample_seed)
        if not self.config.constrained:
            json_schema = None
        elif isinstance(schema, list):
            cache: dict[int, dict] = {}
            json_schema = [cache.setdefault(id(s), ja.to_json_schema(s)) for s in schemas]
        else:
            json_schema = ja.to_json_schema(schema)
        self.generate_calls += 1
        return [answers[0] for answers in self.backend.generate(requests, json_schema, sampling)]

    def _calls(self, rows: Sequence[int], schemas: Sequence[Any]) -> list[list[int]]:
        """Row indices grouped into generate() calls of at most rows_per_call, in order. Unconstrained, rows are
        first grouped by their token budget (without a grammar a larger budget could lengthen an answer)."""
        groups: dict[int, list[int]] = {}
        for i in rows:
            key = 0 if self.config.constrained else self._max_new_tokens(schemas[i])
            groups.setdefault(key, []).append(i)
        step = self.rows_per_call
        return [group[start:start + step] for group in groups.values() for start in range(0, len(group), step)]

    def _generate_rows(self, requests: Sequence[_Request], schemas: Sequence[Any], rows: Sequence[int],
                       sample_seed: int | None) -> dict[int, str | Exception]:
        """Answers (or the exception that generation raised) for `rows`, in batched calls. A call that raises is
        retried one row at a time, so one bad input (an image the processor rejects) fails only its own row, as it
        would alone."""
        out: dict[int, str | Exception] = {}
        for call in self._calls(rows, schemas):
            same = all(schemas[i] is schemas[call[0]] for i in call)
            schema = schemas[call[0]] if same else [schemas[i] for i in call]
            try:
                out.update(zip(call, self._generate([requests[i] for i in call], schema, None,
                                                    sample_seed=sample_seed), strict=True))
                continue
            except Exception as exc:  # noqa: BLE001 - recorded per row below
                if len(call) == 1:
                    out[call[0]] = exc
                    continue
            for i in call:
                try:
                    out[i] = self._generate([requests[i]], schemas[i], None, sample_seed=sample_seed)[0]
                except Exception as exc:  # noqa: BLE001 - a model/processor error fails the row, not the stage
                    out[i] = exc
        return out

    def _ask_rows(self, requests: Sequence[_Request], schemas: Sequence[Any],
                  parses: Sequence[Callable[[str], Any]]) -> list[TaskResult]:
        """Generate, parse, and retry the rows whose answers did not parse (only those, batched together), up to
        config.attempts: greedy first, then seeded sampling with seed config.seed + attempt for every row."""
        results = [TaskResult(ok=False) for _ in requests]
        pending = list(range(len(requests)))
        for attempt in range(self.config.attempts):
            if not pending:
                break
            seed = None if attempt == 0 else self.config.seed + attempt
            answers = self._generate_rows(requests, schemas, pending, seed)
            still = []
            for i in pending:
                result, answer = results[i], answers[i]
                result.attempts += 1
                if isinstance(answer, Exception):
                    result.reason = f"generation failed: {type(answer).__name__}: {answer}"
                    still.append(i)
                    continue
                result.answers.append(answer)
                try:
                    result.value, result.ok, result.reason = parses[i](answer), True, ""
                except ja.AnswerError as exc:
                    result.reason = f"unusable answer after {result.attempts} attempt(s): {exc}"
                    still.append(i)
            pending = still
        return results

    def _ask(self, requests: Sequence[_Request], schema: Any, schema_key: Any,
             parse: Callable[[str], Any]) -> list[TaskResult]:
        """_ask_rows with one schema and one parser for every request."""
        return self._ask_rows(requests, [schema] * len(requests), [parse] * len(requests))

    # -- tasks (batched: one TaskResult per sample; the single calls are their one-item case) -------------------
    def camera_motion_verdict_many(self, clips: Sequence, fps: float = 16.0) -> list[TaskResult]:
        """Stage 1 fine filter over many clips. clips: uint8 (T, H, W, 3) each, sampled here at VIDEO_FPS (Qwen3-VL's
        2 fps) so that every backend sees the same frames (vLLM's video loader and transformers' processor sample
        differently). value: {"reasoning": str, "camera_moving": bool}. A clip with no frames fails alone."""
        schema = ja.Object((("reasoning", ja.Text(self.config.reasoning_chars)),
                            ("camera_moving", ja.Choice(("yes", "no")))))

        def parse(answer: str) -> dict:
            reasoning, moving = ja.parse_verdict(answer, "camera_moving")
            return {"reasoning": reasoning, "camera_moving": moving}

        results: list[TaskResult | None] = [None] * len(clips)
        requests, where = [], []
        for index, clip in enumerate(clips):
            try:
                video = sample_video(np.asarray(clip), fps)
            except ValueError as exc:
                results[index] = TaskResult(ok=False, reason=str(exc))
                continue
            requests.append(_Request([{"type": "video"}, {"type": "text", "text": self.prompts["camera_motion"]}],
                                     video=video, video_fps=VIDEO_FPS))
            where.append(index)
        for index, result in zip(where, self._ask(requests, schema, "camera_motion", parse), strict=True):
            results[index] = result
        return results

    def camera_motion_verdict(self, frames, fps: float = 16.0) -> TaskResult:
        """Stage 1 fine filter on one clip (camera_motion_verdict_many's one-item case)."""
        return self.camera_motion_verdict_many([frames], fps)[0]

    def describe_scene_many(self, frames: Sequence) -> list[TaskResult]:
        """Stage 2 over many first frames: value = original_scene (str)."""
        schema = ja.Object((("scene", ja.Text(self.config.scene_chars, min_chars=1)),))
        requests = [_Request([{"type": "image"}, {"type": "text", "text": self.prompts["describe_scene"]}],
                             images=[frame]) for frame in frames]
        return self._ask(requests, schema, "scene", lambda a: ja.parse_text_field(a, "scene"))

    def describe_scene(self, frame0) -> TaskResult:
        """Stage 2: value = original_scene (str)."""
        return self.describe_scene_many([frame0])[0]

    def write_instruction_many(self, frames: Sequence, original_scenes: Sequence[str], themes: Sequence[str],
                               subthemes: Sequence[str], scenes: Sequence[str]) -> list[TaskResult]:
        """Stage 2 over many samples (parallel lists): value = the editing prompt (str) for "subtheme: scene"."""
        _same_lengths("write_instruction_many", frames=frames, original_scenes=original_scenes, themes=themes,
                      subthemes=subthemes, scenes=scenes)
        schema = ja.Object((("prompt", ja.Text(self.config.prompt_chars, min_chars=1)),))
        requests = []
        for frame, original, theme, subtheme, scene in zip(frames, original_scenes, themes, subthemes, scenes,
                                                           strict=True):
            text = self.prompts["write_instruction"].format(original_scene=original, theme=theme, subtheme=subtheme,
                                                            scene=scene)
            requests.append(_Request([{"type": "image"}, {"type": "text", "text": text}], images=[frame]))
        return self._ask(requests, schema, "prompt", lambda a: ja.parse_text_field(a, "prompt"))

    def write_instruction(self, frame0, original_scene: str, theme: str, subtheme: str, scene: str) -> TaskResult:
        """Stage 2: value = the editing prompt (str) for the chosen "subtheme: scene"."""
        return self.write_instruction_many([frame0], [original_scene], [theme], [subtheme], [scene])[0]

    def ground_foreground_many(self, source_frames: Sequence, edited_frames: Sequence) -> list[TaskResult]:
        """Stage 3 round 1 over many (source frame 0, edited frame 0) pairs. value = {"round1_labels": [str],
        "round1_objects": [{"bbox_2d", "label"}]}, boxes in the 0..1000 grid of the source frame, cleaned (clamped,
        ordered), unlabeled or box-less items dropped."""
        _same_lengths("ground_foreground_many", source_frames=source_frames, edited_frames=edited_frames)
        schema = ja.grounding_schema(self.config.max_objects, self.config.label_chars)
        requests = [_Request([{"type": "image"}, {"type": "image"},
                              {"type": "text", "text": self.prompts["ground_foreground"]}], images=[source, edited])
                    for source, edited in zip(source_frames, edited_frames, strict=True)]

        def parse(answer: str) -> dict:
            objects = ja.parse_grounding(answer)
            labels = list(dict.fromkeys(o["label"] for o in objects))
            return {"round1_labels": labels, "round1_objects": objects}

        return self._ask(requests, schema, "grounding", parse)

    def ground_foreground(self, source_frame0, edited_frame0) -> TaskResult:
        """Stage 3 round 1 on one pair (ground_foreground_many's one-item case)."""
        return self.ground_foreground_many([source_frame0], [edited_frame0])[0]

    def background_caption_many(self, prompts: Sequence[str]) -> list[TaskResult]:
        """Stage 3 over many editing prompts: value = a caption of the new background alone (str), for the I2V model."""
        schema = ja.Object((("caption", ja.Text(self.config.caption_chars, min_chars=1)),))
        requests = [_Request([{"type": "text", "text": self.prompts["background_caption"].format(prompt=prompt)}])
                    for prompt in prompts]
        return self._ask(requests, schema, "caption", lambda a: ja.parse_text_field(a, "caption"))

    def background_caption(self, prompt: str) -> TaskResult:
        """Stage 3: value = a caption of the new background alone (str), for the I2V model."""
        return self.background_caption_many([prompt])[0]

    def ground_per_frame_many(self, frames_per_sample: Sequence[Sequence],
                              labels_per_sample: Sequence[Sequence[str]]) -> list[TaskResult]:
        """Stage 4 round 2 over many samples: re-locate each sample's round-1 labels on each of its frames (already
        sampled at 2 FPS). The frames of all samples go through generate() together, rows_per_call at a time; each
        row is constrained by its own sample's schema (its labels, in order).

        One result per sample, value = frame_objects: one list per frame with one {"bbox_2d": [4 ints] or [],
        "label"} per label, in label order (Sparkle's foreground_grounding_r2 schema). A frame whose answers stay
        unusable gets [] boxes for every label. ok is False only when no label was localized on any frame (BAIT has
        no anchor), or the sample has no labels.
        """
        _same_lengths("ground_per_frame_many", frames_per_sample=frames_per_sample,
                      labels_per_sample=labels_per_sample)
        requests, schemas, parses, owner = [], [], [], []
        sample_labels: list[list[str]] = []
        for index, (frames, labels) in enumerate(zip(frames_per_sample, labels_per_sample, strict=True)):
            labels = [str(label) for label in labels]
            sample_labels.append(labels)
            if not labels:
                continue
            schema = ja.frame_grounding_schema(labels)
            text = self.prompts["ground_per_frame"].format(labels="; ".join(labels))
            parse = (lambda lbl: (lambda a: ja.parse_frame_grounding(a, lbl)))(labels)
            for frame in frames:
                requests.append(_Request([{"type": "image"}, {"type": "text", "text": text}], images=[frame]))
                schemas.append(schema)
                parses.append(parse)
                owner.append(index)
        row_results = self._ask_rows(requests, schemas, parses)
        per_sample: list[list[TaskResult]] = [[] for _ in frames_per_sample]
        for index, result in zip(owner, row_results, strict=True):
            per_sample[index].append(result)
        return [_frame_objects_result(labels, frame_results) if labels else
                TaskResult(ok=False, reason="no round-1 labels to ground")
                for labels, frame_results in zip(sample_labels, per_sample, strict=True)]

    def ground_per_frame(self, frames: Sequence, labels: Sequence[str]) -> TaskResult:
        """Stage 4 round 2 on one sample (ground_per_frame_many's one-item case; its frames are batched)."""
        return self.ground_per_frame_many([frames], [labels])[0]


def _same_lengths(method: str, **lists) -> None:
    """Parallel lists of a *_many call must have one entry per sample."""
    lengths = {name: len(values) for name, values in lists.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{method}: the parallel lists must have one entry per sample, got lengths {lengths}")


def _frame_objects_result(labels: list[str], frame_results: list[TaskResult]) -> TaskResult:
    """One sample's round-2 TaskResult from its frames' results (ground_per_frame's value and ok rule)."""
    frame_objects, failures = [], []
    for index, result in enumerate(frame_results):
        if result.ok:
            frame_objects.append(result.value)
        else:
            failures.append(f"frame {index}: {result.reason}")
            frame_objects.append([{"bbox_2d": [], "label": label} for label in labels])
    answers = [a for r in frame_results for a in r.answers]
    attempts = sum(r.attempts for r in frame_results)
    localized = sum(1 for objs in frame_objects for o in objs if o["bbox_2d"])
    if localized == 0:
        reason = "no label was localized on any frame" + (f" ({'; '.join(failures)})" if failures else "")
        return TaskResult(ok=False, value=frame_objects, reason=reason, answers=answers, attempts=attempts)
    return TaskResult(ok=True, value=frame_objects, reason="; ".join(failures), answers=answers, attempts=attempts)
