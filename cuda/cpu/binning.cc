// Construction of the binned points (shared by every instruction-set build
// of the kernels, so it is compiled once) from the records and tile boxes
// that the kernel build makes (point_records.cc).
#include <algorithm>
#include <cassert>

#include "kernels.h"
#include "layout.h"

namespace jax_gmm {

namespace {
// The box of the reachable queries.
struct QueryBox {
  Interval x, y;
};
}  // namespace

template <typename T>
TiledPoints<T>::TiledPoints(ThreadPool& pool, UninitVector<Gaussian<T>> records,
                            UninitVector<TileBox> tile_boxes, int64_t height, int64_t width)
    : height(height),
      width(width),
      tiles_x(tiles_along(width, kTileSize)),
      tiles_y(tiles_along(height, kTileSize)),
      gaussians(std::move(records)),
      boxes(std::move(tile_boxes)),
      point_start(gaussians.size() + 1, 0) {
  const int64_t n = gaussians.size();
  assert(static_cast<int64_t>(boxes.size()) == n);
  for (int64_t i = 0; i < n; ++i) point_start[i + 1] = point_start[i] + boxes[i].count();
  tiles.build(pool, tiles_x * tiles_y, n, [&](int64_t i, auto emit) {
    const TileBox& b = boxes[i];
    for (int64_t ty = b.y0; ty <= b.y1; ++ty) {
      for (int64_t tx = b.x0; tx <= b.x1; ++tx) emit(ty * tiles_x + tx);
    }
  });
}

template <typename T>
TileRect TiledPoints<T>::tile(int64_t t) const {
  const int64_t x0 = (t % tiles_x) * kTileSize, y0 = (t / tiles_x) * kTileSize;
  return {x0, y0, std::min(kTileSize, width - x0), std::min(kTileSize, height - y0)};
}

namespace {
// The layout rule is layout.h's, shared with the GPU binning: a grid over the
// queries some point can reach, worked out in double. Lists each reachable
// query in its cell, in query order; `reachable`, if given, gets their box.
template <typename T>
CellLayout list_queries(ThreadPool& pool, const PointReach& reach, const T* queries, int64_t m,
                        CellLists& lists, QueryBox* reachable = nullptr) {
  const QueryBox box = reduce_over(
      pool, m, QueryBox{no_interval(), no_interval()},
      [&](int64_t q) {
        const T x = queries[2 * q], y = queries[2 * q + 1];
        if (!query_reachable(reach, x, y)) return QueryBox{no_interval(), no_interval()};
        return QueryBox{{double(x), double(x)}, {double(y), double(y)}};
      },
      [](const QueryBox& a, const QueryBox& b) {
        return QueryBox{hull(a.x, b.x), hull(a.y, b.y)};
      });
  if (reachable) *reachable = box;
  const CellLayout l = cell_layout(box.x, box.y, reach, m, kCellRadiiCpu);
  // Each query's cell, worked out once for both passes of the build.
  UninitVector<int64_t> cell_of(m);
  parallel_over(pool, m, [&](int64_t q) {
    cell_of[q] = query_cell(l, reach, queries[2 * q], queries[2 * q + 1]);
  });
  lists.build(pool, l.cells(), m, [&](int64_t q, auto emit) {
    if (cell_of[q] >= 0) emit(cell_of[q]);
  });
  return l;
}

// NearQueries around `count` queries (x, y) inside `box`, among points whose
// widest box half-side is `widest`.
template <typename T>
NearQueries near_queries(const QueryBox& box, double widest, const T* x, const T* y,
                         int64_t count) {
  NearQueries near;
  const CellLayout g = centre_grid(box.x, box.y, widest, kCentreReach,
                                   std::clamp(kCentreCellsPerQuery * count, kCentreCellsMin,
                                              kCentreCellsMax));
  if (g.cells() == 0 || g.cells() > kCentreCellsMax) return near;
  // cells + 1 bits, and a word more, so that a row's second write (of zero
  // bits past the grid's last cell) stays in bounds
  near.bits.assign(g.cells() / 64 + 2, 0);
  for (int64_t k = 0; k < count; ++k) {
    const int64_t cell = grid_cell(g, x[k], y[k]);
    // Were centre_grid ever wrong about a query, the grid would go, not its pairs.
    if (cell < 0) return NearQueries{};
    // centre_grid leaves spare cells around every query; clamped all the same
    const int64_t kx = cell % g.cells_x, ky = cell / g.cells_x, r = kCentreReach;
    const int64_t x0 = std::max<int64_t>(kx - r, 0), x1 = std::min(kx + r, g.cells_x - 1);
    // A row's bits, fewer than 64, by one OR into the word of its first cell
    // and one into the next (bit by bit, each word's updates were serialised).
    const uint64_t bits = (uint64_t{1} << (x1 - x0 + 1)) - 1;
    for (int64_t j = std::max<int64_t>(ky - r, 0); j <= std::min(ky + r, g.cells_y - 1); ++j) {
      const int64_t first = j * g.cells_x + x0, word = first / 64, shift = first % 64;
      near.bits[word] |= bits << shift;
      if (shift > 0) near.bits[word + 1] |= bits >> (64 - shift);
    }
  }
  int64_t marked = 0;
  for (const uint64_t word : near.bits) marked += __builtin_popcountll(word);
  if (marked > kCentreMarkedMax * g.cells()) return NearQueries{};
  near.grid = g;
  return near;
}
}  // namespace

template <typename T>
CelledQueries<T>::CelledQueries(ThreadPool& pool, UninitVector<Gaussian<T>> records,
                                const T* queries, int64_t m)
    : gaussians(std::move(records)) {
  const int64_t n = gaussians.size();
  const PointReach reach =
      reach_of(pool, n, [&](int64_t first, int64_t count) {
        GaussianBlock<T> b;
        for (int64_t k = 0; k < count; ++k) b.set(k, gaussians[first + k]);
        return block_reach(b, count);
      });
  const CellLayout l = list_queries(pool, reach, queries, m, this->queries);
  origin_x = l.origin_x, origin_y = l.origin_y, cell = l.cell;
  cells_x = l.cells_x, cells_y = l.cells_y;
  cell_boxes.resize(n);
  // The widest box, in cells along either axis.
  const int64_t widest = reduce_over(
      pool, n, int64_t{0},
      [&](int64_t i) {
        const Box b = cell_boxes[i] = point_cells(l, gaussians[i]);
        return b.empty() ? int64_t{0} : std::max(b.x.hi - b.x.lo, b.y.hi - b.y.lo) + 1;
      },
      [](int64_t a, int64_t b) { return std::max(a, b); });
  if (widest == 1 || widest == 2) {  // 0: no point reaches a cell, nothing to list
    // Few queries make large cells, and boxes of one cell or two along an
    // axis, mixed at random, on which the loops below mispredict about once
    // per point and pass. Each point emits the 2 x 2 cells from its box's
    // first, those outside the box to the build's sink, through masks (GCC
    // turned selects back into branches): the lists for 1,024 queries at N =
    // 65,536 took 0.83-0.89 -> 0.59-0.63 ms. (A 3 x 3 window, for 1M queries,
    // gained nothing.) The forward at so few queries now takes SparseQueries;
    // the backward still lists them here, only the points near a query
    // (handlers.cc, backward_bins).
    const int64_t sink = l.cells();
    const auto cell_or_sink = [sink](int64_t cell, bool in_box) {
      return sink ^ ((sink ^ cell) & -static_cast<int64_t>(in_box));
    };
    this->points.build(pool, l.cells(), n, [&](int64_t i, auto emit) {
      const Box& b = cell_boxes[i];
      const bool real = !b.empty(), wide = real && b.x.hi > b.x.lo, tall = real && b.y.hi > b.y.lo;
      const int64_t first = b.y.lo * cells_x + b.x.lo;
      emit(cell_or_sink(first, real));
      emit(cell_or_sink(first + 1, wide));
      emit(cell_or_sink(first + cells_x, tall));
      emit(cell_or_sink(first + cells_x + 1, wide && tall));
    });
    return;
  }
  this->points.build(pool, l.cells(), n, [&](int64_t i, auto emit) {
    const Box& b = cell_boxes[i];
    if (b.empty()) return;
    for (int64_t ky = b.y.lo; ky <= b.y.hi; ++ky) {
      for (int64_t kx = b.x.lo; kx <= b.x.hi; ++kx) emit(ky * cells_x + kx);
    }
  });
}

template <typename T>
SparseQueries<T>::SparseQueries(ThreadPool& pool, const T* points, const T* scale, int64_t n,
                                T truncate, const PointReach& reach, const T* queries, int64_t m)
    : points(points), scale(scale), n(n), truncate(truncate) {
  QueryBox box;
  layout = list_queries(pool, reach, queries, m, cells, &box);
  const int64_t listed = cells.items.size();
  x.resize(listed);
  y.resize(listed);
  parallel_over(pool, listed, [&](int64_t k) {
    const int64_t q = cells.items[k];
    x[k] = queries[2 * q];
    y[k] = queries[2 * q + 1];
  });
  near = near_queries(box, reach.widest, x.data(), y.data(), listed);
}

template struct TiledPoints<float>;
template struct TiledPoints<double>;
template struct CelledQueries<float>;
template struct CelledQueries<double>;
template struct SparseQueries<float>;
template struct SparseQueries<double>;

}  // namespace jax_gmm
