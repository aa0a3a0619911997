// The k-th nearest neighbour of every point (jax_gmm.adaptive_sigma): which
// neighbour counts as nearer, and the grid of cells the search walks. Host
// and device callable, so that a CUDA search can make the same choices as the
// CPU one (cpu/nearest_neighbour.cc).
#pragma once

#include <math.h>
#include <stdint.h>

#include "gmm_math.h"

namespace jax_gmm {

// Most neighbours a search keeps (k <= kMaxNeighbours; the Python API checks).
constexpr int kMaxNeighbours = 64;

// A candidate neighbour: squared distance (in double, so that float inputs
// are ordered without rounding ties) and index.
struct Neighbour {
  double d2;
  int64_t index;
};

// The order of neighbours: by distance, then by index. A total order, so the
// k-th nearest is one point whatever order the candidates come in.
GMM_HD bool nearer(const Neighbour& a, const Neighbour& b) {
  return a.d2 < b.d2 || (a.d2 == b.d2 && a.index < b.index);
}

template <typename T>
GMM_HD double squared_distance(T ax, T ay, T bx, T by) {
  const double dx = double(ax) - double(bx), dy = double(ay) - double(by);
  return dx * dx + dy * dy;
}

// Inserts `c` into best[0 .. count), kept sorted by `nearer` and at most k
// long: the k nearest candidates seen so far.
GMM_HD void keep_nearest(Neighbour* best, int& count, int k, const Neighbour& c) {
  if (count == k && !nearer(c, best[k - 1])) return;
  int j = count < k ? count++ : k - 1;
  for (; j > 0 && nearer(c, best[j - 1]); --j) best[j] = best[j - 1];
  best[j] = c;
}

// A grid of square cells over the points, every point in exactly one cell:
// coordinates outside the grid are clamped into its edge cells. Clamping
// keeps the search's bound: two points whose cells are more than r apart
// along an axis are at least r cells apart along it, r * cell.
struct NeighbourGrid {
  double origin_x, origin_y, cell;
  int64_t cells_x, cells_y;
  GMM_HD int64_t cells() const { return cells_x * cells_y; }
};

GMM_HD int64_t clamped_cell(double v, double origin, double cell, int64_t count) {
  const double k = floor((v - origin) / cell);
  if (!(k > 0)) return 0;  // NaN (an infinite cell) too
  return k < double(count - 1) ? static_cast<int64_t>(k) : count - 1;
}

// The grid over the box [x_lo, x_hi] x [y_lo, y_hi] (the bulk of the valid
// points: outliers do not stretch it) for `valid` points, with about k points
// per cell where they spread over an area (or along a line), and at most
// 2 * valid + 16 cells. One infinite cell when the points coincide or the
// spans overflow.
GMM_HD NeighbourGrid neighbour_grid(double x_lo, double x_hi, double y_lo, double y_hi,
                                    int64_t valid, int k) {
  const NeighbourGrid one = {x_lo, y_lo, INFINITY, 1, 1};
  if (valid <= 0) return one;
  const double span_x = x_hi - x_lo, span_y = y_hi - y_lo;
  const double per_cell = double(k) / double(valid);
  const double longest = span_x > span_y ? span_x : span_y;
  double cell = sqrt(span_x * span_y * per_cell);
  if (longest * per_cell > cell) cell = longest * per_cell;  // points along a line
  if (!(cell > 0) || !is_finite(cell)) return one;
  const double limit = 2.0 * double(valid) + 16.0;
  if (!((floor(span_x / cell) + 1) * (floor(span_y / cell) + 1) <= limit)) {
    cell = longest / floor(sqrt(limit) - 1.0);
  }
  return {x_lo, y_lo, cell, static_cast<int64_t>(floor(span_x / cell)) + 1,
          static_cast<int64_t>(floor(span_y / cell)) + 1};
}

}  // namespace jax_gmm
