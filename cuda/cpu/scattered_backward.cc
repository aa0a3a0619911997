// Backward at arbitrary queries, in three gathers and no atomics:
//  1. per query: g, offset = g . out - Z h and 1/Z (gmm_math.h), written in
//     cell order next to the query's coordinates (query_runs.h);
//  2. per cell: d_queries of the cell's queries, summed over its point list
//     in point order, all the cell's queries at once;
//  3. per point: d_points, d_values, d_scale, summed over the queries of the
//     cells its bounding box overlaps, row by row of cells in query order.
// Pairs of zero weight contribute nothing, even where a value or cotangent is
// inf or NaN (the selects below, and the short runs' skips, keep 0 * inf out
// of the sums).
#include <algorithm>
#include <vector>

#include "channels.h"
#include "kernels.h"
#include "parallel.h"
#include "query_runs.h"

namespace jax_gmm {
namespace JAX_GMM_ISA {

namespace {
constexpr int64_t kPointsPerTask = 64;

// Per-pair ratio w / Z and cotangent u of point g (values c) at entries
// [k0, k0 + n) of the runs (planes: g_0 .. g_C-1, offset, 1/Z), into
// ratio[0, n) and u[0, n); `dot` is scratch.
template <typename T>
void run_cotangents(const Gaussian<T>& g, const T* c, int64_t channels, const QueryRuns<T>& runs,
                    int64_t k0, int64_t n, T* ratio, T* dot, T* u) {
  run_weights(g, runs.x() + k0, runs.y() + k0, n, ratio);
  const T* inv_density = runs.plane(channels + 1) + k0;
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) {
    ratio[k] = weight_ratio(ratio[k], inv_density[k]);
    dot[k] = T(0);
  }
  for (int64_t ch = 0; ch < channels; ++ch) {
    const T* g_ch = runs.plane(ch) + k0;
    const T value = c[ch];
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) dot[k] += g_ch[k] * value;
  }
  const T* offset = runs.plane(channels) + k0;
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) u[k] = pair_cotangent(ratio[k], dot[k], offset[k]);
}

// run_cotangents for the one pair of g with run entry k, (dx, dy) = query -
// point: its ratio, 0 where the pair has zero weight (then u is unset, and
// past the cutoff the exponential is skipped).
template <typename T>
T pair_ratio(const Gaussian<T>& g, const T* c, int64_t channels, const QueryRuns<T>& runs,
             int64_t k, T dx, T dy, T& u) {
  const T m2 = pair_m2(g, dx, dy);
  if (!in_cutoff(g, m2)) return T(0);  // most pairs of a short run
  const T ratio = weight_ratio(cutoff_weight(g, m2), runs.plane(channels + 1)[k]);
  if (ratio == T(0)) return ratio;
  T dot = 0;
  for (int64_t ch = 0; ch < channels; ++ch) dot += runs.plane(ch)[k] * c[ch];
  u = pair_cotangent(ratio, dot, runs.plane(channels)[k]);
  return ratio;
}

// PointSums::add of a pair with this ratio, cotangent u and whitened offset
// e, on the six sums as separate variables (the vector loops' reductions).
// Nothing where ratio = 0: then u = 0, and e may be inf.
template <typename T>
inline void add_pair_terms(T ratio, T u, Whitened<T> e, T& su, T& sex, T& sey, T& sxx, T& sxy,
                           T& syy) {
  const T v = ratio != T(0) ? u : T(0);
  const T ex = ratio != T(0) ? e.x : T(0), ey = ratio != T(0) ? e.y : T(0);
  su += v;
  sex += v * ex;
  sey += v * ey;
  sxx += v * (ex * ex);
  sxy += v * (ex * ey);
  syy += v * (ey * ey);
}

// Point g's sums (PointSums, and ratio * g_ch into d_c) over entries [k0,
// k0 + n) of the runs, for C channels at run time.
template <typename T>
PointSums<T> span_sums(const Gaussian<T>& g, const T* c, int64_t C, const QueryRuns<T>& runs,
                       int64_t k0, int64_t n, std::vector<T>& scratch, T* d_c) {
  if (static_cast<int64_t>(scratch.size()) < 3 * n) scratch.resize(3 * n);
  T *ratio = scratch.data(), *dot = ratio + n, *u = dot + n;
  run_cotangents(g, c, C, runs, k0, n, ratio, dot, u);
  const T *xs = runs.x() + k0, *ys = runs.y() + k0;
  T su = 0, sex = 0, sey = 0, sxx = 0, sxy = 0, syy = 0;
#pragma omp simd reduction(+ : su, sex, sey, sxx, sxy, syy)
  for (int64_t k = 0; k < n; ++k) {
    add_pair_terms(ratio[k], u[k], whiten(g, xs[k] - g.x, ys[k] - g.y), su, sex, sey, sxx, sxy,
                   syy);
  }
  for (int64_t ch = 0; ch < C; ++ch) {
    const T* g_ch = runs.plane(ch) + k0;
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t k = 0; k < n; ++k) sum += weighted(ratio[k], g_ch[k]);
    d_c[ch] += sum;
  }
  return {su, sex, sey, sxx, sxy, syy};
}

