// Host twin of the CUDA RANSAC scoring kernel: the same hypotheses (ransac_core.h) in a plain loop, built with or
// without CUDA, so the GPU code's sampling, solve and inlier test are checked against the numpy reference here.

#include "ransac_host.h"

#include <stdexcept>
#include <string>
#include <vector>

#include "ransac_core.h"

namespace sparkle_fast {

void ransac_score_host(std::uintptr_t src_addr, std::uintptr_t dst_addr, std::uintptr_t n_valid_addr,
                       std::uintptr_t keys_addr, int n_pairs, int n_points, int n_hyp, std::uint32_t seed, double thr2, std::uintptr_t scores_addr,
                       std::uintptr_t models_addr) {
  if (n_pairs < 0 || n_points < 0 || n_hyp < 0)
    throw std::invalid_argument("ransac_score_host: negative size (n_pairs " + std::to_string(n_pairs) +
                                ", n_points " + std::to_string(n_points) + ", n_hyp " + std::to_string(n_hyp) + ")");
  const float* src = reinterpret_cast<const float*>(src_addr);
  const float* dst = reinterpret_cast<const float*>(dst_addr);
  const int* n_valid = reinterpret_cast<const int*>(n_valid_addr);
  const std::uint32_t* keys = reinterpret_cast<const std::uint32_t*>(keys_addr);
  int* scores = reinterpret_cast<int*>(scores_addr);
  double* models = reinterpret_cast<double*>(models_addr);
  struct Float4 {
    float x, y, z, w;
  };
  std::vector<Float4> tile(ransac_core::kTile);
  for (int b = 0; b < n_pairs; ++b) {
    const float* s = src + int64_t(b) * n_points * 2;
    const float* d = dst + int64_t(b) * n_points * 2;
    const int n = n_valid[b] < n_points ? n_valid[b] : n_points;
    for (int hyp = 0; hyp < n_hyp; ++hyp) {
      double* h = models + (int64_t(b) * n_hyp + hyp) * 9;
      for (int k = 0; k < 9; ++k) h[k] = 0.0;
      int count = -1;
      if (n >= 4 && ransac_core::make_hypothesis(s, d, uint32_t(n), seed, keys[b], uint32_t(hyp), h)) {
        count = 0;
        for (int start = 0; start < n; start += ransac_core::kTile) {  // the kernel's tiles, staged the same way
          const int m = ransac_core::tile_length(start, n);
          for (int i = 0; i < m; ++i)
            tile[i] = {s[2 * (start + i)], s[2 * (start + i) + 1], d[2 * (start + i)], d[2 * (start + i) + 1]};
          count += ransac_core::count_inliers(h, tile.data(), m, thr2);
        }
      }
      scores[int64_t(b) * n_hyp + hyp] = count;
    }
  }
}

}  // namespace sparkle_fast
