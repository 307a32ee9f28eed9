// CUDA kernels for BAIT's pixel-wise majority vote and Sparkle's bit-packed masks (see vote_pack.h).
//
// Two input layouts, one vote:
//   * uint8 passes: each thread loads 16 (or 8) pixels of every pass as 32-bit words and counts in byte lanes
//     (SIMD within a register). Counts never overflow a lane because n_passes <= 255. The vote is one
//     __vcmpgeu4 per word; packing turns 4 lanes into a nibble with one multiply.
//   * packed passes: each thread owns one word of bits and keeps the vote counts bit-sliced (8 words, one per
//     bit of the count), adding a pass with a ripple-carry over the planes; the threshold test is a bit-sliced
//     comparison. 32 pixels cost ~16 integer ops per pass, far below the memory time.
// The uint8 path is memory-bound: one read of the passes, one write of the result.

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "vote_pack.h"

namespace sparkle_fast {
namespace {

constexpr int kThreads = 256;

// 1 in the low bit of every byte lane of x that is nonzero, 0 elsewhere.
__device__ __forceinline__ uint32_t nonzero_lanes(uint32_t x) {
  // Adding 0x7f to the low 7 bits of a lane sets its bit 7 iff they were nonzero; OR-ing x catches 0x80.
  return ((((x & 0x7f7f7f7fu) + 0x7f7f7f7fu) | x) >> 7) & 0x01010101u;
}

// Lanes holding 0/1 (pixel 0 in the lowest byte) -> a nibble with pixel 0 in its top bit (np.packbits order).
__device__ __forceinline__ uint32_t lanes_to_nibble(uint32_t lanes) {
  // The multiply shifts lane i's bit to bit 27 - i; no two partial products overlap, so nothing carries.
  return (lanes * 0x08040201u) >> 24;
}

// Inverse of lanes_to_nibble: the top bit of the nibble goes to lane 0.
__device__ __forceinline__ uint32_t nibble_to_lanes(uint32_t nibble) {
  return ((nibble >> 3) & 1u) | (((nibble >> 2) & 1u) << 8) | (((nibble >> 1) & 1u) << 16) | ((nibble & 1u) << 24);
}

template <int kWords>
struct Words {
  uint32_t w[kWords];
};

template <int kWords>
__device__ __forceinline__ Words<kWords> load_words(const uint8_t* p) {
  static_assert(kWords == 2 || kWords == 4, "16- or 8-byte loads");
  Words<kWords> r;
  if constexpr (kWords == 4) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
    r.w[0] = v.x; r.w[1] = v.y; r.w[2] = v.z; r.w[3] = v.w;
  } else {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    r.w[0] = v.x; r.w[1] = v.y;
  }
  return r;
}

__device__ __forceinline__ int64_t first_index() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_stride() { return int64_t(gridDim.x) * blockDim.x; }

// uint8 passes, 4*kWords pixels per thread; needs n_pixels % (4*kWords) == 0 and aligned pointers.
template <int kWords, bool kPackOut>
__global__ void vote_u8_vec_kernel(const uint8_t* __restrict__ passes, int n_passes, int64_t n_pixels,
                                   uint32_t min_votes, uint8_t* __restrict__ out) {
  constexpr int kPixels = 4 * kWords;
  const int64_t n_groups = n_pixels / kPixels;
  const uint32_t threshold = min_votes * 0x01010101u;
  for (int64_t g = first_index(); g < n_groups; g += grid_stride()) {
    uint32_t count[kWords] = {};
    const uint8_t* p = passes + g * kPixels;
#pragma unroll 4
    for (int n = 0; n < n_passes; ++n, p += n_pixels) {
      const Words<kWords> v = load_words<kWords>(p);
#pragma unroll
      for (int i = 0; i < kWords; ++i) count[i] += nonzero_lanes(v.w[i]);
    }
    uint32_t fg[kWords];
#pragma unroll
    for (int i = 0; i < kWords; ++i) fg[i] = __vcmpgeu4(count[i], threshold) & 0x01010101u;

    if constexpr (kPackOut) {
      const uint32_t byte0 = (lanes_to_nibble(fg[0]) << 4) | lanes_to_nibble(fg[1]);
      if constexpr (kWords == 4) {
        const uint32_t byte1 = (lanes_to_nibble(fg[2]) << 4) | lanes_to_nibble(fg[3]);
        reinterpret_cast<uint16_t*>(out)[g] = static_cast<uint16_t>(byte0 | (byte1 << 8));
      } else {
        out[g] = static_cast<uint8_t>(byte0);
      }
    } else if constexpr (kWords == 4) {
      reinterpret_cast<uint4*>(out)[g] = make_uint4(fg[0], fg[1], fg[2], fg[3]);
    } else {
      reinterpret_cast<uint2*>(out)[g] = make_uint2(fg[0], fg[1]);
    }
  }
}

// uint8 passes, any size and alignment: one output byte (8 pixels) per thread, byte loads.
template <bool kPackOut>
__global__ void vote_u8_bytewise_kernel(const uint8_t* __restrict__ passes, int n_passes, int64_t n_pixels,
                                        int min_votes, uint8_t* __restrict__ out) {
  const int64_t n_bytes = (n_pixels + 7) / 8;
  for (int64_t b = first_index(); b < n_bytes; b += grid_stride()) {
    uint32_t byte = 0;
    for (int i = 0; i < 8; ++i) {
      const int64_t pixel = b * 8 + i;
      if (pixel >= n_pixels) break;
      int votes = 0;
      const uint8_t* p = passes + pixel;
      for (int n = 0; n < n_passes; ++n, p += n_pixels) votes += (*p != 0);
      const uint32_t fg = votes >= min_votes;
      if constexpr (kPackOut) {
        byte |= fg << (7 - i);
      } else {
        out[pixel] = static_cast<uint8_t>(fg);
      }
    }
    if constexpr (kPackOut) out[b] = static_cast<uint8_t>(byte);
  }
}

template <typename Word>
__device__ __forceinline__ Word load_word(const uint8_t* p) {
  if constexpr (sizeof(Word) == 4) {
    return __ldg(reinterpret_cast<const unsigned int*>(p));
  } else {
    return __ldg(p);
  }
}

// Mask of the bits of the word starting at byte `first_byte` that hold real pixels (padding bits -> 0).
template <typename Word>
__device__ __forceinline__ Word valid_bits(int64_t first_byte, int64_t n_pixels) {
  uint32_t mask = 0;
#pragma unroll
  for (int j = 0; j < int(sizeof(Word)); ++j) {
    const int64_t valid = n_pixels - (first_byte + j) * 8;  // pixels of byte j that exist
    const uint32_t byte_mask = valid >= 8 ? 0xffu : valid <= 0 ? 0u : (0xffu << (8 - valid)) & 0xffu;
    mask |= byte_mask << (8 * j);
  }
  return static_cast<Word>(mask);
}

// Packed passes (rows of ceil(n_pixels/8) bytes): one Word of bits per thread, bit-sliced vote counts.
// Word = uint32_t needs the row length and the pointers to be multiples of 4; uint8_t works always.
template <typename Word, bool kPackOut>
__global__ void vote_packed_kernel(const uint8_t* __restrict__ passes, int n_passes, int64_t n_pixels,
                                   int min_votes, uint8_t* __restrict__ out) {
  constexpr int kBytes = sizeof(Word);
  const int64_t row_bytes = (n_pixels + 7) / 8;
  const int64_t n_words = row_bytes / kBytes;
  for (int64_t w = first_index(); w < n_words; w += grid_stride()) {
    // planes[i] holds bit i of the vote count of every bit position of the word (counts <= 255: 8 planes).
    Word planes[8] = {};
    const uint8_t* p = passes + w * kBytes;
    for (int n = 0; n < n_passes; ++n, p += row_bytes) {
      Word carry = load_word<Word>(p);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const Word next = planes[i] & carry;
        planes[i] ^= carry;
        carry = next;
      }
    }
    // count >= min_votes, compared bit-sliced from the most significant plane down.
    Word greater = 0;
    Word equal = static_cast<Word>(~0u);
#pragma unroll
    for (int i = 7; i >= 0; --i) {
      const Word k = ((min_votes >> i) & 1) ? static_cast<Word>(~0u) : Word(0);
      greater |= static_cast<Word>(equal & planes[i] & static_cast<Word>(~k));
      equal &= static_cast<Word>(~(planes[i] ^ k));
    }
    Word fg = greater | equal;
    const int64_t first_byte = w * kBytes;
    if ((first_byte + kBytes) * 8 > n_pixels) fg &= valid_bits<Word>(first_byte, n_pixels);

    if constexpr (kPackOut) {
      *reinterpret_cast<Word*>(out + first_byte) = fg;
    } else {
#pragma unroll
      for (int j = 0; j < kBytes; ++j) {
        const uint32_t byte = (uint32_t(fg) >> (8 * j)) & 0xffu;
        const int64_t pixel0 = (first_byte + j) * 8;
        if (pixel0 + 8 <= n_pixels) {
          reinterpret_cast<uint2*>(out + pixel0)[0] = make_uint2(nibble_to_lanes(byte >> 4), nibble_to_lanes(byte & 0xfu));
        } else {
          for (int i = 0; pixel0 + i < n_pixels; ++i) out[pixel0 + i] = (byte >> (7 - i)) & 1u;
        }
      }
    }
  }
}

