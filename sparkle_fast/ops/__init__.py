"""Public ops: pure functions on numpy arrays, torch tensors (CPU or CUDA) and cupy arrays.

Each op family lives in one module with its numpy reference (the definition) and its dispatch to the Triton kernels
(sparkle_fast.kernels) or the CUDA kernels (sparkle_fast._C). Every op takes backend="auto"|"reference"|"triton"|
"cuda"; the environment variable SPARKLE_FAST_BACKEND replaces "auto". See sparkle_fast/ops/_dispatch.py.
"""

from sparkle_fast.ops._dispatch import BACKENDS, BackendUnavailableError
from sparkle_fast.ops.vote_pack import pack_bits, unpack_bits, vote_and_pack, vote_masks

__all__ = ["BACKENDS", "BackendUnavailableError", "pack_bits", "unpack_bits", "vote_and_pack", "vote_masks"]
