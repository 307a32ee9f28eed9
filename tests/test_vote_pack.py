"""vote_masks / vote_and_pack / pack_bits / unpack_bits: every backend equals the reference, bit for bit.

The reference itself is checked against an independent one-line oracle. On this CPU-only CI the Triton kernels run
under the interpreter on torch CPU tensors, and the CUDA kernels' per-thread code runs through its host twin
(sparkle_fast._C.vote_*_host, same source as the GPU threads); the CUDA kernels proper run in the `gpu` tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkle_fast import ops
from sparkle_fast._build import extension
from sparkle_fast.ops import vote_pack as vote_pack_module

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- inputs and the oracle -----------------------------------------------------------------------------------------


def oracle_vote(passes: np.ndarray, min_votes: int | None = None) -> np.ndarray:
    """The definition in one line, independent of the library: count nonzero passes per pixel."""
    n = passes.shape[0]
    return (passes != 0).sum(axis=0) >= (n // 2 + 1 if min_votes is None else min_votes)


def make_passes(rng: np.random.Generator, shape, density: float, dtype: str) -> np.ndarray:
    """Random passes; uint8 foreground uses arbitrary nonzero values (not just 1), as a tracker's masks may."""
    fg = np.asarray(rng.random(shape) < density)
    if dtype == "bool":
        return fg
    return np.where(fg, rng.integers(1, 256, size=shape), 0).astype(np.uint8)


