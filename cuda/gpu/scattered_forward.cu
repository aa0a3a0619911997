// Forward at arbitrary queries: one thread per query, in cell order, sums
// over the point list of the query's cell in point order. Neighbouring
// threads mostly share a cell, so they read the same points at the same time
// (one broadcast load); unlike one block per cell, a grid of sparse, uneven
// cells wastes no threads.
#include <algorithm>
#include <cstdint>

#include "kernels.cuh"

namespace jax_gmm {
namespace gpu {

namespace {

template <typename T, int K>
__global__ void __launch_bounds__(kThreads)
    scattered_forward_kernel(const Gaussian<T>* __restrict__ gaussians,
                             const T* __restrict__ values, int64_t channels,
                             const T* __restrict__ queries, int64_t m, ListsView points,
                             ListsView sorted, int64_t cells, int64_t chunks, T* __restrict__ out,
                             T* __restrict__ density) {
  for (int64_t chunk = blockIdx.y; chunk < chunks; chunk += gridDim.y) {
    const int64_t c0 = chunk * K;
    for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < m;
         k += int64_t{gridDim.x} * blockDim.x) {
      const int64_t q = sorted.items[k];
      const int64_t cell = static_cast<int64_t>(sorted.keys[k]);
      T z = 0;
      T a[K] = {};
      if (cell < cells) {  // else no point reaches the query: out = density = 0
        const T qx = queries[2 * q], qy = queries[2 * q + 1];
        for (int64_t l = points.start[cell]; l < points.start[cell + 1]; ++l) {
          const int64_t i = points.items[l];
          const Gaussian<T> g = gaussians[i];
          const T w = pair_weight(g, qx - g.x, qy - g.y);
          if (!(w > T(0))) continue;  // also keeps a non-finite value out of the sums
          z += w;
#pragma unroll
          for (int kk = 0; kk < K; ++kk) {
            if (c0 + kk < channels) a[kk] += w * values[i * channels + c0 + kk];
          }
        }
      }
      if (chunk == 0) density[q] = z;
      for (int kk = 0; kk < K; ++kk) {
        if (c0 + kk < channels) out[q * channels + c0 + kk] = normalise(a[kk], z);
      }
    }
  }
}

}  // namespace

template <typename T>
ffi::Error scattered_forward(Device& dev, const CellBinning<T>& cells, const T* values,
                             int64_t channels, const T* queries, int64_t m, T* out, T* density) {
  if (cells.cells() == 0) {  // no query within reach of a point: every output is 0
    JAX_GMM_RETURN_IF_ERROR(zero(dev, out, m * channels));
    return zero(dev, density, m);
  }
  return with_channel_chunk(channels, [&](auto k) {
    constexpr int K = decltype(k)::value;
    const int64_t chunks = channel_chunks(channels, K);
    const dim3 grid(blocks_for(m), static_cast<unsigned int>(std::min<int64_t>(chunks, 65535)));
    scattered_forward_kernel<T, K><<<grid, kThreads, 0, dev.stream>>>(
        cells.gaussians(), values, channels, queries, m, cells.points(), cells.queries(),
        cells.cells(), chunks, out, density);
    JAX_GMM_LAUNCHED("scattered_forward_kernel");
    return ffi::Error::Success();
  });
}

template ffi::Error scattered_forward(Device&, const CellBinning<float>&, const float*, int64_t,
                                      const float*, int64_t, float*, float*);
template ffi::Error scattered_forward(Device&, const CellBinning<double>&, const double*,
                                      int64_t, const double*, int64_t, double*, double*);

}  // namespace gpu
}  // namespace jax_gmm
