"""The NVDEC path (DALI "mixed" backend) and CUDA outputs. Marked `gpu`: skipped without a CUDA device."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from video_clips import luma, make_clip

from sparkle_fast import video
from sparkle_fast.video import _dali

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(_dali.dali_import_error() is not None, reason="nvidia.dali does not import")]


@pytest.fixture(scope="module")
def gpu_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_clips")
    return {
        "h264": make_clip(root / "h264.mp4", width=176, height=144, frames=33),
        "h264_bframes": make_clip(root / "bframes.mp4", width=176, height=144, frames=33, x264_preset="medium"),
        "h264_ntsc": make_clip(root / "ntsc.mp4", width=176, height=144, frames=31, fps=Fraction(30000, 1001)),
        "vp9": make_clip(root / "vp9.webm", codec="libvpx-vp9", width=176, height=144, frames=17),
        "mpeg2": make_clip(root / "mpeg2.mpg", codec="mpeg2video", frames=9, fps=25),
    }


@pytest.mark.parametrize("name, selection", [("h264", {}), ("h264", {"fps": 2}), ("h264_ntsc", {"fps": 2}),
                                             ("h264", {"indices": [32, 0, 7, 7]}), ("vp9", {}),
                                             ("h264_bframes", {}), ("h264_bframes", {"fps": 2})])
def test_nvdec_matches_pyav(gpu_clips, name, selection):
    """NVDEC output on the GPU equals FFmpeg's within the luma tolerance of the CPU DALI test."""
    nvdec = video.read_frames(gpu_clips[name], device="cuda", backend="dali", **selection)
    pyav = video.read_frames(gpu_clips[name], device="cpu", backend="pyav", **selection)
    assert nvdec.frames.device.type == "cuda" and nvdec.frames.dtype == torch.uint8
    np.testing.assert_array_equal(nvdec.indices, pyav.indices)
    assert nvdec.frames.shape == pyav.frames.shape
    difference = np.abs(luma(nvdec.frames) - luma(pyav.frames))
    assert difference.mean() <= 2.0 and difference.max() <= 6.0


def test_auto_uses_nvdec_for_h264_and_pyav_for_mpeg2(gpu_clips):
    device = torch.device("cuda")
    assert video.resolve_backend(video.probe(gpu_clips["h264"]), device) == "dali"
    assert video.resolve_backend(video.probe(gpu_clips["mpeg2"]), device) == "pyav"
    out = video.read_frames(gpu_clips["mpeg2"], device="cuda")
    assert out.frames.device.type == "cuda" and out.frames.shape == (9, 48, 64, 3)


def test_resize_on_gpu_matches_cpu(gpu_clips):
    frames = video.read_frames(gpu_clips["h264"], indices=[0, 5], backend="pyav").frames
    on_gpu = video.resize_frames(frames.cuda(), (97, 131)).cpu()
    assert (on_gpu.int() - video.resize_frames(frames, (97, 131)).int()).abs().max() <= 1


def test_gpu_loader_batches_with_nvdec_and_reports_errors(gpu_clips, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n" * 10)
    paths = [gpu_clips["h264"], text, gpu_clips["vp9"], gpu_clips["mpeg2"], gpu_clips["h264_ntsc"]]
    loader = video.VideoLoader(paths, fps=2, size=(72, 88), device="cuda", batch_size=2)
    assert loader.engine == "dali"
    items = list(loader)
    assert [item.ok for item in items] == [True, False, True, True, True]
    assert isinstance(items[1].error, video.NotAVideoError)
    for item in (items[0], items[2], items[3], items[4]):
        assert item.frames.device.type == "cuda" and item.frames.shape[1:] == (72, 88, 3)
    assert list(items[0].indices) == [0, 8, 16, 24, 32] and list(items[4].indices) == [0, 14, 29]
    alone = video.read_frames(gpu_clips["h264"], fps=2, size=(72, 88), device="cuda", backend="dali")
    assert torch.equal(items[0].frames, alone.frames)


def test_write_video_from_gpu_tensor(gpu_clips, tmp_path):
    frames = video.read_frames(gpu_clips["h264"], device="cuda", max_frames=5).frames
    path = video.write_video(tmp_path / "from_gpu.mp4", frames, fps=16)
    assert video.probe(path).frame_count == 5
