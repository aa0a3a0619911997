// Grid forward: one thread block per square tile of pixels, one thread per
// pixel (2 x 2 pixels on the largest tiles). The block walks its tile's point
// list in point order, staging chunks of Gaussians and values in shared
// memory, and every thread adds the weights at its pixels in that order: the
// sums do not depend on scheduling.
#include <algorithm>
#include <cstdint>

#include "kernels.cuh"

namespace jax_gmm {
namespace gpu {

namespace {

// Cost of one (tile, point) pair (count, fill, sort, staging) in units of one
// (pixel, point) evaluation. A tile of side s evaluates each of its points at
// s^2 pixels, so the side minimising pairs(s) * (kPairCost + s^2) balances
// binning against gathering: small tiles for small radii, large ones when a
// point's box spans many tiles. A guess to tune on the GPU; any side gives
// the same outputs.
constexpr double kPairCost = 160;

template <typename T>
__global__ void tile_pairs_kernel(const Gaussian<T>* gaussians, int64_t n, int64_t height,
                                  int64_t width, TilePairs* totals) {
  unsigned long long count[kTileSides] = {};
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const Gaussian<T> g = gaussians[i];
    for (int s = 0; s < kTileSides; ++s) {
      count[s] += static_cast<unsigned long long>(tile_box(g, height, width, 8 << s).count());
    }
  }
  add_block_totals(count, totals->count);
}

template <typename T>
__global__ void tile_boxes_kernel(const Gaussian<T>* gaussians, int64_t n, int64_t height,
                                  int64_t width, int64_t side, Box* boxes) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    boxes[i] = tile_box(gaussians[i], height, width, side);
  }
}

// kSide x kSide tiles; each of the (kSide / kPer)^2 threads owns kPer x kPer
// pixels, kRow apart, and K channels from c0 = chunk * K on.
template <typename T, int kSide, int kPer, int K>
__global__ void __launch_bounds__((kSide / kPer) * (kSide / kPer))
    grid_forward_kernel(const Gaussian<T>* __restrict__ gaussians, const T* __restrict__ values,
                        int64_t channels, ListsView lists, int64_t tiles, int64_t tiles_x,
                        int64_t height, int64_t width, int64_t chunks, T* __restrict__ out,
                        T* __restrict__ density) {
  constexpr int kRow = kSide / kPer;
  constexpr int kBlock = kRow * kRow;
  __shared__ Gaussian<T> staged[kBlock];
  __shared__ T staged_values[K][kBlock];
  const int tx = threadIdx.x % kRow, ty = threadIdx.x / kRow;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t x0 = (tile % tiles_x) * kSide + tx;
    const int64_t y0 = (tile / tiles_x) * kSide + ty;
    const int64_t begin = lists.start[tile], end = lists.start[tile + 1];
    for (int64_t chunk = blockIdx.y; chunk < chunks; chunk += gridDim.y) {
      const int64_t c0 = chunk * K;
      T z[kPer][kPer] = {};
      T a[kPer][kPer][K] = {};
      for (int64_t l0 = begin; l0 < end; l0 += kBlock) {
        const int count = static_cast<int>(min(int64_t{kBlock}, end - l0));
        if (threadIdx.x < count) {
          const int64_t i = lists.items[l0 + threadIdx.x];
          staged[threadIdx.x] = gaussians[i];
          for (int k = 0; k < K; ++k) {
            staged_values[k][threadIdx.x] = c0 + k < channels ? values[i * channels + c0 + k] : T(0);
          }
        }
        __syncthreads();
        for (int j = 0; j < count; ++j) {
          const Gaussian<T>& g = staged[j];
#pragma unroll
          for (int py = 0; py < kPer; ++py) {
            const T dy = pixel_offset(y0 + py * kRow, g.y);
#pragma unroll
            for (int px = 0; px < kPer; ++px) {
              const T w = pair_weight(g, pixel_offset(x0 + px * kRow, g.x), dy);
              if (!(w > T(0))) continue;  // also keeps a non-finite value out of the sums
              z[py][px] += w;
#pragma unroll
              for (int k = 0; k < K; ++k) a[py][px][k] += w * staged_values[k][j];
            }
          }
        }
        __syncthreads();  // before the next chunk overwrites the staged points
      }
#pragma unroll
      for (int py = 0; py < kPer; ++py) {
#pragma unroll
        for (int px = 0; px < kPer; ++px) {
          const int64_t x = x0 + px * kRow, y = y0 + py * kRow;
          if (x >= width || y >= height) continue;
          const int64_t p = y * width + x;
          if (chunk == 0) density[p] = z[py][px];
          for (int k = 0; k < K; ++k) {
            if (c0 + k < channels) out[p * channels + c0 + k] = normalise(a[py][px][k], z[py][px]);
          }
        }
      }
    }
  }
}

