// The passes over the points that every kernel starts from (kernels.h):
// their records, their tiles, their reach, which of them lie near queries.
// Compiled per instruction set so that the records come from this build's
// vector loops (point_records.h): compiled once, for baseline x86-64, with
// the binning, they were made one call at a time. A 256 x 256 render from
// 16,384 points at sigma 0.5 took 1.17-1.38 ms against 1.50-1.83 ms that
// way, at sigma 1 1.57-1.70 against 1.73-2.83 ms (minimum of calls, 3
// alternated processes on the Xeon).
#include <algorithm>
#include <vector>

#include "kernels.h"
#include "parallel.h"
#include "point_records.h"

namespace jax_gmm {
namespace JAX_GMM_ISA {

namespace {
// The tiles a point's box overlaps (layout.h); TileBox holds them in int32,
// enough for any tile of an image of fewer than 2^32 pixels.
template <typename T>
TileBox tiles_of(const Gaussian<T>& g, int64_t height, int64_t width) {
  const Box b = tile_box(g, height, width, kTileSize);
  if (b.empty()) return {1, 0, 1, 0};
  return {static_cast<int32_t>(b.x.lo), static_cast<int32_t>(b.x.hi),
          static_cast<int32_t>(b.y.lo), static_cast<int32_t>(b.y.hi)};
}

// Records whose tiles are worked out while they are still in L1.
constexpr int64_t kRecordBlock = 64;

// body(first, count) for the blocks of at most `block` points, in parallel
// over parallel_over's fixed chunks.
template <typename Body>
void over_blocks(ThreadPool& pool, int64_t n, int64_t block, const Body& body) {
  parallel_for(pool, (n + kMembersPerChunk - 1) / kMembersPerChunk, [&](int64_t c) {
    const int64_t end = std::min(n, (c + 1) * kMembersPerChunk);
    for (int64_t first = c * kMembersPerChunk; first < end; first += block) {
      body(first, std::min(block, end - first));
    }
  });
}
}  // namespace

template <typename T>
void point_records(ThreadPool& pool, const T* points, const T* scale, int64_t n, T truncate,
                   Gaussian<T>* records) {
  over_blocks(pool, n, kMembersPerChunk, [&](int64_t first, int64_t count) {
    point_gaussians(points, scale, first, count, truncate, records + first);
  });
}

template <typename T>
void tiled_records(ThreadPool& pool, const T* points, const T* scale, int64_t n, T truncate,
                   int64_t height, int64_t width, Gaussian<T>* records, TileBox* boxes) {
  over_blocks(pool, n, kRecordBlock, [&](int64_t first, int64_t count) {
    point_gaussians(points, scale, first, count, truncate, records + first);
    for (int64_t i = first; i < first + count; ++i) boxes[i] = tiles_of(records[i], height, width);
  });
}

namespace {
// The reach of points [first, first + count) that share `shape`, from their
// centres alone: the centres' hull, widened by the box of the point with the
// largest max(|x|, |y|). place_gaussian's margin grows with that in rounded
// steps that never decrease, so this box holds every point's and is that
// point's own: the same widest box as the points' own boxes give, a hull no
// smaller and, unless that box overflows, a radius sum no smaller (their
// uses, the cell layouts, need bounds, not these bits; the outputs do not
// depend on them). No records: 1,024 queries among 65,536 points at sigma 2
// went from 613-618 to 536-543 us (minimum of calls; medians 713-886 to
// 628-754 us; four alternated processes on the Zen 3).
template <typename T>
PointReach shared_reach(const GaussianShape<T>& shape, const T* points, int64_t first,
                        int64_t count) {
  if (!(shape.flags & Gaussian<T>::kValid)) return no_reach();
  const T* p = points + 2 * first;
  T x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY, far = T(-1);
  int64_t valid = 0;
#pragma omp simd reduction(min : x_lo, y_lo) reduction(max : x_hi, y_hi, far) \
    reduction(+ : valid)
  for (int64_t k = 0; k < count; ++k) {
    const T x = p[2 * k], y = p[2 * k + 1];
    const bool ok = is_finite(x) & is_finite(y);
    const T ax = abs_value(x), ay = abs_value(y), centre = ax > ay ? ax : ay;
    x_lo = ok && x < x_lo ? x : x_lo;
    x_hi = ok && x > x_hi ? x : x_hi;
    y_lo = ok && y < y_lo ? y : y_lo;
    y_hi = ok && y > y_hi ? y : y_hi;
    far = ok && centre > far ? centre : far;
    valid += ok;
  }
  if (valid == 0) return no_reach();
  const Gaussian<T> g = place_gaussian(shape, far, far);
  const PointReach lo = box_reach(true, x_lo, y_lo, g.box_x, g.box_y);
  const PointReach hi = box_reach(true, x_hi, y_hi, g.box_x, g.box_y);
  return {{lo.x.lo, hi.x.hi}, {lo.y.lo, hi.y.hi}, lo.radius_sum * double(valid),
          lo.finite_radii * valid, lo.widest};
}
}  // namespace

// Per instruction set for its records, as the others. 1,024 float queries
// at N = 65,536, all out of reach, so that this pass is most of the call:
// 0.50-0.64 ms against 0.90-1.15 ms compiled once, for baseline x86-64 (min
// of calls, 3 alternated processes on the Xeon).
template <typename T>
PointReach points_reach(ThreadPool& pool, const T* points, const T* scale, int64_t n,
                        T truncate) {
  return reach_of(pool, n, [&](int64_t first, int64_t count) {
    if (same_scale(scale, first, count)) {
      const T* l = scale + 3 * first;
      return shared_reach(gaussian_shape(l[0], l[1], l[2], truncate), points, first, count);
    }
    // Only the fields block_reach reads: half the stores, 10-20 us less a
    // call at 1,024 queries among 65,536 points (strict alternation, three
    // runs, within their interquartile range).
    GaussianBlock<T> b;
    make_records(points, scale, first, count, truncate, [&b](int64_t k, Gaussian<T> g) {
      b.x[k] = g.x, b.y[k] = g.y, b.box_x[k] = g.box_x, b.box_y[k] = g.box_y;
      b.cutoff2[k] = g.cutoff2;
    });
    return block_reach(b, count);
  });
}

template <typename T>
UninitVector<uint32_t> near_point_list(ThreadPool& pool, const NearQueries& near,
                                       const T* points, int64_t n) {
  const int64_t chunks = (n + kMembersPerChunk - 1) / kMembersPerChunk;
  std::vector<UninitVector<uint32_t>> listed(chunks);
  parallel_for(pool, chunks, [&](int64_t c) {
    int64_t index[kBlockPoints];
    const int64_t end = std::min(n, (c + 1) * kMembersPerChunk);
    for (int64_t first = c * kMembersPerChunk; first < end; first += kBlockPoints) {
      const int64_t count =
          near_points(near, points, first, std::min(kBlockPoints, end - first), index);
      listed[c].insert(listed[c].end(), index, index + count);
    }
  });
  UninitVector<uint32_t> all;
  for (const auto& part : listed) all.insert(all.end(), part.begin(), part.end());
  return all;
}

#define JAX_GMM_INSTANTIATE(T)                                                               \
  template void point_records<T>(ThreadPool&, const T*, const T*, int64_t, T, Gaussian<T>*); \
  template void tiled_records<T>(ThreadPool&, const T*, const T*, int64_t, T, int64_t,       \
                                 int64_t, Gaussian<T>*, TileBox*);                           \
  template PointReach points_reach<T>(ThreadPool&, const T*, const T*, int64_t, T);          \
  template UninitVector<uint32_t> near_point_list<T>(ThreadPool&, const NearQueries&,        \
                                                     const T*, int64_t);
JAX_GMM_INSTANTIATE(float)
JAX_GMM_INSTANTIATE(double)
#undef JAX_GMM_INSTANTIATE

}  // namespace JAX_GMM_ISA
}  // namespace jax_gmm