void check_vote_args(const char* op, int n_passes, int64_t n_pixels, int min_votes, std::uintptr_t out) {
  if (n_passes < 1 || n_passes > 255)
    throw std::invalid_argument(std::string(op) + ": n_passes must be in 1..255, got " + std::to_string(n_passes));
  if (min_votes < 1 || min_votes > n_passes)
    throw std::invalid_argument(std::string(op) + ": min_votes must be in 1..n_passes, got " +
                                std::to_string(min_votes));
  if (n_pixels < 0) throw std::invalid_argument(std::string(op) + ": n_pixels must be >= 0");
  if (out % 16 != 0)
    throw std::invalid_argument(std::string(op) + ": the output buffer must be 16-byte aligned (a fresh allocation)");
}

unsigned int blocks_for(int64_t work_items) {
  const int64_t blocks = (work_items + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(blocks < 1 ? 1 : blocks > (1 << 20) ? (1 << 20) : blocks);
}

template <bool kPackOut>
void launch_vote_u8(const uint8_t* passes, std::uintptr_t passes_addr, int n_passes, int64_t n_pixels,
                    int min_votes, uint8_t* out, cudaStream_t stream) {
  // The vector kernels need every pass to start aligned: row length and base both multiples of the load width.
  if (n_pixels % 16 == 0 && passes_addr % 16 == 0) {
    vote_u8_vec_kernel<4, kPackOut><<<blocks_for(n_pixels / 16), kThreads, 0, stream>>>(
        passes, n_passes, n_pixels, static_cast<uint32_t>(min_votes), out);
  } else if (n_pixels % 8 == 0 && passes_addr % 8 == 0) {
    vote_u8_vec_kernel<2, kPackOut><<<blocks_for(n_pixels / 8), kThreads, 0, stream>>>(
        passes, n_passes, n_pixels, static_cast<uint32_t>(min_votes), out);
  } else {
    vote_u8_bytewise_kernel<kPackOut><<<blocks_for((n_pixels + 7) / 8), kThreads, 0, stream>>>(
        passes, n_passes, n_pixels, min_votes, out);
  }
}

template <bool kPackOut>
void launch_vote_packed(const uint8_t* passes, std::uintptr_t passes_addr, int n_passes, int64_t n_pixels,
                        int min_votes, uint8_t* out, cudaStream_t stream) {
  const int64_t row_bytes = (n_pixels + 7) / 8;
  if (row_bytes % 4 == 0 && passes_addr % 4 == 0) {
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
