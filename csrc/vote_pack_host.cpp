// Host twin of the CUDA vote/pack kernels: the same grid-stride loops and per-thread work items
// (vote_pack_core.h), the same choice of variant by size and alignment, run on the host. It is built with or without
// CUDA, so the bit tricks and item counts the GPU kernels rely on are tested on every machine, and it gives bench/ a
// compiled single-thread host peer. `threads` emulates a grid of that many CUDA threads, one after another (1: one
// thread walks every item).

#include "vote_pack_host.h"

#include <stdexcept>
#include <string>

#include "vote_pack_core.h"

namespace sparkle_fast {
namespace {

using namespace vote_core;

template <bool kPackOut>
void vote_u8_host_impl(const uint8_t* passes, std::uintptr_t addr, int n_passes, int64_t n_pixels, int min_votes,
                       uint8_t* out, int64_t threads) {
  const U8Variant variant = choose_u8_variant(n_pixels, addr);
  for (int64_t t = 0; t < threads; ++t) {
    switch (variant) {
      case U8Variant::kVec16:
        vote_u8_vec_items<4, kPackOut>(passes, n_passes, n_pixels, static_cast<uint32_t>(min_votes), out, t,
                                       threads);
        break;
      case U8Variant::kVec8:
        vote_u8_vec_items<2, kPackOut>(passes, n_passes, n_pixels, static_cast<uint32_t>(min_votes), out, t,
                                       threads);
        break;
      case U8Variant::kBytewise:
        vote_u8_bytewise_items<kPackOut>(passes, n_passes, n_pixels, min_votes, out, t, threads);
        break;
    }
  }
}

template <bool kPackOut>
void vote_packed_host_impl(const uint8_t* passes, std::uintptr_t addr, int n_passes, int64_t n_pixels,
                           int min_votes, uint8_t* out, int64_t threads) {
  const bool word32 = packed_use_word32(n_pixels, addr);
  for (int64_t t = 0; t < threads; ++t) {
    if (word32) {
      vote_packed_items<uint32_t, kPackOut>(passes, n_passes, n_pixels, min_votes, out, t, threads);
    } else {
      vote_packed_items<uint8_t, kPackOut>(passes, n_passes, n_pixels, min_votes, out, t, threads);
    }
  }
}

void check_threads(const char* op, int64_t threads) {
  if (threads < 1)
    throw std::invalid_argument(std::string(op) + ": threads must be >= 1, got " + std::to_string(threads));
}

}  // namespace

void vote_u8_host(std::uintptr_t passes, int n_passes, std::int64_t n_pixels, int min_votes, std::uintptr_t out,
                  bool pack_out, std::int64_t threads) {
  check_vote_args("vote_u8_host", n_passes, n_pixels, min_votes, out);
  check_threads("vote_u8_host", threads);
  const auto* in_ptr = reinterpret_cast<const uint8_t*>(passes);
  auto* out_ptr = reinterpret_cast<uint8_t*>(out);
  if (pack_out) {
    vote_u8_host_impl<true>(in_ptr, passes, n_passes, n_pixels, min_votes, out_ptr, threads);
  } else {
    vote_u8_host_impl<false>(in_ptr, passes, n_passes, n_pixels, min_votes, out_ptr, threads);
  }
}

void vote_packed_host(std::uintptr_t passes, int n_passes, std::int64_t n_pixels, int min_votes, std::uintptr_t out,
                      bool pack_out, std::int64_t threads) {
  check_vote_args("vote_packed_host", n_passes, n_pixels, min_votes, out);
  check_threads("vote_packed_host", threads);
  const auto* in_ptr = reinterpret_cast<const uint8_t*>(passes);
  auto* out_ptr = reinterpret_cast<uint8_t*>(out);
  if (pack_out) {
    vote_packed_host_impl<true>(in_ptr, passes, n_passes, n_pixels, min_votes, out_ptr, threads);
  } else {
    vote_packed_host_impl<false>(in_ptr, passes, n_passes, n_pixels, min_votes, out_ptr, threads);
  }
}

}  // namespace sparkle_fast
