// The per-thread work of the vote/pack kernels, shared by the CUDA kernels (vote_pack.cu) and their host twin
// (vote_pack_host.cpp). A CUDA thread and one iteration of the host loop run the same function on the same work
// item, so the host twin, testable on any machine, checks every bit trick the GPU relies on; only the grid-stride
// loop and the launch differ.
//
// Work items:
//   u8 vector:  16 (kWords = 4) or 8 (kWords = 2) pixels of uint8 passes, read as 32-bit words
//   u8 bytewise: one output byte (8 pixels), byte loads, any size and alignment
//   packed:     one Word (uint32_t or uint8_t) of packed bits, i.e. 32 or 8 pixels
// Bit order: np.packbits (pixel i in byte i / 8 at bit 7 - i % 8); padding bits of outputs are zero.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "host_device.h"

namespace sparkle_fast {
namespace vote_core {

// 1 in the low bit of every byte lane of x that is nonzero, 0 elsewhere.
SF_HD uint32_t nonzero_lanes(uint32_t x) {
  // Adding 0x7f to the low 7 bits of a lane sets its bit 7 iff they were nonzero; OR-ing x catches 0x80.
  return ((((x & 0x7f7f7f7fu) + 0x7f7f7f7fu) | x) >> 7) & 0x01010101u;
}

#if !defined(__CUDA_ARCH__)
// Host emulations of CUDA's per-byte SIMD comparisons, under the intrinsics' own names: the host twin then runs the
// very expressions the GPU threads run, so a change to which intrinsic the kernel calls changes the host twin too
// (inside this namespace these names hide nothing: CUDA's intrinsics are device-only).
template <typename Compare>
inline uint32_t simd_compare_u4(uint32_t a, uint32_t b, Compare compare) {
  uint32_t r = 0;
  for (int lane = 0; lane < 4; ++lane) {
    const uint32_t shift = 8u * lane;
    if (compare((a >> shift) & 0xffu, (b >> shift) & 0xffu)) r |= 0xffu << shift;
  }
  return r;
}
inline uint32_t __vcmpgeu4(uint32_t a, uint32_t b) {
  return simd_compare_u4(a, b, [](uint32_t x, uint32_t y) { return x >= y; });
}
inline uint32_t __vcmpgtu4(uint32_t a, uint32_t b) {
  return simd_compare_u4(a, b, [](uint32_t x, uint32_t y) { return x > y; });
}
inline uint32_t __vcmpleu4(uint32_t a, uint32_t b) {
  return simd_compare_u4(a, b, [](uint32_t x, uint32_t y) { return x <= y; });
}
inline uint32_t __vcmpltu4(uint32_t a, uint32_t b) {
  return simd_compare_u4(a, b, [](uint32_t x, uint32_t y) { return x < y; });
}
#endif

// 0xff in every byte lane where a >= b (unsigned), else 0x00.
SF_HD uint32_t lanes_ge(uint32_t a, uint32_t b) { return __vcmpgeu4(a, b); }

// Lanes holding 0/1 (pixel 0 in the lowest byte) -> a nibble with pixel 0 in its top bit (np.packbits order).
SF_HD uint32_t lanes_to_nibble(uint32_t lanes) {
  // The multiply moves lane i's bit to bit 27 - i; no two partial products overlap, so nothing carries.
  return (lanes * 0x08040201u) >> 24;
}

// Inverse of lanes_to_nibble: the top bit of the nibble goes to lane 0.
SF_HD uint32_t nibble_to_lanes(uint32_t nibble) {
  return ((nibble >> 3) & 1u) | (((nibble >> 2) & 1u) << 8) | (((nibble >> 1) & 1u) << 16) | ((nibble & 1u) << 24);
}

// Load/store kWords 32-bit words at an address aligned to 4 * kWords bytes.
template <int kWords>
SF_HD void load_words(const uint8_t* p, uint32_t (&w)[kWords]) {
  static_assert(kWords == 2 || kWords == 4, "16- or 8-byte accesses");
#if defined(__CUDA_ARCH__)
  if constexpr (kWords == 4) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
    w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w;
  } else {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    w[0] = v.x; w[1] = v.y;
  }
#else
  std::memcpy(w, p, sizeof(w));
#endif
}

template <int kWords>
SF_HD void store_words(uint8_t* p, const uint32_t (&w)[kWords]) {
#if defined(__CUDA_ARCH__)
  if constexpr (kWords == 4) {
    *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
  } else {
    *reinterpret_cast<uint2*>(p) = make_uint2(w[0], w[1]);
  }
#else
  std::memcpy(p, w, sizeof(w));
#endif
}

template <typename Word>
SF_HD Word load_word(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(Word) == 4) {
    return __ldg(reinterpret_cast<const unsigned int*>(p));
  } else {
    return __ldg(p);
  }
#else
  Word w;
  std::memcpy(&w, p, sizeof(Word));
  return w;
#endif
}

