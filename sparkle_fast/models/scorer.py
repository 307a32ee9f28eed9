"""EditScore adapter: the `editscore` package's prompts, answer parsing and score formulas over our own VLM object.

editscore.EditScore builds the SC prompt (editing success + over-editing, two images) and the PQ prompt
(naturalness + artifacts, one image) and turns the answers into scores:
  SC = min(SC scores) / (range/10), PQ = min(PQ scores) / (range/10), overall = O = sqrt(SC * PQ),
  prompt_following = SC[0] / (range/10), consistency = SC[1] / (range/10).
Its own backends move inputs to "cuda" unconditionally and hard-code loading, so we construct EditScore with a
backbone name it does not know (it then loads nothing) and plug in `_EditScoreModel`, which implements the methods
it calls (prepare_input, inference, batch_inference) on a Qwen2.5-VL or Qwen3-VL backbone (+ EditScore's LoRA) on
any device, with schema-constrained decoding of {"reasoning": "...", "score": [a, b]}.

Honesty: editscore replaces an unparsable answer with a random guess (evaluate) or a mid-range score
(batch_evaluate). We detect both and return a failed TaskResult instead of a made-up score.
Thresholds (stage 2: 8, stage 3: 8.5, stage 5: mean of 4 frames >= 8) belong to the run config, not here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sparkle_fast.models import json_answers as ja
from sparkle_fast.models.base import TaskResult, free_memory, pick_device, pick_dtype, to_pil
from sparkle_fast.models.slots import check_model_folder

_GUESS_MARK = "guess_if_cannot_parse"


@dataclass(frozen=True)
class ScorerConfig:
    """EditScore's own defaults (score_range 25, temperature 0.7, top_p 0.9, top_k 20, 512 new tokens, seed 42)."""

    score_range: int = 25
    num_pass: int = 1
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 20
    max_new_tokens: int = 512
    seed: int = 42
    reasoning_chars: int = 1200
    constrained: bool = True
    batch_size: int = 8


class _EditScoreModel:
    """The model object editscore.EditScore calls. prepare_input keeps (images, prompt); generation batches them."""

    def __init__(self, adapter: EditScoreAdapter):
        self.adapter = adapter

    def prepare_input(self, images, prompt: str):
        images = images if isinstance(images, list) else [images]
        return ([to_pil(im) for im in images], prompt)

    def inference(self, inputs, seed: int | None = None) -> str:
        return self.adapter._generate([inputs], seed)[0]

    def batch_inference(self, inputs_list, seed: int | None = None) -> list[str]:
        step = max(1, self.adapter.config.batch_size)
        out: list[str] = []
        for start in range(0, len(inputs_list), step):
            out += self.adapter._generate(inputs_list[start:start + step], seed)
        return out


