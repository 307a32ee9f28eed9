// The per-hypothesis work of batched RANSAC homography, shared by the CUDA kernel (ransac.cu) and its host twin
// (ransac_host.cpp), so that the GPU's logic is tested on any machine. The numpy reference
// (sparkle_fast/ops/homography.py) restates the same arithmetic in the same order.
//
// A hypothesis (pair b, index h) draws 4 of the pair's n valid correspondences with a counter-based hash of
// (seed, keys[b], h, k): no state, so any thread can make any hypothesis and the draw is the same on every backend
// and, for a pair given the same key, in every batch.
// It is rejected (score -1) when two draws repeat, when any 3 of the 4 points are collinear in src or dst, when the
// 4 triangles change orientation inconsistently between src and dst (OpenCV's sample check), or when the 8x8 DLT
// system with h33 = 1 is singular. Otherwise its score is the number of correspondences with squared reprojection
// error <= thr2. Everything is double precision.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace sparkle_fast {
namespace ransac_core {

constexpr double kMinTwiceArea = 1e-3;  // |det| of a sample triangle below this (pixels^2): collinear
constexpr double kMinPivot = 1e-12;     // a smaller pivot in the DLT elimination: singular

// A 32-bit integer hash with good avalanche (two multiply-xorshift rounds).
SF_HD uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// The k-th (0..3) correspondence index of hypothesis h of the pair keyed `pair`, in [0, n).
SF_HD uint32_t sample_index(uint32_t seed, uint32_t pair, uint32_t hyp, uint32_t k, uint32_t n) {
  uint32_t h = mix32(seed ^ 0x9e3779b9u);
  h = mix32(h ^ pair);
  h = mix32(h ^ hyp);
  h = mix32(h ^ ((k + 1u) * 0x85ebca6bu));
  return h % n;
}

SF_HD double twice_area(const double* x, const double* y, int i, int j, int k) {
  return (x[j] - x[i]) * (y[k] - y[i]) - (x[k] - x[i]) * (y[j] - y[i]);
}

// OpenCV's checkSubset for homographies, plus a collinearity test on both sides.
SF_HD bool good_sample(const double* sx, const double* sy, const double* dx, const double* dy) {
  const int triples[4][3] = {{0, 1, 2}, {1, 2, 3}, {0, 2, 3}, {0, 1, 3}};
  int negative = 0;
  for (int t = 0; t < 4; ++t) {
    const double a = twice_area(sx, sy, triples[t][0], triples[t][1], triples[t][2]);
    const double b = twice_area(dx, dy, triples[t][0], triples[t][1], triples[t][2]);
    if (!(a * a >= kMinTwiceArea * kMinTwiceArea) || !(b * b >= kMinTwiceArea * kMinTwiceArea)) return false;
    negative += (a * b < 0) ? 1 : 0;
  }
  return negative == 0 || negative == 4;
}

// The homography (row-major, h33 = 1) mapping the 4 (sx, sy) onto the 4 (dx, dy): Gaussian elimination with
// partial pivoting (first largest pivot) on the 8x9 augmented DLT system. False when singular.
SF_HD bool solve_homography4(const double* sx, const double* sy, const double* dx, const double* dy, double* h) {
  double m[8][9];
  for (int k = 0; k < 4; ++k) {
    const double x = sx[k], y = sy[k], u = dx[k], v = dy[k];
    double* r0 = m[2 * k];
    double* r1 = m[2 * k + 1];
    r0[0] = x; r0[1] = y; r0[2] = 1.0; r0[3] = 0.0; r0[4] = 0.0; r0[5] = 0.0; r0[6] = -u * x; r0[7] = -u * y;
    r0[8] = u;
    r1[0] = 0.0; r1[1] = 0.0; r1[2] = 0.0; r1[3] = x; r1[4] = y; r1[5] = 1.0; r1[6] = -v * x; r1[7] = -v * y;
    r1[8] = v;
  }
  for (int c = 0; c < 8; ++c) {
    int pivot = c;
    double best = m[c][c] < 0 ? -m[c][c] : m[c][c];
    for (int r = c + 1; r < 8; ++r) {
      const double a = m[r][c] < 0 ? -m[r][c] : m[r][c];
      if (a > best) { best = a; pivot = r; }
    }
    if (!(best >= kMinPivot)) return false;
    if (pivot != c) {
      for (int k = 0; k < 9; ++k) { const double t = m[c][k]; m[c][k] = m[pivot][k]; m[pivot][k] = t; }
    }
    for (int r = c + 1; r < 8; ++r) {
      const double f = m[r][c] / m[c][c];
      for (int k = c; k < 9; ++k) m[r][k] = m[r][k] - f * m[c][k];
    }
  }
  for (int c = 7; c >= 0; --c) {
    double s = m[c][8];
    for (int k = c + 1; k < 8; ++k) s = s - m[c][k] * h[k];
    h[c] = s / m[c][c];
  }
  h[8] = 1.0;
  return true;
}

// Draw hypothesis (pair, hyp) from the pair's n valid correspondences (src, dst: float32 [n][2]) and solve it.
SF_HD bool make_hypothesis(const float* src, const float* dst, uint32_t n, uint32_t seed, uint32_t pair,
                           uint32_t hyp, double* h) {
  if (n < 4) return false;
  uint32_t idx[4];
  double sx[4], sy[4], dx[4], dy[4];
  for (uint32_t k = 0; k < 4; ++k) {
    idx[k] = sample_index(seed, pair, hyp, k, n);
    for (uint32_t j = 0; j < k; ++j)
      if (idx[j] == idx[k]) return false;
    sx[k] = src[2 * idx[k]];
    sy[k] = src[2 * idx[k] + 1];
    dx[k] = dst[2 * idx[k]];
    dy[k] = dst[2 * idx[k] + 1];
  }
  if (!good_sample(sx, sy, dx, dy)) return false;
  return solve_homography4(sx, sy, dx, dy, h);
}

// Squared reprojection error of (x, y) -> (u, v) under h is <= thr2 (false for NaN or a point mapped to infinity).
SF_HD bool is_inlier(const double* h, double x, double y, double u, double v, double thr2) {
  const double w = h[6] * x + h[7] * y + h[8];
  const double ex = (h[0] * x + h[1] * y + h[2]) / w - u;
  const double ey = (h[3] * x + h[4] * y + h[5]) / w - v;
  return ex * ex + ey * ey <= thr2;
}

// Correspondences are scored in tiles of kTile (the CUDA kernel stages each tile in shared memory; the host twin walks
// the same tiles), and tile_length/count_inliers are the code both run, so the tiling is tested on the host too.
constexpr int kTile = 256;

SF_HD int tile_length(int start, int n) { return n - start < kTile ? n - start : kTile; }

// Inliers of h among the m correspondences of one tile; P has members x, y (src) and z, w (dst), as CUDA's float4.
template <typename P>
SF_HD int count_inliers(const double* h, const P* tile, int m, double thr2) {
  int count = 0;
  for (int i = 0; i < m; ++i) count += is_inlier(h, tile[i].x, tile[i].y, tile[i].z, tile[i].w, thr2) ? 1 : 0;
  return count;
}

}  // namespace ransac_core
}  // namespace sparkle_fast
