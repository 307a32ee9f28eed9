// Host twin of vote_pack.h: the same work items as the CUDA kernels, run in a loop on host memory (see
// vote_pack_host.cpp). Same arguments as the CUDA launchers, without the stream; pointers are host addresses.
// threads: the size of the emulated grid (each emulated thread runs the kernels' grid-stride loop).
#pragma once

#include <cstdint>

namespace sparkle_fast {

void vote_u8_host(std::uintptr_t passes, int n_passes, std::int64_t n_pixels, int min_votes, std::uintptr_t out,
                  bool pack_out, std::int64_t threads = 1);
void vote_packed_host(std::uintptr_t passes, int n_passes, std::int64_t n_pixels, int min_votes, std::uintptr_t out,
                      bool pack_out, std::int64_t threads = 1);

}  // namespace sparkle_fast
