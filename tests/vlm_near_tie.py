"""Batched (or served) VLM answers against one-at-a-time answers, with a proof for every difference.

Left padding (and, for a server, other kernels) changes a row's logits by float rounding only. On a random tiny
model two candidate tokens can tie to within that rounding, and then greedy decoding may pick either. A test that
compares answers exactly would then fail (or pass) by chance. `TokenTrace` records, for every row a transformers
backend generates, its token ids and its raw logits at every step; `check_rows` compares each recorded row with the
same request generated alone (batch 1, unpadded) and, where the tokens differ, proves at the first differing step
that the difference is a near-tie:

  greedy rows   the batch-1 run's raw logits give the two tokens a gap below REL_TOL x max|logit| (both tokens are
                allowed there: the prefixes are equal, so the grammar state is the same)
  sampled rows  the two runs' raw logit vectors at that step agree within REL_TOL x max|logit| (the sampler saw the
                same inputs up to rounding; its seeded noise is the same, so only a tie can flip its argmax)

Anything else fails the test. `explained` then lets a test accept a result that differs from the one-at-a-time
result only if one of its answers comes from a proven near-tie row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import torch

REL_TOL = 1e-4  # relative to the largest |logit| at the step: float32 padding noise is ~1e-6 here


def request_key(request, json_schema, sampling) -> str:
    """What makes two generations of one row the same: prompt, media bytes, schema, sampling and seed."""
    from sparkle_fast.models.base import to_pil

    h = hashlib.sha256()
    h.update(json.dumps([request.content, request.system, request.seed, request.video_fps], default=str).encode())
    for image in request.images:
        pil = to_pil(image)
        h.update(repr(pil.size).encode() + pil.tobytes())
    if request.video is not None:
        video = np.ascontiguousarray(request.video)
        h.update(repr(video.shape).encode() + video.tobytes())
    h.update(json.dumps(json_schema, sort_keys=True).encode())
    h.update(repr((sampling.max_new_tokens, sampling.temperature, sampling.top_p, sampling.top_k,
                   sampling.seed)).encode())
    return h.hexdigest()


@dataclass
class Row:
    key: str
    request: object
    json_schema: dict | None
    sampling: object
    tokens: list[int]
    logits: torch.Tensor | None  # (steps, vocab) raw logits, float32 (None: a server's row)
    answer: str
    batch: int  # rows in its generate call


@dataclass
class TokenTrace:
    """Wraps backend.generate (counting calls) and backend.model.generate (recording tokens and raw logits)."""

    backend: object
    calls: list[int] = field(default_factory=list)  # rows per backend.generate call
    rows: list[Row] = field(default_factory=list)
    _last: tuple | None = None

    def __enter__(self):
        from sparkle_fast.models.vlm_backends import row_schemas

        backend, model = self.backend, self.backend.model
        self._model_generate = model.generate
        self._generate = backend.generate
        stops = set(backend.stop_token_ids())

        def model_generate(**kwargs):
            out = self._model_generate(**kwargs, output_logits=True, return_dict_in_generate=True)
            prompt = kwargs["input_ids"].shape[1]
            self._last = (out.sequences[:, prompt:].tolist(), torch.stack(out.logits, dim=1).float())
            return out.sequences

        def generate(requests, json_schema, sampling):
            answers = self._generate(requests, json_schema, sampling)
            self.calls.append(len(requests))
            tokens, logits = self._last
            for i, (request, schema) in enumerate(zip(requests, row_schemas(json_schema, len(requests)),
                                                      strict=True)):
                row = tokens[i]
                end = next((j + 1 for j, t in enumerate(row) if t in stops), len(row))
                self.rows.append(Row(request_key(request, schema, sampling), request, schema, sampling,
                                     row[:end], logits[i, :end], answers[i][0], len(requests)))
            return answers

        model.generate = model_generate
        backend.generate = generate
        return self

    def __exit__(self, *exc):
        del self.backend.model.generate  # the instance attribute; the class method shows again
        del self.backend.generate

    def alone(self, row: Row) -> Row:
        """The row's request generated alone (batch 1) through the traced backend."""
        before = len(self.rows)
        self.backend.generate([row.request], row.json_schema, row.sampling)
        (single,) = self.rows[before:]
        del self.rows[before:]
        self.calls.pop()
        return single


@dataclass
class Flip:
    answer: str        # the batched (or served) answer
    reference: str     # the batch-1 answer
    step: int
    gap: float         # greedy: top-2 gap of the two tokens; sampled: max |logit difference|
    scale: float


def near_tie(row: Row, single: Row) -> Flip | None:
    """None when the two runs made the same tokens; a Flip when they differ at a proven near-tie; AssertionError
    otherwise."""
    if row.tokens == single.tokens:
        return None
    step = next((j for j, (a, b) in enumerate(zip(row.tokens, single.tokens, strict=False)) if a != b),
                min(len(row.tokens), len(single.tokens)))
    assert step < min(len(row.tokens), len(single.tokens)), \
        f"one answer is a prefix of the other ({row.answer!r} vs {single.answer!r}): not a tie"
    ref, other = single.logits[step], (row.logits[step] if row.logits is not None else None)
    scale = float(ref.abs().max())
    chosen, flipped = single.tokens[step], row.tokens[step]
    if row.sampling.temperature <= 0:
        gap = float(ref[chosen] - ref[flipped])
        # A server gives no logits (row.logits None): the batch-1 transformers logits must show the tie.
        gap_batched = 0.0 if other is None else float(other[flipped] - other[chosen])
        assert 0.0 <= gap <= REL_TOL * scale and gap_batched >= 0.0 and gap_batched <= REL_TOL * scale, (
            f"batched {row.answer!r} != alone {single.answer!r} at token {step}: logit gap {gap:.3g} (batched "
            f"{gap_batched:.3g}) is not a near-tie (tolerance {REL_TOL} x {scale:.3g})")
    else:
        assert other is not None, "a sampled row needs its own logits for the proof"
        gap = float((ref - other).abs().max())
        assert gap <= REL_TOL * scale, (
            f"sampled batched {row.answer!r} != alone {single.answer!r} at token {step}: logits differ by "
            f"{gap:.3g} (tolerance {REL_TOL} x {scale:.3g}): not rounding")
    return Flip(row.answer, single.answer, step, gap, scale)


def check_rows(trace: TokenTrace, reference: TokenTrace | None = None) -> list[Flip]:
    """Every row of `trace` in a call of more than one row against the same request alone: taken from
    `reference` (a trace of batch-1 runs) when it holds the same request, else generated alone now."""
    alone = {row.key: row for row in (reference.rows if reference else []) if row.batch == 1}
    flips = []
    for row in trace.rows:
        if row.batch == 1 and row.key not in alone:
            continue  # generated alone already
        single = alone.get(row.key) or trace.alone(row)
        flip = near_tie(row, single)
        if flip is not None:
            flips.append(flip)
    return flips


def explained(result, expected, flips: list[Flip]) -> bool:
    """Whether two unequal TaskResults are explained by proven near-ties: one of the answers of either comes from
    a flipped row."""
    flipped = {f.answer for f in flips} | {f.reference for f in flips}
    return bool(flipped & (set(result.answers) | set(expected.answers)))
