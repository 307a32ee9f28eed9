"""The registry of every Triton kernel variant the GPU path launches, and the one launch() every launcher calls.

Why: the Triton interpreter (how CI runs the kernels) executes the Python as it is, so a kernel can pass every CPU
test and still be refused by the GPU compiler. sparkle_fast.kernels.aot compiles every registered variant for sm_90
ahead of time, without a GPU; this registry is what makes that list complete:
  * each kernel module calls register() for each @triton.jit entry point with its runtime signature (argument ->
    Triton type) and every constexpr specialisation its launcher can pass on a GPU;
  * every launch goes through launch(), which (when SPARKLE_FAST_TRITON_STRICT=1, as the test suite sets it) refuses
    a kernel that is not registered, a constexpr specialisation that is not registered, and arguments whose types do
    not match the registered signature. So a launch the tests reach cannot be missing from the AOT compile;
  * tests/test_triton_aot.py fails when a @triton.jit function in kernels/ is neither registered nor called by a
    registered kernel.

Block sizes: kernels use large blocks under the interpreter (~0.5 ms per program instance) and GPU-sized blocks on a
GPU. SPARKLE_FAST_TRITON_BLOCKS=gpu makes the interpreter use the GPU's sizes too (many programs per launch, so
tile edges and multi-program indexing are tested as the GPU runs them). Size constexprs are named in register(sizes=)
and only checked against the registry when GPU sizes are in use.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass, field
from typing import Any

ENV_BLOCKS = "SPARKLE_FAST_TRITON_BLOCKS"  # "auto" (default) | "gpu"
ENV_STRICT = "SPARKLE_FAST_TRITON_STRICT"  # "1": launch() checks every launch against the registry

_NOT_KERNEL_MODULES = {"_launch", "aot"}


def interpreted() -> bool:
    """True when Triton runs kernels through its CPU interpreter (TRITON_INTERPRET set before triton's import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def gpu_sizes() -> bool:
    """Use the GPU's block and tile sizes: always when compiled, under the interpreter when SPARKLE_FAST_TRITON_BLOCKS
    is "gpu". Read at every launch, so tests can switch it per test."""
    mode = os.environ.get(ENV_BLOCKS, "auto").strip().lower() or "auto"
    if mode not in ("auto", "gpu"):
        raise ValueError(f"{ENV_BLOCKS}={mode!r}: expected 'auto' or 'gpu'")
    return not interpreted() or mode == "gpu"


def pick(gpu: Any, interpreter: Any) -> Any:
    """The GPU size, or the interpreter's (few large programs) when interpreting without
    SPARKLE_FAST_TRITON_BLOCKS=gpu."""
    return gpu if gpu_sizes() else interpreter


def _strict() -> bool:
    return os.environ.get(ENV_STRICT, "0") not in ("", "0")


def kernel_name(kernel) -> str:
    return f"{kernel.fn.__module__}.{kernel.fn.__qualname__}"


@dataclass(frozen=True)
class Variant:
    """One compiled form of a kernel: its constexpr values, the Triton type of every runtime argument, num_warps."""

    kernel: Any
    constexprs: dict[str, Any]
    signature: dict[str, str]
    num_warps: int

    @property
    def name(self) -> str:
        return kernel_name(self.kernel)

    def label(self) -> str:
        values = ",".join(f"{k}={v}" for k, v in self.constexprs.items())
        return f"{self.kernel.fn.__qualname__}[{values}]"


@dataclass
class KernelSpec:
    kernel: Any
    signature: dict[str, str]
    variants: list[Variant] = field(default_factory=list)
    sizes: tuple[str, ...] = ()


_REGISTRY: dict[str, KernelSpec] = {}


def register(kernel, signature: dict[str, str], variants: list[dict[str, Any]], sizes: tuple[str, ...] = (),
             num_warps: int = 4) -> KernelSpec:
    """Declare a kernel entry point. signature: every runtime argument -> Triton type ("*u8", "*i32", "*fp32", "i32",
    "fp32", ...). variants: one dict per constexpr specialisation launched on a GPU (all constexprs given); a dict may
    carry "signature": {arg: type} overrides for that variant (an unused pointer argument of another dtype)."""
    constexpr_names = [n for n in kernel.arg_names if n not in signature]
    spec = KernelSpec(kernel, dict(signature), sizes=tuple(sizes))
    for values in variants:
        values = dict(values)
        overrides = values.pop("signature", {})
        if sorted(values) != sorted(constexpr_names):
            raise ValueError(f"{kernel_name(kernel)}: a variant must give exactly the constexprs {constexpr_names}, "
                             f"got {sorted(values)}")
        sig = {**signature, **overrides}
        spec.variants.append(Variant(kernel, {n: values[n] for n in constexpr_names}, sig, num_warps))
    _REGISTRY[kernel_name(kernel)] = spec
    return spec


def _type_of(value) -> str:
    if hasattr(value, "dtype") and hasattr(value, "data_ptr"):
        names = {"uint8": "*u8", "int8": "*i8", "int16": "*i16", "int32": "*i32", "int64": "*i64",
                 "float32": "*fp32", "float16": "*fp16", "bfloat16": "*bf16", "float64": "*fp64", "bool": "*i1"}
        return names.get(str(value.dtype).removeprefix("torch."), str(value.dtype))
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    return type(value).__name__


def check_launch(kernel, args: tuple, constexprs: dict[str, Any], num_warps: int) -> None:
    """Raise unless this launch is one of the registered variants (sizes compared only with GPU sizes in use)."""
    name = kernel_name(kernel)
    spec = _REGISTRY.get(name)
    if spec is None:
        raise RuntimeError(f"{name} is launched but not registered: call kernels._launch.register() for it, so that "
                           "sparkle_fast.kernels.aot compiles it for the GPU")
    ignore = () if gpu_sizes() else spec.sizes

    def key(values):
        return {k: v for k, v in values.items() if k not in ignore}

    matches = [v for v in spec.variants if key(v.constexprs) == key(constexprs) and v.num_warps == num_warps]
    if not matches:
        sizes = "GPU" if gpu_sizes() else "interpreter"
        raise RuntimeError(f"{name} launched with {constexprs}, num_warps={num_warps} ({sizes} sizes), which is not "
                           "a registered variant: add it to the register() call so that sparkle_fast.kernels.aot "
                           "compiles it for the GPU")
    runtime_names = [n for n in kernel.arg_names if n not in constexprs]
    got = {n: _type_of(a) for n, a in zip(runtime_names, args, strict=True)}
    for variant in matches:
        want = variant.signature
        if all(got[n] == want[n] or (want[n] == "i64" and got[n] == "i32") for n in runtime_names):
            return
    raise RuntimeError(f"{name}: argument types {got} do not match the registered signature "
                       f"{matches[0].signature}")


def launch(kernel, grid, *args, num_warps: int = 4, **constexprs) -> None:
    """kernel[grid](*args, **constexprs, num_warps=...), checked against the registry when
    SPARKLE_FAST_TRITON_STRICT=1."""
    if _strict():
        check_launch(kernel, args, constexprs, num_warps)
    kernel[grid](*args, num_warps=num_warps, **constexprs)


def kernel_modules() -> list[str]:
    """Every Triton kernel module of sparkle_fast.kernels (imported, so that they have registered)."""
    import sparkle_fast.kernels as package

    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name not in _NOT_KERNEL_MODULES)
    for name in names:
        importlib.import_module(f"sparkle_fast.kernels.{name}")
    return [f"sparkle_fast.kernels.{name}" for name in names]


def registry() -> dict[str, KernelSpec]:
    """Every registered kernel (all kernel modules imported first), by qualified name."""
    kernel_modules()
    return dict(_REGISTRY)


def all_variants() -> list[Variant]:
    return [v for spec in registry().values() for v in spec.variants]