// span_sums for kC = 1 to 4 channels, known at compile time: the weight,
// cotangent and every sum of an entry in one vector loop, where
// run_cotangents and the loops after it make 2 C + 4 passes over the span
// and its scratch. Channels past kC point at plane 0, and are neither
// read nor added.
template <int kC, typename T>
PointSums<T> span_sums(const Gaussian<T>& point, const T* c, const QueryRuns<T>& runs,
                       int64_t k0, int64_t n, T* d_c) {
  static_assert(kC >= 1 && kC <= 4, "one to four channels");
  const Gaussian<T> g = point;  // a copy: see run_weights
  const T *xs = runs.x() + k0, *ys = runs.y() + k0;
  const T *offset = runs.plane(kC) + k0, *inv_density = runs.plane(kC + 1) + k0;
  const T* g0 = runs.plane(0) + k0;
  const T* g1 = runs.plane(kC > 1 ? 1 : 0) + k0;
  const T* g2 = runs.plane(kC > 2 ? 2 : 0) + k0;
  const T* g3 = runs.plane(kC > 3 ? 3 : 0) + k0;
  const T c0 = c[0], c1 = kC > 1 ? c[1] : T(0), c2 = kC > 2 ? c[2] : T(0);
  const T c3 = kC > 3 ? c[3] : T(0);
  T su = 0, sex = 0, sey = 0, sxx = 0, sxy = 0, syy = 0, d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma omp simd reduction(+ : su, sex, sey, sxx, sxy, syy, d0, d1, d2, d3)
  for (int64_t k = 0; k < n; ++k) {
    const T dx = xs[k] - g.x, dy = ys[k] - g.y;
    const T ratio = weight_ratio(cutoff_weight(g, pair_m2(g, dx, dy)), inv_density[k]);
    T dot = T(0) + g0[k] * c0;  // from +0, in channel order, as run_cotangents
    if constexpr (kC > 1) dot += g1[k] * c1;
    if constexpr (kC > 2) dot += g2[k] * c2;
    if constexpr (kC > 3) dot += g3[k] * c3;
    const T u = pair_cotangent(ratio, dot, offset[k]);
    add_pair_terms(ratio, u, whiten(g, dx, dy), su, sex, sey, sxx, sxy, syy);
    d0 += weighted(ratio, g0[k]);
    if constexpr (kC > 1) d1 += weighted(ratio, g1[k]);
    if constexpr (kC > 2) d2 += weighted(ratio, g2[k]);
    if constexpr (kC > 3) d3 += weighted(ratio, g3[k]);
  }
  d_c[0] += d0;
  if constexpr (kC > 1) d_c[1] += d1;
  if constexpr (kC > 2) d_c[2] += d2;
  if constexpr (kC > 3) d_c[3] += d3;
  return {su, sex, sey, sxx, sxy, syy};
}
}  // namespace

