// Device helpers over the shared index ranges of ranges.h: a point's pixel
// box and the rectangle of cells it is listed in.
#pragma once

#include <cstdint>

#include "gmm_math.h"
#include "ranges.h"

namespace jax_gmm {
namespace gpu {

// The pixels of an H x W image inside a point's bounding box: columns `cols`
// by rows `rows`; false (and nothing to visit) for an invalid point.
template <typename T>
__device__ bool pixel_box(const Gaussian<T>& g, int64_t height, int64_t width, Range* cols,
                          Range* rows) {
  if (!g.valid()) return false;
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
