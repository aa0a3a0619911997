// Forward at arbitrary queries: queries are sorted into cells about 1.5 cutoff
// radii wide (layout.h) and points are splatted into every cell their box
// overlaps; each cell is one task, which walks its point list in point order
// and adds each point's weights to all of the cell's queries at once (a
// vector loop over the cell's run of queries, query_runs.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels.h"
#include "parallel.h"
#include "query_runs.h"

namespace jax_gmm {
namespace JAX_GMM_ISA {

template <typename T>
void scattered_forward(ThreadPool& pool, const CelledQueries<T>& celled, const T* values,
                       int64_t channels, const T* queries, int64_t m, T* out, T* density) {
  const int64_t C = channels;
  std::fill(out, out + m * C, T(0));  // queries outside every cell (non-finite, unreachable) stay 0
  if (density) std::fill(density, density + m, T(0));
  const QueryRuns<T> runs(pool, celled, queries, 0);
  const CellLists& pts = celled.points;
  const uint32_t* items = celled.queries.items.data();
  parallel_for(pool, celled.cells_x * celled.cells_y, [&](int64_t cell) {
    const int64_t k0 = runs.begin[cell], n = runs.length(cell);
    if (n == 0) return;
    // [w | Z | A_0 | ... | A_C-1], n entries each (the walked run)
    std::vector<T> acc((C + 2) * n, T(0));
    T* w = acc.data();
    T* z = w + n;
    const int64_t last = pts.start[cell + 1];
    for (int64_t l = pts.start[cell]; l < last; ++l) {
      prefetch_point(celled, values, C, l + 4 < last ? pts.items[l + 4] : -1);
      const int64_t i = pts.items[l];
      run_weights(celled.gaussians[i], runs.x() + k0, runs.y() + k0, n, w);
      add_run(w, n, values + i * C, C, n, z);
    }
    const int64_t first = celled.queries.start[cell];
    for (int64_t k = 0; k < celled.queries.start[cell + 1] - first; ++k) {
      const int64_t q = items[first + k];
      if (density) density[q] = z[k];
      for (int64_t ch = 0; ch < C; ++ch) out[q * C + ch] = normalise(z[(ch + 1) * n + k], z[k]);
    }
  });
}

#define JAX_GMM_INSTANTIATE(T)                                                        \
  template void scattered_forward<T>(ThreadPool&, const CelledQueries<T>&, const T*, \
                                     int64_t, const T*, int64_t, T*, T*);
JAX_GMM_INSTANTIATE(float)
JAX_GMM_INSTANTIATE(double)
#undef JAX_GMM_INSTANTIATE

}  // namespace JAX_GMM_ISA
}  // namespace jax_gmm
