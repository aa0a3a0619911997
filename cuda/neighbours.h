// The k-th nearest neighbour of every point (jax_gmm.adaptive_sigma): which
// neighbour counts as nearer, and when a search may skip a rectangle of
// points. Host and device callable, so that a CUDA search can make the same
// choices as the CPU one (cpu/nearest_neighbour.cc).
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

// Each product and sum rounded on its own (gmm_math.h's mul_rn and add_rn:
// nvcc would fuse them), so that the CPU and the GPU rank ties alike.
template <typename T>
GMM_HD double squared_distance(T ax, T ay, T bx, T by) {
  const double dx = double(ax) - double(bx), dy = double(ay) - double(by);
  return add_rn(mul_rn(dx, dx), mul_rn(dy, dy));
}

// Inserts `c` into best[0 .. count), kept sorted by `nearer` and at most k
// long: the k nearest candidates seen so far.
GMM_HD void keep_nearest(Neighbour* best, int& count, int k, const Neighbour& c) {
  if (count == k && !nearer(c, best[k - 1])) return;
  int j = count < k ? count++ : k - 1;
  for (; j > 0 && nearer(c, best[j - 1]); --j) best[j] = best[j - 1];
  best[j] = c;
}

// A rectangle [lo_x, hi_x] x [lo_y, hi_y] of points, and the squared distance
// from (x, y) to it. Each difference is rounded as in squared_distance, and
// rounding is monotone, so the result is at most the computed squared
// distance to any point inside: a search may skip the rectangle when it
// exceeds the k-th best, without ever changing the answer.
struct Rect {
  double lo_x, lo_y, hi_x, hi_y;
};

template <typename T>
GMM_HD double squared_distance_to(const Rect& r, T x, T y) {
  const double qx = double(x), qy = double(y);
  const double dx = qx < r.lo_x ? r.lo_x - qx : (qx > r.hi_x ? qx - r.hi_x : 0.0);
  const double dy = qy < r.lo_y ? r.lo_y - qy : (qy > r.hi_y ? qy - r.hi_y : 0.0);
  return add_rn(mul_rn(dx, dx), mul_rn(dy, dy));
}

// Whether no point of a rectangle at squared distance `d2` whose smallest
// point index is `min_index` can rank before `kth`.
GMM_HD bool cannot_beat(double d2, int64_t min_index, const Neighbour& kth) {
  return d2 > kth.d2 || (d2 == kth.d2 && min_index > kth.index);
}

}  // namespace jax_gmm
