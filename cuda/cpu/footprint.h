// One point's footprint clipped to one pixel tile, laid out for the grid
// kernels' row loops. Rows are walked in whole segments of kLanes pixels (the
// grid forward and backward walk the first kLanes / 2 of a narrow footprint's
// one segment), so the loops have a fixed trip count and no scalar remainder:
// the lanes past the footprint's last column get a zero column factor, hence
// zero weight. (Those lanes touch up to kLanes - 1 entries past the row in the
// kernels' tile buffers, which are padded for it.)
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cmath>
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
  // First pixel, image coordinates: an int32 (an image side is at most
  // kMaxSide pixels, operands.h), so that the axis loops' pixel indices
  // convert to float in vectors on AVX2 and baseline x86-64, which have no
  // vector conversion from int64: with one, the headline forward's
  // footprints were scalar there.
  int32_t x0, y0;
  int rows;                     // ey, m2y and row_factor are set for rows < rows only
  int segments;                 // kLanes-wide segments per row
  bool sheared;                 // p21 != 0: e_y varies along a row too
  // Axis-aligned and at most kLanes / 2 columns wide (one segment): the
  // segment's second half has zero weight, so a kernel may walk only the first.
  bool narrow;
  // Each array starts on a cache line, so a segment's kLanes entries are whole
  // aligned vectors; before, ex started at byte 28 and every load straddled two
  // lines.
  alignas(64) T ex[kTileSize];  // e_x = p11 (q_x - mu_x) per column; 0 in spare lanes
  T m2x[kTileSize];             // ex^2; 0 in spare lanes
  T col_factor[kTileSize];      // exp(-m2x / 2); 0 in spare lanes
  T sx[kTileSize];              // sheared: p21 (q_x - mu_x) per column; 0 in spare lanes
  T ey[kTileSize];              // p22 (q_y - mu_y) per row: e_y, or its row part if sheared
  T m2y[kTileSize];             // ey^2 (axis-aligned only)
  T row_factor[kTileSize];      // norm * exp(-m2y / 2); norm alone if sheared
  // Sheared only: the segments of each row to walk; none if first > last.
  int16_t first_segment[kTileSize], last_segment[kTileSize];

  // Offset of pixel (x0, y0) in a tile buffer with rows of kTileSize.
  int64_t offset(const TileRect& tile) const {
    return (y0 - tile.y0) * kTileSize + (x0 - tile.x0);
  }
};

// One axis entry of a footprint: e = p * pixel_offset(pixel, centre)
// (whiten_x or whiten_y of gmm_math.h) and its square m2; an int32 pixel,
// as Footprint's x0 and y0.
template <typename T>
struct AxisEntry {
  T e, m2;
};
template <typename T>
inline AxisEntry<T> axis_entry(T p, T centre, int32_t pixel) {
  const T e = mul_rn(pixel_offset(pixel, centre), p);
  return {e, mul_rn(e, e)};
}

// Fills e[k] = p * pixel_offset(first + k, centre) (whiten_x or whiten_y of
// gmm_math.h), m2[k] = e[k]^2 and, if `factor` is given, factor[k] =
// exp(-m2[k] / 2) for k < count. The squares are stored, so the pair test
// m2x[j] + m2y[r] <= cutoff2 of an axis-aligned point is a lone rounded add
// on every build, exactly as gmm_math.h's pair_m2.
// float takes each factor in the same vector loop (reloading m2 just stored
// stalled that loop); double steps its exponentials along the row (separable.h).
template <int kCount, typename T>
void axis_footprint(T p, T centre, int32_t first, int lanes, T* e, T* m2, T* factor) {
  const int count = kCount > 0 ? kCount : lanes;
#pragma omp simd
  for (int k = 0; k < count; ++k) {
    const AxisEntry<T> a = axis_entry(p, centre, first + k);
    e[k] = a.e;
    m2[k] = a.m2;
    if constexpr (std::is_same_v<T, float>) {
      if (factor) factor[k] = exp_nonpositive(-0.5f * a.m2);
    }
  }
  if constexpr (!std::is_same_v<T, float>) {
    if (factor) axis_factors(p, pixel_offset(first, centre), m2, count, factor);
  }
}

