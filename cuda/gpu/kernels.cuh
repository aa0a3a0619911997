// GPU kernels for one example (one batch element). handlers.cu checks shapes,
// walks the batch and calls these; all work is queued on dev.stream.
#pragma once

#include <cstdint>

#include "binning.cuh"
#include "device.cuh"
#include "gmm_math.h"
#include "ranges.cuh"

namespace jax_gmm {
namespace gpu {

// (tile, point) pairs for each candidate tile side 8 << s.
constexpr int kTileSides = 3;
struct TilePairs {
  unsigned long long count[kTileSides];
};

// Points of one example binned into the square tiles of an H x W image. The
// tile side is chosen per binning from the points' boxes (grid_forward.cu).
template <typename T>
class TileBinning {
 public:
  ffi::Error build(Device& dev, const T* points, const T* sigma, int64_t n, T truncate,
                   int64_t height, int64_t width);

  int64_t height = 0, width = 0;
  int tile_side = 0;
  int64_t tiles_x = 0, tiles = 0;
  int64_t pairs = 0;  // (tile, point) pairs; 0 when no point reaches a pixel

  const Gaussian<T>* gaussians() const { return gaussians_.data(); }
  ListsView lists() const { return lists_.view(); }

 private:
  Scratch<Gaussian<T>> gaussians_;
  Scratch<TilePairs> totals_;
  Scratch<Rect> rects_;
  CellLists lists_;
};

// Uniform grid of cells about one cutoff radius wide over the finite queries,
// as cpu/scattered_forward.cc lays it out. cells_x = cells_y = 0 when no
// finite query or no valid point exists: then every output is 0.
template <typename T>
struct CellGrid {
  T origin_x, origin_y, cell;
  int64_t cells_x, cells_y;
};

// The cells a valid point's bounding box overlaps; false if none.
template <typename T>
__device__ bool cell_box(const Gaussian<T>& g, const CellGrid<T>& grid, Range* cx, Range* cy) {
  if (!g.valid()) return false;
  *cx = cell_range(g.x - g.box_radius, g.x + g.box_radius, grid.origin_x, grid.cell, grid.cells_x);
  *cy = cell_range(g.y - g.box_radius, g.y + g.box_radius, grid.origin_y, grid.cell, grid.cells_y);
  return !cx->empty() && !cy->empty();
}

// Bounds of the finite queries and the sum and count of the finite box radii
// of the valid points, reduced in a fixed order.
template <typename T>
struct Extent {
  T x_lo, x_hi, y_lo, y_hi, radius_sum;
  unsigned long long valid;
};

// What the host reads back after the cell setup kernels.
template <typename T>
struct CellSetup {
  CellGrid<T> grid;
  unsigned long long pairs;  // (cell, point) pairs
};

// Arbitrary queries of one example sorted into cells, and the points splatted
// into every cell their box overlaps.
template <typename T>
class CellBinning {
 public:
  ffi::Error build(Device& dev, const T* points, const T* sigma, int64_t n, T truncate,
                   const T* queries, int64_t m);

  CellGrid<T> grid{};
  int64_t cells() const { return grid.cells_x * grid.cells_y; }
  int64_t point_count() const { return n_; }

  const Gaussian<T>* gaussians() const { return gaussians_.data(); }
  // Per cell, the points whose box overlaps it.
  ListsView points() const { return points_.view(); }
  // Per cell, its queries; the non-finite ones (key == cells()) come last.
  ListsView queries() const { return queries_.view(); }

 private:
  Scratch<Gaussian<T>> gaussians_;
  Scratch<Extent<T>> partials_;
  Scratch<CellSetup<T>> setup_;
  Scratch<Rect> rects_;
  CellLists points_, queries_;
  int64_t n_ = 0;
};

// out (H, W, C) and density (H, W) at the pixel centres.
template <typename T>
ffi::Error grid_forward(Device& dev, const TileBinning<T>& tiles, const T* values,
                        int64_t channels, T* out, T* density);

// Cotangents of points (N, 2), values (N, C) and sigma (N,) for the grid;
// `folded` is per-call scratch.
template <typename T>
ffi::Error grid_backward(Device& dev, Scratch<T>& folded, const T* points, const T* sigma,
                         int64_t n, T truncate, int64_t height, int64_t width, const T* values,
                         int64_t channels, const T* out, const T* density, const T* d_out,
                         const T* d_density, T* d_points, T* d_values, T* d_sigma);

// out (M, C) and density (M,) at arbitrary queries (M, 2).
template <typename T>
ffi::Error scattered_forward(Device& dev, const CellBinning<T>& cells, const T* values,
                             int64_t channels, const T* queries, int64_t m, T* out, T* density);

// Cotangents of points, values, sigma and queries (M, 2) at arbitrary
// queries; `folded` is per-call scratch.
template <typename T>
ffi::Error scattered_backward(Device& dev, Scratch<T>& folded, const CellBinning<T>& cells,
                              const T* values, int64_t channels, const T* queries, int64_t m,
                              const T* out, const T* density, const T* d_out, const T* d_density,
                              T* d_points, T* d_values, T* d_sigma, T* d_queries);

}  // namespace gpu
}  // namespace jax_gmm
