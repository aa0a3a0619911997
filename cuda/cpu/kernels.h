// CPU kernels for one example (one batch element) and the binned points they
// read. The FFI handlers in handlers.cc check shapes, walk the batch and call these.
#pragma once

#include <cstdint>
#include <vector>

#include "binning.h"
#include "gmm_math.h"
#include "layout.h"
#include "xla/ffi/api/ffi.h"

namespace jax_gmm {

// Side of the square pixel tiles the grid kernels work on.
constexpr int64_t kTileSize = 128;

// Pixel rectangle of one tile: columns [x0, x0 + width), rows [y0, y0 + height).
struct TileRect {
  int64_t x0, y0, width, height;
};

// Tiles a point's bounding box overlaps: columns [x0, x1], rows [y0, y1]
// (empty when x0 > x1 or y0 > y1). int32 holds any tile index: H * W < 2^32.
struct TileBox {
  int32_t x0, x1, y0, y1;
  int64_t count() const { return x0 > x1 || y0 > y1 ? 0 : int64_t{x1 - x0 + 1} * (y1 - y0 + 1); }
};

// Points of one example binned into the kTileSize tiles of an H x W image.
// Both grid kernels walk it tile by tile: the forward adds each listed point
// to the tile's pixels, the backward gathers each listed point's sums over
// them into one partial per (point, tile) entry.
template <typename T>
struct TiledPoints {
  int64_t height, width, tiles_x, tiles_y;
  UninitVector<Gaussian<T>> gaussians;
  UninitVector<TileBox> boxes;  // per point
  CellLists tiles;             // points whose box overlaps each tile, in point order
  // Point i's tiles, taken in row-major order over its box, are its entries
  // point_start[i] .. point_start[i + 1] - 1 (entry_of).
  std::vector<int64_t> point_start;

  // records and tile_boxes: each point's, from tiled_records (the same length).
  TiledPoints(ThreadPool& pool, UninitVector<Gaussian<T>> records,
              UninitVector<TileBox> tile_boxes, int64_t height, int64_t width);
  TileRect tile(int64_t t) const;
  // Index, among all entries in point order, of point i's entry for the tile
  // in column tx and row ty of tiles.
  int64_t entry_of(int64_t i, int64_t tx, int64_t ty) const {
    const TileBox& b = boxes[i];
    return point_start[i] + (ty - b.y0) * (b.x1 - b.x0 + 1) + (tx - b.x0);
  }
};

// Consecutive batch elements that share points and scale (vmap with in_axes
// None on them), each with its own values (N, C), out (H, W, C) and density
// (H, W), or null where the call returns out alone. The grid forward renders
// several of them in each pass over a tile.
template <typename T>
struct SharedPointsRun {
  std::vector<const T*> values;
  std::vector<T*> out, density;
  // Each example's image packed into out, (H, W, 1 + C): every pixel's
  // density, then its C channels, and `density` unused. A read of one pixel
  // then touches one cache line rather than two (read_centres).
  bool packed = false;
  int64_t size() const { return static_cast<int64_t>(values.size()); }
};

// Queries that happen to be the pixel centres (j + 0.5, i + 0.5) of an image
// at the origin, (H, W) = (height, width): the scattered forward renders that
// image with the grid kernel, whose separable weights cost a multiply per
// pixel where an arbitrary query costs an exponential per pair, and reads the
// queries' values off it.
struct CentreImage {
  int64_t height = 0, width = 0;
  bool in_order = false;  // query k is pixel k, row-major: the outputs are the image
};

// The pixels such an image may hold per query for the scattered forward to
// render it, its rows counted in whole segments of 16 lanes (footprint.h), as
// the grid forward walks them. At sigma 2 on 1024 x 1024 pixels (65,536
// points, shuffled centres) the image path took 0.6-0.7x the queries' time
// with them a quarter of its pixels and 0.45x with them half; tilted
// covariances make a pixel dearer (about 1.3x the queries' time at a quarter).
constexpr int64_t kCentreImagePixelsPerQuery = 4;

// Arbitrary queries of one example sorted into a uniform grid of cells about
// 1.5 cutoff radii wide (layout.h, kCellRadiiCpu), and points splatted into
// the same cells.
template <typename T>
struct CelledQueries {
  double origin_x = 0, origin_y = 0, cell = 1;  // double: see binning.cc
  int64_t cells_x = 0, cells_y = 0;
  UninitVector<Gaussian<T>> gaussians;
  UninitVector<Box> cell_boxes;  // per point: the cells its bounding box overlaps
  CellLists points;             // points whose box overlaps each cell
  CellLists queries;            // queries inside each cell (each query in one cell)

