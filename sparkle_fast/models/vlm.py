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
    frame_batch_size: int = 8    # frames per generate() call in ground_per_frame


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
    def _generate(self, requests: Sequence[_Request], schema: Any, schema_key: Any, *, sample_seed: int | None):
        """Raw answers (one string per request). Greedy when sample_seed is None, else seeded sampling.
        schema_key names the schema (kept for callers; the backends cache grammars by the schema itself)."""
        max_new = min(ja.schema_max_chars(schema) + 1, self.config.max_new_tokens_cap)
        if sample_seed is None:
            sampling = Sampling(max_new)
        else:
            sampling = Sampling(max_new, temperature=self.config.retry_temperature, top_p=0.9, top_k=50,
                                seed=sample_seed)
        json_schema = ja.to_json_schema(schema) if self.config.constrained else None
        return [answers[0] for answers in self.backend.generate(requests, json_schema, sampling)]

    def _ask(self, requests: Sequence[_Request], schema: Any, schema_key: Any,
             parse: Callable[[str], Any]) -> list[TaskResult]:
        """Generate, parse, and retry the requests whose answers did not parse, up to config.attempts."""
        results = [TaskResult(ok=False) for _ in requests]
        pending = list(range(len(requests)))
        for attempt in range(self.config.attempts):
            if not pending:
                break
            seed = None if attempt == 0 else self.config.seed + attempt
            try:
                answers = self._generate([requests[i] for i in pending], schema, schema_key, sample_seed=seed)
            except Exception as exc:  # noqa: BLE001 - a model/processor error fails the task, not the stage
                for i in pending:
                    results[i].attempts += 1
                    results[i].reason = f"generation failed: {type(exc).__name__}: {exc}"
                continue
            still = []
            for i, answer in zip(pending, answers, strict=True):
                result = results[i]
                result.attempts += 1
                result.answers.append(answer)
                try:
                    result.value, result.ok, result.reason = parse(answer), True, ""
                except ja.AnswerError as exc:
                    result.reason = f"unusable answer after {result.attempts} attempt(s): {exc}"
                    still.append(i)
            pending = still
        return results

    # -- tasks ----------------------------------------------------------------------------------------------
    def camera_motion_verdict(self, frames, fps: float = 16.0) -> TaskResult:
        """Stage 1 fine filter. frames: uint8 (T, H, W, 3), the clip, sampled here at VIDEO_FPS (Qwen3-VL's 2 fps) so
        that every backend sees the same frames (vLLM's video loader and transformers' processor sample differently).
        value: {"reasoning": str, "camera_moving": bool}."""
        schema = ja.Object((("reasoning", ja.Text(self.config.reasoning_chars)),
                            ("camera_moving", ja.Choice(("yes", "no")))))
        request = _Request([{"type": "video"}, {"type": "text", "text": self.prompts["camera_motion"]}],
                           video=sample_video(np.asarray(frames), fps), video_fps=VIDEO_FPS)

        def parse(answer: str) -> dict:
            reasoning, moving = ja.parse_verdict(answer, "camera_moving")
            return {"reasoning": reasoning, "camera_moving": moving}

        return self._ask([request], schema, "camera_motion", parse)[0]

    def describe_scene(self, frame0) -> TaskResult:
        """Stage 2: value = original_scene (str)."""
        schema = ja.Object((("scene", ja.Text(self.config.scene_chars, min_chars=1)),))
        request = _Request([{"type": "image"}, {"type": "text", "text": self.prompts["describe_scene"]}],
                           images=[frame0])
        return self._ask([request], schema, "scene", lambda a: ja.parse_text_field(a, "scene"))[0]

    def write_instruction(self, frame0, original_scene: str, theme: str, subtheme: str, scene: str) -> TaskResult:
        """Stage 2: value = the editing prompt (str) for the chosen "subtheme: scene"."""
        schema = ja.Object((("prompt", ja.Text(self.config.prompt_chars, min_chars=1)),))
        text = self.prompts["write_instruction"].format(original_scene=original_scene, theme=theme, subtheme=subtheme,
                                                   scene=scene)
        request = _Request([{"type": "image"}, {"type": "text", "text": text}], images=[frame0])
        return self._ask([request], schema, "prompt", lambda a: ja.parse_text_field(a, "prompt"))[0]

    def ground_foreground(self, source_frame0, edited_frame0) -> TaskResult:
        """Stage 3 round 1. value = {"round1_labels": [str], "round1_objects": [{"bbox_2d", "label"}]}, boxes in
        the 0..1000 grid of the source frame, cleaned (clamped, ordered), unlabeled or box-less items dropped."""
        schema = ja.grounding_schema(self.config.max_objects, self.config.label_chars)
        request = _Request([{"type": "image"}, {"type": "image"},
                            {"type": "text", "text": self.prompts["ground_foreground"]}],
                           images=[source_frame0, edited_frame0])

        def parse(answer: str) -> dict:
            objects = ja.parse_grounding(answer)
            labels = list(dict.fromkeys(o["label"] for o in objects))
            return {"round1_labels": labels, "round1_objects": objects}

        return self._ask([request], schema, "grounding", parse)[0]

    def background_caption(self, prompt: str) -> TaskResult:
        """Stage 3: value = a caption of the new background alone (str), for the I2V model."""
        schema = ja.Object((("caption", ja.Text(self.config.caption_chars, min_chars=1)),))
        request = _Request([{"type": "text", "text": self.prompts["background_caption"].format(prompt=prompt)}])
        return self._ask([request], schema, "caption", lambda a: ja.parse_text_field(a, "caption"))[0]

    def ground_per_frame(self, frames: Sequence, labels: Sequence[str]) -> TaskResult:
        """Stage 4 round 2: re-locate every round-1 label on each frame (already sampled at 2 FPS).

        value = frame_objects: one list per frame with one {"bbox_2d": [4 ints] or [], "label"} per label, in
        label order (Sparkle's foreground_grounding_r2 schema). A frame whose answers stay unusable gets [] boxes
        for every label. ok is False only when no label was localized on any frame (BAIT has no anchor).
        """
        labels = [str(label) for label in labels]
        if not labels:
            return TaskResult(ok=False, reason="no round-1 labels to ground")
        schema = ja.frame_grounding_schema(labels)
        text = self.prompts["ground_per_frame"].format(labels="; ".join(labels))
        requests = [_Request([{"type": "image"}, {"type": "text", "text": text}], images=[frame]) for frame in frames]
        frame_results: list[TaskResult] = []
        step = max(1, self.config.frame_batch_size)
        for start in range(0, len(requests), step):
            frame_results += self._ask(requests[start:start + step], schema, ("frames", tuple(labels)),
                                       lambda a: ja.parse_frame_grounding(a, labels))
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
        return TaskResult(ok=True, value=frame_objects, reason="; ".join(failures), answers=answers,
                          attempts=attempts)
