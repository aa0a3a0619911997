// Grid backward: every point gathers over the pixels of its own bounding box,
// so its cotangents are plain sums in a fixed order (no atomics). A first pass
// folds each pixel's cotangents and its out and Z into g, offset = g . out - Z h
// and 1/Z (see gmm_math.h).
#include <algorithm>
#include <memory>
#include <vector>

#include "channels.h"
#include "kernels.h"
#include "parallel.h"
#include "separable.h"

namespace jax_gmm {
namespace JAX_GMM_ISA {

namespace {
constexpr int64_t kPointsPerTask = 64;
constexpr int64_t kRowsPerTask = 16;
// Side of the squares that order the points (spatial_order): small enough that
// a task's 64 points share the rows they read.
constexpr int64_t kOrderCell = 16;
// Pixels of a footprint row handled per pass, so the runtime-C path can keep
// the row's weight ratios in a fixed stack buffer however wide the box.
constexpr int64_t kRowChunk = 128;

// Per-point sums over its footprint that finish_point_grad turns into
// d_points and d_sigma, plus d_values (first C entries of d_c).
template <typename T>
struct Sums {
  T u = 0, u_dx = 0, u_dy = 0, u_d2 = 0;
  T d_c[4] = {0, 0, 0, 0};  // compile-time C only; run-time C uses the caller's buffer
};

// Adds one pixel row of a point's footprint to its sums. `folded` points at
// the row's first pixel in plane 0 of [g_0 | ... | g_C-1 | offset | 1/Z].
template <int kC, typename T>
inline void gather_row(const Gaussian<T>& g, T dy, T row_factor, int64_t nx, const T* dxs,
                       const T* col_factor, const T* c, int64_t channels, const T* folded,
                       int64_t plane, Sums<T>& s, T* d_c_runtime) {
  const int64_t C = kC > 0 ? kC : channels;
  const T dy2 = dy * dy;
  const T* offset = folded + C * plane;
  const T* inv_density = folded + (C + 1) * plane;
  T ratio[kRowChunk];  // w / Z along this pass's pixels (runtime-C path only)
  T su = 0, sdx = 0, sdy = 0, sd2 = 0, dc0 = 0, dc1 = 0, dc2 = 0, dc3 = 0;
  for (int64_t j0 = 0; j0 < nx; j0 += kRowChunk) {
    const int n = static_cast<int>(std::min<int64_t>(kRowChunk, nx - j0));
    const T* fo = folded + j0;
#pragma omp simd reduction(+ : su, sdx, sdy, sd2, dc0, dc1, dc2, dc3)
    for (int j = 0; j < n; ++j) {
      const T dx = dxs[j0 + j];
      const T d2 = dx * dx + dy2;
      const T f = row_factor * col_factor[j0 + j];  // loaded unconditionally: a vector select
      const T r = weight_ratio(d2 <= g.radius2 ? f : T(0), inv_density[j0 + j]);
      if constexpr (kC == 0) ratio[j] = r;
      T dot = 0;
      for (int64_t ch = 0; ch < C; ++ch) dot += fo[ch * plane + j] * c[ch];
      const T u = pair_cotangent(r, dot, offset[j0 + j]);
      su += u;
      sdx += u * dx;
      sdy += u * dy;
      sd2 += u * d2;
      if constexpr (kC > 0) {
        dc0 += r * fo[j];
        if constexpr (kC > 1) dc1 += r * fo[plane + j];
        if constexpr (kC > 2) dc2 += r * fo[2 * plane + j];
        if constexpr (kC > 3) dc3 += r * fo[3 * plane + j];
      }
    }
    if constexpr (kC == 0) {
      for (int64_t ch = 0; ch < C; ++ch) {
        T acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int j = 0; j < n; ++j) acc += ratio[j] * fo[ch * plane + j];
        d_c_runtime[ch] += acc;
      }
    }
  }
  s.u += su, s.u_dx += sdx, s.u_dy += sdy, s.u_d2 += sd2;
  s.d_c[0] += dc0, s.d_c[1] += dc1, s.d_c[2] += dc2, s.d_c[3] += dc3;
}

// Points in order of the kOrderCell square holding their centre, so that
// consecutive points read neighbouring pixels (a counting sort: stable, O(N)).
template <typename T>
std::vector<uint32_t> spatial_order(const std::vector<Gaussian<T>>& gaussians, int64_t height,
                                    int64_t width) {
  const int64_t tiles_x = width / kOrderCell + 1, tiles_y = height / kOrderCell + 1;
  const auto tile_of = [&](const Gaussian<T>& g) {
    const Range tx = cell_range(g.x, g.x, T(0), T(kOrderCell), tiles_x);
    const Range ty = cell_range(g.y, g.y, T(0), T(kOrderCell), tiles_y);
    return ty.empty() || tx.empty() ? int64_t{0} : ty.lo * tiles_x + tx.lo;
  };
  CellLists lists;
  lists.build(tiles_x * tiles_y, gaussians.size(),
              [&](int64_t i, auto emit) { emit(tile_of(gaussians[i])); });
  return std::move(lists.items);
}

template <int kC, typename T>
void grid_backward_point(const Gaussian<T>& g, int64_t height, int64_t width, const T* c,
                         int64_t channels, const T* folded, T* d_point, T* d_value,
                         T* d_sigma) {
  const int64_t C = kC > 0 ? kC : channels, plane = height * width;
  Sums<T> s;
  if constexpr (kC == 0) std::fill(d_value, d_value + C, T(0));
  const Range cols = pixel_range(g.x, g.box_radius, width);
  const Range rows = pixel_range(g.y, g.box_radius, height);
  if (g.valid && !cols.empty() && !rows.empty()) {
    const int64_t nx = cols.hi - cols.lo + 1, ny = rows.hi - rows.lo + 1;
    // [column factors | row factors | column offsets q_x - mu_x]
    std::vector<T> axis(2 * nx + ny);
    T* dxs = axis.data() + nx + ny;
    for (int64_t j = 0; j < nx; ++j) dxs[j] = (T(cols.lo + j) + T(0.5)) - g.x;
    axis_factors(g.exponent, dxs[0], nx, axis.data());
    axis_factors(g.exponent, (T(rows.lo) + T(0.5)) - g.y, ny, axis.data() + nx);
    for (int64_t r = rows.lo; r <= rows.hi; ++r) {
      gather_row<kC>(g, (T(r) + T(0.5)) - g.y, g.norm * axis[nx + r - rows.lo], nx, dxs,
                     axis.data(), c, C, folded + r * width + cols.lo, plane, s, d_value);
    }
  }
  finish_point_grad(g, s.u, s.u_dx, s.u_dy, s.u_d2, &d_point[0], &d_point[1], d_sigma);
  if constexpr (kC > 0) {
    for (int64_t ch = 0; ch < kC; ++ch) d_value[ch] = s.d_c[ch];
  }
}
}  // namespace

template <typename T>
void grid_backward(ThreadPool& pool, const std::vector<Gaussian<T>>& gaussians, int64_t height,
                   int64_t width, const T* values, int64_t channels, const T* out,
                   const T* density, const T* d_out, const T* d_density, T* d_points,
                   T* d_values, T* d_sigma) {
  const int64_t C = channels, pixels = height * width, n = gaussians.size();
  // Channel-major [g_0 | ... | g_C-1 | offset | 1/Z], so row loops vectorise.
  // Every entry is written by the fold below: no zero-filling of O(output) memory.
  const std::unique_ptr<T[]> folded(new T[(C + 2) * pixels]);
  parallel_for(pool, (height + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task) {
    const int64_t p0 = task * kRowsPerTask * width;
    const int64_t p1 = std::min(pixels, p0 + kRowsPerTask * width);
    for (int64_t p = p0; p < p1; ++p) {
      fold_query(d_out + p * C, out + p * C, density[p], d_density[p], C, &folded[p], pixels);
    }
  });
  const std::vector<uint32_t> order = spatial_order(gaussians, height, width);
  with_channels(C, [&](auto kC) {
    parallel_for(pool, (n + kPointsPerTask - 1) / kPointsPerTask, [&](int64_t task) {
      for (int64_t k = task * kPointsPerTask; k < std::min(n, (task + 1) * kPointsPerTask); ++k) {
        const int64_t i = order[k];
        grid_backward_point<kC()>(gaussians[i], height, width, values + i * C, C, folded.get(),
                                  d_points + 2 * i, d_values + i * C, d_sigma + i);
      }
    });
  });
}

#define JAX_GMM_INSTANTIATE(T)                                                              \
  template void grid_backward<T>(ThreadPool&, const std::vector<Gaussian<T>>&, int64_t,   \
                                 int64_t, const T*, int64_t, const T*, const T*, const T*, \
                                 const T*, T*, T*, T*);
JAX_GMM_INSTANTIATE(float)
JAX_GMM_INSTANTIATE(double)
#undef JAX_GMM_INSTANTIATE

}  // namespace JAX_GMM_ISA
}  // namespace jax_gmm
