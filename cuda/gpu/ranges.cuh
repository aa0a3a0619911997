// Index ranges of pixels and cells a point's bounding box covers, on the
// device. Same definitions as the host versions in cpu/binning.h, which are
// not __device__: both must give the same boxes so that every pair within the
// cutoff is visited.
#pragma once

#include <cstdint>

#include "gmm_math.h"

namespace jax_gmm {
namespace gpu {

// Inclusive index range [lo, hi]; empty if lo > hi.
struct Range {
  int64_t lo, hi;
  __device__ bool empty() const { return lo > hi; }
};

// Clamps the floating-point range [lo, hi] of indices to [0, count - 1].
// Decides in floating point first, so infinite or NaN bounds are safe.
template <typename T>
__device__ Range clamp_range(T lo, T hi, int64_t count) {
  if (!(hi >= T(0)) || !(lo <= T(count - 1))) return {1, 0};
  return {lo > T(0) ? static_cast<int64_t>(lo) : 0,
          hi < T(count - 1) ? static_cast<int64_t>(hi) : count - 1};
}

// Pixels j of a row of `count` whose centre j + 0.5 lies in [c - r, c + r].
template <typename T>
__device__ Range pixel_range(T centre, T radius, int64_t count) {
  return clamp_range(ceil(centre - radius - T(0.5)), floor(centre + radius - T(0.5)), count);
}

// Cells k with origin + k * size <= v < origin + (k + 1) * size, v in [v_lo, v_hi].
template <typename T>
__device__ Range cell_range(T v_lo, T v_hi, T origin, T size, int64_t count) {
  return clamp_range(floor((v_lo - origin) / size), floor((v_hi - origin) / size), count);
}

// The pixels of an H x W image inside a point's bounding box: columns `cols`
// by rows `rows`; false (and nothing to visit) for an invalid point.
template <typename T>
__device__ bool pixel_box(const Gaussian<T>& g, int64_t height, int64_t width, Range* cols,
                          Range* rows) {
  if (!g.valid) return false;
  *cols = pixel_range(g.x, g.box_radius, width);
  *rows = pixel_range(g.y, g.box_radius, height);
  return !cols->empty() && !rows->empty();
}

// The cells [x0, x1] x [y0, y1] of a grid, numbered y * cells_x + x, that a
// point is listed in; empty when x0 > x1.
struct Rect {
  uint32_t x0, x1, y0, y1;
};

__device__ inline Rect make_rect(Range x, Range y) {
  if (x.empty() || y.empty()) return {1, 0, 1, 0};
  return {static_cast<uint32_t>(x.lo), static_cast<uint32_t>(x.hi), static_cast<uint32_t>(y.lo),
          static_cast<uint32_t>(y.hi)};
}

__device__ inline uint64_t rect_cells(const Rect& r) {
  if (r.x0 > r.x1) return 0;
  return uint64_t{r.x1 - r.x0 + 1} * (r.y1 - r.y0 + 1);
}

}  // namespace gpu
}  // namespace jax_gmm