template <typename Word>
SF_HD void store_word(uint8_t* p, Word w) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<Word*>(p) = w;
#else
  std::memcpy(p, &w, sizeof(Word));
#endif
}

// Argument checks shared by the CUDA launchers and the host twin.
inline void check_vote_args(const char* op, int n_passes, int64_t n_pixels, int min_votes, std::uintptr_t out) {
  if (n_passes < 1 || n_passes > 255)
    throw std::invalid_argument(std::string(op) + ": n_passes must be in 1..255, got " + std::to_string(n_passes));
  if (min_votes < 1 || min_votes > n_passes)
    throw std::invalid_argument(std::string(op) + ": min_votes must be in 1..n_passes, got " +
                                std::to_string(min_votes));
  if (n_pixels < 0) throw std::invalid_argument(std::string(op) + ": n_pixels must be >= 0");
  if (out % 16 != 0)
    throw std::invalid_argument(std::string(op) + ": the output buffer must be 16-byte aligned (a fresh allocation)");
}

// ---- uint8 passes ------------------------------------------------------------------------------------------------

enum class U8Variant { kVec16, kVec8, kBytewise };

// Vector loads need every pass to start aligned: row length and base address both multiples of the load width.
// The output is always a fresh allocation (16-byte aligned).
inline U8Variant choose_u8_variant(int64_t n_pixels, std::uintptr_t passes_addr) {
  if (n_pixels % 16 == 0 && passes_addr % 16 == 0) return U8Variant::kVec16;
  if (n_pixels % 8 == 0 && passes_addr % 8 == 0) return U8Variant::kVec8;
  return U8Variant::kBytewise;
}

// Work item g covers pixels [4*kWords*g, 4*kWords*(g+1)); requires n_pixels % (4*kWords) == 0.
template <int kWords, bool kPackOut>
SF_HD void vote_u8_vec_item(const uint8_t* passes, int n_passes, int64_t n_pixels, uint32_t min_votes,
                            uint8_t* out, int64_t g) {
  constexpr int kPixels = 4 * kWords;
  uint32_t count[kWords] = {};  // per byte lane; n_passes <= 255 so lanes never overflow
  const uint8_t* p = passes + g * kPixels;
#if defined(__CUDA_ARCH__)
#pragma unroll 4
#endif
  for (int n = 0; n < n_passes; ++n, p += n_pixels) {
    uint32_t v[kWords];
    load_words<kWords>(p, v);
    for (int i = 0; i < kWords; ++i) count[i] += nonzero_lanes(v[i]);
  }
  uint32_t fg[kWords];
  for (int i = 0; i < kWords; ++i) fg[i] = lanes_ge(count[i], min_votes * 0x01010101u) & 0x01010101u;

  if constexpr (kPackOut) {
    for (int b = 0; b < kWords / 2; ++b) {  // 8 pixels = 2 words -> one byte
      out[g * (kWords / 2) + b] = static_cast<uint8_t>((lanes_to_nibble(fg[2 * b]) << 4) |
                                                       lanes_to_nibble(fg[2 * b + 1]));
    }
  } else {
    store_words<kWords>(out + g * kPixels, fg);
  }
}

// The items [first, n_items) with step `stride` of a grid-stride loop: a CUDA thread passes its global index and the
// grid's thread count; the host twin emulates a grid of any size with the same loop. n_items = n_pixels / 16 (or 8).
template <int kWords, bool kPackOut>
SF_HD void vote_u8_vec_items(const uint8_t* passes, int n_passes, int64_t n_pixels, uint32_t min_votes,
                             uint8_t* out, int64_t first, int64_t stride) {
  const int64_t n_items = n_pixels / (4 * kWords);
  for (int64_t g = first; g < n_items; g += stride)
    vote_u8_vec_item<kWords, kPackOut>(passes, n_passes, n_pixels, min_votes, out, g);
}

