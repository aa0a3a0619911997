// Arbitrary queries gathered into cell order, for the scattered kernels'
// vector loops. The cell binning lists each cell's queries as indices into the
// caller's array; copying their coordinates (and, backward, their folded
// cotangents) into one contiguous run per cell turns the per-pair loops into
// unit-stride loops over queries that vectorise, and the random reads into
// one gather per query.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "binning.h"
#include "gmm_math.h"
#include "kernels.h"
#include "separable.h"

namespace jax_gmm {
namespace JAX_GMM_ISA {  // one copy per instruction-set build (kernels.h)

// Queries per vector loop: a cell's run of at least kShortRun queries is
// padded to a multiple of it with entries at NaN, which no pair test passes
// (weight 0), so the loops over one such run have no scalar remainder.
constexpr int64_t kRunLanes = 16;

// Runs shorter than this, too few to fill half a vector, are not padded,
// and the scattered backward takes them pair by pair: there the vector
// loops' set-up (and, per point, their 6 + C reductions) cost more than
// the run's pairs.
constexpr int64_t kShortRun = kRunLanes / 2;

// Cell c's run is entries begin[c] .. begin[c] + n - 1, n = its query count,
// then, if n >= kShortRun, padding up to begin[c + 1]; run entry
// begin[c] + k is the query celled.queries.items[start[c] + k]. `fields` extra
// planes, zero in the padding, follow x and y for per-query data the caller
// fills in the rest. The runs lie in cell order, each where the last ends,
// so the runs of consecutive cells are one span (which the scattered
// backward walks per row of a point's cells, padding and all).
template <typename T>
struct QueryRuns {
  std::vector<int64_t> begin;
  int64_t count;
  std::unique_ptr<T[]> data;
  T* x() const { return data.get(); }
  T* y() const { return data.get() + count; }
  T* plane(int64_t f) const { return data.get() + (2 + f) * count; }
  // Entries the loops over cell c's run walk: the padded run, or only its
  // queries when they are too few to fill half a vector (a few queries per
  // cell: loops with a remainder beat mostly-padding vectors). Either way
  // each query's sums are taken in the same order, so results agree.
  int64_t length(int64_t c) const { return begin[c + 1] - begin[c]; }

  QueryRuns(ThreadPool& pool, const CelledQueries<T>& celled, const T* queries, int64_t fields)
      : begin(run_starts(celled.queries.start)),
        count(begin.back()),
        data(new T[(2 + fields) * count]) {
    const uint32_t* items = celled.queries.items.data();
    parallel_for(pool, static_cast<int64_t>(begin.size()) - 1, [&](int64_t c) {
      const int64_t first = celled.queries.start[c], n = celled.queries.start[c + 1] - first;
      for (int64_t k = 0; k < length(c); ++k) {
        const bool real = k < n;
        const int64_t q = real ? items[first + k] : 0;  // 64-bit: 2q wraps in 32 from 2^31
        x()[begin[c] + k] = real ? queries[2 * q] : T(NAN);
        y()[begin[c] + k] = real ? queries[2 * q + 1] : T(NAN);
        if (!real) {
          for (int64_t f = 0; f < fields; ++f) plane(f)[begin[c] + k] = T(0);
        }
      }
    });
  }

 private:
  // Only runs of at least kShortRun queries are padded: with cells of
  // about one query each (small sigma), padding every run to kRunLanes made
  // the runs about ten times the queries, and much of a call went to writing
  // and faulting in padding that no loop read.
  static std::vector<int64_t> run_starts(const std::vector<int64_t>& start) {
    std::vector<int64_t> begin(std::max<size_t>(start.size(), 1), 0);
    for (size_t c = 0; c + 1 < start.size(); ++c) {
      const int64_t n = start[c + 1] - start[c];
      const int64_t padded = (n + kRunLanes - 1) / kRunLanes * kRunLanes;
      begin[c + 1] = begin[c] + (n < kShortRun ? n : padded);
    }
    return begin;
  }
};

// A cell's point list is in point order, not in memory order of the cell:
// fetch point i's record and values ahead of use (nothing for i < 0).
template <typename T>
void prefetch_point(const CelledQueries<T>& celled, const T* values, int64_t channels, int64_t i) {
  if (i < 0) return;
  prefetch_record(celled.gaussians[i]);
  __builtin_prefetch(values + i * channels);
}

// The weight of the pair of point g with this m2 (pair_m2): pair_weight's,
// with the vectorised exponential of the grid kernels.
template <typename T>
inline T cutoff_weight(const Gaussian<T>& g, T m2) {
  return in_cutoff(g, m2) ? g.norm * exp_nonpositive(T(-0.5) * m2) : T(0);
}

// Adds a point's weights w[0, n), with its C values v, to the planes
// [Z | A_0 | ... | A_C-1] at z, `stride` entries apart.
template <typename T>
void add_run(const T* w, int64_t n, const T* v, int64_t C, int64_t stride, T* z) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) z[k] += w[k];
  for (int64_t ch = 0; ch < C; ++ch) {
    T* a = z + (ch + 1) * stride;
    const T value = v[ch];
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) a[k] += weighted(w[k], value);
  }
}

// Weight of g at entries [0, n) of the runs xs, ys, into w: the same pair
// test as pair_weight (gmm_math.h), with the vectorised exponential of the
// grid kernels.
// An axis-aligned point (p21 = 0) skips the shear, whose product is +-0 and
// leaves m2's bits unchanged. The loops read a local copy of the record: for
// all GCC knows, `point` might alias w, and reloading its norm after every
// store, under the cutoff's condition, kept the tilted point's loop from
// vectorising.
template <typename T>
void run_weights(const Gaussian<T>& point, const T* xs, const T* ys, int64_t n, T* w) {
  const Gaussian<T> g = point;
  if (g.axis_aligned()) {
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) {
      const T m2 = add_rn(square(whiten_x(g, xs[k] - g.x)), square(whiten_y(g, ys[k] - g.y)));
      w[k] = cutoff_weight(g, m2);
    }
    return;
  }
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) w[k] = cutoff_weight(g, pair_m2(g, xs[k] - g.x, ys[k] - g.y));
}

}  // namespace JAX_GMM_ISA
}  // namespace jax_gmm
