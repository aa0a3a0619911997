// Binning of points into cells so that each query (or tile of pixels) gathers
// only from the points whose cutoff disc can reach it.
//
// Points are "splatted": a point is listed in every cell its bounding box
// overlaps, in increasing point order. Each cell's list is therefore a fixed
// sequence and every sum over it is reproducible bit for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gmm_math.h"

namespace jax_gmm {

// Inclusive index range [lo, hi] of a 1D grid of `count` cells; empty if lo > hi.
struct Range {
  int64_t lo, hi;
  bool empty() const { return lo > hi; }
};

// Cells k with origin + k * size <= v < origin + (k + 1) * size, for v in
// [v_lo, v_hi], clamped to the grid. Works in floating point until the range
// is known to be finite and in the grid, so huge or infinite boxes are safe.
template <typename T>
Range cell_range(T v_lo, T v_hi, T origin, T size, int64_t count) {
  const T lo = std::floor((v_lo - origin) / size);
  const T hi = std::floor((v_hi - origin) / size);
  if (!(hi >= T(0)) || !(lo <= T(count - 1))) return {1, 0};
  return {lo > T(0) ? static_cast<int64_t>(lo) : 0,
          hi < T(count - 1) ? static_cast<int64_t>(hi) : count - 1};
}

// Pixels j of a row of `count` whose centre j + 0.5 lies in [c - r, c + r].
template <typename T>
Range pixel_range(T centre, T radius, int64_t count) {
  const T lo = std::ceil(centre - radius - T(0.5));
  const T hi = std::floor(centre + radius - T(0.5));
  if (!(hi >= T(0)) || !(lo <= T(count - 1))) return {1, 0};
  return {lo > T(0) ? static_cast<int64_t>(lo) : 0,
          hi < T(count - 1) ? static_cast<int64_t>(hi) : count - 1};
}

// Compressed lists: the members of cell k are items[start[k] .. start[k+1]).
struct CellLists {
  std::vector<int64_t> start;
  std::vector<uint32_t> items;

  // `visit(i, emit)` calls emit(cell) for every cell of member i. Called twice
  // (count, then fill), so it must be deterministic.
  template <typename Visit>
  void build(int64_t cells, int64_t members, const Visit& visit) {
    start.assign(cells + 1, 0);
    for (int64_t i = 0; i < members; ++i) visit(i, [&](int64_t k) { ++start[k + 1]; });
    for (int64_t k = 0; k < cells; ++k) start[k + 1] += start[k];
    items.resize(start[cells]);
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < members; ++i) {
      visit(i, [&](int64_t k) { items[fill[k]++] = static_cast<uint32_t>(i); });
    }
  }
};

template <typename T>
std::vector<Gaussian<T>> make_gaussians(const T* points, const T* sigma, int64_t n, T truncate) {
  std::vector<Gaussian<T>> g(n);
  for (int64_t i = 0; i < n; ++i) {
    g[i] = make_gaussian(points[2 * i], points[2 * i + 1], sigma[i], truncate);
  }
  return g;
}

}  // namespace jax_gmm
