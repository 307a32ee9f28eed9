"""Every Triton kernel of the project compiles for the H100/H200 (sm_90) ahead of time, without a GPU.

The rest of the suite runs the kernels under TRITON_INTERPRET, which executes their Python as it is and never calls
the compiler: a kernel the GPU compiler refuses (e.g. a module global annotated `X: tl.constexpr = 14`) passes every
interpreter test. Here sparkle_fast.kernels.aot compiles every registered variant (kernels/_launch.py: every
constexpr specialisation the launchers pass on a GPU) to a cubin in a subprocess whose environment has no
TRITON_INTERPRET, and Triton's bundled `ptxas -v` reports registers and spills: 0 spills is required.

The registry is kept complete by: launch() refusing unregistered variants while the suite runs
(SPARKLE_FAST_TRITON_STRICT=1, set in conftest), and the coverage test below (every @triton.jit function of
kernels/ is registered or called by a registered kernel, and no launcher calls a kernel without launch()).
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from sparkle_fast.kernels import _launch

ROOT = Path(__file__).resolve().parents[1]


def _compiler_env() -> dict[str, str]:
    """The test process's environment without the interpreter flag conftest sets."""
    return {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", _launch.ENV_BLOCKS)}


def _jit_functions(module) -> dict[str, object]:
    """The @triton.jit functions defined in module, by their own name (not by whatever names refer to them)."""
    return {obj.fn.__name__: obj for obj in vars(module).values()
            if hasattr(obj, "fn") and hasattr(obj, "arg_names") and obj.fn.__module__ == module.__name__}


def test_every_kernel_variant_compiles_for_sm90_without_spills():
    result = subprocess.run([sys.executable, "-m", "sparkle_fast.kernels.aot", "--arch", "90", "--json", "--jobs", "2"],
                            capture_output=True, text=True, env=_compiler_env(), timeout=900, cwd=ROOT)
    assert result.stdout.strip(), result.stderr[-3000:]
    rows = json.loads(result.stdout)
    from sparkle_fast.kernels.aot import format_table

    table = format_table(rows)
    print("\n" + table)  # the register/spill table, shown with pytest -s
    failed = [f"{r['variant']}: {r['error']}" for r in rows if not r["ok"]]
    assert not failed, "kernels the sm_90 compiler refuses:\n" + "\n\n".join(failed)
    assert result.returncode == 0, result.stderr[-3000:]
    spilling = [r["variant"] for r in rows if r["spill_store_bytes"] or r["spill_load_bytes"]]
    assert not spilling, f"register spills on sm_90:\n{table}"
    want = sorted(v.label() for v in _launch.all_variants())
    assert sorted(r["variant"] for r in rows) == want
    assert {r["kernel"] for r in rows} == set(_launch.registry())


def test_the_aot_compile_refuses_what_the_interpreter_accepts(tmp_path):
    """The harness itself: a kernel reading a module global annotated tl.constexpr runs under the interpreter but
    is reported as failed by the compile (the bug lucas_kanade.py had)."""
    (tmp_path / "annotated_global.py").write_text(textwrap.dedent("""
        import triton
        import triton.language as tl

        SHIFT: tl.constexpr = 3

        @triton.jit
        def shift_kernel(x_ptr, n, BLOCK: tl.constexpr):
            i = tl.arange(0, BLOCK)
            tl.store(x_ptr + i, tl.load(x_ptr + i, mask=i < n) << SHIFT, mask=i < n)
    """))
    script = textwrap.dedent("""
        import sys, torch
        sys.path.insert(0, sys.argv[1])
        import annotated_global as m
        if sys.argv[2] == "interpret":
            x = torch.arange(4, dtype=torch.int32)
            m.shift_kernel[(1,)](x, 4, BLOCK=8)
            print(x.tolist())
        else:
            import triton
            from triton.backends.compiler import GPUTarget
            from triton.compiler import ASTSource
            sig = {"x_ptr": "*i32", "n": "i32", "BLOCK": "constexpr"}
            try:
                triton.compile(ASTSource(m.shift_kernel, sig, {"BLOCK": 8}), target=GPUTarget("cuda", 90, 32))
                print("compiled")
            except Exception as error:
                print("refused:", type(error).__name__)
    """)
    interpreted = subprocess.run([sys.executable, "-c", script, str(tmp_path), "interpret"], capture_output=True,
                                 text=True, env={**_compiler_env(), "TRITON_INTERPRET": "1"}, timeout=300)
    assert interpreted.stdout.strip() == "[0, 8, 16, 24]", interpreted.stderr[-2000:]
    compiled = subprocess.run([sys.executable, "-c", script, str(tmp_path), "compile"], capture_output=True,
                              text=True, env=_compiler_env(), timeout=300)
    assert compiled.stdout.strip() == "refused: CompilationError", compiled.stdout + compiled.stderr[-2000:]


def test_every_jit_function_is_registered_or_called_by_a_registered_kernel():
    """A new kernel cannot be left out of the AOT compile silently."""
    import importlib

    registry = _launch.registry()
    modules = [importlib.import_module(name) for name in _launch.kernel_modules()]
    assert {m.__name__.rsplit(".", 1)[1] for m in modules} >= {"canny", "compose", "lucas_kanade", "mask_augment",
                                                             "vote_pack"}
    everything = {f"{m.__name__}.{name}": fn for m in modules for name, fn in _jit_functions(m).items()}

    def called_names(fn) -> set[str]:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn.fn)))
        return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} | \
               {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}

    covered = set(registry)
    frontier = list(registry)
    while frontier:
        names = called_names(everything[frontier.pop()])
        for qualified, fn in everything.items():
            if qualified not in covered and fn.fn.__name__ in names:
                covered.add(qualified)
                frontier.append(qualified)
    assert not set(everything) - covered, (
        f"@triton.jit functions neither registered (kernels._launch.register) nor called by a registered kernel: "
        f"{sorted(set(everything) - covered)}")
    # every launch goes through _launch.launch (which checks it against the registry)
    for m in modules:
        source = Path(m.__file__).read_text()
        for name in _jit_functions(m):
            direct = re.findall(rf"\b{name}\s*\[[^\]]*\]\s*\(", source)
            assert not direct, f"{m.__name__} launches {name} directly; use kernels._launch.launch()"


