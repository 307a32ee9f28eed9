"""The Sparkle mask npz: round trips, Sparkle's own loading recipe, errors that name the file, atomic writes."""

from __future__ import annotations

import math
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkle_fast import formats, ops


def sparkle_readme_load(path) -> np.ndarray:
    """The loader printed in Sparkle's release README, verbatim in behaviour."""
    data = np.load(path)
    packed_mask = data["mask"]
    shape = tuple(int(s) for s in data["shape"])
    total = shape[0] * shape[1] * shape[2]
    return np.unpackbits(packed_mask)[:total].reshape(shape).astype(bool)


@settings(max_examples=25, deadline=None)
@given(t=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 9), density=st.sampled_from([0.0, 0.3, 1.0]),
       compress=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_round_trip_and_sparkle_recipe(tmp_path_factory, t, h, w, density, compress, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((t, h, w)) < density
    path = tmp_path_factory.mktemp("masks") / "Sparkle_location_000000.npz"
    formats.save_mask(path, mask, compress=compress)
    np.testing.assert_array_equal(formats.load_mask(path), mask)
    np.testing.assert_array_equal(sparkle_readme_load(path), mask)
    packed, shape = formats.load_packed_mask(path)
    assert shape == (t, h, w) and packed.dtype == np.uint8
    np.testing.assert_array_equal(packed, np.packbits(mask.ravel()))


def test_saves_vote_and_pack_output_and_torch_masks(tmp_path):
    rng = np.random.default_rng(0)
    passes = rng.random((5, 3, 7, 9)) < 0.5
    packed = ops.vote_and_pack(torch.from_numpy(passes))
    path = formats.save_packed_mask(tmp_path / "voted.npz", packed, (3, 7, 9))
    np.testing.assert_array_equal(sparkle_readme_load(path), passes.sum(0) >= 3)
    formats.save_mask(tmp_path / "t.npz", torch.from_numpy(passes[0]).to(torch.uint8) * 255)
    np.testing.assert_array_equal(formats.load_mask(tmp_path / "t.npz"), passes[0])


def _write_npy(path, array):
    with open(path, "wb") as handle:  # .npy content under an .npz name
        np.save(handle, array)


def _write_npz(path, **arrays):
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: None, "no such mask file"),
        (lambda p: p.write_bytes(b"this is not a zip file at all"), "not a readable npz"),
        (lambda p: _write_npy(p, np.zeros(3)), "not an npz archive"),
        (lambda p: _write_npz(p, shape=np.array([1, 2, 3])), r"missing key\(s\) \['mask'\]"),
        (lambda p: _write_npz(p, mask=np.zeros(1, np.uint8)), r"missing key\(s\) \['shape'\]"),
        (lambda p: _write_npz(p, mask=np.zeros(1, np.float32), shape=np.array([1, 2, 3])), "1-D uint8"),
        (lambda p: _write_npz(p, mask=np.zeros(2, np.uint8), shape=np.array([2, 3])), "three non-negative"),
        (lambda p: _write_npz(p, mask=np.zeros(2, np.uint8), shape=np.array([1.0, 2.0, 3.0])), "three non-negative"),
        (lambda p: _write_npz(p, mask=np.zeros(2, np.uint8), shape=np.array([2, 3, 5])), "has 2 bytes but shape"),
        (lambda p: _write_npz(p, mask=np.zeros(9, np.uint8), shape=np.array([2, 3, 5])), "has 9 bytes but shape"),
    ],
    ids=["missing", "not-zip", "npy", "no-mask", "no-shape", "float-mask", "2d-shape", "float-shape",
         "too-few-bytes", "too-many-bytes"],
)
def test_load_errors_name_the_file(tmp_path, make, message):
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(formats.MaskFileError, match=message) as error:
        formats.load_mask(path)
    assert str(path) in str(error.value)


def test_truncated_file_is_a_mask_file_error(tmp_path):
    path = formats.save_mask(tmp_path / "m.npz", np.ones((2, 16, 16), bool))
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 5):
        broken = tmp_path / f"cut{cut}.npz"
        broken.write_bytes(data[:cut])
        with pytest.raises(formats.MaskFileError, match=str(broken)):
            formats.load_mask(broken)


def test_write_is_atomic(tmp_path, monkeypatch):
    """A failure while writing leaves the previous file intact and no temporary file behind."""
    path = tmp_path / "mask.npz"
    old = np.zeros((1, 4, 4), bool)
    formats.save_mask(path, old)

    def broken_writer(handle, **arrays):
        handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", broken_writer)
    with pytest.raises(OSError, match="disk full"):
        formats.save_mask(path, np.ones((1, 4, 4), bool))
    np.testing.assert_array_equal(formats.load_mask(path), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.npz"]


def test_save_errors():
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        formats.save_mask("x.npz", np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="ceil"):
        formats.save_packed_mask("x.npz", np.zeros(3, np.uint8), (1, 4, 4))


def test_compression_shrinks_masks(tmp_path):
    mask = np.zeros((9, 72, 128), bool)
    mask[:, 20:50, 30:90] = True
    small = formats.save_mask(tmp_path / "c.npz", mask, compress=True).stat().st_size
    plain = formats.save_mask(tmp_path / "p.npz", mask, compress=False).stat().st_size
    assert plain >= math.ceil(mask.size / 8) and small < plain / 4
    with zipfile.ZipFile(tmp_path / "c.npz") as archive:
        assert sorted(archive.namelist()) == ["mask.npy", "shape.npy"]
