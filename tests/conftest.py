"""Test setup shared by every test module.

- Without a CUDA device, Triton kernels run under its CPU interpreter: TRITON_INTERPRET=1 must be set before triton
  is first imported, so it is set here, at collection time. On a GPU machine Triton runs for real.
- Tests marked `gpu` are skipped when torch sees no CUDA device.
"""

from __future__ import annotations

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Keep the suite's own backend choices: a developer's SPARKLE_FAST_BACKEND would silently change what "auto" tests.
os.environ.pop("SPARKLE_FAST_BACKEND", None)


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
