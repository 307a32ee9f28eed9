"""Public ops: pure functions on numpy arrays, torch tensors (CPU or CUDA) and cupy arrays.

Each op family lives in one module with its numpy reference (the definition) and its dispatch to the Triton kernels
(sparkle_fast.kernels) or the CUDA kernels (sparkle_fast._C). Every op takes backend="auto"|"reference"|"triton"|
"cuda"; the environment variable SPARKLE_FAST_BACKEND replaces "auto". See sparkle_fast/ops/_dispatch.py.
"""

from sparkle_fast.ops._dispatch import BACKENDS, BackendUnavailableError
from sparkle_fast.ops.compose import compose_edges, control_video, copy_paste_composite, foreground_only_control
from sparkle_fast.ops.edges import canny, rgb_to_gray
from sparkle_fast.ops.homography import find_homographies
from sparkle_fast.ops.mask_augment import augment_mask, dilate_mask
from sparkle_fast.ops.optical_flow import select_points, track_points
from sparkle_fast.ops.vote_pack import pack_bits, unpack_bits, vote_and_pack, vote_masks

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "augment_mask",
    "canny",
    "compose_edges",
    "control_video",
    "copy_paste_composite",
    "dilate_mask",
    "find_homographies",
    "foreground_only_control",
    "pack_bits",
    "rgb_to_gray",
    "select_points",
    "track_points",
    "unpack_bits",
    "vote_and_pack",
    "vote_masks",
]
