"""Build sparkle-fast: the Python packages plus one pybind11 extension, sparkle_fast._C.

What gets installed
  sparkle_fast            <- sparkle_fast/
  sparkle_fast.kernels    <- kernels/   (Triton kernels)
  sparkle_fast.engines    <- engines/   (TensorRT engines)
  sparkle_fast.driver     <- driver/    (CLI, manifest, runners)
No generic top-level name (``kernels``, ``driver``) is installed: other PyPI packages own those.

The extension
  csrc/*.cpp are compiled with the host compiler; csrc/*.cu with nvcc when CUDA is enabled.
  SPARKLE_FAST_CUDA=auto (default): use nvcc if it is found; 1: require it; 0: build without CUDA.
  SPARKLE_FAST_CUDA_ARCHS="90" (default): semicolon-separated compute capabilities; each gets SASS and the
  last one also gets PTX, so newer GPUs can JIT it. Example: SPARKLE_FAST_CUDA_ARCHS="80;90".
  The CUDA runtime is linked statically and libtorch is not used: kernels take device pointers and the stream as
  integers, so the module imports on machines without a GPU or a CUDA driver.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension
from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
CSRC = "csrc"


def _read_version() -> str:
    text = (ROOT / "sparkle_fast" / "_version.py").read_text()
    return re.search(r'__version__\s*=\s*"([^"]+)"', text).group(1)


class CudaToolkit:
    """Where nvcc is and what it can build, found by asking nvcc itself (it may be a wrapper script)."""

    def __init__(self, nvcc: str):
        self.nvcc = nvcc
        version_text = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
        self.version = re.search(r"release (\d+\.\d+)", version_text).group(1)
        # `nvcc --dryrun` prints the include and library folders it would use.
        with tempfile.TemporaryDirectory() as tmp:
            probe = Path(tmp) / "probe.cu"
            probe.write_text("__global__ void probe() {}\n")
            dry = subprocess.run([nvcc, "--dryrun", "-c", str(probe)], capture_output=True, text=True, cwd=tmp).stderr
        self.library_dirs = [d for d in re.findall(r'-L"?([^"\s]+)', dry) if not d.rstrip("/").endswith("stubs")]
        if not any((Path(d) / "libcudart_static.a").exists() for d in self.library_dirs):
            raise RuntimeError(f"nvcc at {nvcc} was found but libcudart_static.a was not in {self.library_dirs}")

    @staticmethod
    def find() -> CudaToolkit | None:
        mode = os.environ.get("SPARKLE_FAST_CUDA", "auto").strip().lower()
        if mode not in ("auto", "0", "1"):
            raise SystemExit(f"SPARKLE_FAST_CUDA={mode!r}: expected auto, 0 or 1")
        if mode == "0":
            return None
        cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
        nvcc = str(Path(cuda_home) / "bin" / "nvcc") if cuda_home else shutil.which("nvcc")
        if nvcc and Path(nvcc).exists():
            return CudaToolkit(nvcc)
        if mode == "1":
            raise SystemExit("SPARKLE_FAST_CUDA=1 but nvcc was not found: put it on PATH or set CUDA_HOME")
        print("sparkle-fast: nvcc not found, building sparkle_fast._C without CUDA", file=sys.stderr)
        return None


def _archs() -> list[str]:
    archs = [a.strip() for a in os.environ.get("SPARKLE_FAST_CUDA_ARCHS", "90").split(";") if a.strip()]
    if not archs or not all(a.isdigit() for a in archs):
        raise SystemExit(f"SPARKLE_FAST_CUDA_ARCHS={archs!r}: expected compute capabilities such as '90' or '80;90'")
    return archs


class BuildWithOptionalCuda(build_ext):
    """build_ext that compiles .cu sources with nvcc and links them in, or drops them when CUDA is off."""

    def build_extension(self, ext):
        cu_sources = [s for s in ext.sources if s.endswith(".cu")]
        ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
        toolkit = CudaToolkit.find()
        macros = [("SPARKLE_FAST_VERSION", f'"{_read_version()}"')]
        if toolkit is not None:
            archs = _archs()
            objects = [self._nvcc(toolkit, src, archs) for src in cu_sources]
            ext.extra_objects = list(ext.extra_objects or []) + objects
            ext.library_dirs = list(ext.library_dirs or []) + toolkit.library_dirs
            # Static cudart: no libcudart.so needed at run time; libcuda.so (the driver) is opened lazily.
            ext.libraries = list(ext.libraries or []) + ["cudart_static", "rt", "pthread", "dl"]
            macros += [
                ("SPARKLE_FAST_WITH_CUDA", "1"),
                ("SPARKLE_FAST_CUDA_VERSION", f'"{toolkit.version}"'),
                ("SPARKLE_FAST_CUDA_ARCHS", f'"{";".join(archs)}"'),
            ]
        ext.define_macros = list(ext.define_macros or []) + macros
        super().build_extension(ext)

    def _nvcc(self, toolkit: CudaToolkit, source: str, archs: list[str]) -> str:
        obj = Path(self.build_temp) / (Path(source).stem + ".cu.o")
        obj.parent.mkdir(parents=True, exist_ok=True)
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
        cmd = [
            toolkit.nvcc, "-c", source, "-o", str(obj),
            "-O3", "-std=c++17", "-lineinfo", "--expt-relaxed-constexpr",
            # No a*b+c -> fma contraction: device double arithmetic then rounds like the host twin and the numpy
            # reference, so RANSAC models and scores are equal bit for bit on every backend.
            "-fmad=false",
            "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden",
            f"-I{ROOT / CSRC}", *gencode,
        ]
        print(" ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
        return str(obj)


# Top-level folders installed inside the sparkle_fast namespace (their names are too generic for the top level).
MAPPED_FOLDERS = ("kernels", "engines", "driver")


def _packages() -> list[str]:
    """sparkle_fast with all its subpackages, and each mapped folder with its own subpackages."""
    packages = ["sparkle_fast", *(f"sparkle_fast.{p}" for p in find_packages("sparkle_fast"))]
    for folder in MAPPED_FOLDERS:
        packages += [f"sparkle_fast.{folder}", *(f"sparkle_fast.{folder}.{p}" for p in find_packages(folder))]
    return packages


extension = Pybind11Extension(
    "sparkle_fast._C",
    sources=sorted(str(p.relative_to(ROOT)) for p in (ROOT / CSRC).glob("*.cpp"))
    + sorted(str(p.relative_to(ROOT)) for p in (ROOT / CSRC).glob("*.cu")),
    include_dirs=[CSRC],
    cxx_std=17,
    extra_compile_args=["-O3"],
)

setup(
    version=_read_version(),
    packages=_packages(),
    package_dir={"sparkle_fast": "sparkle_fast", **{f"sparkle_fast.{folder}": folder for folder in MAPPED_FOLDERS}},
    package_data={"sparkle_fast": ["data/*.toml"]},
    ext_modules=[extension],
    cmdclass={"build_ext": BuildWithOptionalCuda},
)
