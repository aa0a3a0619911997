// Forward at arbitrary queries: queries are sorted into cells about one cutoff
// radius wide and points are splatted into every cell their box overlaps; each
// cell is one task and each of its queries sums over the cell's point list.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels.h"
#include "parallel.h"

namespace jax_gmm {
namespace JAX_GMM_ISA {

template <typename T>
void scattered_forward(ThreadPool& pool, const CelledQueries<T>& celled, const T* values,
                       int64_t channels, const T* queries, int64_t m, T* out, T* density) {
  const int64_t C = channels;
  std::fill(out, out + m * C, T(0));  // queries outside every cell (non-finite) stay 0
  std::fill(density, density + m, T(0));
  parallel_for(pool, celled.cells_x * celled.cells_y, [&](int64_t cell) {
    std::vector<T> acc(C);
    const CellLists& pts = celled.points;
    for (int64_t k = celled.queries.start[cell]; k < celled.queries.start[cell + 1]; ++k) {
      const int64_t q = celled.queries.items[k];
      const T qx = queries[2 * q], qy = queries[2 * q + 1];
      T z = 0;
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t l = pts.start[cell]; l < pts.start[cell + 1]; ++l) {
        const int64_t i = pts.items[l];
        const Gaussian<T>& g = celled.gaussians[i];
        const T w = pair_weight(g, qx - g.x, qy - g.y);
        z += w;
        for (int64_t ch = 0; ch < C; ++ch) acc[ch] += weighted(w, values[i * C + ch]);
      }
      density[q] = z;
      for (int64_t ch = 0; ch < C; ++ch) out[q * C + ch] = normalise(acc[ch], z);
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
