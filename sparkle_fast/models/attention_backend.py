"""The attention kernel the Wan experts use (lever `attention_backend`), through diffusers' attention dispatcher
(`model.set_attention_backend(name)`, diffusers 0.42).

Names offered (a subset of diffusers' AttentionBackendName, ours): the ones that run from a local install. diffusers'
"*_hub" backends download kernels from a hub at run time, which a cluster node without internet cannot do, so they
are refused here. "" leaves diffusers' default (torch SDPA, "native").

  native              torch scaled_dot_product_attention, torch picks the kernel (CPU and GPU)
  _native_math        torch's math SDPA (CPU and GPU; slow, a reference)
  _native_flash       torch's FlashAttention-2 SDPA kernel (CUDA)
  _native_cudnn       torch's cuDNN SDPA kernel (CUDA; fast on Hopper)
  _native_efficient   torch's memory-efficient SDPA kernel (CUDA)
  flex                torch flex_attention
  flash, flash_varlen FlashAttention-2 (package flash-attn, CUDA)
  _flash_3, _flash_varlen_3   FlashAttention-3 (flash_attn_interface built from source, Hopper)
  sage, sage_varlen, _sage_qk_int8_pv_fp8_cuda_sm90   SageAttention (package sageattention, CUDA; quantised QK:
                      a quality risk to check with the EditScore gate)
  xformers            xformers' memory-efficient attention (CUDA)

Context parallelism (context_parallel.py) needs a backend diffusers registers for it: native, _native_cudnn,
_native_flash, flash or sage (not _flash_3 in diffusers 0.42).
"""

from __future__ import annotations

import torch

ATTENTION_BACKENDS = ("native", "_native_math", "_native_flash", "_native_cudnn", "_native_efficient", "flex",
                      "flash", "flash_varlen", "_flash_3", "_flash_varlen_3", "sage", "sage_varlen",
                      "_sage_qk_int8_pv_fp8_cuda_sm90", "xformers")
CPU_BACKENDS = ("native", "_native_math", "flex")  # the others are CUDA kernels
CONTEXT_PARALLEL_BACKENDS = ("native", "_native_cudnn", "_native_flash", "flash", "sage")


def check_backend_name(name: str) -> None:
    """ValueError for a name we do not offer ("" = diffusers' default is fine)."""
    if name and name not in ATTENTION_BACKENDS:
        hub = " (diffusers' *_hub backends download kernels at run time and are not offered)" if "hub" in name else ""
        raise ValueError(f"attention_backend {name!r} is not one of: \"\" (diffusers' default), "
                         f"{', '.join(ATTENTION_BACKENDS)}{hub}")


def backend_problem(name: str, device) -> str | None:
    """Why `name` cannot run on `device` (None when it can): a CUDA kernel on a CPU device, or its package missing
    (diffusers' own requirement check, e.g. flash-attn or sageattention not installed)."""
    check_backend_name(name)
    if not name:
        return None
    device = torch.device(device)
    if device.type != "cuda" and name not in CPU_BACKENDS:
        return (f"attention_backend {name!r} is a CUDA kernel and the model runs on {device}; use one of "
                f"{', '.join(CPU_BACKENDS)} or \"\" there")
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    try:
        _check_attention_backend_requirements(AttentionBackendName(name))
    except RuntimeError as exc:
        return f"attention_backend {name!r} is not usable here: {exc}"
    return None


def set_backend(expert, name: str, device) -> None:
    """Use `name` for every attention module of `expert` ("" = back to diffusers' default); RuntimeError naming the
    backend and what is missing when it cannot run on `device`."""
    problem = backend_problem(name, device)
    if problem:
        raise RuntimeError(problem)
    if name:
        expert.set_attention_backend(name)
    else:
        expert.reset_attention_backend()


__all__ = ["ATTENTION_BACKENDS", "CONTEXT_PARALLEL_BACKENDS", "CPU_BACKENDS", "backend_problem",
           "check_backend_name", "set_backend"]
