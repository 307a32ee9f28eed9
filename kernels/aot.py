"""Compile every registered Triton kernel variant for a GPU ahead of time, without a GPU, and report registers/spills.

    python -m sparkle_fast.kernels.aot [--arch 90] [--json]

Must run WITHOUT TRITON_INTERPRET (the interpreter never calls the compiler): it refuses to run otherwise. Each
variant of kernels._launch's registry goes through triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))
to PTX and a cubin, then Triton's bundled ptxas -v (arch sm_<arch>a) reports registers, spill stores/loads and the
stack frame. A variant that does not compile is reported with its error; the exit status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor


def _ptxas() -> str:
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.exists(path):
        raise FileNotFoundError(f"Triton's bundled ptxas is missing at {path}")
    return path


def ptxas_report(ptx: str, arch: int) -> dict:
    """Registers, spill stores/loads (bytes) and stack frame (bytes) from `ptxas -v` on the PTX of one kernel."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        result = subprocess.run([_ptxas(), f"-arch=sm_{arch}a", "-v", src, "-o", os.path.join(tmp, "kernel.cubin")],
                                capture_output=True, text=True)
    text = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"ptxas failed: {text[-2000:]}")
    regs = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", text)
    if not (regs and spills):
        raise RuntimeError(f"could not read ptxas -v output: {text[-2000:]}")
    return {"registers": int(regs.group(1)), "stack_bytes": int(spills.group(1)),
            "spill_store_bytes": int(spills.group(2)), "spill_load_bytes": int(spills.group(3))}


def compile_variant(index: int, arch: int = 90) -> dict:
    """Compile variant `index` of _launch.all_variants() for sm_<arch>; a row for the report."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from sparkle_fast.kernels import _launch

    variant = _launch.all_variants()[index]
    row = {"kernel": variant.name, "variant": variant.label(), "constexprs": variant.constexprs,
           "num_warps": variant.num_warps, "arch": f"sm_{arch}"}
    signature = {n: ("constexpr" if n in variant.constexprs else variant.signature[n])
                 for n in variant.kernel.arg_names}
    try:
        compiled = triton.compile(ASTSource(variant.kernel, signature, variant.constexprs),
                                  target=GPUTarget("cuda", arch, 32), options={"num_warps": variant.num_warps})
        row.update(ptxas_report(compiled.asm["ptx"], arch))
        row["shared_bytes"] = int(compiled.metadata.shared)
        row["ok"] = True
    except Exception as error:  # noqa: BLE001 - reported per variant, the run goes on
        row["ok"] = False
        row["error"] = f"{type(error).__name__}: {str(error)[-3000:]}"
    return row


def compile_all(arch: int = 90, jobs: int = 2) -> list[dict]:
    """Every registered variant, compiled in `jobs` processes."""
    from sparkle_fast.kernels import _launch

    if _launch.interpreted():
        raise RuntimeError("TRITON_INTERPRET is set: the interpreter never calls the compiler; run without it")
    n = len(_launch.all_variants())
    if jobs <= 1:
        return [compile_variant(i, arch) for i in range(n)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(compile_variant, range(n), [arch] * n))


def format_table(rows: list[dict]) -> str:
    lines = ["| kernel variant | regs | spill st/ld (B) | stack (B) | shared (B) |", "|---|---|---|---|---|"]
    for r in rows:
        if r["ok"]:
            lines.append(f"| {r['variant']} | {r['registers']} | {r['spill_store_bytes']}/{r['spill_load_bytes']} | "
                         f"{r['stack_bytes']} | {r['shared_bytes']} |")
        else:
            lines.append(f"| {r['variant']} | FAILED: {r['error'].splitlines()[0][:150]} | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 for H100/H200")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args(argv)
    rows = compile_all(args.arch, args.jobs)
    print(json.dumps(rows, default=str) if args.json else format_table(rows))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
