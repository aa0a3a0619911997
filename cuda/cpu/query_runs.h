// Arbitrary queries gathered into cell order, for the scattered kernels'
// vector loops. The cell binning lists each cell's queries as indices into the
// caller's array; copying their coordinates (and, backward, their folded
// cotangents) into one contiguous run per cell turns the per-pair loops into
// unit-stride loops over queries that vectorise, and the random reads into
// one gather per query.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>

#include "binning.h"
#include "gmm_math.h"
#include "kernels.h"
#include "separable.h"

namespace jax_gmm {
namespace JAX_GMM_ISA {  // one copy per instruction-set build (kernels.h)

// Entry k (in cell order) is the query celled.queries.items[k]; cell c owns
// entries celled.queries.start[c] .. start[c + 1] - 1. `fields` extra planes
// of `count` entries follow x and y for per-query data the caller fills.
template <typename T>
struct QueryRuns {
  int64_t count;
  std::unique_ptr<T[]> data;
  T* x() const { return data.get(); }
  T* y() const { return data.get() + count; }
  T* plane(int64_t f) const { return data.get() + (2 + f) * count; }

  QueryRuns(ThreadPool& pool, const CelledQueries<T>& celled, const T* queries, int64_t fields)
      : count(celled.queries.start.empty() ? 0 : celled.queries.start.back()),
        data(new T[(2 + fields) * count]) {
    const uint32_t* items = celled.queries.items.data();
    parallel_over(pool, count, [&](int64_t k) {
      x()[k] = queries[2 * items[k]];
      y()[k] = queries[2 * items[k] + 1];
    });
  }
};

// Weight of g at entries [0, n) of the runs xs, ys, into w: the same pair
// test as pair_weight (gmm_math.h), with the vectorised exponential of the
// grid kernels.
template <typename T>
void run_weights(const Gaussian<T>& g, const T* xs, const T* ys, int64_t n, T* w) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) {
    const T m2 = pair_m2(g, xs[k] - g.x, ys[k] - g.y);
    w[k] = in_cutoff(g, m2) ? g.norm * exp_nonpositive(T(-0.5) * m2) : T(0);
  }
}

}  // namespace JAX_GMM_ISA
}  // namespace jax_gmm
