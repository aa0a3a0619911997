// Making the points' records (gmm_math.h, make_gaussian), and picking the
// points near some queries, in vector loops, for the kernel files of each
// instruction-set build.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "binning.h"
#include "gmm_math.h"
#include "kernels.h"

namespace jax_gmm {
namespace JAX_GMM_ISA {  // one copy per instruction-set build (kernels.h)

// The record of point i of points (N, 2) with Cholesky factors scale (N, 3),
// each (l11, l21, l22).
template <typename T>
inline Gaussian<T> point_gaussian(const T* points, const T* scale, int64_t i, T truncate) {
  const T* l = scale + 3 * i;
  return make_gaussian(points[2 * i], points[2 * i + 1], l[0], l[1], l[2], truncate);
}

// Whether rows [first, first + count) of scale (N, 3) hold the same bits,
// so that their points share one GaussianShape: a scalar or shared sigma is
// one row broadcast to every point.
template <typename T>
inline bool same_scale(const T* scale, int64_t first, int64_t count) {
  using Bits = typename Gaussian<T>::Flags;  // an unsigned integer as wide as T
  const T* l = scale + 3 * first;
  Bits differ = 0;
#pragma omp simd reduction(| : differ)
  for (int64_t j = 3; j < 3 * count; ++j) {
    Bits a, b;
    std::memcpy(&a, &l[j], sizeof a);
    std::memcpy(&b, &l[j - 3], sizeof b);
    differ |= a ^ b;
  }
  return differ == 0;
}

// store(k, record) for the records of points [first, first + count), each
// with point_gaussian's bits, in vector loops: the branches of
// place_gaussian and gaussian_shape all become selects, and the arithmetic
// is IEEE.
//
// A block of kBlockPoints points with the same scale (a scalar or shared
// sigma) makes one GaussianShape and places it at each point, so that its
// divisions and square root are worked out once. 1,024 queries among 65,536
// points at sigma 2, which record every point for their reach and the near
// ones for the walk, took 1.06-1.27 against 1.20-1.41 ms (median of calls,
// strict alternation in one process, three runs on the Zen 3; about 20 us
// of that is near_points' int32 cells).
//
// Flattened: otherwise GCC inlined the loop but called make_gaussian (or,
// while point_gaussian was shared by every build, point_gaussian) once per
// record, and such a call to a function shared by every build reaches the
// baseline build's copy, the one the linker keeps (kernels.h). 1,024
// queries at N = 65,536, sigma 2 (sparse_queries_forward, when it made its
// records here; minimum of calls, alternated processes on the Xeon): float
// 2.32-2.84 against 2.82-3.51 ms (7 rounds), double 2.64-2.85 against
// 3.13-3.26 ms.
template <typename T, typename Store>
[[gnu::flatten]] inline void make_records(const T* points, const T* scale, int64_t first,
                                          int64_t count, T truncate, const Store& store) {
  const T* p = points + 2 * first;
  for (int64_t begin = 0; begin < count; begin += kBlockPoints) {
    const int64_t end = std::min(count, begin + kBlockPoints);
    if (same_scale(scale, first + begin, end - begin)) {
      const T* l = scale + 3 * (first + begin);
      const GaussianShape<T> shape = gaussian_shape(l[0], l[1], l[2], truncate);
#pragma omp simd
      for (int64_t k = begin; k < end; ++k) {
        store(k, place_gaussian(shape, p[2 * k], p[2 * k + 1]));
      }
    } else {
#pragma omp simd
      for (int64_t k = begin; k < end; ++k) {
        store(k, point_gaussian(points, scale, first + k, truncate));
      }
    }
  }
}

// The records of points [first, first + count) into out[0, count).
template <typename T>
inline void point_gaussians(const T* points, const T* scale, int64_t first, int64_t count,
                            T truncate, Gaussian<T>* out) {
  make_records(points, scale, first, count, truncate,
               [out](int64_t k, Gaussian<T> g) { out[k] = g; });
}

// The same into out's [0, count), one field at a time, unit stride
// (binning.h, GaussianBlock).
template <typename T>
inline void point_block(const T* points, const T* scale, int64_t first, int64_t count,
                        T truncate, GaussianBlock<T>& out) {
  make_records(points, scale, first, count, truncate,
               [&out](int64_t k, Gaussian<T> g) { out.set(k, g); });
}

// index[0, count) = the points among [first, first + span) of points (N, 2)
// whose centres lie in cells marked near, in order; all of them where near
// has no grid. The others' boxes hold no query: at 1,024 queries among
// 65,536 points (sigma 2), eight points in ten, which cost records, cells
// and a walk of their cell rows (sparse_queries_forward), or a pass of the
// backward (near_point_list).
template <typename T>
int64_t near_points(const NearQueries& near, const T* points, int64_t first, int64_t span,
                    int64_t* index) {
  const CellLayout l = near.grid;  // a copy: read through the reference, it kept the loop scalar
  if (l.cells() == 0) {
    for (int64_t k = 0; k < span; ++k) index[k] = first + k;
    return span;
  }
  const T* p = points + 2 * first;
  const uint64_t* marked = near.bits.data();
  // Cells in int32, the one double-to-integer conversion AVX2 has in
  // vectors: through int64 this loop was scalar there, 12% of a 1,024-query
  // call's samples, and vectorised 8.6%.
  static_assert(kBlockPoints <= 64, "a bit of `keep` per point of a block");
  const uint32_t sink = static_cast<uint32_t>(l.cells());  // <= kCentreCellsMax: near_queries
  uint64_t keep = 0;  // bit k: point first + k is near
#pragma omp simd reduction(| : keep)
  for (int64_t k = 0; k < span; ++k) {
    const int32_t cell = grid_cell<int32_t>(l, p[2 * k], p[2 * k + 1]);
    const uint32_t bit = cell < 0 ? sink : static_cast<uint32_t>(cell);
    keep |= ((marked[bit / 64] >> (bit % 64)) & 1) << k;
  }
  int64_t count = 0;
  for (; keep != 0; keep &= keep - 1) index[count++] = first + __builtin_ctzll(keep);
  return count;
}

}  // namespace JAX_GMM_ISA
}  // namespace jax_gmm