// Work item b covers pixels [8b, min(8b + 8, n_pixels)).
template <bool kPackOut>
SF_HD void vote_u8_bytewise_item(const uint8_t* passes, int n_passes, int64_t n_pixels, int min_votes,
                                 uint8_t* out, int64_t b) {
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

template <bool kPackOut>
SF_HD void vote_u8_bytewise_items(const uint8_t* passes, int n_passes, int64_t n_pixels, int min_votes,
                                  uint8_t* out, int64_t first, int64_t stride) {
  const int64_t n_items = (n_pixels + 7) / 8;
  for (int64_t b = first; b < n_items; b += stride)
    vote_u8_bytewise_item<kPackOut>(passes, n_passes, n_pixels, min_votes, out, b);
}

// ---- packed passes -----------------------------------------------------------------------------------------------

// 32-bit words need the row length (bytes) and the base address to be multiples of 4.
inline bool packed_use_word32(int64_t n_pixels, std::uintptr_t passes_addr) {
  return ((n_pixels + 7) / 8) % 4 == 0 && passes_addr % 4 == 0;
}

// Mask of the bits of the word starting at byte `first_byte` that hold real pixels (padding bits -> 0).
template <typename Word>
SF_HD Word valid_bits(int64_t first_byte, int64_t n_pixels) {
  uint32_t mask = 0;
  for (int j = 0; j < int(sizeof(Word)); ++j) {
    const int64_t valid = n_pixels - (first_byte + j) * 8;  // pixels of byte j that exist
    const uint32_t byte_mask = valid >= 8 ? 0xffu : valid <= 0 ? 0u : (0xffu << (8 - valid)) & 0xffu;
    mask |= byte_mask << (8 * j);
  }
  return static_cast<Word>(mask);
}

// Work item w covers bytes [w * sizeof(Word), (w + 1) * sizeof(Word)) of every packed row.
template <typename Word, bool kPackOut>
SF_HD void vote_packed_item(const uint8_t* passes, int n_passes, int64_t n_pixels, int min_votes, uint8_t* out,
                            int64_t w) {
  constexpr int kBytes = sizeof(Word);
  const int64_t row_bytes = (n_pixels + 7) / 8;
  // planes[i] holds bit i of the vote count of every bit position of the word (counts <= 255: 8 planes).
  Word planes[8] = {};
  const uint8_t* p = passes + w * kBytes;
  for (int n = 0; n < n_passes; ++n, p += row_bytes) {
    Word carry = load_word<Word>(p);
    for (int i = 0; i < 8; ++i) {  // ripple-carry add of one bit per position
      const Word next = planes[i] & carry;
      planes[i] ^= carry;
      carry = next;
    }
  }
  // count >= min_votes, compared bit-sliced from the most significant plane down.
  Word greater = 0;
  Word equal = static_cast<Word>(~0u);
  for (int i = 7; i >= 0; --i) {
    const Word k = ((min_votes >> i) & 1) ? static_cast<Word>(~0u) : Word(0);
    greater |= static_cast<Word>(equal & planes[i] & static_cast<Word>(~k));
    equal &= static_cast<Word>(~(planes[i] ^ k));
  }
  Word fg = greater | equal;
  const int64_t first_byte = w * kBytes;
  if ((first_byte + kBytes) * 8 > n_pixels) fg &= valid_bits<Word>(first_byte, n_pixels);

  if constexpr (kPackOut) {
    store_word<Word>(out + first_byte, fg);
  } else {
    for (int j = 0; j < kBytes; ++j) {
      const uint32_t byte = (uint32_t(fg) >> (8 * j)) & 0xffu;
      const int64_t pixel0 = (first_byte + j) * 8;
      if (pixel0 + 8 <= n_pixels) {
        const uint32_t lanes[2] = {nibble_to_lanes(byte >> 4), nibble_to_lanes(byte & 0xfu)};
        store_words<2>(out + pixel0, lanes);
      } else {
        for (int i = 0; pixel0 + i < n_pixels; ++i) out[pixel0 + i] = (byte >> (7 - i)) & 1u;
      }
    }
  }
}

// Grid-stride loop over the packed words: n_items = whole Words per row (the variant guarantees rows hold whole Words).
template <typename Word, bool kPackOut>
SF_HD void vote_packed_items(const uint8_t* passes, int n_passes, int64_t n_pixels, int min_votes, uint8_t* out,
                             int64_t first, int64_t stride) {
  const int64_t n_items = ((n_pixels + 7) / 8) / int64_t(sizeof(Word));
  for (int64_t w = first; w < n_items; w += stride)
    vote_packed_item<Word, kPackOut>(passes, n_passes, n_pixels, min_votes, out, w);
}

}  // namespace vote_core
}  // namespace sparkle_fast