class EditScoreAdapter:
    """EditScore over a VLM backbone. score_edit -> edited_frame0_score fields; score_frames -> edited_video_score's
    per-frame records. Images: PIL or uint8 (H, W, 3)."""

    def __init__(self, model, processor, config: ScorerConfig | None = None, *, backbone_type: str = "qwen3_vl"):
        from editscore import EditScore

        self.model = model
        self.processor = processor
        self.config = config or ScorerConfig()
        self.backbone_type = backbone_type
        # An unknown backbone name makes EditScore skip its own (CUDA-only) model loading.
        self.editscore = EditScore(backbone="sparkle_fast", score_range=self.config.score_range,
                                   num_pass=self.config.num_pass, seed=self.config.seed,
                                   temperature=self.config.temperature)
        self.editscore.model = _EditScoreModel(self)
        self._constraint: ja.JsonConstraint | None = None
        self._schema = ja.Object((("reasoning", ja.Text(self.config.reasoning_chars)),
                                  ("score", ja.Array(item=ja.Integer(0, self.config.score_range),
                                                     min_items=2, max_items=2))))

    # -- loading --------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder, *, device=None, dtype=None, config: ScorerConfig | None = None):
        """Load the scorer slot: folder/backbone (Qwen2.5-VL or Qwen3-VL) and, if present, folder/lora merged in."""
        from transformers import AutoProcessor

        folder = check_model_folder("scorer", folder)
        backbone = folder / "backbone"
        backbone_type = json.loads((backbone / "config.json").read_text())["model_type"]
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

    def release(self) -> None:
        device = self.device if self.model is not None else None
        self.model = None
        self.processor = None
        self._constraint = None
        free_memory(device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- generation -----------------------------------------------------------------------------------------
    def _text(self, images: list, prompt: str) -> str:
        if self.backbone_type == "qwen2_5_vl":
            # EditScore-7B was trained on its own template (system prompt, "<imgN>: " before each image).
            from editscore.mllm_tools.qwen25vl import apply_chat_template

            return apply_chat_template(prompt, num_images=len(images))
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                                  tokenize=False)

    def _generate(self, inputs_list: Sequence[tuple[list, str]], seed: int | None) -> list[str]:
        texts = [self._text(images, prompt) for images, prompt in inputs_list]
        images = [im for ims, _ in inputs_list for im in ims]
        encoded = self.processor(text=texts, images=images, padding=True, padding_side="left",
                                 return_tensors="pt").to(self.device)
        kwargs: dict[str, Any] = dict(do_sample=True, temperature=self.config.temperature, top_p=self.config.top_p,
                                      top_k=self.config.top_k,
                                      max_new_tokens=min(self.config.max_new_tokens,
                                                         ja.schema_max_chars(self._schema) + 1))
        if self.config.constrained:
            if self._constraint is None:
                eos = self.model.generation_config.eos_token_id
                eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
                eos.append(self.processor.tokenizer.convert_tokens_to_ids("<|im_end|>"))
                vocab = getattr(self.model.config, "text_config", self.model.config).vocab_size
                self._constraint = ja.JsonConstraint(self._schema, ja.TokenTable(self.processor.tokenizer, vocab, eos))
            kwargs["logits_processor"] = [ja.JsonLogitsProcessor(self._constraint, len(texts))]
        torch.manual_seed(self.config.seed if seed is None else seed)
        with torch.inference_mode():
            out = self.model.generate(**encoded, **kwargs)
        answers = self.processor.batch_decode(out[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True,
                                              clean_up_tokenization_spaces=False)
        return [a.strip() for a in answers]

    # -- tasks ----------------------------------------------------------------------------------------------
    def score_edit(self, source, edited, instruction: str) -> TaskResult:
        """Score one edit (source image -> edited image under `instruction`).

        value = {"prompt_following", "consistency", "perceptual_quality", "overall", "SC_reasoning",
        "PQ_reasoning"}: the "editscore" object of Sparkle's edited_frame0_score.jsonl (floats 0..10).
        """
        try:
            raw = self.editscore.evaluate([to_pil(source), to_pil(edited)], instruction)
        except Exception as exc:  # noqa: BLE001 - scoring failure is a recorded reject reason, not a crash
            return TaskResult(ok=False, reason=f"EditScore failed: {type(exc).__name__}: {exc}", attempts=1)
        record = {key: float(raw[key]) for key in ("prompt_following", "consistency", "perceptual_quality", "overall")}
        record.update(SC_reasoning=str(raw["SC_reasoning"]), PQ_reasoning=str(raw["PQ_reasoning"]))
        guessed = [h for h in ("SC", "PQ") if record[f"{h}_reasoning"].startswith(_GUESS_MARK)]
        if guessed:
            return TaskResult(ok=False, value=record, attempts=1,
                              reason=f"EditScore could not parse the {'/'.join(guessed)} answer; its score is a guess")
        bad = [k for k in ("prompt_following", "consistency", "perceptual_quality", "overall")
               if not (math.isfinite(record[k]) and 0.0 <= record[k] <= 10.0)]
        if bad:
            return TaskResult(ok=False, value=record, attempts=1, reason=f"EditScore scores out of 0..10: {bad}")
        return TaskResult(ok=True, value=record, attempts=1)

    def score_frames(self, source_frames: Sequence, edited_frames: Sequence, instruction: str) -> TaskResult:
        """Score frame pairs (e.g. frames [1, 26, 51, 76] of source and synthesized video) with editscore's batch path.

        value = one record per frame: {"SC_score", "PQ_score", "O_score", "SC_score_reasoning",
        "PQ_score_reasoning", "SC_raw_output", "PQ_raw_output"} (Sparkle's edited_video_score.jsonl entries).
        ok is False when any frame's answer did not hold two scores in range (editscore would have put a mid-range
        score there).
        """
        from editscore.json_parser import parse_vlm_output_to_dict

        if len(source_frames) != len(edited_frames) or not source_frames:
            return TaskResult(ok=False, reason=f"need equal, non-zero frame counts, got {len(source_frames)} source "
                                               f"and {len(edited_frames)} edited frames")
        pairs = [[to_pil(s), to_pil(e)] for s, e in zip(source_frames, edited_frames, strict=True)]
        try:
            raw = self.editscore.batch_evaluate(pairs, [instruction] * len(pairs))
        except Exception as exc:  # noqa: BLE001
            return TaskResult(ok=False, reason=f"EditScore failed: {type(exc).__name__}: {exc}", attempts=1)
        records, problems = [], []
        for index, item in enumerate(raw):
            record = {k: float(item[k]) for k in ("SC_score", "PQ_score", "O_score")}
            record.update({k: str(item[k]) for k in ("SC_score_reasoning", "PQ_score_reasoning", "SC_raw_output",
                                                     "PQ_raw_output")})
            records.append(record)
            for head in ("SC", "PQ"):
                scores = parse_vlm_output_to_dict(record[f"{head}_raw_output"])["score"]
                if len(scores) < 2 or not all(0 <= s <= self.config.score_range for s in scores):
                    problems.append(f"frame {index}: unusable {head} answer (scores {scores})")
        if problems:
            return TaskResult(ok=False, value=records, reason="; ".join(problems), attempts=1)
        return TaskResult(ok=True, value=records, attempts=1)


def score_edited_video(scorer: EditScoreAdapter, sample_id: str, prompt: str, source_video, edited_video,
                       frame_indices: Sequence[int] | None = None) -> TaskResult:
    """Stage 5's scoring: EditScore on 4 uniformly spaced non-first frames ([1, 26, 51, 76] for 81 frames).

    source_video, edited_video: uint8 (T, H, W, 3), numpy or torch, same T. value = the line of Sparkle's
    edited_video_score.jsonl: {"id", "prompt", "frame_indices", "editscore": [per-frame records]}; compare
    mean_overall(value["editscore"]) with the config's threshold (8 in Sparkle) to keep or reject.
    """
    from sparkle_fast.models.control import score_frame_indices

    if len(source_video) != len(edited_video):
        return TaskResult(ok=False, reason=f"source video has {len(source_video)} frames, edited video "
                                           f"{len(edited_video)}: they must match")
    indices = list(frame_indices) if frame_indices is not None else score_frame_indices(len(edited_video))
    scored = scorer.score_frames([source_video[i] for i in indices], [edited_video[i] for i in indices], prompt)
    if not scored.ok:
        return scored
    record = {"id": sample_id, "prompt": prompt, "frame_indices": indices, "editscore": scored.value}
    return TaskResult(ok=True, value=record, attempts=scored.attempts)


def mean_overall(records: Sequence[dict]) -> float:
    """Stage 5's statistic: the mean O_score of the per-frame records (compare with the config's threshold)."""
    return float(sum(r["O_score"] for r in records) / len(records))


