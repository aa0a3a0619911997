// GPU kernels for one example (one batch element). handlers.cu checks shapes,
// walks the batch and calls these; all work is queued on dev.stream.
#pragma once

#include <cstdint>

#include "binning.cuh"
#include "device.cuh"
#include "gmm_math.h"
#include "kd_tree.h"
#include "layout.h"
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
  ffi::Error build(Device& dev, const T* points, const T* scale, int64_t n, T truncate,
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
  Scratch<Box> boxes_;
  CellLists lists_;
};

// What the host reads back after the cell setup kernels: the layout (on
// layout.h's rule, as the CPU's), the points' reach it was made from, and
// the number of (cell, point) pairs. Eight-byte fields only: no padding.
struct CellSetup {
  CellLayout layout;
  PointReach reach;
  unsigned long long pairs;
};

// Arbitrary queries of one example sorted into cells, and the points splatted
// into every cell their box overlaps.
template <typename T>
class CellBinning {
 public:
  ffi::Error build(Device& dev, const T* points, const T* scale, int64_t n, T truncate,
                   const T* queries, int64_t m);

  // cells() == 0 when no finite query is within reach of a valid point:
  // then every output is 0.
  CellLayout grid{};
  int64_t cells() const { return grid.cells(); }
  int64_t point_count() const { return n_; }

  const Gaussian<T>* gaussians() const { return gaussians_.data(); }
  // Per cell, the points whose box overlaps it.
  ListsView points() const { return points_.view(); }
  // Per cell, its queries; the non-finite ones (key == cells()) come last.
  ListsView queries() const { return queries_.view(); }

 private:
  Scratch<Gaussian<T>> gaussians_;
  Scratch<PointReach> reach_partials_;
  Scratch<Interval> box_partials_;  // x then y per block
  Scratch<CellSetup> setup_;
  Scratch<Box> boxes_;
  CellLists points_, queries_;
  int64_t n_ = 0;
};

// out (H, W, C) and density (H, W) at the pixel centres.
template <typename T>
ffi::Error grid_forward(Device& dev, const TileBinning<T>& tiles, const T* values,
                        int64_t channels, T* out, T* density);

// Cotangents of points (N, 2), values (N, C) and scale (N, 3) for the grid;
// `folded` is per-call scratch.
template <typename T>
ffi::Error grid_backward(Device& dev, Scratch<T>& folded, const T* points, const T* scale,
                         int64_t n, T truncate, int64_t height, int64_t width, const T* values,
                         int64_t channels, const T* out, const T* density, const T* d_out,
                         const T* d_density, T* d_points, T* d_values, T* d_scale);

// out (M, C) and density (M,) at arbitrary queries (M, 2).
template <typename T>
ffi::Error scattered_forward(Device& dev, const CellBinning<T>& cells, const T* values,
                             int64_t channels, const T* queries, int64_t m, T* out, T* density);

// Cotangents of points, values, scale and queries (M, 2) at arbitrary
// queries; `folded` is per-call scratch. Those of points, values and scale
// unless point_grads, and those of queries unless query_grads, are zeros,
// not computed.
template <typename T>
ffi::Error scattered_backward(Device& dev, Scratch<T>& folded, const CellBinning<T>& cells,
                              const T* values, int64_t channels, const T* queries, int64_t m,
                              const T* out, const T* density, const T* d_out, const T* d_density,
                              T* d_points, T* d_values, T* d_scale, T* d_queries,
                              bool point_grads, bool query_grads);

// Device copies of the k-d tree of kth_nearest, reused across the batch
// elements of a call.
struct NeighbourScratch {
  Scratch<KdNode> nodes;
  Scratch<int64_t> order;
};

// index (N,): the k-th nearest other point of each of points (N, 2), as the
// CPU's kth_nearest (kd_tree.h has the rules). Waits for the stream before
// it builds the tree on the host.
template <typename T>
ffi::Error kth_nearest(Device& dev, NeighbourScratch& scratch, const T* points, int64_t n, int k,
                       int32_t* index);

}  // namespace gpu
}  // namespace jax_gmm
