// One point's footprint clipped to one pixel tile, laid out for the grid
// kernels' row loops. Rows are walked in whole segments of kLanes pixels, so
// the loops have a fixed trip count and no scalar remainder: the lanes past
// the footprint's last column get a zero column factor, hence zero weight.
// (Those lanes touch up to kLanes - 1 entries past the row in the kernels'
// tile buffers, which are padded for it.)
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

#include "kernels.h"
#include "separable.h"

namespace jax_gmm {
namespace JAX_GMM_ISA {  // one copy per instruction-set build (kernels.h)

// Pixels per row segment: one AVX-512 or two AVX2 vectors of float.
constexpr int kLanes = 16;
// Entries per plane of a tile buffer: kTileSize^2 pixels, then room for the
// last row's spare lanes.
constexpr int64_t kTilePlane = kTileSize * kTileSize + kLanes;

// Zero-filled scratch for one tile, aligned to a cache line (kTilePlane
// keeps every plane aligned too).
template <typename T>
std::unique_ptr<T[], decltype(&std::free)> tile_scratch(int64_t count) {
  constexpr size_t kLine = 64;
  const size_t bytes = (count * sizeof(T) + kLine - 1) / kLine * kLine;
  T* p = static_cast<T*>(std::aligned_alloc(kLine, bytes));
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  return {p, &std::free};
}

template <typename T>
struct alignas(64) Footprint {
  int64_t x0, y0;  // first pixel, image coordinates
  int rows;
  int segments;                 // kLanes-wide segments per row
  T ex[kTileSize];              // (q_x - mu_x) / sigma per column; 0 in spare lanes
  T m2x[kTileSize];             // ex^2; 0 in spare lanes
  T col_factor[kTileSize];      // exp(-m2x / 2); 0 in spare lanes
  T ey[kTileSize];              // (q_y - mu_y) / sigma per row
  T m2y[kTileSize];             // ey^2
  T row_factor[kTileSize];      // norm * exp(-m2y / 2)

  // Offset of pixel (x0, y0) in a tile buffer with rows of kTileSize.
  int64_t offset(const TileRect& tile) const {
    return (y0 - tile.y0) * kTileSize + (x0 - tile.x0);
  }
};

// Fills e[k] = whiten(g, pixel_offset(first + k, centre)), m2[k] = e[k]^2 and
// factor[k] = exp(-m2[k] / 2) for k < count. The squares are stored, so the
// pair test m2x[j] + m2y[r] <= cutoff2 is a lone rounded add on every build,
// exactly as gmm_math.h's pair_m2.
// float takes each factor in the same vector loop (reloading m2 just stored
// stalled that loop); double steps its exponentials along the row (separable.h).
template <typename T>
void axis_footprint(const Gaussian<T>& g, T centre, int64_t first, int count, T* e, T* m2,
                    T* factor) {
#pragma omp simd
  for (int k = 0; k < count; ++k) {
    const T ek = whiten(g, pixel_offset(first + k, centre));
    const T mk = mul_rn(ek, ek);
    e[k] = ek;
    m2[k] = mk;
    if constexpr (std::is_same_v<T, float>) factor[k] = exp_nonpositive(-0.5f * mk);
  }
  if constexpr (!std::is_same_v<T, float>) {
    axis_factors(g.inv_sigma, pixel_offset(first, centre), m2, count, factor);
  }
}

// Clips g's bounding box to `tile`; false when they do not overlap.
template <typename T>
bool clip_footprint(const Gaussian<T>& g, const TileRect& tile, int64_t width, int64_t height,
                    Footprint<T>& fp) {
  if (!g.valid()) return false;
  const Range cols = pixel_range(g.x, g.box_radius, width);
  const Range rows = pixel_range(g.y, g.box_radius, height);
  fp.x0 = std::max(cols.lo, tile.x0);
  fp.y0 = std::max(rows.lo, tile.y0);
  const int64_t x1 = std::min(cols.hi, tile.x0 + tile.width - 1);
  const int64_t y1 = std::min(rows.hi, tile.y0 + tile.height - 1);
  if (cols.empty() || rows.empty() || fp.x0 > x1 || fp.y0 > y1) return false;
  const int nx = static_cast<int>(x1 - fp.x0 + 1);
  const int ny = static_cast<int>(y1 - fp.y0 + 1);
  fp.rows = ny;
  fp.segments = (nx + kLanes - 1) / kLanes;
  // Factors for whole vectors, so that the loops have no remainder.
  const int col_lanes = fp.segments * kLanes, row_lanes = (ny + 7) / 8 * 8;
  axis_footprint(g, g.x, fp.x0, col_lanes, fp.ex, fp.m2x, fp.col_factor);
  axis_footprint(g, g.y, fp.y0, row_lanes, fp.ey, fp.m2y, fp.row_factor);
#pragma omp simd
  for (int j = 0; j < col_lanes; ++j) {
    fp.ex[j] = j < nx ? fp.ex[j] : T(0);
    fp.m2x[j] = j < nx ? fp.m2x[j] : T(0);
    fp.col_factor[j] = j < nx ? fp.col_factor[j] : T(0);
  }
#pragma omp simd
  for (int r = 0; r < row_lanes; ++r) fp.row_factor[r] *= g.norm;
  return true;
}

// True when every one of the n values is finite: then a zero weight times a
// value is exactly zero, and the kernels can skip masking spare lanes.
template <typename T>
bool all_finite(const T* v, int64_t n) {
  T check = 0;
#pragma omp simd reduction(+ : check)
  for (int64_t k = 0; k < n; ++k) check += v[k] - v[k];  // NaN iff some v[k] is not finite
  return check == T(0);
}

}  // namespace JAX_GMM_ISA
}  // namespace jax_gmm
