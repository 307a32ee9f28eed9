"""One clip over several GPUs (lever `context_parallel`), with diffusers' context-parallel API (diffusers 0.42:
`ContextParallelConfig`, `model.enable_parallelism(config=...)`; WanTransformer3DModel has a `_cp_plan`).

`context_parallel = N` (N > 1) splits each expert's token sequence over N GPUs: Ulysses attention (an all-to-all of
the heads; `context_parallel_kind = "ulysses"`, the default) or ring attention ("ring": KV blocks passed around the
ring; less memory, more steps). It lowers the latency of one clip; it does not raise a node's throughput over one
clip per GPU (the communication is pure overhead there), so use it only when one clip's latency matters or one
GPU cannot hold a clip's activations.

How it runs: N processes (one per GPU) in one torch.distributed group of exactly N ranks, e.g. `torchrun
--nproc-per-node N`, each loading the same model and calling generate with the same inputs and seed; every rank gets
the whole clip back and rank 0 writes it. The local runner (one worker process per GPU) and the Ray runner do not
start such groups yet: the run config's option is checked and recorded, and a generator without that group fails
with a clear error (see context_parallel_problem). The Wan2.2 A14B experts have 40 heads, so Ulysses degrees must
divide 40 (2, 4, 5, 8); 81x720x1280 gives 75,600 tokens per frame set (79,200 with Fun-Control's reference frame),
divisible by 2, 4, 5 and 8.
"""

from __future__ import annotations

import torch

CONTEXT_PARALLEL_KINDS = ("ulysses", "ring")


def check_context_parallel(degree: int, kind: str) -> None:
    if not isinstance(degree, int) or degree < 1:
        raise ValueError(f"context_parallel must be an integer >= 1 (GPUs per clip; 1 = off), got {degree!r}")
    if kind not in CONTEXT_PARALLEL_KINDS:
        raise ValueError(f"context_parallel_kind must be one of {', '.join(CONTEXT_PARALLEL_KINDS)}, got {kind!r}")


def context_parallel_problem(degree: int, kind: str, device, num_heads: int | None = None) -> str | None:
    """Why `degree` GPUs per clip cannot run here (None when they can, or degree 1)."""
    check_context_parallel(degree, kind)
    if degree == 1:
        return None
    device = torch.device(device)
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type != "cuda" or visible < degree:
        return (f"context_parallel = {degree} splits one clip over {degree} GPUs and needs {degree} CUDA devices; "
                f"this process runs on {device} and sees {visible}. Set context_parallel = 1, or run on a node with "
                f"{degree} GPUs under torchrun --nproc-per-node {degree}")
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return (f"context_parallel = {degree} needs a torch.distributed process group of {degree} ranks (one process "
                f"per GPU, e.g. torchrun --nproc-per-node {degree}); this process has none")
    if dist.get_world_size() != degree:
        return (f"context_parallel = {degree} needs a process group of exactly {degree} ranks; this one has "
                f"{dist.get_world_size()}")
    if kind == "ulysses" and num_heads is not None and num_heads % degree:
        return (f"context_parallel = {degree} with Ulysses attention needs the head count ({num_heads}) divisible by "
                f"{degree}; use a divisor of {num_heads} or context_parallel_kind = \"ring\"")
    return None


def enable_context_parallel(expert, degree: int, kind: str, device) -> None:
    """Shard `expert`'s sequence over the process group (diffusers' enable_parallelism); RuntimeError naming what is
    missing (context_parallel_problem). Degree 1: nothing."""
    problem = context_parallel_problem(degree, kind, device, getattr(expert.config, "num_attention_heads", None))
    if problem:
        raise RuntimeError(problem)
    if degree == 1:
        return
    from diffusers import ContextParallelConfig

    config = ContextParallelConfig(ulysses_degree=degree) if kind == "ulysses" else ContextParallelConfig(
        ring_degree=degree)
    expert.enable_parallelism(config=config)


__all__ = ["CONTEXT_PARALLEL_KINDS", "check_context_parallel", "context_parallel_problem", "enable_context_parallel"]
