// Host twin of ransac.h: the same per-hypothesis code in a host loop; pointers are host addresses.
#pragma once

#include <cstdint>

namespace sparkle_fast {

void ransac_score_host(std::uintptr_t src, std::uintptr_t dst, std::uintptr_t n_valid, std::uintptr_t keys,
                       int n_pairs, int n_points, int n_hyp, std::uint32_t seed, double thr2, std::uintptr_t scores, std::uintptr_t models);

}  // namespace sparkle_fast