template <typename T>
void scattered_backward(ThreadPool& pool, const CelledQueries<T>& celled, const T* values,
                        int64_t channels, const T* queries, int64_t m, const T* out,
                        const T* density, const T* d_out, const T* d_density, T* d_points,
                        T* d_values, T* d_scale, T* d_queries, bool point_grads,
                        bool query_grads) {
  const int64_t C = channels, n_points = celled.gaussians.size();
  const QueryRuns<T> runs(pool, celled, queries, C + 2);
  const uint32_t* items = celled.queries.items.data();
  parallel_for(pool, celled.cells_x * celled.cells_y, [&](int64_t cell) {
    const int64_t first = celled.queries.start[cell];
    for (int64_t k = 0; k < celled.queries.start[cell + 1] - first; ++k) {
      const int64_t q = items[first + k];
      fold_query(d_out + q * C, out + q * C, density[q], d_density[q], C,
                 runs.plane(0) + runs.begin[cell] + k, runs.count);
    }
  });

  std::fill(d_queries, d_queries + 2 * m, T(0));  // queries in no cell reach no point
  const CellLists& pts = celled.points;
  if (query_grads) parallel_for(pool, celled.cells_x * celled.cells_y, [&](int64_t cell) {
    const int64_t k0 = runs.begin[cell], n = runs.length(cell);
    if (n == 0) return;
    std::vector<T> scratch(5 * n, T(0));  // [gx | gy | ratio | dot | u]
    T *gx = scratch.data(), *gy = gx + n, *ratio = gy + n, *dot = ratio + n, *u = dot + n;
    const T *xs = runs.x() + k0, *ys = runs.y() + k0;
    const int64_t last = pts.start[cell + 1];
    for (int64_t l = pts.start[cell]; l < last; ++l) {
      prefetch_point(celled, values, C, l + 4 < last ? pts.items[l + 4] : -1);
      const int64_t i = pts.items[l];
      const Gaussian<T> g = celled.gaussians[i];  // a copy: see run_weights
      if (n < kShortRun) {
        for (int64_t k = 0; k < n; ++k) {
          const T dx = xs[k] - g.x, dy = ys[k] - g.y;
          T u_k = 0;
          if (pair_ratio(g, values + i * C, C, runs, k0 + k, dx, dy, u_k) == T(0)) continue;
          add_query_grad(g, u_k, dx, dy, &gx[k], &gy[k]);
        }
        continue;
      }
      run_cotangents(g, values + i * C, C, runs, k0, n, ratio, dot, u);
#pragma omp simd
      for (int64_t k = 0; k < n; ++k) {
        add_query_grad(g, u[k], xs[k] - g.x, ys[k] - g.y, &gx[k], &gy[k]);
      }
    }
    const int64_t first = celled.queries.start[cell];
    for (int64_t k = 0; k < celled.queries.start[cell + 1] - first; ++k) {
      const int64_t q = items[first + k];
      d_queries[2 * q] = gx[k];
      d_queries[2 * q + 1] = gy[k];
    }
  });

  if (!point_grads) {
    std::fill(d_points, d_points + 2 * n_points, T(0));
    std::fill(d_values, d_values + n_points * C, T(0));
    std::fill(d_scale, d_scale + 3 * n_points, T(0));
    return;
  }
  parallel_for(pool, (n_points + kPointsPerTask - 1) / kPointsPerTask, [&](int64_t task) {
    std::vector<T> d_c(C), scratch;
    for (int64_t i = task * kPointsPerTask; i < std::min(n_points, (task + 1) * kPointsPerTask);
         ++i) {
      const Gaussian<T>& g = celled.gaussians[i];
      const T* c = values + i * C;
      PointSums<T> sums;
      std::fill(d_c.begin(), d_c.end(), T(0));
      const Box& cells = celled.cell_boxes[i];  // empty for an invalid point
      for (int64_t ky = cells.y.lo; ky <= cells.y.hi; ++ky) {
        // The row's cells are consecutive, and so are their runs: one
        // span per row, padding included (NaN queries, weight 0). At a
        // few queries per cell, a loop per cell was mostly the vector
        // loops' set-up and reductions: the backward alone, 65,536 points
        // on 512 x 512 at sigma 2, took 12.3-15.5 against 16.0-22.3 ms at
        // 4,096 queries, 22.5-29.7 against 33.4-40.1 ms at 65,536 (min of
        // calls, 4 alternated processes on the EPYC).
        const int64_t row = ky * celled.cells_x;
        const int64_t k0 = runs.begin[row + cells.x.lo];
        const int64_t n = runs.begin[row + cells.x.hi + 1] - k0;
        if (n <= 0) continue;  // no query in the row (or a box empty along x)
        // Short spans pair by pair: the backward alone, at 65,536 points
        // on 512 x 512, sigma 2, took 8.3-9.8 against 12.2-14.6 ms at 4,096
        // queries, 4.4-5.8 against 6.9-9.8 ms at 1,024 (min of calls, 4
        // alternated processes on the EPYC).
        if (n < kShortRun) {
          const T *xs = runs.x() + k0, *ys = runs.y() + k0;
          for (int64_t k = 0; k < n; ++k) {
            const T dx = xs[k] - g.x, dy = ys[k] - g.y;
            T u_k = 0;
            const T ratio = pair_ratio(g, c, C, runs, k0 + k, dx, dy, u_k);
            if (ratio == T(0)) continue;  // u = 0, and e may be inf
            sums.add(u_k, whiten(g, dx, dy));
            for (int64_t ch = 0; ch < C; ++ch) d_c[ch] += ratio * runs.plane(ch)[k0 + k];
          }
          continue;
        }
        with_channels(C, [&](auto kC) {
          if constexpr (kC() > 0) {
            sums.add(span_sums<kC()>(g, c, runs, k0, n, d_c.data()));
          } else {
            sums.add(span_sums(g, c, C, runs, k0, n, scratch, d_c.data()));
          }
        });
      }
      finish_point_grad(g, sums, &d_points[2 * i], &d_points[2 * i + 1], &d_scale[3 * i]);
      for (int64_t ch = 0; ch < C; ++ch) d_values[i * C + ch] = d_c[ch];
    }
  });
}

#define JAX_GMM_INSTANTIATE(T)                                                               \
  template void scattered_backward<T>(ThreadPool&, const CelledQueries<T>&, const T*,       \
                                      int64_t, const T*, int64_t, const T*, const T*,       \
                                      const T*, const T*, T*, T*, T*, T*, bool, bool);
JAX_GMM_INSTANTIATE(float)
JAX_GMM_INSTANTIATE(double)
#undef JAX_GMM_INSTANTIATE

}  // namespace JAX_GMM_ISA
}  // namespace jax_gmm