def pack_passes(passes: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """(N, T, H, W) -> (N, ceil(THW/8)) packed rows; with rng, the padding bits are filled with garbage, which the
    ops must ignore."""
    packed = np.stack([np.packbits(p.ravel() != 0) for p in passes])
    n_pixels = passes[0].size
    if rng is not None and n_pixels % 8:
        garbage = rng.integers(0, 256, size=packed.shape[0]).astype(np.uint8)
        packed[:, -1] |= garbage & np.uint8((1 << (8 - n_pixels % 8)) - 1)
    return packed


@st.composite
def vote_cases(draw, max_passes: int = 12, max_side: int = 9):
    n = draw(st.integers(1, max_passes))
    shape = (n, draw(st.integers(1, 4)), draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    density = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]))
    dtype = draw(st.sampled_from(["bool", "uint8"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    min_votes = draw(st.one_of(st.none(), st.integers(1, n)))
    return make_passes(rng, shape, density, dtype), min_votes, rng


def as_backend_input(array: np.ndarray, backend: str, device: str = "cpu"):
    """numpy for the reference; torch tensors (CPU under the interpreter, or CUDA) for the kernels."""
    if backend == "reference" and device == "cpu":
        return array
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def to_numpy(x) -> np.ndarray:
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def check_all_ops(passes: np.ndarray, min_votes, rng, backend: str, device: str = "cpu") -> None:
    """Every op on unpacked and packed inputs equals the oracle."""
    want = oracle_vote(passes, min_votes)
    want_packed = np.packbits(want.ravel())
    shape = passes.shape[1:]
    unpacked = as_backend_input(passes, backend, device)
    packed = as_backend_input(pack_passes(passes, rng), backend, device)

    got = ops.vote_masks(unpacked, min_votes, backend=backend)
    assert got.dtype in (np.bool_, torch.bool) and tuple(got.shape) == shape
    np.testing.assert_array_equal(to_numpy(got), want)
    np.testing.assert_array_equal(to_numpy(ops.vote_and_pack(unpacked, min_votes, backend=backend)), want_packed)
    np.testing.assert_array_equal(to_numpy(ops.vote_masks(packed, min_votes, shape=shape, backend=backend)), want)
    np.testing.assert_array_equal(
        to_numpy(ops.vote_and_pack(packed, min_votes, shape=shape, backend=backend)), want_packed)


# --- the reference -------------------------------------------------------------------------------------------------


@SETTINGS
@given(vote_cases())
def test_reference_matches_oracle(case):
    passes, min_votes, rng = case
    check_all_ops(passes, min_votes, rng, "reference")


@given(vote_cases(max_side=13))
@settings(max_examples=20, deadline=None)
def test_reference_chunks_agree_with_oracle(case):
    """The reference works in pixel chunks; chunk edges that split packed bytes must not matter."""
    passes, min_votes, rng = case
    original = vote_pack_module._REFERENCE_CHUNK_PIXELS
    vote_pack_module._REFERENCE_CHUNK_PIXELS = 16
    try:
        check_all_ops(passes, min_votes, rng, "reference")
    finally:
        vote_pack_module._REFERENCE_CHUNK_PIXELS = original


# --- Triton (interpreter on CPU here) ------------------------------------------------------------------------------


@SETTINGS
@given(vote_cases())
def test_triton_matches_reference(case):
    passes, min_votes, rng = case
    check_all_ops(passes, min_votes, rng, "triton")


def test_triton_spans_several_programs():
    """More pixels than one program owns (4096 bytes = 32768 pixels under the interpreter), ragged last block."""
    rng = np.random.default_rng(7)
    passes = make_passes(rng, (4, 2, 129, 131), 0.5, "uint8")
    check_all_ops(passes, None, rng, "triton")
    check_all_ops(passes, 1, rng, "triton")


# --- the CUDA kernels' per-thread code, through the host twin ------------------------------------------------------


def host_twin(passes_rows: np.ndarray, n_pixels: int, packed_in: bool, min_votes: int, pack_out: bool) -> np.ndarray:
    out = np.zeros((n_pixels + 7) // 8 if pack_out else n_pixels, dtype=np.uint8)
    launch = extension().vote_packed_host if packed_in else extension().vote_u8_host
    launch(passes_rows.ctypes.data, passes_rows.shape[0], n_pixels, min_votes, out.ctypes.data, pack_out)
    return out


def misaligned_copy(rows: np.ndarray, offset: int) -> np.ndarray:
    """A C-contiguous copy of rows whose data starts `offset` bytes past a 64-byte boundary."""
    buffer = np.zeros(rows.nbytes + 64 + offset, dtype=np.uint8)
    start = (-buffer.ctypes.data) % 64 + offset
    view = buffer[start:start + rows.nbytes].reshape(rows.shape)
    view[...] = rows
    return view


@SETTINGS
@given(vote_cases(max_passes=20, max_side=12), st.sampled_from([0, 1, 4, 8]))
def test_cuda_thread_code_matches_oracle_via_host_twin(case, offset):
    """Covers every kernel variant: 16-byte, 8-byte and byte-wise uint8 loads; 32-bit and 8-bit packed words
    (the variant follows the size and the alignment, which `offset` varies)."""
    passes, min_votes, rng = case
    n = passes.shape[0]
    k = n // 2 + 1 if min_votes is None else min_votes
    n_pixels = passes[0].size
    want = oracle_vote(passes, min_votes).ravel()
    rows = misaligned_copy(passes.reshape(n, -1).astype(np.uint8), offset)
    packed_rows = misaligned_copy(pack_passes(passes, rng), offset)
    np.testing.assert_array_equal(host_twin(rows, n_pixels, False, k, False), want)
    np.testing.assert_array_equal(host_twin(rows, n_pixels, False, k, True), np.packbits(want))
    np.testing.assert_array_equal(host_twin(packed_rows, n_pixels, True, k, False), want)
    np.testing.assert_array_equal(host_twin(packed_rows, n_pixels, True, k, True), np.packbits(want))


@pytest.mark.parametrize("n_pixels", [16 * 5, 8 * 3, 37, 32 * 3, 8])
def test_host_twin_counts_up_to_255_passes(n_pixels):
    """255 passes fill a byte lane exactly (SWAR counts) and all 8 bit-sliced planes."""
    rng = np.random.default_rng(n_pixels)
    rows = (rng.random((255, n_pixels)) < 0.97).astype(np.uint8)
    rows[:, 0] = 1  # a pixel every pass votes for: count 255
    for k in (1, 128, 254, 255):
        want = rows.sum(axis=0) >= k
        np.testing.assert_array_equal(host_twin(rows, n_pixels, False, k, False), want)
        packed = np.stack([np.packbits(r) for r in rows])
        np.testing.assert_array_equal(host_twin(packed, n_pixels, True, k, True), np.packbits(want))


SENTINEL = 0xA5  # prefilled output bytes: a byte the kernel should write but skips keeps it, and so does a canary


def _tie_heavy_rows(rng, n_passes: int, n_pixels: int) -> np.ndarray:
    """Rows where many pixels have exactly min_votes = n_passes // 2 + 1 votes (the >= / > boundary) or one fewer."""
    k = n_passes // 2 + 1
    votes = rng.choice([k - 1, k, k, n_passes, 0], size=n_pixels)
    rows = np.zeros((n_passes, n_pixels), np.uint8)
    for p in range(n_pixels):
        rows[rng.permutation(n_passes)[:votes[p]], p] = rng.integers(1, 256)
    return rows


def host_twin_into(rows: np.ndarray, n_pixels: int, packed_in: bool, min_votes: int, pack_out: bool,
                   threads: int) -> np.ndarray:
    """The host twin into a sentinel-filled 16-byte-aligned buffer with 32 canary bytes past the output; returns
    the output bytes after checking the canaries."""
    n_out = (n_pixels + 7) // 8 if pack_out else n_pixels
    buffer = np.full(n_out + 32 + 16, SENTINEL, np.uint8)
    start = (-buffer.ctypes.data) % 16
    out = buffer[start:start + n_out + 32]
    launch = extension().vote_packed_host if packed_in else extension().vote_u8_host
    launch(rows.ctypes.data, rows.shape[0], n_pixels, min_votes, out.ctypes.data, pack_out, threads)
    assert (out[n_out:] == SENTINEL).all(), "the host twin wrote past its output"
    return out[:n_out]


@pytest.mark.parametrize("threads", [1, 3])
def test_host_twin_every_alignment_and_tail_length(threads):
    """Every input alignment (0..15 bytes past a 16-byte boundary) and every tail length (n_pixels % 16 and, for
    packed rows, row bytes % 4), with ties at min_votes in every lane: every variant of the CUDA kernels' code,
    its grid-stride loop (emulated with `threads` threads) and its item counts; no output byte left unwritten and
    none written past the end."""
    rng = np.random.default_rng(threads)
    n_passes = 5
    for n_pixels in [16 * 3 + tail for tail in range(16)] + [8 * 9 + 1, 32 * 4 + 8, 32 * 5 + 24]:
        rows = _tie_heavy_rows(rng, n_passes, n_pixels)
        want = (rows != 0).sum(axis=0) >= n_passes // 2 + 1
        packed = np.stack([np.packbits(r != 0) for r in rows])
        for offset in range(16):
            u8 = misaligned_copy(rows, offset)
            pk = misaligned_copy(packed, offset)
            for pack_out in (False, True):
                expect = np.packbits(want) if pack_out else want
                got = host_twin_into(u8, n_pixels, False, n_passes // 2 + 1, pack_out, threads)
                np.testing.assert_array_equal(got, expect, err_msg=f"u8 n={n_pixels} offset={offset}")
                got = host_twin_into(pk, n_pixels, True, n_passes // 2 + 1, pack_out, threads)
                np.testing.assert_array_equal(got, expect, err_msg=f"packed n={n_pixels} offset={offset}")


def test_host_twin_rejects_a_bad_thread_count():
    rows = np.zeros((3, 16), np.uint8)
    out = np.zeros(16 + 16, np.uint8)
    aligned = out[(-out.ctypes.data) % 16:]
    with pytest.raises(ValueError, match="threads must be >= 1"):
        extension().vote_u8_host(rows.ctypes.data, 3, 16, 2, aligned.ctypes.data, False, 0)


# --- adversarial cases on every CPU backend ------------------------------------------------------------------------

CPU_BACKENDS = ["reference", "triton"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(
    "shape,density",
    [((4, 3, 5, 7), 0.0), ((4, 3, 5, 7), 1.0), ((3, 1, 1, 1), 1.0), ((1, 1, 1, 1), 0.0), ((6, 1, 1, 1), 0.5),
     ((1, 5, 3, 3), 0.5), ((255, 1, 3, 5), 0.5), ((254, 2, 2, 3), 0.5)],
    ids=["all-empty", "all-full", "1x1-full", "one-pixel-empty", "1x1-ties", "N=1", "N=255", "N=254-ties"],
)
def test_adversarial_shapes(backend, shape, density):
    rng = np.random.default_rng(sum(shape))
    passes = make_passes(rng, shape, density, "uint8")
    check_all_ops(passes, None, rng, backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ties_are_background(backend):
    passes = np.zeros((4, 1, 1, 3), dtype=np.uint8)
    passes[:2, 0, 0, 0] = 1  # 2 of 4: tie -> background
    passes[:3, 0, 0, 1] = 7  # 3 of 4: majority
    passes[:, 0, 0, 2] = 255
    got = to_numpy(ops.vote_masks(as_backend_input(passes, backend), backend=backend))
    np.testing.assert_array_equal(got.ravel(), [False, True, True])
    got = to_numpy(ops.vote_masks(as_backend_input(passes, backend), min_votes=2, backend=backend))
    np.testing.assert_array_equal(got.ravel(), [True, True, True])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_single_pass_is_identity(backend):
    rng = np.random.default_rng(3)
    passes = make_passes(rng, (1, 2, 5, 9), 0.5, "uint8")
    got = to_numpy(ops.vote_masks(as_backend_input(passes, backend), backend=backend))
    np.testing.assert_array_equal(got, passes[0] != 0)


NON_CONTIGUOUS_VIEWS = {  # the same view of a (N, T, H, W) array, in numpy and in torch
    "strided": (lambda a: a[:, ::2, :, 1::3], lambda t: t[:, ::2, :, 1::3]),
    "transposed": (lambda a: a.transpose(0, 1, 3, 2), lambda t: t.permute(0, 1, 3, 2)),
    "broadcast (zero strides)": (lambda a: np.broadcast_to(a[:, :1], a.shape), lambda t: t[:, :1].expand(t.shape)),
    "packed rows with a row stride": (lambda a: np.repeat(a, 2, axis=0)[::2], lambda t: t.repeat_interleave(2, 0)[::2]),
}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("view", list(NON_CONTIGUOUS_VIEWS))
def test_non_contiguous_inputs(backend, view):
    numpy_view, torch_view = NON_CONTIGUOUS_VIEWS[view]
    rng = np.random.default_rng(11)
    base = make_passes(rng, (5, 6, 7, 10), 0.5, "uint8")
    packed_in = view.startswith("packed")
    array = pack_passes(base) if packed_in else base
    x = numpy_view(array) if backend == "reference" else torch_view(torch.from_numpy(array))
    assert not (x.flags["C_CONTIGUOUS"] if isinstance(x, np.ndarray) else x.is_contiguous())
    got = ops.vote_masks(x, shape=base.shape[1:] if packed_in else None, backend=backend)
    np.testing.assert_array_equal(to_numpy(got), oracle_vote(base if packed_in else numpy_view(base)))


@pytest.mark.parametrize("packed_in", [False, True])
@pytest.mark.parametrize("pack_out", [False, True])
def test_triton_never_writes_past_its_output(triton_blocks, packed_in, pack_out):
    """The kernel-level launcher writes into the front of a sentinel-filled buffer: every output byte is written and
    the canary bytes past it are untouched, for pixel counts ending mid-byte and mid-program (GPU block sizes too)."""
    from sparkle_fast.kernels import vote_pack as kernels

    rng = np.random.default_rng(int(packed_in) * 2 + int(pack_out))
    for n_pixels in (1, 7, 9, 2048 * 2 + 13, 4096 * 8 + 5):
        rows = _tie_heavy_rows(rng, 3, n_pixels) if n_pixels < 5000 else (rng.random((3, n_pixels)) < 0.5).astype(
            np.uint8)
        want = (rows != 0).sum(axis=0) >= 2
        passes = np.stack([np.packbits(r != 0) for r in rows]) if packed_in else rows
        n_out = (n_pixels + 7) // 8 if pack_out else n_pixels
        buffer = torch.full((n_out + 64,), SENTINEL, dtype=torch.uint8)
        kernels.vote(torch.from_numpy(passes), n_pixels, packed_in, 2, buffer[:n_out], pack_out)
        assert (buffer[n_out:] == SENTINEL).all(), f"wrote past the output (n_pixels={n_pixels})"
        np.testing.assert_array_equal(buffer[:n_out].numpy(), np.packbits(want) if pack_out else want)


# --- pack_bits / unpack_bits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@given(shape=st.lists(st.integers(0, 7), min_size=0, max_size=4), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from(["bool", "uint8"]))
@SETTINGS
def test_pack_bits_equals_numpy_and_unpack_inverts(backend, shape, seed, dtype):
    rng = np.random.default_rng(seed)
    mask = make_passes(rng, tuple(shape), 0.5, dtype)
    want = np.packbits(mask.ravel())
    packed = ops.pack_bits(as_backend_input(mask, backend), backend=backend)
    assert to_numpy(packed).dtype == np.uint8
    np.testing.assert_array_equal(to_numpy(packed), want)
    unpacked = ops.unpack_bits(as_backend_input(want, backend), tuple(shape), backend=backend)
    assert tuple(unpacked.shape) == tuple(shape)
    np.testing.assert_array_equal(to_numpy(unpacked), mask != 0)


def test_unpack_bits_ignores_padding_bits():
    packed = np.array([0b10100000 | 0b00011111], dtype=np.uint8)  # only the top 3 bits are pixels
    for backend in CPU_BACKENDS:
        got = to_numpy(ops.unpack_bits(as_backend_input(packed, backend), (3,), backend=backend))
        np.testing.assert_array_equal(got, [True, False, True])


# --- array kinds, backend choice, errors ---------------------------------------------------------------------------


def test_returns_the_input_kind():
    passes = np.zeros((3, 2, 4, 4), dtype=np.uint8)
    assert isinstance(ops.vote_masks(passes), np.ndarray)
    result = ops.vote_masks(torch.from_numpy(passes))
    assert isinstance(result, torch.Tensor) and result.dtype == torch.bool and result.device.type == "cpu"
    packed = ops.vote_and_pack(torch.from_numpy(passes))
    assert isinstance(packed, torch.Tensor) and packed.dtype == torch.uint8 and tuple(packed.shape) == (4,)


def _spy_on_triton(monkeypatch) -> list:
    from sparkle_fast.kernels import vote_pack as triton_vote_pack

    calls = []
    real = triton_vote_pack.vote
    monkeypatch.setattr(triton_vote_pack, "vote", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_auto_uses_the_reference_for_host_inputs(monkeypatch):
    calls = _spy_on_triton(monkeypatch)
    ops.vote_masks(torch.zeros((3, 1, 2, 2), dtype=torch.uint8))
    assert calls == []


def test_environment_variable_replaces_auto(monkeypatch):
    calls = _spy_on_triton(monkeypatch)
    monkeypatch.setenv("SPARKLE_FAST_BACKEND", "triton")
    ops.vote_masks(torch.zeros((3, 1, 2, 2), dtype=torch.uint8))
    assert calls == [1]
    ops.vote_masks(torch.zeros((3, 1, 2, 2), dtype=torch.uint8), backend="reference")  # explicit wins
    assert calls == [1]
    monkeypatch.setenv("SPARKLE_FAST_BACKEND", "fastest")
    with pytest.raises(ValueError, match="SPARKLE_FAST_BACKEND"):
        ops.vote_masks(np.zeros((3, 1, 2, 2), dtype=np.uint8))


def test_backend_errors(monkeypatch):
    passes = np.zeros((3, 1, 2, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        ops.vote_masks(passes, backend="gpu")
    with pytest.raises(ValueError, match="needs GPU input"):
        ops.vote_masks(passes, backend="cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        ops.vote_masks(torch.from_numpy(passes), backend="triton")
    monkeypatch.setattr("sparkle_fast.ops._dispatch.cuda_kernels", lambda: None)
    with pytest.raises(ops.BackendUnavailableError, match="built without CUDA"):
        ops.vote_masks(passes, backend="cuda")


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: ops.vote_masks(np.zeros((3, 2, 2, 2), np.float32)), "dtype bool or uint8, got float32"),
        (lambda: ops.vote_masks(np.zeros((3, 2, 2), np.uint8)), r"\(N, T, H, W\)"),
        (lambda: ops.vote_masks(np.zeros((0, 1, 2, 2), np.uint8)), "N must be in 1..255, got 0"),
        (lambda: ops.vote_masks(np.zeros((256, 1, 1, 1), np.uint8)), "N must be in 1..255, got 256"),
        (lambda: ops.vote_masks(np.zeros((3, 1, 2, 2), np.uint8), min_votes=0), "min_votes"),
        (lambda: ops.vote_masks(np.zeros((3, 1, 2, 2), np.uint8), min_votes=4), "min_votes"),
        (lambda: ops.vote_masks(np.zeros((3, 1, 2, 2), np.uint8), min_votes=2.0), "min_votes"),
        (lambda: ops.vote_masks(np.zeros((3, 1, 2, 2), np.uint8), min_votes=True), "min_votes"),
        (lambda: ops.vote_masks(np.zeros((3, 2), np.uint8), shape=(1, 3, 7)), r"must be \(N, 3\), got \(3, 2\)"),
        (lambda: ops.vote_masks(np.zeros((3, 2), np.bool_), shape=(1, 2, 5)), "dtype uint8"),
        (lambda: ops.vote_masks(np.zeros((3, 2), np.uint8), shape=(2, 5)), "3 non-negative integers"),
        (lambda: ops.vote_masks([[0, 1]]), "numpy array, torch tensor or cupy array, got list"),
        (lambda: ops.unpack_bits(np.zeros(3, np.uint8), (5, 5)), "has 3 bytes but the shape needs"),
        (lambda: ops.unpack_bits(np.zeros((1, 4), np.uint8), (5, 5)), "1-D uint8"),
        (lambda: ops.unpack_bits(np.zeros(4, np.uint8), (5, -5)), "non-negative"),
        (lambda: ops.pack_bits(np.zeros(4, np.int16)), "dtype bool or uint8, got int16"),
    ],
)
def test_argument_errors(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


# --- the GPU: CUDA kernels and Triton on CUDA tensors (skipped without a GPU) --------------------------------------

GPU_BACKENDS = ["cuda", "triton"]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@SETTINGS
@given(case=vote_cases(max_passes=24, max_side=33))
def test_gpu_backends_match_reference(backend, case):
    passes, min_votes, rng = case
    check_all_ops(passes, min_votes, rng, backend, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("offset", [0, 1, 4, 8])
@pytest.mark.parametrize("n_pixels_shape", [(2, 16, 16), (3, 5, 8), (1, 7, 9), (5, 720 // 8, 1280 // 8)])
def test_gpu_unaligned_and_multi_block(backend, offset, n_pixels_shape):
    """Inputs that start off a 16-byte boundary take the 8-byte or byte-wise kernels; big ones span many blocks."""
    rng = np.random.default_rng(offset)
    passes = make_passes(rng, (11, *n_pixels_shape), 0.5, "uint8")
    buffer = torch.zeros(passes.size + offset, dtype=torch.uint8, device="cuda")
    view = buffer[offset:].view(passes.shape)
    view.copy_(torch.from_numpy(passes))
    want = oracle_vote(passes)
    np.testing.assert_array_equal(to_numpy(ops.vote_masks(view, backend=backend)), want)
    np.testing.assert_array_equal(to_numpy(ops.vote_and_pack(view, backend=backend)), np.packbits(want.ravel()))
    packed = pack_passes(passes, rng)
    pbuffer = torch.zeros(packed.size + offset, dtype=torch.uint8, device="cuda")
    pview = pbuffer[offset:].view(packed.shape)
    pview.copy_(torch.from_numpy(packed))
    np.testing.assert_array_equal(to_numpy(ops.vote_masks(pview, shape=passes.shape[1:], backend=backend)), want)


@pytest.mark.gpu
def test_cuda_kernels_every_alignment_and_tail_length():
    """The CUDA launchers proper (not the host twin): every input alignment 0..15, every tail length, ties at
    min_votes in every byte lane (__vcmpgeu4's >=), into a sentinel-filled output with canaries past it (a vec
    kernel that skips its last item leaves sentinel bytes)."""
    from sparkle_fast._build import cuda_kernels

    rng = np.random.default_rng(0)
    n_passes, k = 7, 4
    stream = torch.cuda.current_stream().cuda_stream
    for n_pixels in [16 * 40 + tail for tail in range(16)] + [8 * 9 + 1, 32 * 4 + 8, 32 * 5 + 24, 16 * 4096]:
        rows = _tie_heavy_rows(rng, n_passes, n_pixels)
        want = (rows != 0).sum(axis=0) >= k
        packed = np.stack([np.packbits(r != 0) for r in rows])
        for offset in range(16):
            for packed_in, host_rows in ((False, rows), (True, packed)):
                base = torch.zeros(host_rows.size + 64, dtype=torch.uint8, device="cuda")
                view = base[offset:offset + host_rows.size]
                view.copy_(torch.from_numpy(host_rows.ravel()))
                for pack_out in (False, True):
                    n_out = (n_pixels + 7) // 8 if pack_out else n_pixels
                    out = torch.full((n_out + 32,), SENTINEL, dtype=torch.uint8, device="cuda")
                    launch = cuda_kernels().vote_packed if packed_in else cuda_kernels().vote_u8
                    launch(view.data_ptr(), n_passes, n_pixels, k, out.data_ptr(), pack_out, stream)
                    got = out.cpu().numpy()
                    assert (got[n_out:] == SENTINEL).all(), f"wrote past the output: n={n_pixels} offset={offset}"
                    np.testing.assert_array_equal(got[:n_out], np.packbits(want) if pack_out else want,
                                                  err_msg=f"packed_in={packed_in} n={n_pixels} offset={offset}")


@pytest.mark.gpu
def test_gpu_auto_picks_a_gpu_backend_and_keeps_the_device(monkeypatch):
    calls = []
    monkeypatch.setattr(vote_pack_module, "_vote_rows_reference", lambda *a: calls.append(1))
    passes = torch.ones((3, 2, 4, 4), dtype=torch.uint8, device="cuda")
    result = ops.vote_masks(passes)
    assert calls == [] and result.is_cuda and bool(result.all())


@pytest.mark.gpu
def test_gpu_reference_backend_round_trips_device():
    passes = torch.ones((3, 2, 4, 4), dtype=torch.uint8, device="cuda")
    result = ops.vote_masks(passes, backend="reference")
    assert result.is_cuda and bool(result.all())


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_cupy_in_cupy_out(backend):
    cupy = pytest.importorskip("cupy")
    rng = np.random.default_rng(5)
    passes = make_passes(rng, (5, 3, 9, 11), 0.5, "uint8")
    result = ops.vote_masks(cupy.asarray(passes), backend=backend)
    assert isinstance(result, cupy.ndarray) and result.dtype == cupy.bool_
    np.testing.assert_array_equal(cupy.asnumpy(result), oracle_vote(passes))
    packed = ops.vote_and_pack(cupy.asarray(passes), backend=backend)
    np.testing.assert_array_equal(cupy.asnumpy(packed), np.packbits(oracle_vote(passes).ravel()))
