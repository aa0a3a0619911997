// CPU kernels for one example (one batch element) and the binned points they
// read. The FFI handlers in handlers.cc check shapes, walk the batch and call these.
#pragma once

#include <cstdint>
#include <vector>

#include "binning.h"
#include "gmm_math.h"
#include "xla/ffi/api/ffi.h"

namespace jax_gmm {

using xla::ffi::ThreadPool;

// Side of the square pixel tiles the grid forward pass works on.
constexpr int64_t kTileSize = 64;

// Points of one example binned into the kTileSize tiles of an H x W image.
template <typename T>
struct TiledPoints {
  int64_t height, width, tiles_x, tiles_y;
  std::vector<Gaussian<T>> gaussians;
  CellLists tiles;

  TiledPoints(const T* points, const T* sigma, int64_t n, T truncate, int64_t height,
              int64_t width);
};

// Arbitrary queries of one example sorted into a uniform grid of cells about
// one cutoff radius wide, and points splatted into the same cells.
template <typename T>
struct CelledQueries {
  double origin_x = 0, origin_y = 0, cell = 1;  // double: see binning.cc
  int64_t cells_x = 0, cells_y = 0;
  std::vector<Gaussian<T>> gaussians;
  CellLists points;   // points whose box overlaps each cell
  CellLists queries;  // queries inside each cell (each query in one cell)

  CelledQueries(const T* points, const T* sigma, int64_t n, T truncate, const T* queries,
                int64_t m);
  // Cells a point's bounding box overlaps.
  Range cells_x_of(const Gaussian<T>& g) const;
  Range cells_y_of(const Gaussian<T>& g) const;
};

// The kernels are compiled once per instruction set, each build in its own
// namespace (CMakeLists.txt); handlers.cc picks one at run time.
namespace baseline {
#include "kernel_declarations.inc"
}  // namespace baseline
namespace avx2 {
#include "kernel_declarations.inc"
}  // namespace avx2

}  // namespace jax_gmm
