// Host twin of the CUDA vote/pack kernels: the same per-thread work items (vote_pack_core.h), the same choice of
// variant by size and alignment, run as a plain loop. It is built with or without CUDA, so the bit tricks the GPU
// kernels rely on are tested on every machine, and it gives bench/ a compiled single-thread host peer.

#include "vote_pack_host.h"

#include "vote_pack_core.h"

namespace sparkle_fast {
namespace {

using namespace vote_core;

template <bool kPackOut>
void vote_u8_host_impl(const uint8_t* passes, std::uintptr_t addr, int n_passes, int64_t n_pixels, int min_votes,
                       uint8_t* out) {
  switch (choose_u8_variant(n_pixels, addr)) {
    case U8Variant::kVec16:
      for (int64_t g = 0; g < n_pixels / 16; ++g)
        vote_u8_vec_item<4, kPackOut>(passes, n_passes, n_pixels, static_cast<uint32_t>(min_votes), out, g);
      break;
    case U8Variant::kVec8:
      for (int64_t g = 0; g < n_pixels / 8; ++g)
        vote_u8_vec_item<2, kPackOut>(passes, n_passes, n_pixels, static_cast<uint32_t>(min_votes), out, g);
      break;
    case U8Variant::kBytewise:
      for (int64_t b = 0; b < (n_pixels + 7) / 8; ++b)
        vote_u8_bytewise_item<kPackOut>(passes, n_passes, n_pixels, min_votes, out, b);
      break;
  }
}

template <bool kPackOut>
void vote_packed_host_impl(const uint8_t* passes, std::uintptr_t addr, int n_passes, int64_t n_pixels,
                           int min_votes, uint8_t* out) {
  const int64_t row_bytes = (n_pixels + 7) / 8;
  if (packed_use_word32(n_pixels, addr)) {
    for (int64_t w = 0; w < row_bytes / 4; ++w)
      vote_packed_item<uint32_t, kPackOut>(passes, n_passes, n_pixels, min_votes, out, w);
  } else {
    for (int64_t w = 0; w < row_bytes; ++w)
      vote_packed_item<uint8_t, kPackOut>(passes, n_passes, n_pixels, min_votes, out, w);
  }
}

}  // namespace

void vote_u8_host(std::uintptr_t passes, int n_passes, std::int64_t n_pixels, int min_votes, std::uintptr_t out,
                  bool pack_out) {
  check_vote_args("vote_u8_host", n_passes, n_pixels, min_votes, out);
  const auto* in_ptr = reinterpret_cast<const uint8_t*>(passes);
  auto* out_ptr = reinterpret_cast<uint8_t*>(out);
  if (pack_out) {
    vote_u8_host_impl<true>(in_ptr, passes, n_passes, n_pixels, min_votes, out_ptr);
  } else {
    vote_u8_host_impl<false>(in_ptr, passes, n_passes, n_pixels, min_votes, out_ptr);
  }
}

void vote_packed_host(std::uintptr_t passes, int n_passes, std::int64_t n_pixels, int min_votes, std::uintptr_t out,
                      bool pack_out) {
  check_vote_args("vote_packed_host", n_passes, n_pixels, min_votes, out);
  const auto* in_ptr = reinterpret_cast<const uint8_t*>(passes);
  auto* out_ptr = reinterpret_cast<uint8_t*>(out);
  if (pack_out) {
    vote_packed_host_impl<true>(in_ptr, passes, n_passes, n_pixels, min_votes, out_ptr);
  } else {
    vote_packed_host_impl<false>(in_ptr, passes, n_passes, n_pixels, min_votes, out_ptr);
  }
}

}  // namespace sparkle_fast
