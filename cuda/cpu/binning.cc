// Construction of the binned points (shared by every instruction-set build
// of the kernels, so it is compiled once).
#include <algorithm>
#include <cmath>

#include "kernels.h"

namespace jax_gmm {

template <typename T>
TiledPoints<T>::TiledPoints(const T* points, const T* sigma, int64_t n, T truncate,
                            int64_t height, int64_t width)
    : height(height),
      width(width),
      tiles_x((width + kTileSize - 1) / kTileSize),
      tiles_y((height + kTileSize - 1) / kTileSize),
      gaussians(make_gaussians(points, sigma, n, truncate)) {
  tiles.build(tiles_x * tiles_y, n, [&](int64_t i, auto emit) {
    const Gaussian<T>& g = gaussians[i];
    if (!g.valid) return;
    const Range cols = pixel_range(g.x, g.box_radius, width);
    const Range rows = pixel_range(g.y, g.box_radius, height);
    if (cols.empty() || rows.empty()) return;
    for (int64_t ty = rows.lo / kTileSize; ty <= rows.hi / kTileSize; ++ty) {
      for (int64_t tx = cols.lo / kTileSize; tx <= cols.hi / kTileSize; ++tx) {
        emit(ty * tiles_x + tx);
      }
    }
  });
}

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

template struct TiledPoints<float>;
template struct TiledPoints<double>;
template struct CelledQueries<float>;
template struct CelledQueries<double>;

}  // namespace jax_gmm
