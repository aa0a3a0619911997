// Forward at arbitrary queries: queries are sorted into cells about one cutoff
// radius wide and points are splatted into every cell their box overlaps; each
// cell is one task and each of its queries sums over the cell's point list.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels.h"
#include "parallel.h"

namespace jax_gmm {

namespace {
// Cap on cells per example: keeps memory O(M) when queries are spread far
// wider than the cutoff radius.
int64_t max_cells(int64_t m) { return std::max<int64_t>(1024, 2 * m); }
}  // namespace

template <typename T>
CelledQueries<T>::CelledQueries(const T* points, const T* sigma, int64_t n, T truncate,
                                const T* queries, int64_t m)
    : gaussians(make_gaussians(points, sigma, n, truncate)) {
  T x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (int64_t q = 0; q < m; ++q) {
    const T x = queries[2 * q], y = queries[2 * q + 1];
    if (!is_finite(x) || !is_finite(y)) continue;
    x_lo = std::min(x_lo, x), x_hi = std::max(x_hi, x);
    y_lo = std::min(y_lo, y), y_hi = std::max(y_hi, y);
  }
  T radius_sum = 0;
  int64_t valid = 0;
  for (const Gaussian<T>& g : gaussians) {
    if (g.valid && is_finite(g.box_radius)) radius_sum += g.box_radius, ++valid;
  }
  if (!(x_lo <= x_hi) || valid == 0) {  // no finite query, or no point to reach one
    this->points.build(0, 0, [](int64_t, auto) {});
    this->queries.build(0, 0, [](int64_t, auto) {});
    return;
  }
  origin_x = x_lo, origin_y = y_lo;
  const T span_x = x_hi - x_lo, span_y = y_hi - y_lo;
  cell = std::max(radius_sum / T(valid), std::max(span_x, span_y) * T(1e-6));
  const auto count = [&](T span) { return static_cast<int64_t>(std::floor(span / cell)) + 1; };
  if (!(T(count(span_x)) * T(count(span_y)) <= T(max_cells(m)))) {
    cell = std::max(span_x, span_y) / std::floor(std::sqrt(T(max_cells(m)))) * T(1.0001);
  }
  cells_x = std::max<int64_t>(1, count(span_x));
  cells_y = std::max<int64_t>(1, count(span_y));
  this->queries.build(cells_x * cells_y, m, [&](int64_t q, auto emit) {
    const T x = queries[2 * q], y = queries[2 * q + 1];
    if (!is_finite(x) || !is_finite(y)) return;
    const Range cx = cell_range(x, x, origin_x, cell, cells_x);
    const Range cy = cell_range(y, y, origin_y, cell, cells_y);
    emit(cy.lo * cells_x + cx.lo);
  });
  this->points.build(cells_x * cells_y, n, [&](int64_t i, auto emit) {
    const Gaussian<T>& g = gaussians[i];
    if (!g.valid) return;
    const Range cx = cells_x_of(g), cy = cells_y_of(g);
    if (cx.empty() || cy.empty()) return;
    for (int64_t ky = cy.lo; ky <= cy.hi; ++ky) {
      for (int64_t kx = cx.lo; kx <= cx.hi; ++kx) emit(ky * cells_x + kx);
    }
  });
}

template <typename T>
Range CelledQueries<T>::cells_x_of(const Gaussian<T>& g) const {
  return cell_range(g.x - g.box_radius, g.x + g.box_radius, origin_x, cell, cells_x);
}

template <typename T>
Range CelledQueries<T>::cells_y_of(const Gaussian<T>& g) const {
  return cell_range(g.y - g.box_radius, g.y + g.box_radius, origin_y, cell, cells_y);
}

template <typename T>
void scattered_forward(ThreadPool& pool, const CelledQueries<T>& celled, const T* values,
                       int64_t channels, const T* queries, int64_t m, T* out, T* density) {
  const int64_t C = channels;
  std::fill(out, out + m * C, T(0));  // queries outside every cell (non-finite) stay 0
  std::fill(density, density + m, T(0));
  parallel_for(pool, celled.cells_x * celled.cells_y, [&](int64_t cell) {
    std::vector<T> acc(C);
    const CellLists& pts = celled.points;
    for (int64_t k = celled.queries.start[cell]; k < celled.queries.start[cell + 1]; ++k) {
      const int64_t q = celled.queries.items[k];
      const T qx = queries[2 * q], qy = queries[2 * q + 1];
      T z = 0;
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t l = pts.start[cell]; l < pts.start[cell + 1]; ++l) {
        const int64_t i = pts.items[l];
        const Gaussian<T>& g = celled.gaussians[i];
        const T w = pair_weight(g, qx - g.x, qy - g.y);
        z += w;
        for (int64_t ch = 0; ch < C; ++ch) acc[ch] += w * values[i * C + ch];
      }
      density[q] = z;
      for (int64_t ch = 0; ch < C; ++ch) out[q * C + ch] = normalise(acc[ch], z);
    }
  });
}

#define JAX_GMM_INSTANTIATE(T)                                                        \
  template struct CelledQueries<T>;                                                  \
  template void scattered_forward<T>(ThreadPool&, const CelledQueries<T>&, const T*, \
                                     int64_t, const T*, int64_t, T*, T*);
JAX_GMM_INSTANTIATE(float)
JAX_GMM_INSTANTIATE(double)
#undef JAX_GMM_INSTANTIATE

}  // namespace jax_gmm
