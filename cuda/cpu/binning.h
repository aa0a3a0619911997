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
#include "ranges.h"

namespace jax_gmm {

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
