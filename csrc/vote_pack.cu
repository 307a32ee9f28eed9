// CUDA kernels for BAIT's pixel-wise majority vote and Sparkle's bit-packed masks (see vote_pack.h).
//
// Two input layouts, one vote (the per-thread work is in vote_pack_core.h, shared with the host twin):
//   * uint8 passes: each thread loads 16 (or 8) pixels of every pass as 32-bit words and counts in byte lanes
//     (SIMD within a register; counts fit a lane since n_passes <= 255). The vote is one __vcmpgeu4 per word, and
//     packing turns 4 lanes into a nibble with one multiply. Memory-bound: one read of the passes, one write.
//   * packed passes: each thread owns a 32-bit word of bits and keeps the vote counts bit-sliced (8 words, one per
//     bit of the count), adding a pass by ripple-carry over the planes; the threshold test is a bit-sliced compare.
//     32 pixels cost ~16 integer ops per pass, well under the memory time.

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_check.h"
#include "vote_pack.h"
#include "vote_pack_core.h"

namespace sparkle_fast {
namespace {

using namespace vote_core;

constexpr int kThreads = 256;

__device__ __forceinline__ int64_t first_index() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_stride() { return int64_t(gridDim.x) * blockDim.x; }

// The grid-stride loops (item counts included) live in vote_pack_core.h, shared with the host twin.
template <int kWords, bool kPackOut>
__global__ void vote_u8_vec_kernel(const uint8_t* __restrict__ passes, int n_passes, int64_t n_pixels,
                                   uint32_t min_votes, uint8_t* __restrict__ out) {
  vote_u8_vec_items<kWords, kPackOut>(passes, n_passes, n_pixels, min_votes, out, first_index(), grid_stride());
}

template <bool kPackOut>
__global__ void vote_u8_bytewise_kernel(const uint8_t* __restrict__ passes, int n_passes, int64_t n_pixels,
                                        int min_votes, uint8_t* __restrict__ out) {
  vote_u8_bytewise_items<kPackOut>(passes, n_passes, n_pixels, min_votes, out, first_index(), grid_stride());
}

template <typename Word, bool kPackOut>
__global__ void vote_packed_kernel(const uint8_t* __restrict__ passes, int n_passes, int64_t n_pixels,
                                   int min_votes, uint8_t* __restrict__ out) {
  vote_packed_items<Word, kPackOut>(passes, n_passes, n_pixels, min_votes, out, first_index(), grid_stride());
}

unsigned int blocks_for(int64_t work_items) {
  const int64_t blocks = (work_items + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(blocks < 1 ? 1 : blocks > (1 << 20) ? (1 << 20) : blocks);
}

template <bool kPackOut>
void launch_vote_u8(const uint8_t* passes, std::uintptr_t passes_addr, int n_passes, int64_t n_pixels,
                    int min_votes, uint8_t* out, cudaStream_t stream) {
  switch (choose_u8_variant(n_pixels, passes_addr)) {
    case U8Variant::kVec16:
      vote_u8_vec_kernel<4, kPackOut><<<blocks_for(n_pixels / 16), kThreads, 0, stream>>>(
          passes, n_passes, n_pixels, static_cast<uint32_t>(min_votes), out);
      break;
    case U8Variant::kVec8:
      vote_u8_vec_kernel<2, kPackOut><<<blocks_for(n_pixels / 8), kThreads, 0, stream>>>(
          passes, n_passes, n_pixels, static_cast<uint32_t>(min_votes), out);
      break;
    case U8Variant::kBytewise:
      vote_u8_bytewise_kernel<kPackOut><<<blocks_for((n_pixels + 7) / 8), kThreads, 0, stream>>>(
          passes, n_passes, n_pixels, min_votes, out);
      break;
  }
}

template <bool kPackOut>
void launch_vote_packed(const uint8_t* passes, std::uintptr_t passes_addr, int n_passes, int64_t n_pixels,
                        int min_votes, uint8_t* out, cudaStream_t stream) {
  const int64_t row_bytes = (n_pixels + 7) / 8;
  if (packed_use_word32(n_pixels, passes_addr)) {
    vote_packed_kernel<uint32_t, kPackOut><<<blocks_for(row_bytes / 4), kThreads, 0, stream>>>(
        passes, n_passes, n_pixels, min_votes, out);
  } else {
    vote_packed_kernel<uint8_t, kPackOut><<<blocks_for(row_bytes), kThreads, 0, stream>>>(
        passes, n_passes, n_pixels, min_votes, out);
  }
}

}  // namespace

void vote_u8_cuda(std::uintptr_t passes, int n_passes, std::int64_t n_pixels, int min_votes, std::uintptr_t out,
                  bool pack_out, std::uintptr_t stream) {
  check_vote_args("vote_u8_cuda", n_passes, n_pixels, min_votes, out);
  if (n_pixels == 0) return;
  const auto* in_ptr = reinterpret_cast<const uint8_t*>(passes);
  auto* out_ptr = reinterpret_cast<uint8_t*>(out);
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (pack_out) {
    launch_vote_u8<true>(in_ptr, passes, n_passes, n_pixels, min_votes, out_ptr, s);
  } else {
    launch_vote_u8<false>(in_ptr, passes, n_passes, n_pixels, min_votes, out_ptr, s);
  }
  check_cuda(cudaGetLastError(), "vote_u8_cuda launch");
}

void vote_packed_cuda(std::uintptr_t passes, int n_passes, std::int64_t n_pixels, int min_votes, std::uintptr_t out,
                      bool pack_out, std::uintptr_t stream) {
  check_vote_args("vote_packed_cuda", n_passes, n_pixels, min_votes, out);
  if (n_pixels == 0) return;
  const auto* in_ptr = reinterpret_cast<const uint8_t*>(passes);
  auto* out_ptr = reinterpret_cast<uint8_t*>(out);
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (pack_out) {
    launch_vote_packed<true>(in_ptr, passes, n_passes, n_pixels, min_votes, out_ptr, s);
  } else {
    launch_vote_packed<false>(in_ptr, passes, n_passes, n_pixels, min_votes, out_ptr, s);
  }
  check_cuda(cudaGetLastError(), "vote_packed_cuda launch");
}

}  // namespace sparkle_fast
