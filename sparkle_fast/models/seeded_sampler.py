"""Per-row seeded sampling inside one batched `generate`: each row draws its tokens from its own random stream.

transformers' sampling draws every row of a batch from the one global generator, so a row's answer depends on which
other rows share its batch. `SeededRowSampler` is a logits processor that samples each row itself: temperature,
top-k and top-p exactly as transformers' warpers apply them, then the Gumbel-max draw argmax(logits + Gumbel noise)
with the noise from that row's own torch.Generator (seeded per row). It leaves only the drawn token finite, so
`generate(do_sample=False, ...)` (greedy) emits it. A row's tokens then depend only on its logits and its seed: one
batched call gives what one call per row would give (up to the float differences of padded vs unpadded attention).

Put it last in the logits processor list (after any constraint that masks tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class SeededRowSampler:
    """A transformers logits processor. seeds: one int per batch row (rows with the same seed draw the same noise)."""

    def __init__(self, seeds: Sequence[int], *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
        self.seeds = [int(s) for s in seeds]
        self.warpers = [TemperatureLogitsWarper(temperature)]
        if top_k and top_k > 0:
            self.warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))
        self.generators: list[torch.Generator] | None = None

    def _generators(self, device: torch.device) -> list[torch.Generator]:
        if self.generators is None:
            self.generators = [torch.Generator(device=device).manual_seed(s) for s in self.seeds]
        return self.generators

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.seeds):
            raise ValueError(f"SeededRowSampler has {len(self.seeds)} seeds for a batch of {scores.shape[0]} rows")
        warped = scores.float()
        for warper in self.warpers:
            warped = warper(input_ids, warped)
        chosen = torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)
        for row, generator in enumerate(self._generators(scores.device)):
            uniform = torch.rand(scores.shape[1], generator=generator, device=scores.device)
            gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(torch.float32).tiny)))
            chosen[row] = torch.argmax(warped[row] + gumbel)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen[:, None], 0.0)
        return out
