"""sparkle-fast: a GPU kernel core and a thin driver for the Sparkle video background-replacement pipeline.

Layers (see docs/ARCHITECTURE.md):
  sparkle_fast.ops       public ops on numpy / torch / cupy arrays, each with a numpy reference
  sparkle_fast.kernels   Triton kernels behind the ops
  sparkle_fast._C        CUDA C++ kernels behind the ops (built from csrc/ when nvcc is found)
  sparkle_fast.formats   the Sparkle dataset's file formats (bit-packed mask npz, ...)
  sparkle_fast.video     probe, decode (DALI NVDEC on GPU, PyAV on CPU), 2-FPS sampling, Sparkle clips, encode
  sparkle_fast.engines   TensorRT engines
  sparkle_fast.driver    the `sparkle-fast` command
"""

from sparkle_fast import formats, ops
from sparkle_fast._build import build_info
from sparkle_fast._version import __version__

__all__ = ["__version__", "build_info", "formats", "ops"]