def test_launch_refuses_what_is_not_registered(monkeypatch):
    from sparkle_fast.kernels import vote_pack

    passes, out = torch.zeros(2, 64, dtype=torch.uint8), torch.zeros(8, dtype=torch.uint8)
    args = (passes, out, 2, 64, 2)
    monkeypatch.setenv(_launch.ENV_BLOCKS, "gpu")
    _launch.check_launch(vote_pack.vote_u8_kernel, args, dict(PACK_OUT=True, BLOCK_BYTES=256), 4)
    with pytest.raises(RuntimeError, match="not a registered variant"):
        _launch.check_launch(vote_pack.vote_u8_kernel, args, dict(PACK_OUT=True, BLOCK_BYTES=128), 4)
    with pytest.raises(RuntimeError, match="not a registered variant"):
        _launch.check_launch(vote_pack.vote_u8_kernel, args, dict(PACK_OUT=True, BLOCK_BYTES=256), 8)
    with pytest.raises(RuntimeError, match="do not match the registered signature"):
        _launch.check_launch(vote_pack.vote_u8_kernel, (passes.int(),) + args[1:],
                             dict(PACK_OUT=True, BLOCK_BYTES=256), 4)
    monkeypatch.delenv(_launch.ENV_BLOCKS)
    if _launch.interpreted():  # interpreter sizes: block sizes are not compared, the other constexprs are
        _launch.check_launch(vote_pack.vote_u8_kernel, args, dict(PACK_OUT=True, BLOCK_BYTES=4096), 4)
        with pytest.raises(RuntimeError, match="not a registered variant"):
            _launch.check_launch(vote_pack.vote_u8_kernel, args, dict(PACK_OUT=2, BLOCK_BYTES=4096), 4)

    @__import__("triton").jit
    def stray_kernel(x_ptr):
        pass

    with pytest.raises(RuntimeError, match="not registered"):
        _launch.check_launch(stray_kernel, (passes,), {}, 4)


def test_block_size_mode_is_read_at_launch(monkeypatch):
    monkeypatch.setenv(_launch.ENV_BLOCKS, "gpu")
    assert _launch.gpu_sizes() and _launch.pick("gpu", "interp") == "gpu"
    monkeypatch.setenv(_launch.ENV_BLOCKS, "bogus")
    with pytest.raises(ValueError, match="SPARKLE_FAST_TRITON_BLOCKS"):
        _launch.gpu_sizes()
    monkeypatch.delenv(_launch.ENV_BLOCKS)
    assert _launch.gpu_sizes() == (not _launch.interpreted())


# --- canaries: no launcher writes outside its output buffers ----------------------------------------------------------

