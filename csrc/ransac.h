// Batched RANSAC homography hypotheses as a CUDA launcher (per-hypothesis code: ransac_core.h).
#pragma once

#include <cstdint>

namespace sparkle_fast {

// src, dst: float32 [n_pairs][n_points][2] device pointers; pair b's first n_valid[b] (int32 device array) rows are
// its usable correspondences; keys[b] (uint32 device array) keys the hash that draws pair b's hypotheses, so
// a pair's draw does not depend on where it sits in the batch. For every pair b and hypothesis h < n_hyp, writes
// scores[b][h] (int32: inlier count, -1 for a rejected sample) and models[b][h][9] (float64, row-major, h33 = 1;
// unspecified when rejected). One launch for all pairs; asynchronous on `stream`.
void ransac_score_cuda(std::uintptr_t src, std::uintptr_t dst, std::uintptr_t n_valid, std::uintptr_t keys,
                       int n_pairs, int n_points, int n_hyp, std::uint32_t seed, double thr2, std::uintptr_t scores, std::uintptr_t models,
                       std::uintptr_t stream);

}  // namespace sparkle_fast