template <typename T, int kSide, int kPer>
ffi::Error launch_grid_forward(Device& dev, const TileBinning<T>& tiles, const T* values,
                               int64_t channels, T* out, T* density) {
  return with_channel_chunk(channels, [&](auto k) {
    constexpr int K = decltype(k)::value;
    const int64_t chunks = channel_chunks(channels, K);
    const dim3 grid(blocks_for(tiles.tiles, 1),
                    static_cast<unsigned int>(std::min<int64_t>(chunks, 65535)));
    constexpr int kBlock = (kSide / kPer) * (kSide / kPer);
    grid_forward_kernel<T, kSide, kPer, K><<<grid, kBlock, 0, dev.stream>>>(
        tiles.gaussians(), values, channels, tiles.lists(), tiles.tiles, tiles.tiles_x,
        tiles.height, tiles.width, chunks, out, density);
    JAX_GMM_LAUNCHED("grid_forward_kernel");
    return ffi::Error::Success();
  });
}

}  // namespace

template <typename T>
ffi::Error TileBinning<T>::build(Device& dev, const T* points, const T* scale, int64_t n,
                                 T truncate, int64_t height, int64_t width) {
  this->height = height;
  this->width = width;
  tiles = pairs = 0;
  if (n == 0 || height == 0 || width == 0) return ffi::Error::Success();
  JAX_GMM_RETURN_IF_ERROR(gaussians_.reserve(dev, n));
  JAX_GMM_RETURN_IF_ERROR(totals_.reserve(dev, 1));
  JAX_GMM_RETURN_IF_ERROR(make_gaussians(dev, points, scale, n, truncate, gaussians_.data()));
  JAX_GMM_RETURN_IF_ERROR(zero(dev, totals_.data(), 1));
  tile_pairs_kernel<<<blocks_for(n), kThreads, 0, dev.stream>>>(gaussians_.data(), n, height,
                                                               width, totals_.data());
  JAX_GMM_LAUNCHED("tile_pairs_kernel");
  TilePairs totals;
  JAX_GMM_RETURN_IF_ERROR(read_back(dev, totals_.data(), &totals));

  // Pair counts are 64-bit: any side works, so take the cheapest.
  int best = 0;
  double best_cost = 0;
  for (int s = 0; s < kTileSides; ++s) {
    const int64_t side = int64_t{8} << s;
    const double cost = static_cast<double>(totals.count[s]) * (kPairCost + side * side);
    if (s == 0 || cost < best_cost) best = s, best_cost = cost;
  }
  tile_side = 8 << best;
  tiles_x = tiles_along(width, tile_side);
  tiles = tiles_x * tiles_along(height, tile_side);
  pairs = static_cast<int64_t>(totals.count[best]);
  if (pairs == 0) return ffi::Error::Success();

  JAX_GMM_RETURN_IF_ERROR(boxes_.reserve(dev, n));
  tile_boxes_kernel<<<blocks_for(n), kThreads, 0, dev.stream>>>(gaussians_.data(), n, height,
                                                               width, tile_side, boxes_.data());
  JAX_GMM_LAUNCHED("tile_boxes_kernel");
  return lists_.splat(dev, boxes_.data(), n, tiles_x, tiles, pairs);
}

template <typename T>
ffi::Error grid_forward(Device& dev, const TileBinning<T>& tiles, const T* values,
                        int64_t channels, T* out, T* density) {
  const int64_t pixels = tiles.height * tiles.width;
  if (tiles.pairs == 0) {  // no point reaches a pixel (or there are none)
    JAX_GMM_RETURN_IF_ERROR(zero(dev, out, pixels * channels));
    return zero(dev, density, pixels);
  }
  switch (tiles.tile_side) {
    case 8: return launch_grid_forward<T, 8, 1>(dev, tiles, values, channels, out, density);
    case 16: return launch_grid_forward<T, 16, 1>(dev, tiles, values, channels, out, density);
    default: return launch_grid_forward<T, 32, 2>(dev, tiles, values, channels, out, density);
  }
}

#define JAX_GMM_INSTANTIATE(T)                                                        \
  template class TileBinning<T>;                                                     \
  template ffi::Error grid_forward<T>(Device&, const TileBinning<T>&, const T*, int64_t, \
                                      T*, T*);
JAX_GMM_INSTANTIATE(float)
JAX_GMM_INSTANTIATE(double)
#undef JAX_GMM_INSTANTIATE

}  // namespace gpu
}  // namespace jax_gmm
