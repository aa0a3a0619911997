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

// Cells k with origin + k * size <= v < origin + (k + 1) * size, v in [v_lo,
// v_hi]: floor((v - origin) / size) over the range, clamped to [0, count - 1].
// Without a floor, which baseline x86-64 has no instruction for: where the
// range is not empty, each bound kept is non-negative, so its truncation is
// its floor, and floor(t) <= count - 1 exactly when t < count.
template <typename T>
GMM_HD Range cell_range(T v_lo, T v_hi, T origin, T size, int64_t count) {
  const T lo = (v_lo - origin) / size, hi = (v_hi - origin) / size;
  if (!(hi >= T(0)) || !(lo < T(count))) return {1, 0};
  return {lo > T(0) ? static_cast<int64_t>(lo) : 0,
          hi < T(count - 1) ? static_cast<int64_t>(hi) : count - 1};
}

// The cell of a lone value: cell_range(v, v, ...).lo, or -1 where that range
// is empty (v NaN or outside the count cells), with one division, not two.
template <typename T>
GMM_HD int64_t cell_index(T v, T origin, T size, int64_t count) {
  const T k = (v - origin) / size;
  return k >= T(0) && k < T(count) ? static_cast<int64_t>(k) : -1;
}

}  // namespace jax_gmm
