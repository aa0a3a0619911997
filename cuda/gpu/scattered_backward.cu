// Backward at arbitrary queries, in three gathers and no atomics:
//  1. per query, in cell order: its position and folded cotangents
//     (gmm_math.h) into one row of a cell-ordered table;
//  2. per query: d_queries, summed over the point list of its cell;
//  3. per point, one warp: d_points, d_values, d_scale, summed over the
//     queries of the cells its box overlaps. A row of those cells is one
//     contiguous run of the table, walked by the lanes in turn.
#include <cstdint>

#include "kernels.cuh"
#include "point_gather.cuh"

namespace jax_gmm {
namespace gpu {

namespace {

// A table row: qx, qy, then the folded record g_0 .. g_C-1, offset, 1/Z.
__host__ __device__ inline int64_t row_size(int64_t channels) { return channels + 4; }

template <typename T>
__global__ void fold_queries_kernel(const T* queries, int64_t m, ListsView sorted, int64_t cells,
                                    const T* out, const T* density, const T* d_out,
                                    const T* d_density, int64_t channels, T* table) {
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < m;
       k += int64_t{gridDim.x} * blockDim.x) {
    if (static_cast<int64_t>(sorted.keys[k]) >= cells) continue;  // in no cell: never read
    const int64_t q = sorted.items[k];
    T* row = table + k * row_size(channels);
    row[0] = queries[2 * q];
    row[1] = queries[2 * q + 1];
    fold_query(d_out + q * channels, out + q * channels, density[q], d_density[q], channels,
               row + 2, int64_t{1});
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    query_grad_kernel(const Gaussian<T>* __restrict__ gaussians, const T* __restrict__ values,
                      int64_t channels, ListsView points, ListsView sorted, int64_t cells,
                      const T* __restrict__ table, int64_t m, T* __restrict__ d_queries) {
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < m;
       k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t q = sorted.items[k];
    const int64_t cell = static_cast<int64_t>(sorted.keys[k]);
    T gx = 0, gy = 0;
    if (cell < cells) {  // else no point reaches the query: zero gradient
      const T* row = table + k * row_size(channels);
      const T qx = row[0], qy = row[1];
      for (int64_t l = points.start[cell]; l < points.start[cell + 1]; ++l) {
        const int64_t i = points.items[l];
        const Gaussian<T> g = gaussians[i];
        const T dx = qx - g.x, dy = qy - g.y;
        const T ratio = pair_ratio(pair_weight(g, dx, dy), row + 2, int64_t{1}, channels);
        if (!(ratio > T(0))) continue;
        const T u = pair_u(ratio, row + 2, int64_t{1}, values + i * channels, channels);
        add_query_grad(g, u, dx, dy, &gx, &gy);
      }
    }
    d_queries[2 * q] = gx;
    d_queries[2 * q + 1] = gy;
  }
}

// The queries of a rectangle of cells: per row of cells, one run of the
// table, whose rows lane l takes at l, l + 32, ...
template <typename T>
struct CellFootprint {
  Range cx, cy;
  int64_t cells_x, row_stride;
  const int64_t* start;
  const T* table;

  template <typename F>
  __device__ void visit(int lane, F&& f) const {
    if (cx.empty() || cy.empty()) return;
    for (int64_t ky = cy.lo; ky <= cy.hi; ++ky) {
      const int64_t end = start[ky * cells_x + cx.hi + 1];
      for (int64_t k = start[ky * cells_x + cx.lo] + lane; k < end; k += kWarp) {
        const T* row = table + k * row_stride;
        f(row[0], row[1], row + 2, int64_t{1});
      }
    }
  }
};

template <typename T, int K>
__global__ void __launch_bounds__(kThreads)
    scattered_gather_kernel(const Gaussian<T>* gaussians, int64_t n, CellLayout grid,
                            const int64_t* start, const T* table, const T* values,
                            int64_t channels, T* d_points, T* d_values, T* d_scale) {
  for_each_point_warp(n, [&](int64_t i) {
    const Gaussian<T> g = gaussians[i];
    const Box cells = point_cells(grid, g);
    CellFootprint<T> footprint{cells.x, cells.y, grid.cells_x, row_size(channels), start, table};
    gather_point<T, K>(g, values + i * channels, channels, footprint, d_points + 2 * i,
                       d_values + i * channels, d_scale + 3 * i);
  });
}

}  // namespace

template <typename T>
ffi::Error scattered_backward(Device& dev, Scratch<T>& folded, const CellBinning<T>& cells,
                              const T* values, int64_t channels, const T* queries, int64_t m,
                              const T* out, const T* density, const T* d_out, const T* d_density,
                              T* d_points, T* d_values, T* d_scale, T* d_queries,
                              bool point_grads, bool query_grads) {
  const int64_t n = cells.point_count();
  if (cells.cells() == 0) {  // no weight reaches any query: every cotangent is 0
    JAX_GMM_RETURN_IF_ERROR(zero(dev, d_points, 2 * n));
    JAX_GMM_RETURN_IF_ERROR(zero(dev, d_values, n * channels));
    JAX_GMM_RETURN_IF_ERROR(zero(dev, d_scale, 3 * n));
    return zero(dev, d_queries, 2 * m);
  }
  const int64_t cell_count = cells.cells();
  JAX_GMM_RETURN_IF_ERROR(folded.reserve(dev, m * row_size(channels)));
  fold_queries_kernel<<<blocks_for(m), kThreads, 0, dev.stream>>>(
      queries, m, cells.queries(), cell_count, out, density, d_out, d_density, channels,
      folded.data());
  JAX_GMM_LAUNCHED("fold_queries_kernel");
  if (query_grads) {
    query_grad_kernel<<<blocks_for(m), kThreads, 0, dev.stream>>>(
        cells.gaussians(), values, channels, cells.points(), cells.queries(), cell_count,
        folded.data(), m, d_queries);
    JAX_GMM_LAUNCHED("query_grad_kernel");
  } else {
    JAX_GMM_RETURN_IF_ERROR(zero(dev, d_queries, 2 * m));
  }
  if (!point_grads) {
    JAX_GMM_RETURN_IF_ERROR(zero(dev, d_points, 2 * n));
    JAX_GMM_RETURN_IF_ERROR(zero(dev, d_values, n * channels));
    return zero(dev, d_scale, 3 * n);
  }
  return with_channel_chunk(channels, [&](auto k) {
    scattered_gather_kernel<T, decltype(k)::value>
        <<<blocks_for(n, kThreads / kWarp), kThreads, 0, dev.stream>>>(
            cells.gaussians(), n, cells.grid, cells.queries().start, folded.data(), values,
            channels, d_points, d_values, d_scale);
    JAX_GMM_LAUNCHED("scattered_gather_kernel");
    return ffi::Error::Success();
  });
}

#define JAX_GMM_INSTANTIATE(T)                                                                \
  template ffi::Error scattered_backward<T>(Device&, Scratch<T>&, const CellBinning<T>&,     \
                                            const T*, int64_t, const T*, int64_t, const T*,  \
                                            const T*, const T*, const T*, T*, T*, T*, T*,   \
                                            bool, bool);
JAX_GMM_INSTANTIATE(float)
JAX_GMM_INSTANTIATE(double)
#undef JAX_GMM_INSTANTIATE

}  // namespace gpu
}  // namespace jax_gmm
