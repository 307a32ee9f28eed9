"""The generation speed levers of the Wan generators (stage 3's I2V, stage 5's Fun-Control), as one settings object
and the state of what has been applied to a pipeline's two experts. Each lever lives in its own module:

  cfg_batch          cfg_batch.py          conditional + unconditional pass in one batch-2 forward (guidance > 1)
  cache              step_cache.py         diffusers' FirstBlockCache on each expert ("none" | "first_block")
  cache_threshold    step_cache.py         its relative-change threshold (diffusers' default 0.05)
  fp8                fp8.py                torchao float8 block weights ("none" | "weight" | "dynamic")
  attention_backend  attention_backend.py  diffusers' attention dispatcher ("" = its default, SDPA)
  context_parallel   context_parallel.py   GPUs per clip (diffusers' context parallelism; 1 = off)
  context_parallel_kind                    "ulysses" | "ring"

Distilled sampling (the LightX2V LoRAs fused once at load, 4 pinned steps, guidance 1) is the `mode` of the same
[i2v] / [control] sections (i2v.py). Settings come from the run config through the generators' use_run_config; the
sample's record gets `LeverState.settings()` inside the generator's settings() ("levers"). All defaults are off: the
levers are ours, none is part of Sparkle's published setup.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sparkle_fast.models import attention_backend as attention
from sparkle_fast.models import cfg_batch, fp8, step_cache
from sparkle_fast.models import context_parallel as cp


@dataclass(frozen=True)
class GenerationLevers:
    """The speed levers (module docstring); the defaults change nothing."""

    cfg_batch: bool = False
    cache: str = "none"
    cache_threshold: float = step_cache.DEFAULT_THRESHOLD
    fp8: str = "none"
    attention_backend: str = ""
    context_parallel: int = 1
    context_parallel_kind: str = "ulysses"

    def check(self) -> None:
        """ValueError naming the key for a value no lever takes."""
        step_cache.check_cache(self.cache, self.cache_threshold)
        fp8.check_fp8_mode(self.fp8)
        attention.check_backend_name(self.attention_backend)
        cp.check_context_parallel(self.context_parallel, self.context_parallel_kind)
        if self.context_parallel > 1 and self.attention_backend and \
                self.attention_backend not in attention.CONTEXT_PARALLEL_BACKENDS:
            raise ValueError(f"context_parallel > 1 needs an attention backend diffusers supports it with "
                             f"({', '.join(attention.CONTEXT_PARALLEL_BACKENDS)}), got {self.attention_backend!r}")


LEVER_KEYS = tuple(GenerationLevers.__dataclass_fields__)


def levers_from_section(section, base: GenerationLevers | None = None) -> GenerationLevers:
    """The levers of a run config's [i2v] / [control] section (keys missing from the section keep `base`'s)."""
    base = base or GenerationLevers()
    values = {key: getattr(section, key, getattr(base, key)) for key in LEVER_KEYS}
    levers = GenerationLevers(**values)
    levers.check()
    return levers


def experts_of(pipeline) -> dict:
    """{"transformer": high-noise expert, "transformer_2": low-noise expert} (those present)."""
    return {name: module for name in ("transformer", "transformer_2")
            if (module := getattr(pipeline, name, None)) is not None}


class LeverState:
    """What has been applied to one pipeline's experts. apply() moves them to new settings: cfg_batch, cache and
    attention_backend switch both ways; fp8 and context_parallel change the weights or their placement and are
    applied once (asking for another value afterwards is an error: load the model again)."""

    def __init__(self):
        self.levers = GenerationLevers()
        self.fp8_layers = 0
        self.counter: step_cache.BlockRunCounter | None = None
        self.hooks: dict = {}
        self.last_run: dict = {}

    def apply(self, pipeline, levers: GenerationLevers, device) -> None:
        """Bring `pipeline`'s experts to `levers`. Raises ValueError/RuntimeError naming the lever that cannot run on
        `device`; the levers applied before the failing one stay in force and are what settings() reports."""
        levers.check()
        experts = experts_of(pipeline)
        done = self.levers
        if levers.fp8 != done.fp8:
            if done.fp8 != "none":
                raise ValueError(f"fp8 = {done.fp8!r} is already applied to the experts' weights; load the model "
                                 f"again to use fp8 = {levers.fp8!r}")
            problem = fp8.fp8_problem(levers.fp8, device)
            if problem:
                raise RuntimeError(problem)
            self.fp8_layers = sum(fp8.quantize_expert(expert, levers.fp8, device) for expert in experts.values())
            self.levers = done = _replace(done, fp8=levers.fp8)
        if (levers.context_parallel, levers.context_parallel_kind) != (done.context_parallel,
                                                                       done.context_parallel_kind):
            if done.context_parallel != 1:
                raise ValueError(f"context_parallel = {done.context_parallel} is already applied; load the model "
                                 f"again to change it")
            for expert in experts.values():
                cp.enable_context_parallel(expert, levers.context_parallel, levers.context_parallel_kind, device)
            self.levers = done = _replace(done, context_parallel=levers.context_parallel,
                                          context_parallel_kind=levers.context_parallel_kind)
        if levers.attention_backend != done.attention_backend:
            problem = attention.backend_problem(levers.attention_backend, device)
            if problem:
                raise RuntimeError(problem)
            for expert in experts.values():
                attention.set_backend(expert, levers.attention_backend, device)
            self.levers = done = _replace(done, attention_backend=levers.attention_backend)
        if (levers.cache, levers.cache_threshold) != (done.cache, done.cache_threshold):
            for expert in experts.values():
                step_cache.set_step_cache(expert, levers.cache, levers.cache_threshold)
            if self.counter is not None:
                self.counter.remove()
                self.counter = None
            if levers.cache != "none":  # counts the blocks that ran (not attached otherwise: no per-block hooks)
                self.counter = step_cache.BlockRunCounter.attach(experts)
            self.levers = done = _replace(done, cache=levers.cache, cache_threshold=levers.cache_threshold)
        if levers.cfg_batch != done.cfg_batch:
            for expert in experts.values():
                if levers.cfg_batch:
                    cfg_batch.install(expert)
                else:
                    cfg_batch.remove(expert)
            self.levers = done = _replace(done, cfg_batch=levers.cfg_batch)
        self.hooks = {name: cfg_batch.hook_of(expert) for name, expert in experts.items()} if done.cfg_batch else {}

    def before_generate(self, pipeline, positive=None, negative=None) -> None:
        """Before each clip: forget cached residuals, zero the counters, hand the batching hooks the clip's prompt
        and negative-prompt embeddings (None when there is no unconditional pass)."""
        for expert in experts_of(pipeline).values():
            step_cache.reset_step_cache(expert)
        if self.counter is not None:
            self.counter.reset()
        for hook in self.hooks.values():
            hook.expect(positive, negative)
            hook.reset_counts()
        self.last_run = {}

    def after_generate(self) -> None:
        """Record what the last clip's levers did (counts for the sample's record)."""
        run = {}
        if self.hooks:
            run["cfg_batched_forwards"] = sum(h.batched for h in self.hooks.values())
            run["cfg_unbatched_forwards"] = sum(h.passthrough for h in self.hooks.values())
            for hook in self.hooks.values():
                hook.expect(None, None)
        if self.counter is not None:
            run["cache_blocks"] = self.counter.summary()
        self.last_run = run

    @property
    def wants_embeddings(self) -> bool:
        """Whether generate must hand the pipeline precomputed embeddings (the batching hooks match them)."""
        return bool(self.hooks)

    def settings(self) -> dict:
        """The levers in force, the float8 layer count and the last clip's counts, for the record."""
        out = asdict(self.levers)
        out["fp8_layers"] = self.fp8_layers
        out.update(self.last_run)
        return out


def _replace(levers: GenerationLevers, **changes) -> GenerationLevers:
    import dataclasses

    return dataclasses.replace(levers, **changes)


__all__ = ["GenerationLevers", "LEVER_KEYS", "LeverState", "experts_of", "levers_from_section"]