_GUARD = 64


def _guarded(shape, dtype, fill):
    """A contiguous tensor of `shape` in the middle of a buffer with _GUARD canary elements before and after, all
    set to fill. Returns (view, canaries_intact)."""
    n = 1
    for d in shape:
        n *= d
    buffer = torch.full((n + 2 * _GUARD,), fill, dtype=dtype)
    view = buffer[_GUARD:_GUARD + n].view(shape)

    def intact() -> bool:
        return bool((buffer[:_GUARD] == fill).all() and (buffer[_GUARD + n:] == fill).all())

    return view, intact


def test_no_kernel_writes_outside_its_outputs(triton_blocks):
    """Every launcher of kernels/ writes into outputs guarded by canaries on both sides, on shapes whose last
    program is partial (with the GPU's block sizes too); what it writes equals the op's result."""
    from sparkle_fast import ops
    from sparkle_fast.kernels import canny as canny_k
    from sparkle_fast.kernels import compose as compose_k
    from sparkle_fast.kernels import lucas_kanade as lk_k
    from sparkle_fast.kernels import mask_augment as mask_k
    from sparkle_fast.ops import optical_flow

    rng = np.random.default_rng(0)
    T, H, W = 2, 19, 131  # 2 * 19 * 131 = 4978 pixels: 5 blocks of 1024, the last partial; 2 x 3 tiles of 16x64
    rgb = torch.from_numpy(rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8))
    gray_want = ops.rgb_to_gray(rgb.numpy())
    gray, ok = _guarded((T, H, W), torch.uint8, 0xA5)
    canny_k.rgb_to_gray(rgb, gray)
    assert ok() and np.array_equal(gray.numpy(), gray_want)

    edges_want = ops.canny(rgb.numpy(), 40, 90)
    state, ok_state = _guarded((T, H, W), torch.uint8, 0xA5)
    label, ok_label = _guarded((T, H, W), torch.int32, -7)
    edges, ok_edges = _guarded((T, H, W), torch.uint8, 0xA5)
    canny_k.nms_threshold(rgb, True, 40, 90, state, label)
    canny_k.hysteresis_links(state, label)
    canny_k.edges_from_links(state, label, edges)
    assert ok_state() and ok_label() and ok_edges() and np.array_equal(edges.numpy(), edges_want)

    mask = torch.from_numpy((rng.random((T, H, W)) < 0.4).astype(np.uint8))
    for packed in (False, True):
        m = torch.from_numpy(np.packbits(mask.numpy().ravel())) if packed else mask
        out, ok = _guarded((T * H * W, 3), torch.uint8, 0xA5)
        compose_k.compose(gray.reshape(-1), edges.reshape(-1), m, packed, out)
        want = ops.compose_edges(gray.numpy(), edges.numpy(), mask.numpy().astype(bool))
        assert ok() and np.array_equal(out.numpy().reshape(T, H, W, 3), want)

    dilated, ok = _guarded((T, H, W), torch.uint8, 0xA5)
    mask_k.dilate(mask, 2, dilated)
    assert ok() and np.array_equal(dilated.numpy() != 0, ops.dilate_mask(mask.numpy(), 2))
    filled, ok = _guarded((T, H, W), torch.uint8, 0xA5)
    vertices = torch.tensor([[[3, 2], [40, 5], [20, 15]], [[0, 0], [130, 0], [130, 18]]], dtype=torch.int32)
    mask_k.fill_polygons(vertices, torch.tensor([3, 3], dtype=torch.int32), filled)
    assert ok() and filled.sum() > 0

    prev, nxt = (torch.from_numpy(rng.integers(0, 256, (1, 40, 48), dtype=np.uint8)).float() for _ in range(2))
    dx, dy = optical_flow._scharr(prev)
    n = 5  # 3 programs of the GPU's 2 points
    points = torch.from_numpy(rng.uniform(5, 35, (n, 2)).astype(np.float32))
    next_pts, ok_pts = _guarded((n, 2), torch.float32, -123.0)
    next_pts.copy_(points)
    status, ok_status = _guarded((n,), torch.int8, 7)
    status.fill_(1)
    err, ok_err = _guarded((n,), torch.float32, -123.0)
    lk_k.track_level(prev, nxt, dx, dy, points, next_pts, status, err, n, 0, True, 15, 10, 1e-4, 1e-4)
    assert ok_pts() and ok_status() and ok_err()
    assert set(status.tolist()) <= {0, 1} and bool(torch.isfinite(next_pts).all())
