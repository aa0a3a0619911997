// Device helper over the shared index ranges of ranges.h: a point's pixel box.
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
  *cols = pixel_range(g.x, g.box_x, width);
  *rows = pixel_range(g.y, g.box_y, height);
  return !cols->empty() && !rows->empty();
}

}  // namespace gpu
}  // namespace jax_gmm
