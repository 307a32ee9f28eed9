"""The build: what _C reports, that csrc/ compiles with nvcc where nvcc exists, and that the package works without
the extension."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import sparkle_fast

ROOT = Path(__file__).resolve().parents[1]
NVCC = shutil.which("nvcc")
CUDA_WANTED = os.environ.get("SPARKLE_FAST_CUDA", "auto") != "0"


def test_build_info_reports_the_extension():
    info = sparkle_fast.build_info()
    json.dumps(info)  # serialisable, for bench results and bug reports
    assert info["version"] == sparkle_fast.__version__
    assert info["extension"] is not None, f"sparkle_fast._C did not import: {info['extension_error']}"
    assert info["extension"]["version"] == sparkle_fast.__version__, "stale _C: rebuild with `make build`"
    assert info["libraries"]["numpy"]


@pytest.mark.skipif(NVCC is None or not CUDA_WANTED, reason="nvcc not found (or SPARKLE_FAST_CUDA=0)")
def test_extension_was_built_with_cuda_for_hopper():
    ext = sparkle_fast.build_info()["extension"]
    assert ext["cuda"] is True
    assert "sm_90" in ext["cuda_archs"] and any(a.startswith("compute_") for a in ext["cuda_archs"])
    from sparkle_fast._build import cuda_kernels

    kernels = cuda_kernels()
    assert kernels.cuda_runtime_version() >= 12000
    import torch

    # the same devices torch sees (0 without a GPU or driver; it answers rather than raising)
    assert kernels.cuda_device_count() == torch.cuda.device_count()
    if kernels.cuda_driver_version() == 0:
        assert kernels.cuda_device_count() == 0


@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
@pytest.mark.parametrize("source", sorted(p.name for p in (ROOT / "csrc").glob("*.cu")))
def test_cuda_sources_compile_for_sm90(tmp_path, source):
    """The current sources, not only the installed build, compile for the H100."""
    result = subprocess.run(
        [NVCC, "-c", str(ROOT / "csrc" / source), "-o", str(tmp_path / "out.o"), "-std=c++17",
         f"-I{ROOT / 'csrc'}", "-gencode=arch=compute_90,code=sm_90", "-Xcompiler", "-fPIC"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr


def test_package_imports_and_works_without_the_extension():
    """A checkout where _C failed to build: the package imports, reports why, references work, 'cuda' says no."""
    script = textwrap.dedent(
        """
        import importlib.abc, sys
        class BlockExtension(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "sparkle_fast._C":
                    raise ImportError("simulated: extension not built")
        sys.meta_path.insert(0, BlockExtension())
        import numpy as np, sparkle_fast
        from sparkle_fast import ops
        info = sparkle_fast.build_info()
        assert info["extension"] is None and "simulated" in info["extension_error"], info
        assert ops.vote_masks(np.ones((3, 1, 2, 2), np.uint8)).all()
        try:
            ops.vote_masks(np.ones((3, 1, 2, 2), np.uint8), backend="cuda")
        except ops.BackendUnavailableError as error:
            assert "built without CUDA" in str(error)
        else:
            raise AssertionError("backend='cuda' should be unavailable")
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_installed_namespace_has_no_generic_top_level_names():
    """kernels/, engines/ and driver/ are installed inside sparkle_fast only."""
    import sparkle_fast.driver
    import sparkle_fast.engines
    import sparkle_fast.kernels

    assert Path(sparkle_fast.kernels.__file__).parent.name == "kernels"
    assert Path(sparkle_fast.driver.__file__).parent.name == "driver"
    assert Path(sparkle_fast.engines.__file__).parent.name == "engines"
    probe = ("import importlib.util as u; "
             "print([n for n in ('kernels', 'driver', 'engines', 'bench') if u.find_spec(n) is not None])")
    outside_the_checkout = Path(tempfile.mkdtemp())
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=outside_the_checkout)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_public_ops_are_not_shadowed_by_submodules():
    """`ops.canny` must be the function: a submodule named like an exported op would replace it on import."""
    from sparkle_fast import ops

    submodules = {p.stem for p in (ROOT / "sparkle_fast" / "ops").glob("*.py")}
    for name in ops.__all__:
        assert name not in submodules, f"sparkle_fast/ops/{name}.py shadows the op ops.{name}"
        assert callable(getattr(ops, name)) or isinstance(getattr(ops, name), tuple), name


def test_wheel_holds_every_package_and_data_file(tmp_path):
    """A regular (non-editable) wheel: every subpackage of sparkle_fast, the mapped folders inside the namespace,
    the package data, and no generic top-level names. Built without CUDA to keep it quick."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", str(tmp_path),
         str(ROOT)],
        capture_output=True, text=True, env={**os.environ, "SPARKLE_FAST_CUDA": "0"}, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import zipfile

    (wheel,) = tmp_path.glob("sparkle_fast-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"sparkle_fast/{p.relative_to(ROOT / 'sparkle_fast').as_posix()}"
                for p in (ROOT / "sparkle_fast").rglob("*") if p.suffix in (".py", ".toml")}
    expected |= {f"sparkle_fast/{folder}/{p.relative_to(ROOT / folder).as_posix()}"
                 for folder in ("kernels", "engines", "driver") for p in (ROOT / folder).rglob("*.py")}
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    assert any(n.startswith("sparkle_fast/_C") and n.endswith(".so") for n in names)
    assert not {n.split("/")[0] for n in names} & {"kernels", "engines", "driver", "bench", "tests"}
