// CPU kernels for one example (one batch element). The FFI handlers in
// handlers.cc check shapes, walk the batch and call these.
#pragma once

#include <cstdint>
#include <vector>

#include "binning.h"
#include "gmm_math.h"
#include "xla/ffi/api/ffi.h"

namespace jax_gmm {

using xla::ffi::ThreadPool;

// Side of the square pixel tiles the grid forward pass works on.
constexpr int64_t kTileSize = 32;

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
  T origin_x = 0, origin_y = 0, cell = 1;
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

// out (H, W, C) and density (H, W) at the pixel centres.
template <typename T>
void grid_forward(ThreadPool& pool, const TiledPoints<T>& tiled, const T* values,
                  int64_t channels, T* out, T* density);

// Cotangents of points (N, 2), values (N, C) and sigma (N,) for the grid.
template <typename T>
void grid_backward(ThreadPool& pool, const std::vector<Gaussian<T>>& gaussians, int64_t height,
                   int64_t width, const T* values, int64_t channels, const T* out,
                   const T* density, const T* d_out, const T* d_density, T* d_points,
                   T* d_values, T* d_sigma);

// out (M, C) and density (M,) at arbitrary queries (M, 2).
template <typename T>
void scattered_forward(ThreadPool& pool, const CelledQueries<T>& celled, const T* values,
                       int64_t channels, const T* queries, int64_t m, T* out, T* density);

// Cotangents of points, values, sigma and queries (M, 2) at arbitrary queries.
template <typename T>
void scattered_backward(ThreadPool& pool, const CelledQueries<T>& celled, const T* values,
                        int64_t channels, const T* queries, int64_t m, const T* out,
                        const T* density, const T* d_out, const T* d_density, T* d_points,
                        T* d_values, T* d_sigma, T* d_queries);

}  // namespace jax_gmm
