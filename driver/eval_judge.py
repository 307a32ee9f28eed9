"""The judge of `sparkle-fast eval`: a VLM that scores (source video, edited video, instruction) on a protocol's
dimensions, through the project's Qwen3-VL adapter (models/vlm.py), so that prompts, JSON-constrained decoding,
tolerant parsing and bounded retries are the adapter's on every backend:

  tiny            the random tiny Qwen3-VL (tests, demo): noise, but well-formed answers
  a folder        a local Qwen3-VL checkpoint (Qwen3VLAdapter.from_pretrained)
  http(s)://...   an OpenAI-compatible server (vLLM, SGLang, ...) with --judge-model NAME; the API key is read from an
                  environment variable (--api-key-env, default OPENAI_API_KEY; none is sent when it is unset)

Determinism: the first attempt is greedy (temperature 0); a retry (only after an unusable answer) samples with a
fixed seed, so a rerun on the same weights and hardware asks the same questions and gets the same answers.
The videos reach the judge as frames: `frames` frames of each video, uniformly spaced from the first to the last,
the longer side scaled down to `max_side` pixels; they travel as images, which every backend takes (our choice:
Sparkle's script sends Gemini the two videos themselves).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "sparkle_fast" / "data"
RUBRIC_FILES = {"sparkle": "sparkle_bench_rubric.toml", "openve": "openve_bench_rubric.toml"}


@dataclass(frozen=True)
class Protocol:
    """A judging protocol: dimension names and JSON keys in score order; dimensions after the first are capped at it."""

    name: str
    dimensions: tuple[str, ...]
    keys: tuple[str, ...]
    text: str  # the rubric as the judge reads it (without the instruction)


def _data_file(name: str) -> Path:
    import sparkle_fast

    packaged = Path(sparkle_fast.__file__).resolve().parent / "data" / name
    return packaged if packaged.exists() else DATA / name


def load_protocol(name: str, *, brief: bool = False) -> Protocol:
    """The protocol `name` ("sparkle" or "openve") from its rubric file in sparkle_fast/data. brief: the dimension
    names without their descriptions and levels (the tiny judge's prompt: a random model reads nothing, and a
    prompt of a few hundred tokens instead of ~1500 keeps tests and the demo fast on a CPU)."""
    if name not in RUBRIC_FILES:
        raise ValueError(f"--protocol must be one of {', '.join(RUBRIC_FILES)}, got {name!r}")
    rubric = tomllib.loads(_data_file(RUBRIC_FILES[name]).read_text(encoding="utf-8"))
    parts = [rubric["intro"], ""]
    for dim in rubric["dimension"]:
        if brief:
            parts.append(dim["name"])
            continue
        parts.append(dim["name"] + (f" {dim['description']}" if dim["description"] else ""))
        parts += [f"{level} {text}" for level, text in enumerate(dim["levels"], start=1)]
        parts.append("")
    parts += [rubric["constraint"], rubric["answer"]]
    return Protocol(name, tuple(d["name"] for d in rubric["dimension"]), tuple(d["key"] for d in rubric["dimension"]),
                    "\n".join(parts))


def cap_scores(raw: list[int]) -> list[int]:
    """Dimensions after the first may not exceed the first (Sparkle's and OpenVE-Bench's rule against score hacking)."""
    return [raw[0]] + [min(score, raw[0]) for score in raw[1:]]


def result_text(protocol: Protocol, reasoning: str, scores: list[int]) -> str:
    """The judge's answer in the layout of Sparkle's `result` field: the reasoning, then one "Name: score" line each."""
    lines = [f"Brief reasoning: {reasoning}"] + [f"{name}: {score}" for name, score in zip(protocol.dimensions, scores,
                                                                                         strict=True)]
    return "\n".join(lines)


@dataclass
class Verdict:
    """One judged sample. raw: the judge's scores; scores: capped (what the score files hold). Never raised."""

    ok: bool
    raw: list[int] | None = None
    scores: list[int] | None = None
    reasoning: str = ""
    reason: str = ""
    attempts: int = 0
    answers: list[str] = field(default_factory=list)


def sample_frames(path: str | os.PathLike, count: int, max_side: int) -> np.ndarray:
    """uint8 (k, h, w, 3): `count` frames uniformly spaced over the video, longer side scaled to <= max_side."""
    import cv2

    from sparkle_fast.video import probe, read_frames

    info = probe(path)
    total = max(1, int(info.frame_count))
    indices = np.unique(np.linspace(0, total - 1, max(1, count)).round().astype(np.int64))
    frames = read_frames(path, indices=indices, info=info).frames.numpy()
    height, width = frames.shape[1:3]
    scale = max_side / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    return frames


