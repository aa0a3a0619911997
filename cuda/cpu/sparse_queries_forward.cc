// Forward at queries far fewer than the points (kernels.h, sparse_queries):
// the points are split into a fixed number of chunks, and each chunk's task
// walks its points in order, making each point's record as it goes, and adds
// the point's weights to the queries of the cells its bounding box overlaps,
// in the chunk's own accumulators. The chunks' sums are then added in chunk
// order. The chunks depend on N alone, so results are bitwise reproducible
// for any thread count; no atomics.
#include <algorithm>

#include "kernels.h"
#include "parallel.h"
#include "query_runs.h"

namespace jax_gmm {
namespace JAX_GMM_ISA {

namespace {
// The chunks of points: the kernel's parallel tasks, each holding its own
// accumulators for every listed query (at most kSparseQueryBytes). A fixed
// number, so that the sums do not depend on the thread count, and no more
// than 16 per call, so that the accumulators stay at most 4 MiB.
constexpr int64_t kMaxChunks = 16;

// A cell row's queries, taken a block at a time in the vector loops (the
// size of the weights buffer on the stack).
constexpr int64_t kBlock = 4 * kRunLanes;
}  // namespace

template <typename T>
void sparse_queries_forward(ThreadPool& pool, const SparseQueries<T>& sparse, const T* values,
                            int64_t channels, int64_t m, T* out, T* density) {
  std::fill(out, out + m * channels, T(0));  // queries in no cell (unreachable, not finite) stay 0
  std::fill(density, density + m, T(0));
  const int64_t C = channels, n = sparse.n, planes = C + 1;
  const int64_t listed = sparse.x.size();
  if (listed == 0) return;
  const CellLayout& l = sparse.layout;
  const std::vector<int64_t>& start = sparse.cells.start;
  const int64_t chunks =
      std::clamp<int64_t>((n + kMembersPerChunk - 1) / kMembersPerChunk, 1, kMaxChunks);
  const int64_t per_chunk = (n + chunks - 1) / chunks;
  // Chunk c's planes [Z | A_0 | ... | A_C-1], `listed` entries each, in list order.
  UninitVector<T> acc(chunks * planes * listed);
  parallel_for(pool, chunks, [&](int64_t c) {
    T* z = acc.data() + c * planes * listed;
    std::fill(z, z + planes * listed, T(0));
    T w[kBlock];
    for (int64_t i = c * per_chunk; i < std::min(n, (c + 1) * per_chunk); ++i) {
      const Gaussian<T> g = sparse.gaussian(i);
      const Box box = point_cells(l, g);
      if (box.empty()) continue;
      const T* v = values + i * C;
      for (int64_t ky = box.y.lo; ky <= box.y.hi; ++ky) {
        // The row's cells are consecutive, and so are their lists.
        const int64_t row = ky * l.cells_x;
        const int64_t last = start[row + box.x.hi + 1];
        int64_t k0 = start[row + box.x.lo];
        // Fewer queries than a vector's lanes, the usual case (about one per
        // cell at M = 1,024): one pair at a time, branching past the
        // exponential outside the cutoff (N = 65,536, min of calls over
        // alternated processes, one core partly busy: 2.8-3.5 ms, against
        // 3.4-4.0 ms with the exponential taken for every pair). pair_m2 of
        // an axis-aligned point is run_weights' m2, bit for bit: its shear
        // term is +-0.
        if (last - k0 < kRunLanes) {
          for (int64_t k = k0; k < last; ++k) {
            const T m2 = pair_m2(g, sparse.x[k] - g.x, sparse.y[k] - g.y);
            if (!in_cutoff(g, m2)) continue;  // a branch, or GCC takes every exponential
            const T wk = cutoff_weight(g, m2);
            z[k] += wk;
            for (int64_t ch = 0; ch < C; ++ch) z[(ch + 1) * listed + k] += weighted(wk, v[ch]);
          }
          continue;
        }
        for (; k0 < last; k0 += kBlock) {
          const int64_t count = std::min(kBlock, last - k0);
          run_weights(g, sparse.x.data() + k0, sparse.y.data() + k0, count, w);
          T* zk = z + k0;
#pragma omp simd
          for (int64_t k = 0; k < count; ++k) zk[k] += w[k];
          for (int64_t ch = 0; ch < C; ++ch) {
            T* a = zk + (ch + 1) * listed;
            const T value = v[ch];
#pragma omp simd
            for (int64_t k = 0; k < count; ++k) a[k] += weighted(w[k], value);
          }
        }
      }
    }
  });
  const uint32_t* items = sparse.cells.items.data();
  const auto chunk_sum = [&](int64_t plane, int64_t k) {
    T sum = 0;
    for (int64_t c = 0; c < chunks; ++c) sum += acc[(c * planes + plane) * listed + k];
    return sum;
  };
  parallel_over(pool, listed, [&](int64_t k) {
    const int64_t q = items[k];
    const T z = density[q] = chunk_sum(0, k);
    for (int64_t ch = 0; ch < C; ++ch) out[q * C + ch] = normalise(chunk_sum(ch + 1, k), z);
  });
}

#define JAX_GMM_INSTANTIATE(T)                                                                 \
  template void sparse_queries_forward<T>(ThreadPool&, const SparseQueries<T>&, const T*,     \
                                          int64_t, int64_t, T*, T*);
JAX_GMM_INSTANTIATE(float)
JAX_GMM_INSTANTIATE(double)
#undef JAX_GMM_INSTANTIATE

}  // namespace JAX_GMM_ISA
}  // namespace jax_gmm
