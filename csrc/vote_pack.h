// BAIT's pixel-wise majority vote and Sparkle's bit-packed masks, as CUDA launchers.
//
// Pointers are raw device addresses and `stream` is a cudaStream_t, both passed as integers so that callers
// (torch, cupy, DALI) need not share a C++ ABI with us. Launches are asynchronous on `stream`; launch errors are
// thrown as std::runtime_error.
//
// Bit order everywhere is numpy's np.packbits default: pixel i lives in byte i/8 at bit 7 - i%8 (big-endian),
// and the bits past the last pixel of the last byte are zero.
#pragma once

#include <cstdint>

namespace sparkle_fast {

// passes: uint8[n_passes][n_pixels] (contiguous; nonzero = foreground).
// A pixel is foreground iff at least `min_votes` passes are nonzero there (1 <= min_votes <= n_passes <= 255).
// out: uint8[ceil(n_pixels/8)] packed bits when pack_out, else uint8[n_pixels] of 0/1.
void vote_u8_cuda(std::uintptr_t passes, int n_passes, std::int64_t n_pixels, int min_votes,
                  std::uintptr_t out, bool pack_out, std::uintptr_t stream);

// passes: uint8[n_passes][ceil(n_pixels/8)] packed bits (contiguous); padding bits of the inputs are ignored.
// Same vote and outputs as vote_u8_cuda, computed on packed words without unpacking.
void vote_packed_cuda(std::uintptr_t passes, int n_passes, std::int64_t n_pixels, int min_votes,
                      std::uintptr_t out, bool pack_out, std::uintptr_t stream);

}  // namespace sparkle_fast
