// Grid backward: every point gathers over the pixels of its own bounding box,
// so its cotangents are plain sums in a fixed order (no atomics). A first pass
// folds each pixel's cotangents and its out/Z into scaled = g / Z and
// offset = scaled . out - h (see gmm_math.h).
#include <algorithm>
#include <vector>

#include "kernels.h"
#include "parallel.h"

namespace jax_gmm {

namespace {
constexpr int64_t kPointsPerTask = 64;
constexpr int64_t kRowsPerTask = 16;
}  // namespace

template <typename T>
void grid_backward(ThreadPool& pool, const std::vector<Gaussian<T>>& gaussians, int64_t height,
                   int64_t width, const T* values, int64_t channels, const T* out,
                   const T* density, const T* d_out, const T* d_density, T* d_points,
                   T* d_values, T* d_sigma) {
  const int64_t C = channels, pixels = height * width, n = gaussians.size();
  // Channel-major [scaled_0 | ... | scaled_C-1 | offset], so row loops vectorise.
  std::vector<T> folded((C + 1) * pixels);
  parallel_for(pool, (height + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task) {
    const int64_t p0 = task * kRowsPerTask * width;
    const int64_t p1 = std::min(pixels, p0 + kRowsPerTask * width);
    for (int64_t p = p0; p < p1; ++p) {
      const T inv = inverse_density(density[p]);
      T offset = -d_density[p];
      for (int64_t ch = 0; ch < C; ++ch) {
        const T scaled = d_out[p * C + ch] * inv;
        folded[ch * pixels + p] = scaled;
        offset += scaled * out[p * C + ch];
      }
      folded[C * pixels + p] = offset;
    }
  });

  parallel_for(pool, (n + kPointsPerTask - 1) / kPointsPerTask, [&](int64_t task) {
    std::vector<T> col_factor, w, dot, d_c(C);
    for (int64_t i = task * kPointsPerTask; i < std::min(n, (task + 1) * kPointsPerTask); ++i) {
      const Gaussian<T>& g = gaussians[i];
      const T* c = values + i * C;
      T sum_u = 0, sum_u_dx = 0, sum_u_dy = 0, sum_u_d2 = 0;
      std::fill(d_c.begin(), d_c.end(), T(0));
      const Range cols = pixel_range(g.x, g.box_radius, width);
      const Range rows = pixel_range(g.y, g.box_radius, height);
      if (g.valid && !cols.empty() && !rows.empty()) {
        const int64_t nx = cols.hi - cols.lo + 1;
        col_factor.resize(nx);
        w.resize(nx);
        dot.resize(nx);
        for (int64_t j = 0; j < nx; ++j) {
          col_factor[j] = axis_factor(g.exponent, (T(cols.lo + j) + T(0.5)) - g.x);
        }
        for (int64_t r = rows.lo; r <= rows.hi; ++r) {
          const T dy = (T(r) + T(0.5)) - g.y;
          const T row_factor = g.norm * axis_factor(g.exponent, dy);
          const T dy2 = dy * dy;
          const int64_t p0 = r * width + cols.lo;
          const T* offset = folded.data() + C * pixels + p0;
#pragma omp simd
          for (int64_t j = 0; j < nx; ++j) {
            const T dx = (T(cols.lo + j) + T(0.5)) - g.x;
            w[j] = dx * dx + dy2 <= g.radius2 ? row_factor * col_factor[j] : T(0);
            dot[j] = T(0);
          }
          for (int64_t ch = 0; ch < C; ++ch) {
            const T* scaled = folded.data() + ch * pixels + p0;
            const T v = c[ch];
            T acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < nx; ++j) {
              dot[j] += scaled[j] * v;
              acc += value_cotangent(w[j], scaled[j]);
            }
            d_c[ch] += acc;
          }
          T su = 0, sdx = 0, sdy = 0, sd2 = 0;
#pragma omp simd reduction(+ : su, sdx, sdy, sd2)
          for (int64_t j = 0; j < nx; ++j) {
            const T dx = (T(cols.lo + j) + T(0.5)) - g.x;
            const T u = pair_cotangent(w[j], dot[j], offset[j]);
            su += u;
            sdx += u * dx;
            sdy += u * dy;
            sd2 += u * (dx * dx + dy2);
          }
          sum_u += su;
          sum_u_dx += sdx;
          sum_u_dy += sdy;
          sum_u_d2 += sd2;
        }
      }
      finish_point_grad(g, sum_u, sum_u_dx, sum_u_dy, sum_u_d2, &d_points[2 * i],
                        &d_points[2 * i + 1], &d_sigma[i]);
      for (int64_t ch = 0; ch < C; ++ch) d_values[i * C + ch] = g.valid ? d_c[ch] : T(0);
    }
  });
}

#define JAX_GMM_INSTANTIATE(T)                                                              \
  template void grid_backward<T>(ThreadPool&, const std::vector<Gaussian<T>>&, int64_t,   \
                                 int64_t, const T*, int64_t, const T*, const T*, const T*, \
                                 const T*, T*, T*, T*);
JAX_GMM_INSTANTIATE(float)
JAX_GMM_INSTANTIATE(double)
#undef JAX_GMM_INSTANTIATE

}  // namespace jax_gmm
