"""Step caching for the Wan experts (lever `cache`): reuse the transformer blocks' output change from an earlier step
when the first block's output has barely changed, via diffusers' FirstBlockCache (a TeaCache-style test; diffusers
0.42 hooks, `transformer.enable_cache(FirstBlockCacheConfig(threshold))`).

How it decides (diffusers' rule): each forward runs block 0; when the mean absolute change of block 0's residual
since the last fully computed forward, relative to that residual's mean magnitude, is at most `threshold`, blocks
1..N-1 are skipped and their cached residual is added instead. State is kept per cache context ("cond",
"uncond") and per expert (each expert has its own cache), and reset before every clip.

Choices (ours): kind "first_block" only. diffusers' MagCache needs magnitude ratios calibrated per checkpoint and
schedule (none are published for Wan2.2-Fun-Control in diffusers), TaylorSeer and FasterCache trade more memory; all
could be added here as kinds. Threshold default 0.05 is diffusers' default for FirstBlockCache, not a value tuned for
Wan2.2: tune it against the stage-5 EditScore gate. With the 4-step distilled schedule each expert runs only 2 steps,
so at most 1 of its forwards can be skipped: caching pays off on the 40-50-step stock schedules.

`BlockRunCounter` counts, independently of the cache, how many transformer blocks actually ran (a forward pre-hook
on each block's self-attention, which a skipped block never reaches) and how many expert forwards ran, so a
test and the sample's record can say how many blocks the cache skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

CACHE_KINDS = ("none", "first_block")
DEFAULT_THRESHOLD = 0.05  # diffusers' FirstBlockCacheConfig default (not tuned for Wan2.2)


def check_cache(kind: str, threshold: float) -> None:
    """ValueError for an unknown kind or a negative threshold."""
    if kind not in CACHE_KINDS:
        raise ValueError(f"cache must be one of {', '.join(repr(k) for k in CACHE_KINDS)}, got {kind!r}")
    if not threshold >= 0:
        raise ValueError(f"cache_threshold must be >= 0, got {threshold!r}")


def set_step_cache(expert, kind: str, threshold: float = DEFAULT_THRESHOLD) -> None:
    """Put `kind` of step cache on one expert (replacing whatever cache it had); "none" removes it."""
    check_cache(kind, threshold)
    if getattr(expert, "is_cache_enabled", False):
        expert.disable_cache()
    if kind == "first_block":
        from diffusers.hooks import FirstBlockCacheConfig

        expert.enable_cache(FirstBlockCacheConfig(threshold=float(threshold)))


def reset_step_cache(expert) -> None:
    """Forget the cached residuals (before each clip: a cache must never carry one clip's state into the next)."""
    if getattr(expert, "is_cache_enabled", False):
        expert._reset_stateful_cache()


@dataclass
class BlockRunCounter:
    """Counts expert forwards and the blocks that actually ran, per expert name. blocks_per_forward[name] = the
    expert's block count; skipped = forwards * blocks - ran."""

    forwards: dict[str, int] = field(default_factory=dict)
    blocks_ran: dict[str, int] = field(default_factory=dict)
    blocks_per_forward: dict[str, int] = field(default_factory=dict)
    handles: list = field(default_factory=list)

    @classmethod
    def attach(cls, experts: dict[str, torch.nn.Module]) -> BlockRunCounter:
        counter = cls()
        for name, expert in experts.items():
            blocks = list(expert.blocks)
            counter.blocks_per_forward[name] = len(blocks)
            counter.forwards[name] = counter.blocks_ran[name] = 0
            # Block 0 runs in every forward that reaches the blocks (the cache's test block), so its runs count
            # the forwards; an unconditional call answered by a batched CFG forward (cfg_batch.py) is not one.
            counter.handles.append(blocks[0].attn1.register_forward_pre_hook(counter._count(counter.forwards, name)))
            for block in blocks:
                counter.handles.append(block.attn1.register_forward_pre_hook(counter._count(counter.blocks_ran, name)))
        return counter

    @staticmethod
    def _count(table: dict, name: str):
        def hook(module, args):
            table[name] += 1

        return hook

    def reset(self) -> None:
        for table in (self.forwards, self.blocks_ran):
            for name in table:
                table[name] = 0

    def skipped(self) -> int:
        return sum(self.forwards[n] * self.blocks_per_forward[n] - self.blocks_ran[n] for n in self.forwards)

    def summary(self) -> dict:
        """{"forwards", "blocks_ran", "blocks_skipped"} summed over the experts (one batched CFG forward counts
        once)."""
        return {"forwards": sum(self.forwards.values()), "blocks_ran": sum(self.blocks_ran.values()),
                "blocks_skipped": self.skipped()}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


__all__ = ["BlockRunCounter", "CACHE_KINDS", "DEFAULT_THRESHOLD", "check_cache", "reset_step_cache",
           "set_step_cache"]
