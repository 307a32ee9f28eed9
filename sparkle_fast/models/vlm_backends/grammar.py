"""JSON-Schema-constrained decoding for transformers' generate() through xgrammar (the grammar engine vLLM and
SGLang use), so the transformers backend masks tokens exactly as a vLLM server with the xgrammar backend does.

Whitespace between JSON tokens is off (compact separators "," and ":"), matching a vLLM server started with
--structured-outputs-config '{"backend": "xgrammar", "disable_any_whitespace": true}': a random or weak model cannot
spend its budget on spaces, and greedy answers are token-for-token the server's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch

# The separators a vLLM server with disable_any_whitespace writes (compact JSON, as json.dumps(separators=(",", ":")).
SEPARATORS = (",", ":")


class JsonGrammars:
    """Compiled JSON-Schema grammars for one tokenizer (cached by schema text)."""

    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: Sequence[int]):
        import xgrammar as xgr

        stops = sorted({int(t) for t in stop_token_ids if t is not None})
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stops)
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=2, cache_enabled=True)
        self._compiled: dict[str, object] = {}

    def compiled(self, json_schema: dict):
        key = json.dumps(json_schema, sort_keys=True)
        if key not in self._compiled:
            self._compiled[key] = self.compiler.compile_json_schema(json.dumps(json_schema), any_whitespace=False,
                                                                    separators=SEPARATORS, strict_mode=True)
        return self._compiled[key]

    def processor(self, json_schema: dict | Sequence[dict | None], batch_size: int) -> XGrammarLogitsProcessor:
        """The logits processor for a batch: one schema for every row, or one schema (None: unconstrained) per row."""
        if isinstance(json_schema, dict):
            return XGrammarLogitsProcessor(self.compiled(json_schema), batch_size)
        schemas = list(json_schema)
        if len(schemas) != batch_size:
            raise ValueError(f"{len(schemas)} JSON schemas for a batch of {batch_size} rows")
        return XGrammarLogitsProcessor([None if s is None else self.compiled(s) for s in schemas], batch_size)


class XGrammarLogitsProcessor:
    """A transformers logits processor: each row of a batch may only continue its answer inside its grammar and may
    only stop (EOS) once the answer is complete.

    compiled_grammar: one compiled grammar for every row, or a list with one per row (None: that row is left
    unconstrained), so rows of one batch can answer different schemas.
    Works with left-padded batches: the prompt length is the input length at the first call; every later call feeds
    each row's matcher the token generated since. A row whose matcher has terminated (its EOS was accepted) is left
    alone: generate() pads it from then on.
    """

    def __init__(self, compiled_grammar, batch_size: int):
        import xgrammar as xgr

        self._xgr = xgr
        grammars = list(compiled_grammar) if isinstance(compiled_grammar, (list, tuple)) else \
            [compiled_grammar] * batch_size
        if len(grammars) != batch_size:
            raise ValueError(f"{len(grammars)} grammars for a batch of {batch_size} rows")
        self.matchers = [xgr.GrammarMatcher(g) if g is not None else None for g in grammars]
        self.done = [g is None for g in grammars]
        known = [g for g in grammars if g is not None]
        self.vocab_size = known[0].tokenizer_info.vocab_size if known else 0
        self.bitmask = xgr.allocate_token_bitmask(batch_size, self.vocab_size)
        self.prompt_length: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        elif input_ids.shape[1] > self.prompt_length:
            for row, token_id in enumerate(input_ids[:, -1].tolist()):
                if self.done[row]:
                    continue
                # A rejected token cannot follow a mask we filled; treat it as the end of the row all the same.
                if not self.matchers[row].accept_token(token_id) or self.matchers[row].is_terminated():
                    self.done[row] = True
        rows = [row for row in range(len(self.matchers)) if not self.done[row]]
        if not rows:
            return scores
        for row in rows:
            self.matchers[row].fill_next_token_bitmask(self.bitmask, row)
        masked = scores.float() if scores.dtype != torch.float32 else scores.clone()
        width = min(masked.shape[1], self.vocab_size)
        target = masked if width == masked.shape[1] else masked[:, :width].contiguous()
        self._xgr.apply_token_bitmask_inplace(target, self.bitmask.to(masked.device), indices=rows)
        if target is not masked:
            masked[:, :width] = target
            masked[rows, width:] = float("-inf")  # lm_head wider than the grammar's vocabulary: never the extra ids
        return masked.to(scores.dtype)
