// Construction of the binned points (shared by every instruction-set build
// of the kernels, so it is compiled once).
#include <algorithm>
#include <cmath>

#include "kernels.h"

namespace jax_gmm {

namespace {
template <typename T>
TileBox tile_box(const Gaussian<T>& g, int64_t width, int64_t height) {
  const Range cols = pixel_range(g.x, g.box_radius, width);
  const Range rows = pixel_range(g.y, g.box_radius, height);
  if (!g.valid() || cols.empty() || rows.empty()) return {1, 0, 1, 0};
  return {static_cast<int32_t>(cols.lo / kTileSize), static_cast<int32_t>(cols.hi / kTileSize),
          static_cast<int32_t>(rows.lo / kTileSize), static_cast<int32_t>(rows.hi / kTileSize)};
}
}  // namespace

template <typename T>
TiledPoints<T>::TiledPoints(ThreadPool& pool, const T* points, const T* sigma, int64_t n,
                            T truncate, int64_t height, int64_t width)
    : height(height),
      width(width),
      tiles_x((width + kTileSize - 1) / kTileSize),
      tiles_y((height + kTileSize - 1) / kTileSize),
      gaussians(make_gaussians(pool, points, sigma, n, truncate)),
      boxes(n),
      point_start(n + 1, 0) {
  parallel_over(pool, n, [&](int64_t i) { boxes[i] = tile_box(gaussians[i], width, height); });
  for (int64_t i = 0; i < n; ++i) point_start[i + 1] = point_start[i] + boxes[i].count();
  tiles.build(pool, tiles_x * tiles_y, n, [&](int64_t i, auto emit) {
    const TileBox& b = boxes[i];
    for (int64_t ty = b.y0; ty <= b.y1; ++ty) {
      for (int64_t tx = b.x0; tx <= b.x1; ++tx) emit(ty * tiles_x + tx);
    }
  });
}

template <typename T>
TileRect TiledPoints<T>::tile(int64_t t) const {
  const int64_t x0 = (t % tiles_x) * kTileSize, y0 = (t / tiles_x) * kTileSize;
  return {x0, y0, std::min(kTileSize, width - x0), std::min(kTileSize, height - y0)};
}

namespace {
// Cap on cells per example: keeps memory O(M) when queries are spread far
// wider than the cutoff radius.
int64_t max_cells(int64_t m) { return std::max<int64_t>(1024, 2 * m); }
}  // namespace

// A 1D extent [lo, hi], grown point by point.
struct Extent {
  double lo = INFINITY, hi = -INFINITY;
  void add(double a, double b) { lo = std::min(lo, a), hi = std::max(hi, b); }
  bool empty() const { return !(lo <= hi); }
  bool contains(double v) const { return lo <= v && v <= hi; }
};

template <typename T>
CelledQueries<T>::CelledQueries(ThreadPool& pool, const T* points, const T* sigma, int64_t n,
                                T truncate, const T* queries, int64_t m)
    : gaussians(make_gaussians(pool, points, sigma, n, truncate)) {
  // Only queries that some point's box reaches need a cell: the grid spans
  // those alone, so a far outlier query neither stretches the cells (cost
  // O(N M)) nor, at float's extremes, overflows the layout arithmetic, which
  // is done in double for that reason.
  Extent reach_x, reach_y;
  double radius_sum = 0;
  int64_t finite_radii = 0;
  for (const Gaussian<T>& g : gaussians) {
    if (!g.valid()) continue;
    reach_x.add(double(g.x) - g.box_radius, double(g.x) + g.box_radius);
    reach_y.add(double(g.y) - g.box_radius, double(g.y) + g.box_radius);
    if (is_finite(g.box_radius)) radius_sum += g.box_radius, ++finite_radii;
  }
  const auto reachable = [&](int64_t q) {
    const T x = queries[2 * q], y = queries[2 * q + 1];
    return is_finite(x) && is_finite(y) && reach_x.contains(x) && reach_y.contains(y);
  };
  Extent box_x, box_y;
  for (int64_t q = 0; q < m; ++q) {
    if (!reachable(q)) continue;
    box_x.add(queries[2 * q], queries[2 * q]);
    box_y.add(queries[2 * q + 1], queries[2 * q + 1]);
  }
  if (box_x.empty()) {  // no finite query within reach of a point: every output is 0
    this->points.build(pool, 0, 0, [](int64_t, auto) {});
    this->queries.build(pool, 0, 0, [](int64_t, auto) {});
    return;
  }
  origin_x = box_x.lo, origin_y = box_y.lo;
  const double span = std::max(box_x.hi - box_x.lo, box_y.hi - box_y.lo);
  const double mean_radius = finite_radii ? radius_sum / finite_radii : span;
  cell = std::max({mean_radius, span * 1e-6, 1e-300});
  const auto count = [&](double extent) { return std::floor(extent / cell) + 1; };
  if (!(count(box_x.hi - box_x.lo) * count(box_y.hi - box_y.lo) <= double(max_cells(m)))) {
    cell = span / std::floor(std::sqrt(double(max_cells(m)))) * 1.0001;
  }
  if (!std::isfinite(cell)) cell = INFINITY;  // a span beyond double's range: one cell
  const auto cells = [&](double extent) {
    const double c = count(extent);
    return c >= 1 ? static_cast<int64_t>(c) : int64_t{1};  // c is NaN for inf / inf
  };
  cells_x = cells(box_x.hi - box_x.lo);
  cells_y = cells(box_y.hi - box_y.lo);
  this->queries.build(pool, cells_x * cells_y, m, [&](int64_t q, auto emit) {
    if (!reachable(q)) return;
    const Range cx = cell_range<double>(queries[2 * q], queries[2 * q], origin_x, cell, cells_x);
    const Range cy =
        cell_range<double>(queries[2 * q + 1], queries[2 * q + 1], origin_y, cell, cells_y);
    if (!cx.empty() && !cy.empty()) emit(cy.lo * cells_x + cx.lo);
  });
  this->points.build(pool, cells_x * cells_y, n, [&](int64_t i, auto emit) {
    const Gaussian<T>& g = gaussians[i];
    if (!g.valid()) return;
    const Range cx = cells_x_of(g), cy = cells_y_of(g);
    if (cx.empty() || cy.empty()) return;
    for (int64_t ky = cy.lo; ky <= cy.hi; ++ky) {
      for (int64_t kx = cx.lo; kx <= cx.hi; ++kx) emit(ky * cells_x + kx);
    }
  });
}

template <typename T>
Range CelledQueries<T>::cells_x_of(const Gaussian<T>& g) const {
  return cell_range<double>(double(g.x) - g.box_radius, double(g.x) + g.box_radius, origin_x,
                            cell, cells_x);
}

template <typename T>
Range CelledQueries<T>::cells_y_of(const Gaussian<T>& g) const {
  return cell_range<double>(double(g.y) - g.box_radius, double(g.y) + g.box_radius, origin_y,
                            cell, cells_y);
}

template struct TiledPoints<float>;
template struct TiledPoints<double>;
template struct CelledQueries<float>;
template struct CelledQueries<double>;

}  // namespace jax_gmm
