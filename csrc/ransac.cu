// CUDA kernel for batched RANSAC homography scoring (see ransac.h; per-hypothesis code in ransac_core.h).
//
// Grid: (ceil(n_hyp / kThreads), n_pairs). Each thread makes one hypothesis (4-point DLT in double), then the block
// walks the pair's correspondences in shared-memory tiles and every thread counts its inliers. All hypotheses of
// all pairs go in one launch; the host picks the winner and refits (sparkle_fast/ops/homography.py).

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "ransac.h"
#include "ransac_core.h"

namespace sparkle_fast {
namespace {

constexpr int kThreads = 128;
using ransac_core::kTile;  // correspondences per shared-memory tile

__global__ void ransac_score_kernel(const float* __restrict__ src, const float* __restrict__ dst,
                                    const int* __restrict__ n_valid, const uint32_t* __restrict__ keys,
                                    int n_points, int n_hyp, uint32_t seed,
                                    double thr2, int* __restrict__ scores, double* __restrict__ models) {
  __shared__ float4 tile[kTile];  // (sx, sy, dx, dy)
  const int b = blockIdx.y;
  const int hyp = blockIdx.x * kThreads + threadIdx.x;
  const float* s = src + int64_t(b) * n_points * 2;
  const float* d = dst + int64_t(b) * n_points * 2;
  const int n = min(n_valid[b], n_points);

  double h[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  bool ok = false;
  if (hyp < n_hyp && n >= 4) ok = ransac_core::make_hypothesis(s, d, uint32_t(n), seed, keys[b], uint32_t(hyp), h);
  int count = 0;
  for (int start = 0; start < n; start += kTile) {  // every thread joins every tile: __syncthreads is uniform
    const int m = ransac_core::tile_length(start, n);
    __syncthreads();
    for (int i = threadIdx.x; i < m; i += kThreads)
      tile[i] = make_float4(s[2 * (start + i)], s[2 * (start + i) + 1], d[2 * (start + i)], d[2 * (start + i) + 1]);
    __syncthreads();
    if (ok) count += ransac_core::count_inliers(h, tile, m, thr2);
  }
  if (hyp < n_hyp) {
    scores[int64_t(b) * n_hyp + hyp] = ok ? count : -1;
    double* out = models + (int64_t(b) * n_hyp + hyp) * 9;
    for (int k = 0; k < 9; ++k) out[k] = h[k];
  }
}

}  // namespace

void ransac_score_cuda(std::uintptr_t src, std::uintptr_t dst, std::uintptr_t n_valid, std::uintptr_t keys,
                       int n_pairs, int n_points, int n_hyp, std::uint32_t seed, double thr2, std::uintptr_t scores, std::uintptr_t models,
                       std::uintptr_t stream) {
  if (n_pairs < 0 || n_points < 0 || n_hyp < 0)
    throw std::invalid_argument("ransac_score_cuda: negative size (n_pairs " + std::to_string(n_pairs) +
                                ", n_points " + std::to_string(n_points) + ", n_hyp " + std::to_string(n_hyp) + ")");
  if (n_pairs == 0 || n_hyp == 0) return;
  if (n_pairs > 65535) throw std::invalid_argument("ransac_score_cuda: at most 65535 pairs per launch");
  const dim3 grid((n_hyp + kThreads - 1) / kThreads, n_pairs);
  ransac_score_kernel<<<grid, kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const float*>(src), reinterpret_cast<const float*>(dst), reinterpret_cast<const int*>(n_valid),
      reinterpret_cast<const uint32_t*>(keys), n_points, n_hyp, seed, thr2, reinterpret_cast<int*>(scores), reinterpret_cast<double*>(models));
  check_cuda(cudaGetLastError(), "ransac_score_cuda launch");
}

}  // namespace sparkle_fast
