"""FP8 weights for the Wan experts (lever `fp8`), with torchao's float8 quantisation (`torchao.quantization.quantize_`).

Modes (ours; torchao's configs):
  "none"     the experts' own dtype (bf16 on a GPU)
  "weight"   Float8WeightOnlyConfig: the blocks' linear weights stored as float8_e4m3fn with one scale per output
             channel, dequantised to the activation dtype for each matmul. Halves those weights' memory (an A14B
             expert's ~28 GB of bf16 weights become ~15 GB), no matmul speed-up. Runs on any device (CPU included).
  "dynamic"  Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()): weights and, per call, activations in
             float8 with per-row scales; the matmuls run on the FP8 tensor cores (torch._scaled_mm). Needs CUDA
             compute capability >= 8.9 (Ada, Hopper: H100/H200); refused elsewhere with a clear error.

Only the nn.Linear layers inside the transformer blocks are converted (attention projections and the FFN: nearly all
of an expert's weights and FLOPs); the patch embedding, the time/text embedders, norms and the output projection stay
in the original dtype, as is usual for float8 inference of diffusion transformers. Applied once at load, after the
distillation LoRAs are fused (a LoRA cannot be fused into float8 weights). Quality risk: float8 rounding of every
block's weights (and activations in "dynamic"); check with the stage-5 EditScore gate before a long run.
"""

from __future__ import annotations

import torch

FP8_MODES = ("none", "weight", "dynamic")
DYNAMIC_MIN_CAPABILITY = (8, 9)


def check_fp8_mode(mode: str) -> None:
    if mode not in FP8_MODES:
        raise ValueError(f"fp8 must be one of {', '.join(repr(m) for m in FP8_MODES)}, got {mode!r}")


def fp8_problem(mode: str, device) -> str | None:
    """Why `mode` cannot run on `device` (None when it can): torchao missing, or "dynamic" without FP8 tensor cores."""
    check_fp8_mode(mode)
    if mode == "none":
        return None
    try:
        import torchao  # noqa: F401
    except ImportError:
        return (f"fp8 = {mode!r} needs torchao (pip install torchao; requirements/constraints.txt pins the tested "
                f"version)")
    if mode == "dynamic":
        device = torch.device(device)
        if device.type != "cuda" or not torch.cuda.is_available():
            return (f"fp8 = \"dynamic\" runs the matmuls on FP8 tensor cores (CUDA compute capability >= 8.9: Ada, "
                    f"Hopper H100/H200); the model runs on {device}. Use fp8 = \"weight\" (memory only) or \"none\"")
        capability = torch.cuda.get_device_capability(device)
        if capability < DYNAMIC_MIN_CAPABILITY:
            name = torch.cuda.get_device_name(device)
            return (f"fp8 = \"dynamic\" needs CUDA compute capability >= 8.9 (FP8 tensor cores); {name} has "
                    f"{capability[0]}.{capability[1]}. Use fp8 = \"weight\" or \"none\" on this GPU")
    return None


def is_block_linear(module: torch.nn.Module, fqn: str) -> bool:
    """The layers converted: nn.Linear inside `blocks.N.` (not the embedders or the output projection)."""
    return isinstance(module, torch.nn.Linear) and fqn.startswith("blocks.")


def quantize_expert(expert: torch.nn.Module, mode: str, device) -> int:
    """Convert `expert`'s block linears to float8 in place (torchao); returns how many layers were converted.
    RuntimeError (fp8_problem's message) when the mode cannot run on `device`."""
    problem = fp8_problem(mode, device)
    if problem:
        raise RuntimeError(problem)
    if mode == "none":
        return 0
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Float8WeightOnlyConfig,
        PerRow,
        quantize_,
    )

    count = sum(1 for name, module in expert.named_modules() if is_block_linear(module, name))
    config = Float8WeightOnlyConfig() if mode == "weight" else Float8DynamicActivationFloat8WeightConfig(
        granularity=PerRow())
    quantize_(expert, config, filter_fn=is_block_linear)
    return count


def float8_linear_count(expert: torch.nn.Module) -> int:
    """How many of `expert`'s linear layers hold float8 weights (torchao's Float8Tensor keeps them in .qdata)."""
    count = 0
    for module in expert.modules():
        if isinstance(module, torch.nn.Linear):
            data = getattr(module.weight, "qdata", None)
            if data is not None and data.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
                count += 1
    return count


__all__ = ["FP8_MODES", "check_fp8_mode", "float8_linear_count", "fp8_problem", "is_block_linear", "quantize_expert"]
