"""The line-art extractor (sparkle_fast.models.lineart) against controlnet_aux's LineartDetector, the annotator
ControlNet runs, for the same random weights.

Tolerance (CPU, float32): at most 1 gray level apart on any pixel, on fewer than 0.1% of the pixels (our frames go
through the generator as a batch, theirs one by one: float sums in another order, then a truncation to uint8)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from sparkle_fast.models.lineart import COARSE_FILE, FINE_FILE, LineartDetector, LineartGenerator, detect_size

MAX_LEVELS = 1
MAX_DIFFERING = 1e-3


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """ControlNet's generator (width 64, 3 residual blocks) with random weights, saved as their two files."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from controlnet_aux.lineart import Generator
    folder = tmp_path_factory.mktemp("lineart")
    for seed, name in ((0, FINE_FILE), (1, COARSE_FILE)):
        torch.manual_seed(seed)
        torch.save(Generator(3, 1, 3).state_dict(), folder / name)
    return folder


@pytest.fixture(scope="module")
def theirs(weights_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from controlnet_aux.lineart import LineartDetector as Reference
    return Reference.from_pretrained(str(weights_dir))


@pytest.fixture(scope="module")
def ours(weights_dir):
    return LineartDetector.from_pretrained(weights_dir, device="cpu", batch_size=2)


def _photo(height: int, width: int, shift: int = 0) -> np.ndarray:
    import cv2
    from skimage import data

    image = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.roll(image, shift, axis=1))


def _reference(theirs, frames, *, coarse=False, resolution=64):
    out = [theirs(f, coarse=coarse, detect_resolution=resolution, image_resolution=resolution, output_type="np")
           for f in frames]
    assert all(o.ndim == 3 and (o[..., 0] == o[..., 2]).all() for o in out)  # HWC3 of one map
    return np.stack([o[..., 0] for o in out])


def _assert_close(ours_out: np.ndarray, ref: np.ndarray) -> None:
    assert ours_out.dtype == np.uint8 and ours_out.shape == ref.shape
    diff = np.abs(ours_out.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= MAX_LEVELS, f"max difference {diff.max()}"
    assert (diff > 0).mean() < MAX_DIFFERING, f"{(diff > 0).mean():.2%} of pixels differ"
    assert ref.std() > 5  # the maps hold structure, not a constant


def test_fine_model_equals_controlnet_aux_over_a_batch(ours, theirs):
    rng = np.random.default_rng(0)
    frames = np.stack([_photo(64, 64), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), 255 - _photo(64, 64, 9)])
    # three frames with batch_size 2: a full and a partial batch
    _assert_close(ours(frames, detect_resolution=64), _reference(theirs, frames))


def test_coarse_model_equals_controlnet_aux(ours, theirs):
    frames = _photo(64, 64, 20)[None]
    got = ours(frames, coarse=True, detect_resolution=64)
    _assert_close(got, _reference(theirs, frames, coarse=True))
    assert not np.array_equal(got, ours(frames, detect_resolution=64))  # the coarse file is really used


@pytest.mark.parametrize("size, resolution", [((100, 150), 64), ((40, 60), 64)])
def test_resizing_equals_controlnet_aux(ours, theirs, size, resolution):
    """Down (INTER_AREA) and up (INTER_LANCZOS4) to the detect size, then back to the size ControlNet returns."""
    frame = _photo(*size)[None]
    ref = _reference(theirs, frame, resolution=resolution)
    assert ref.shape[1:] == detect_size(*size, resolution)
    _assert_close(ours(frame, detect_resolution=resolution, size=ref.shape[1:]), ref)
    # Default output size: the input's, resized with INTER_LINEAR from the detect-size map.
    assert ours(frame, detect_resolution=resolution).shape == (1, *size)


def test_detect_size_rounds_like_controlnet():
    assert detect_size(720, 1280, 512) == (512, 896)
    assert detect_size(1080, 1920, 512) == (512, 896)
    assert detect_size(64, 128, 64) == (64, 128)
    assert detect_size(100, 150, 64) == (64, 64 * round(96 / 64))


def test_torch_input_comes_back_as_torch_and_one_frame_works():
    detector = LineartDetector.tiny(seed=3)
    frames = np.random.default_rng(1).integers(0, 256, (3, 32, 48, 3), dtype=np.uint8)
    out = detector(frames, detect_resolution=64)  # detect size 64 x 96, back to 32 x 48
    assert out.shape == (3, 32, 48) and out.dtype == np.uint8
    as_torch = detector(torch.from_numpy(frames), detect_resolution=64)
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.uint8
    assert np.array_equal(as_torch.numpy(), out)
    # A non-contiguous view and one (H, W, 3) frame give the same maps.
    strided = np.ascontiguousarray(frames[:, :, ::-1])[:, :, ::-1]
    assert np.array_equal(detector(strided, detect_resolution=64), out)
    assert np.array_equal(detector(frames[1], detect_resolution=64), out[1])
    with pytest.raises(ValueError, match="empty detect size"):
        detector(frames, detect_resolution=32)


def test_bad_inputs_and_files_are_named(tmp_path):
    detector = LineartDetector.tiny()
    with pytest.raises(ValueError, match=r"uint8 RGB \(T, H, W, 3\)"):
        detector(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        detector(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="no such line-art model folder"):
        LineartDetector.from_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=FINE_FILE):
        LineartDetector.from_pretrained(tmp_path)
    (tmp_path / FINE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read line-art weights"):
        LineartDetector.from_pretrained(tmp_path)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / FINE_FILE)
    with pytest.raises(ValueError, match="not an informative-drawings"):
        LineartDetector.from_pretrained(tmp_path)
    # The fine file alone loads; asking for the coarse model then names the missing file.
    torch.save(LineartGenerator(width=4, blocks=2).state_dict(), tmp_path / FINE_FILE)
    alone = LineartDetector.from_pretrained(tmp_path, device="cpu")
    assert (alone.model.width, alone.model.blocks) == (4, 2)
    with pytest.raises(FileNotFoundError, match=COARSE_FILE):
        alone(np.zeros((1, 16, 16, 3), np.uint8), coarse=True, detect_resolution=16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu(weights_dir):
    """On CUDA with TF32 off, the same float32 maps as on the CPU within the stated tolerance."""
    frames = np.stack([_photo(128, 192, s) for s in (0, 7, 30)])
    cpu = LineartDetector.from_pretrained(weights_dir, device="cpu")(frames, detect_resolution=128)
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        gpu = LineartDetector.from_pretrained(weights_dir, device="cuda")
        out = gpu(torch.from_numpy(frames).cuda(), detect_resolution=128)
    finally:
        torch.backends.cudnn.allow_tf32 = previous
    assert out.is_cuda
    _assert_close(out.cpu().numpy(), cpu)