  // records: each point's, from point_records.
  CelledQueries(ThreadPool& pool, UninitVector<Gaussian<T>> records, const T* queries,
                int64_t m);
};

// Queries far fewer than the points (see sparse_queries): sorted into the
// cells of CelledQueries' layout, which the points then visit in point order
// (sparse_queries_forward). Nothing per point is stored or binned: a call
// costs two passes over the points (their reach for the layout, then the
// pairs, which skips the points whose centres lie far from every query)
// where the general path makes and stores every point's record
// (point_records), its cells and the cells' lists (see sparse_queries for
// times).
// NearQueries::grid: cells a box half-side spans at most (layout.h,
// centre_grid), and cells per listed query, at most, with a floor for few
// queries. Around each query a point's centre can then lie in a square
// (2 k + 1) / k box half-sides wide, 2.5 for k = 2 against 3 for cells as
// wide as the half-side; 1,024 queries over 1024 x 1024 pixels get cells of
// half the half-side of a box of sigma 2 (3 pixels).
constexpr int kCentreReach = 2;
constexpr int64_t kCentreCellsPerQuery = 128;
constexpr int64_t kCentreCellsMin = 4096;
// The cells at most, so that near_points takes cell indices in int32 (vector
// conversions on AVX2). centre_grid makes at most `limit` cells; near_queries
// checks it all the same.
constexpr int64_t kCentreCellsMax = int64_t{1} << 30;
static_assert(2 * kCentreReach + 1 < 64, "a row of marked cells fits a word");
static_assert((2 * kCentreReach + 4) * (2 * kCentreReach + 4) <= kCentreCellsMin,
              "centre_grid has room for a cell inside the spare ones");
// Where more than this fraction of the cells is marked, the grid is dropped
// (the backward's use of NearQueries keeps the threshold, not measured there):
// checking each centre then costs more than the points it skips save. One
// thread, strict alternation in one process (min of calls), sigma 2 over
// 1024 x 1024: 65,536 points at 1,024 queries (20% of the cells marked)
// 1.19 against 1.89 ms without the grid, at 4,096 (58%) 2.40 against 2.75,
// at 8,192 (83%) 3.94 against 3.91; 10^6 points at 4,096 (58%) 37.6 against
// 41.9, at 16,384 (97%) 93.3 against 87.0.
constexpr double kCentreMarkedMax = 0.75;

// layout.h's centre_grid around some queries, and a bit per cell, set where
// the cell is within kCentreReach cells of a query's along both axes, then
// one more, clear, for centres off the grid: a point whose centre's cell is
// clear reaches none of the queries (near_points, point_records.h). No
// cells where there is no such grid, and then every point may reach one.
struct NearQueries {
  CellLayout grid = no_cells();
  std::vector<uint64_t> bits = std::vector<uint64_t>(2, 0);
};

template <typename T>
struct SparseQueries {
  const T* points;  // (N, 2), the caller's
  const T* scale;   // (N, 3) Cholesky factors, the caller's
  int64_t n;
  T truncate;
  CellLayout layout;
  CellLists cells;       // the queries in each cell (each query in at most one)
  UninitVector<T> x, y;  // the listed queries' coordinates, in list order
  NearQueries near;      // around the listed queries

  // reach: the points', from points_reach.
  SparseQueries(ThreadPool& pool, const T* points, const T* scale, int64_t n, T truncate,
                const PointReach& reach, const T* queries, int64_t m);
};

// Whether M queries of C channels among N points take SparseQueries: when
// the points outnumber them kSparseQueryRatio to one, and the accumulators of
// one chunk of points (M (C + 1) numbers) stay within kSparseQueryBytes, about
// an L2 cache, since a chunk's points reach them in no order. Minimum of
// calls, two alternated rounds on the Xeon, N = 65,536, C = 3, float: at
// sigma 2 the sparse forward was faster at every M up to N (4.0-4.1 against
// 5.6-5.7 ms at M = 1,024, 6.6-7.1 against 15-18 ms at 8,192, 28-38 against
// 35-43 ms at M = N) and slower at 4N; at sigma 16, where a point reaches
// many queries and the gather's vector loops pay off, it was faster at M =
// 1,024 (12-17 against 19-22 ms) and 1.25-1.4x slower at N / 8.
constexpr int64_t kSparseQueryRatio = 8;
constexpr int64_t kSparseQueryBytes = int64_t{256} << 10;
inline bool sparse_queries(int64_t n, int64_t m, int64_t channels, int64_t bytes_per_number) {
  return m * kSparseQueryRatio <= n && m * (channels + 1) * bytes_per_number <= kSparseQueryBytes;
}

// index[i] = the k-th nearest other valid point of point i (1 <= k <=
// kMaxNeighbours; ties by index), the farthest other valid point if there
// are fewer than k, and i itself if there is none or point i is not finite.
// Scalar code, compiled once (not per instruction set).
template <typename T>
void kth_nearest(ThreadPool& pool, const T* points, int64_t n, int k, int32_t* index);

// The kernels are compiled once per instruction set, each build in its own
// namespace (CMakeLists.txt); handlers.cc picks one at run time. The
// vectorised helpers (footprint.h, separable.h, point_records.h) live in
// JAX_GMM_ISA too, so that a kernel never calls another build's copy of one
// the compiler chose not to inline; the small shared ones (gmm_math.h,
// layout.h, ranges.h, streaming.h, binning.h) rely on the link order in
// CMakeLists.txt: the code compiled once (handlers.cc, binning.cc,
// nearest_neighbour.cc), then the baseline kernel objects, link before the
// AVX2 and AVX-512 ones, so the linker keeps a baseline copy of any inline
// function they share. (bindings.cc links last;
// it shares none with an AVX object alone, checked with nm on 2026-12-01.)
namespace baseline {
#include "kernel_declarations.inc"
}  // namespace baseline
#if defined(JAX_GMM_X86_ISAS)
namespace avx2 {
#include "kernel_declarations.inc"
}  // namespace avx2
namespace avx512 {
#include "kernel_declarations.inc"
}  // namespace avx512
#endif

}  // namespace jax_gmm
