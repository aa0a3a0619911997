// The k-th nearest other point of every point, on a grid of cells: each
// point searches rings of cells around its own until no unvisited cell can
// hold a nearer point. Exact, and independent of the thread count: ties are
// broken by index (neighbours.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "binning.h"
#include "kernels.h"
#include "neighbours.h"

namespace jax_gmm {
namespace {

template <typename T>
bool valid_point(const T* points, int64_t i) {
  return std::isfinite(points[2 * i]) && std::isfinite(points[2 * i + 1]);
}

// The value of rank `q` (0 <= q <= 1) among `v`, which it reorders.
double quantile(std::vector<double>& v, double q) {
  const auto at = v.begin() + static_cast<int64_t>(q * double(v.size() - 1));
  std::nth_element(v.begin(), at, v.end());
  return *at;
}

// The grid over the central 98 % of the valid points along each axis.
template <typename T>
NeighbourGrid grid_of(const T* points, int64_t n, int k) {
  std::vector<double> xs, ys;
  for (int64_t i = 0; i < n; ++i) {
    if (!valid_point(points, i)) continue;
    xs.push_back(points[2 * i]);
    ys.push_back(points[2 * i + 1]);
  }
  if (xs.empty()) return neighbour_grid(0, 0, 0, 0, 0, k);
  const double x_lo = quantile(xs, 0.01), x_hi = quantile(xs, 0.99);
  const double y_lo = quantile(ys, 0.01), y_hi = quantile(ys, 0.99);
  return neighbour_grid(x_lo, x_hi, y_lo, y_hi, static_cast<int64_t>(xs.size()), k);
}

}  // namespace

template <typename T>
void kth_nearest(ThreadPool& pool, const T* points, int64_t n, int k, int32_t* index) {
  const NeighbourGrid grid = grid_of(points, n, k);
  const auto cell_of = [&](int64_t i, int64_t& cx, int64_t& cy) {
    cx = clamped_cell(points[2 * i], grid.origin_x, grid.cell, grid.cells_x);
    cy = clamped_cell(points[2 * i + 1], grid.origin_y, grid.cell, grid.cells_y);
  };
  CellLists cells;
  cells.build(pool, grid.cells(), n, [&](int64_t i, auto emit) {
    if (!valid_point(points, i)) return;
    int64_t cx, cy;
    cell_of(i, cx, cy);
    emit(cy * grid.cells_x + cx);
  });
  // Rounding may put a point just across a cell boundary; keep the bound
  // below the true separation by far more than that.
  double magnitude = std::fabs(grid.origin_x) + std::fabs(grid.origin_y);
  if (std::isfinite(grid.cell)) magnitude += grid.cell * double(grid.cells_x + grid.cells_y);
  const double slack = 1e-12 * magnitude;

  parallel_over(pool, n, [&](int64_t i) {
    index[i] = static_cast<int32_t>(i);  // no neighbour: itself, at distance 0
    if (!valid_point(points, i)) return;
    const T x = points[2 * i], y = points[2 * i + 1];
    int64_t cx, cy;
    cell_of(i, cx, cy);
    Neighbour best[kMaxNeighbours];
    int count = 0;
    const auto visit = [&](int64_t gx, int64_t gy) {
      if (gx < 0 || gy < 0 || gx >= grid.cells_x || gy >= grid.cells_y) return;
      const int64_t c = gy * grid.cells_x + gx;
      for (int64_t e = cells.start[c]; e < cells.start[c + 1]; ++e) {
        const int64_t j = cells.items[e];
        if (j == i) continue;
        keep_nearest(best, count, k,
                     {squared_distance(x, y, points[2 * j], points[2 * j + 1]), j});
      }
    };
    for (int64_t r = 0;; ++r) {
      for (int64_t gy = cy - r; gy <= cy + r; ++gy) {
        const bool edge_row = gy == cy - r || gy == cy + r;
        for (int64_t gx = cx - r; gx <= cx + r; gx += edge_row || r == 0 ? 1 : 2 * r) {
          visit(gx, gy);
        }
      }
      const bool everything = cx - r <= 0 && cy - r <= 0 && cx + r >= grid.cells_x - 1 &&
                              cy + r >= grid.cells_y - 1;
      // Cells beyond ring r are at least r cells away.
      if (everything ||
          (count == k && std::sqrt(best[k - 1].d2) < double(r) * grid.cell - slack)) {
        break;
      }
    }
    if (count > 0) index[i] = static_cast<int32_t>(best[count - 1].index);
  });
}

template void kth_nearest<float>(ThreadPool&, const float*, int64_t, int, int32_t*);
template void kth_nearest<double>(ThreadPool&, const double*, int64_t, int, int32_t*);

}  // namespace jax_gmm
