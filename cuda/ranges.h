// Index ranges of the pixels and cells a point's bounding box covers, shared
// by the CPU and CUDA kernels: both must give the same boxes, so that every
// pair within the cutoff is visited.
#pragma once

#include <math.h>
#include <stdint.h>

#include "gmm_math.h"

namespace jax_gmm {

// Inclusive index range [lo, hi]; empty if lo > hi.
struct Range {
  int64_t lo, hi;
  GMM_HD bool empty() const { return lo > hi; }
};

// Clamps the floating-point range [lo, hi] of indices to [0, count - 1].
// Decides in floating point first, so infinite or NaN bounds are safe.
template <typename T>
GMM_HD Range clamp_range(T lo, T hi, int64_t count) {
  if (!(hi >= T(0)) || !(lo <= T(count - 1))) return {1, 0};
  return {lo > T(0) ? static_cast<int64_t>(lo) : 0,
          hi < T(count - 1) ? static_cast<int64_t>(hi) : count - 1};
}

// Pixels j of a row of `count` whose centre j + 0.5 lies in [c - r, c + r].
template <typename T>
GMM_HD Range pixel_range(T centre, T radius, int64_t count) {
  return clamp_range<T>(ceil(centre - radius - T(0.5)), floor(centre + radius - T(0.5)), count);
}

// Cells k with origin + k * size <= v < origin + (k + 1) * size, v in [v_lo, v_hi].
template <typename T>
GMM_HD Range cell_range(T v_lo, T v_hi, T origin, T size, int64_t count) {
  return clamp_range<T>(floor((v_lo - origin) / size), floor((v_hi - origin) / size), count);
}

}  // namespace jax_gmm