class VLMJudge:
    """Scores samples with a Qwen3VLAdapter (any backend). name: what the score files are called by."""

    def __init__(self, adapter, name: str, protocol: Protocol, *, frames: int = 8, max_side: int = 640,
                 reasoning_chars: int = 300):
        from sparkle_fast.models import json_answers as ja

        self.adapter, self.name, self.protocol = adapter, name, protocol
        self.frames, self.max_side = frames, max_side
        score = ja.Choice(("1", "2", "3", "4", "5"))
        self.schema = ja.Object((("reasoning", ja.Text(reasoning_chars, min_chars=1)),
                                 *((key, score) for key in protocol.keys)))

    def _parse(self, answer: str) -> tuple[str, list[int]]:
        from sparkle_fast.models import json_answers as ja

        value = ja.extract_json(answer, dict)
        scores = []
        for key in self.protocol.keys:
            raw = value.get(key)
            text = str(raw).strip() if raw is not None and not isinstance(raw, bool) else ""
            if not re.fullmatch(r"[1-5](\.0+)?", text):
                raise ja.AnswerError(f"the answer's \"{key}\" is {raw!r}, not a score from 1 to 5")
            scores.append(int(float(text)))
        return " ".join(str(value.get("reasoning", "")).split()), scores

    def judge(self, instruction: str, source_video: str | os.PathLike, edited_video: str | os.PathLike) -> Verdict:
        from sparkle_fast.models.vlm import _Request

        try:
            source = sample_frames(source_video, self.frames, self.max_side)
            edited = sample_frames(edited_video, self.frames, self.max_side)
        except Exception as exc:  # noqa: BLE001 - an unreadable video fails this sample only
            return Verdict(False, reason=f"cannot read the videos: {type(exc).__name__}: {exc}")
        content = [{"type": "text", "text": self.protocol.text + f"\n\nEditing instruction: {instruction}\n\n"
                    f"Frames of the source video (before editing), {len(source)} in time order:"}]
        content += [{"type": "image"}] * len(source)
        content += [{"type": "text", "text": f"Frames of the edited video (after editing), {len(edited)} in time "
                                             "order:"}]
        content += [{"type": "image"}] * len(edited)
        request = _Request(content, images=[*source, *edited])
        (result,) = self.adapter._ask([request], self.schema, ("judge", self.protocol.name), self._parse)
        if not result.ok:
            return Verdict(False, reason=result.reason or "no usable answer", attempts=result.attempts,
                           answers=list(result.answers))
        reasoning, raw = result.value
        return Verdict(True, raw, cap_scores(raw), reasoning, attempts=result.attempts, answers=list(result.answers))

    def release(self) -> None:
        self.adapter.release()


def judge_name(spec: str, model: str | None = None) -> str:
    """The name in the score files: "tiny", the folder's name, or the endpoint's model name (path-safe)."""
    if spec == "tiny":
        return "tiny"
    if spec.startswith(("http://", "https://")):
        return re.sub(r"[^A-Za-z0-9._-]+", "_", model or "endpoint").strip("_") or "endpoint"
    return Path(spec).name


def build_judge(spec: str, protocol: Protocol, *, model: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                frames: int = 8, max_side: int = 640) -> VLMJudge:
    """A VLMJudge for `spec`: "tiny", a Qwen3-VL folder, or an http(s) URL of an OpenAI-compatible server (needs
    `model`). Raises ValueError (bad spec) or the adapter's ModelFolderError / BackendError before any sample."""
    from sparkle_fast.models.vlm import Qwen3VLAdapter, VLMConfig

    name = judge_name(spec, model)
    if spec == "tiny":  # small everything: the random model's answers are noise whatever it is shown
        config = VLMConfig(attempts=3, seed=42, max_new_tokens_cap=512)
        return VLMJudge(Qwen3VLAdapter.tiny(config=config), name, load_protocol(protocol.name, brief=True),
                        frames=min(frames, 2), max_side=64, reasoning_chars=8)
    config = VLMConfig(attempts=3, seed=42)
    if spec.startswith(("http://", "https://")):
        if not model:
            raise ValueError("--judge URL needs --judge-model NAME (the served model's name)")
        from sparkle_fast.models.vlm_backends.openai_backend import OpenAIBackend

        key_env = api_key_env if api_key_env and os.environ.get(api_key_env) else ""
        adapter = Qwen3VLAdapter(config=config, backend=OpenAIBackend(spec, model, api_key_env=key_env))
        return VLMJudge(adapter, name, protocol, frames=frames, max_side=max_side)
    if not Path(spec).is_dir():
        raise ValueError(f"--judge {spec!r}: not 'tiny', an http(s):// endpoint, or a Qwen3-VL folder")
    return VLMJudge(Qwen3VLAdapter.from_pretrained(spec, config=config), name, protocol, frames=frames,
                    max_side=max_side)