// The segments of each row that a sheared point's ellipse can reach. Row r
// meets the ellipse (p11 dx)^2 + (p21 dx + p22 dy)^2 <= t^2 in an interval of
// dx, worked out in double with truncate widened by a relative 64 eps times
// the shear (e_y's rounding error grows with it) and a pixel of slack on each side, so that every pixel the
// rounded pair test accepts is inside; the cost of a thin, tilted Gaussian
// follows its area rather than its bounding box's.
template <typename T>
void row_spans(const Gaussian<T>& g, int nx, Footprint<T>& fp) {
  const double p11 = g.p11, p21 = g.p21, p22 = g.p22;
  const double shear = std::sqrt(1.0 + (p21 / p11) * (p21 / p11));
  const double t = std::sqrt(double(g.cutoff2)) * (1.0 + 64.0 * Clamp<T>::epsilon * shear);
  const double a = p11 * p11 + p21 * p21;
  const double dx0 = double(pixel_offset(fp.x0, g.x));  // dx of the footprint's first column
  for (int r = 0; r < fp.rows; ++r) {
    const double dy = double(pixel_offset(fp.y0 + r, g.y));
    // The discriminant b^2 - a c, with b = p21 p22 dy and c = (p22 dy)^2 - t^2,
    // written as a t^2 - (p11 p22 dy)^2: the same quantity without the
    // cancellation that loses a thin ellipse's top and bottom rows.
    const double b = p21 * p22 * dy, h = p11 * p22 * dy;
    const double discriminant = a * (t * t) - h * h;
    const double root = std::sqrt(discriminant);  // NaN for a row that misses the ellipse
    const double lo = (-b - root) / a - dx0 - 1.0, hi = (-b + root) / a - dx0 + 1.0;
    int first = 0, last = fp.segments - 1;
    if (is_finite(lo) && is_finite(hi)) {
      first = lo > 0.0 ? static_cast<int>(std::min(lo, double(nx))) / kLanes : 0;
      last = hi < double(nx - 1) ? static_cast<int>(std::max(hi, -1.0) + 1.0) - 1 : nx - 1;
      last = last < 0 ? -1 : last / kLanes;
    } else if (discriminant < 0.0) {
      first = 1, last = 0;  // the row misses the ellipse
    }
    fp.first_segment[r] = static_cast<int16_t>(first);
    fp.last_segment[r] = static_cast<int16_t>(last);
  }
}

// The axis parts of a footprint nx columns by ny rows whose fp.x0, y0, rows,
// segments and sheared are set, over col_lanes x row_lanes entries:
// kColLanes and kRowLanes when nonzero (known at compile time), else whole
// segments by whole groups of 8 rows.
template <int kColLanes, int kRowLanes, typename T>
void fill_footprint(const Gaussian<T>& g, int nx, int ny, Footprint<T>& fp) {
  const int col_lanes = kColLanes > 0 ? kColLanes : fp.segments * kLanes;
  const int row_lanes = kRowLanes > 0 ? kRowLanes : (ny + 7) / 8 * 8;
  axis_footprint<kColLanes>(g.p11, g.x, fp.x0, col_lanes, fp.ex, fp.m2x, fp.col_factor);
  axis_footprint<kRowLanes>(g.p22, g.y, fp.y0, row_lanes, fp.ey, fp.m2y,
                            fp.sheared ? nullptr : fp.row_factor);
#pragma omp simd
  for (int j = 0; j < col_lanes; ++j) {
    fp.ex[j] = j < nx ? fp.ex[j] : T(0);
    fp.m2x[j] = j < nx ? fp.m2x[j] : T(0);
    fp.col_factor[j] = j < nx ? fp.col_factor[j] : T(0);
  }
  if (fp.sheared) {
#pragma omp simd
    for (int j = 0; j < col_lanes; ++j) {
      fp.sx[j] = j < nx ? shear_x(g, pixel_offset(fp.x0 + j, g.x)) : T(0);
    }
    for (int r = 0; r < row_lanes; ++r) fp.row_factor[r] = g.norm;
  } else {
#pragma omp simd
    for (int r = 0; r < row_lanes; ++r) fp.row_factor[r] *= g.norm;
  }
  // Only a sheared footprint has per-row spans; one a segment wide has
  // nothing to skip, and its spans would cost more than they save.
  if (fp.sheared && fp.segments > 1) {
    row_spans(g, nx, fp);
  } else if (fp.sheared) {
    std::fill(fp.first_segment, fp.first_segment + ny, int16_t{0});
    std::fill(fp.last_segment, fp.last_segment + ny, int16_t{0});
  }
}

// float, axis-aligned, one segment by at most kCount rows, nx <= kCount
// (sigma up to about 2): both axes in one loop of kCount, so each vector
// iteration carries two independent exponentials; each axis's own loop was
// one exponential chain, too short to hide its latency (the 1024^2 forward
// from 65,536 points at sigma 2 went from 14.4-15.7 to 12.2-13.0 ms).
// kCount = kLanes / 2 serves footprints up to 8 pixels square (sigma up to
// about 1) with half the exponentials; the column entries past it are zeroed
// and the row entries past it left as they were (no kernel reads them).
// Every entry is the same function of the same inputs as in fill_footprint,
// so the results are bitwise those of the separate loops.
template <int kCount>
inline void fill_one_segment(const Gaussian<float>& g, int nx, Footprint<float>& fp) {
  static_assert(kCount <= kLanes, "one segment");
#pragma omp simd
  for (int k = 0; k < kCount; ++k) {
    const AxisEntry<float> x = axis_entry(g.p11, g.x, fp.x0 + k);
    const AxisEntry<float> y = axis_entry(g.p22, g.y, fp.y0 + k);
    const float col = exp_nonpositive(-0.5f * x.m2), row = exp_nonpositive(-0.5f * y.m2);
    fp.ex[k] = k < nx ? x.e : 0.0f;
    fp.m2x[k] = k < nx ? x.m2 : 0.0f;
    fp.col_factor[k] = k < nx ? col : 0.0f;
    fp.ey[k] = y.e;
    fp.m2y[k] = y.m2;
    fp.row_factor[k] = row * g.norm;
  }
#pragma omp simd
  for (int k = kCount; k < kLanes; ++k) fp.ex[k] = fp.m2x[k] = fp.col_factor[k] = 0.0f;
}

