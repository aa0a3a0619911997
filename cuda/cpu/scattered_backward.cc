// Backward at arbitrary queries, in three gathers and no atomics:
//  1. per query: g, offset = g . out - Z h and 1/Z (gmm_math.h);
//  2. per query: d_queries, summed over the point list of the query's cell;
//  3. per point: d_points, d_values, d_sigma, summed over the queries of the
//     cells its bounding box overlaps, cell by cell in query order.
#include <algorithm>
#include <memory>
#include <vector>

#include "kernels.h"
#include "parallel.h"

namespace jax_gmm {
namespace JAX_GMM_ISA {

namespace {
constexpr int64_t kPointsPerTask = 64;
constexpr int64_t kQueriesPerTask = 4096;
}  // namespace

template <typename T>
void scattered_backward(ThreadPool& pool, const CelledQueries<T>& celled, const T* values,
                        int64_t channels, const T* queries, int64_t m, const T* out,
                        const T* density, const T* d_out, const T* d_density, T* d_points,
                        T* d_values, T* d_sigma, T* d_queries) {
  const int64_t C = channels, n = celled.gaussians.size();
  // Per query [g_0 .. g_C-1, offset, 1/Z] (gmm_math.h).
  const int64_t record = C + 2;
  // Every entry is written by the fold below: no zero-filling of O(M) memory.
  const std::unique_ptr<T[]> folded(new T[record * m]);
  parallel_for(pool, (m + kQueriesPerTask - 1) / kQueriesPerTask, [&](int64_t task) {
    for (int64_t q = task * kQueriesPerTask; q < std::min(m, (task + 1) * kQueriesPerTask); ++q) {
      fold_query(d_out + q * C, out + q * C, density[q], d_density[q], C, &folded[q * record],
                 int64_t{1});
    }
  });
  // u for one pair, and its ratio w / Z.
  const auto cotangent = [&](const Gaussian<T>& g, const T* c, const T* f, T dx, T dy, T* ratio) {
    *ratio = weight_ratio(pair_weight(g, dx, dy), f[C + 1]);
    T dot = 0;
    for (int64_t ch = 0; ch < C; ++ch) dot += f[ch] * c[ch];
    return pair_cotangent(*ratio, dot, f[C]);
  };

  std::fill(d_queries, d_queries + 2 * m, T(0));  // non-finite queries are in no cell
  parallel_for(pool, celled.cells_x * celled.cells_y, [&](int64_t cell) {
    const CellLists& pts = celled.points;
    for (int64_t k = celled.queries.start[cell]; k < celled.queries.start[cell + 1]; ++k) {
      const int64_t q = celled.queries.items[k];
      const T qx = queries[2 * q], qy = queries[2 * q + 1];
      T gx = 0, gy = 0;
      for (int64_t l = pts.start[cell]; l < pts.start[cell + 1]; ++l) {
        const int64_t i = pts.items[l];
        const Gaussian<T>& g = celled.gaussians[i];
        T ratio;
        const T dx = qx - g.x, dy = qy - g.y;
        const T u = cotangent(g, values + i * C, &folded[q * record], dx, dy, &ratio);
        add_query_grad(g, u, dx, dy, &gx, &gy);
      }
      d_queries[2 * q] = gx;
      d_queries[2 * q + 1] = gy;
    }
  });

  parallel_for(pool, (n + kPointsPerTask - 1) / kPointsPerTask, [&](int64_t task) {
    std::vector<T> d_c(C);
    for (int64_t i = task * kPointsPerTask; i < std::min(n, (task + 1) * kPointsPerTask); ++i) {
      const Gaussian<T>& g = celled.gaussians[i];
      const T* c = values + i * C;
      T sum_u = 0, sum_u_dx = 0, sum_u_dy = 0, sum_u_m2 = 0;
      std::fill(d_c.begin(), d_c.end(), T(0));
      const Range cx = g.valid() ? celled.cells_x_of(g) : Range{1, 0};
      const Range cy = g.valid() ? celled.cells_y_of(g) : Range{1, 0};
      for (int64_t ky = cy.lo; ky <= cy.hi; ++ky) {
        for (int64_t kx = cx.lo; kx <= cx.hi; ++kx) {
          const int64_t cell = ky * celled.cells_x + kx;
          for (int64_t k = celled.queries.start[cell]; k < celled.queries.start[cell + 1]; ++k) {
            const int64_t q = celled.queries.items[k];
            const T dx = queries[2 * q] - g.x, dy = queries[2 * q + 1] - g.y;
            const T* f = &folded[q * record];
            T ratio;
            const T u = cotangent(g, c, f, dx, dy, &ratio);
            if (ratio > T(0)) {
              for (int64_t ch = 0; ch < C; ++ch) d_c[ch] += ratio * f[ch];
              sum_u += u;
              sum_u_dx += u * dx;
              sum_u_dy += u * dy;
              sum_u_m2 += u * pair_m2(g, dx, dy);
            }
          }
        }
      }
      finish_point_grad(g, sum_u, sum_u_dx, sum_u_dy, sum_u_m2, &d_points[2 * i],
                        &d_points[2 * i + 1], &d_sigma[i]);
      for (int64_t ch = 0; ch < C; ++ch) d_values[i * C + ch] = d_c[ch];
    }
  });
}

#define JAX_GMM_INSTANTIATE(T)                                                               \
  template void scattered_backward<T>(ThreadPool&, const CelledQueries<T>&, const T*,       \
                                      int64_t, const T*, int64_t, const T*, const T*,       \
                                      const T*, const T*, T*, T*, T*, T*);
JAX_GMM_INSTANTIATE(float)
JAX_GMM_INSTANTIATE(double)
#undef JAX_GMM_INSTANTIATE

}  // namespace JAX_GMM_ISA
}  // namespace jax_gmm