// Clips g's bounding box to `tile`; false when they do not overlap.
template <typename T>
bool clip_footprint(const Gaussian<T>& g, const TileRect& tile, int64_t width, int64_t height,
                    Footprint<T>& fp) {
  if (!g.valid()) return false;
  const Range cols = pixel_range(g.x, g.box_x, width);
  const Range rows = pixel_range(g.y, g.box_y, height);
  fp.x0 = static_cast<int32_t>(std::max(cols.lo, tile.x0));  // within the image
  fp.y0 = static_cast<int32_t>(std::max(rows.lo, tile.y0));
  const int64_t x1 = std::min(cols.hi, tile.x0 + tile.width - 1);
  const int64_t y1 = std::min(rows.hi, tile.y0 + tile.height - 1);
  if (cols.empty() || rows.empty() || fp.x0 > x1 || fp.y0 > y1) return false;
  const int nx = static_cast<int>(x1 - fp.x0 + 1);
  const int ny = static_cast<int>(y1 - fp.y0 + 1);
  fp.rows = ny;
  fp.segments = (nx + kLanes - 1) / kLanes;
  fp.sheared = !g.axis_aligned();
  fp.narrow = !fp.sheared && nx <= kLanes / 2;
  // Factors for whole vectors, so that the loops have no remainder. Small
  // footprints get loops of fixed length, whose set-up cost more than their
  // work: fill_one_segment for float axis-aligned ones (double steps its
  // factors along the row, axis_factors; a sheared one has no row
  // exponentials but needs sx and spans), else one segment by at most 8 rows.
  if constexpr (std::is_same_v<T, float>) {
    if (nx <= kLanes / 2 && ny <= kLanes / 2 && !fp.sheared) {
      fill_one_segment<kLanes / 2>(g, nx, fp);
      return true;
    }
    if (fp.segments == 1 && ny <= kLanes && !fp.sheared) {
      fill_one_segment<kLanes>(g, nx, fp);
      return true;
    }
  }
  if (fp.segments == 1 && ny <= 8) {
    fill_footprint<kLanes, 8>(g, nx, ny, fp);
  } else {
    fill_footprint<0, 0>(g, nx, ny, fp);
  }
  return true;
}

// Calls walk(kSheared, kWidth), two std::integral_constant, with how the
// kernels walk fp's rows: sheared (per-row spans, e_y per pixel) or not, and
// kWidth lanes of each segment, kLanes / 2 for a narrow footprint (whose
// other half has zero weight) and kLanes otherwise.
template <typename T, typename Walk>
void with_walk(const Footprint<T>& fp, const Walk& walk) {
  if (fp.sheared) {
    walk(std::true_type{}, std::integral_constant<int, kLanes>{});
  } else if (fp.narrow) {
    walk(std::false_type{}, std::integral_constant<int, kLanes / 2>{});
  } else {
    walk(std::false_type{}, std::integral_constant<int, kLanes>{});
  }
}

// The weight of the pair at row r (whose ey, m2y and row_factor the caller
// has loaded) and lane j of the footprint: gmm_math.h's pair test and weight,
// from the stored per-axis parts. With kSheared, e_y = sx[j] + ey and its
// Gaussian factor is taken per pixel; `e2` returns e_y^2 either way.
template <bool kSheared, typename T>
inline T footprint_weight(const Gaussian<T>& g, const Footprint<T>& fp, T ey, T m2y,
                          T row_factor, int j, T* e2) {
  if constexpr (kSheared) {
    const T e = add_rn(fp.sx[j], ey);
    *e2 = mul_rn(e, e);
    const T f = row_factor * fp.col_factor[j] * exp_nonpositive(T(-0.5) * *e2);
    return in_cutoff(g, add_rn(fp.m2x[j], *e2)) ? f : T(0);
  } else {
    *e2 = m2y;
    const T f = row_factor * fp.col_factor[j];  // loaded whatever the test says: a vector select
    return in_cutoff(g, add_rn(fp.m2x[j], m2y)) ? f : T(0);
  }
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
