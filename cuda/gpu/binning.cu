// Building per-cell lists: count, exclusive scan, fill, stable radix sort,
// then a binary search per cell for where its list starts.
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>
#include <cub/version.cuh>

// The counts below are 64-bit; cub::DeviceScan took an int num_items before
// CCCL 2.7 and would wrap them.
static_assert(CUB_VERSION >= 200700, "jax_gmm needs CCCL >= 2.7 (CUDA 12.8 or newer)");

#include "binning.cuh"

namespace jax_gmm {
namespace gpu {

namespace {

__global__ void count_kernel(const Box* boxes, int64_t n, uint64_t* counts) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    counts[i] = static_cast<uint64_t>(boxes[i].count());
  }
}

// Member i writes its pairs at offsets[i] on, so the pairs are in member order.
__global__ void fill_kernel(const Box* boxes, int64_t n, const uint64_t* offsets, int64_t cells_x,
                            uint64_t* keys, uint32_t* items) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const Box b = boxes[i];
    if (b.empty()) continue;
    uint64_t at = offsets[i];
    for (int64_t y = b.y.lo; y <= b.y.hi; ++y) {
      for (int64_t x = b.x.lo; x <= b.x.hi; ++x, ++at) {
        keys[at] = static_cast<uint64_t>(y * cells_x + x);
        items[at] = static_cast<uint32_t>(i);
      }
    }
  }
}

// start[c] = the first j with keys[j] >= c, for c = 0 .. cells.
__global__ void starts_kernel(const uint64_t* keys, int64_t entries, int64_t cells,
                              int64_t* start) {
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c <= cells;
       c += int64_t{gridDim.x} * blockDim.x) {
    start[c] = list_start(keys, entries, c);
  }
}

template <typename T>
__global__ void gaussians_kernel(const T* points, const T* scale, int64_t n, T truncate,
                                 Gaussian<T>* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const T* l = scale + 3 * i;  // Cholesky factor (l11, l21, l22)
    out[i] = make_gaussian(points[2 * i], points[2 * i + 1], l[0], l[1], l[2], truncate);
  }
}

int bit_width(uint64_t v) { return v == 0 ? 0 : 64 - __builtin_clzll(v); }

}  // namespace

ffi::Error CellLists::reserve(Device& dev, int64_t entries) {
  current_ = 0;
  for (int k = 0; k < 2; ++k) {
    JAX_GMM_RETURN_IF_ERROR(keys_[k].reserve(dev, entries));
    JAX_GMM_RETURN_IF_ERROR(items_[k].reserve(dev, entries));
  }
  return ffi::Error::Success();
}

ffi::Error CellLists::splat(Device& dev, const Box* boxes, int64_t n, int64_t cells_x,
                            int64_t cells, int64_t entries) {
  JAX_GMM_RETURN_IF_ERROR(reserve(dev, entries));
  if (entries > 0) {  // then n > 0 and cells > 0
    JAX_GMM_RETURN_IF_ERROR(counts_.reserve(dev, n));
    JAX_GMM_RETURN_IF_ERROR(offsets_.reserve(dev, n));
    count_kernel<<<blocks_for(n), kThreads, 0, dev.stream>>>(boxes, n, counts_.data());
    JAX_GMM_LAUNCHED("count_kernel");
    size_t bytes = 0;
    JAX_GMM_CUDA(cub::DeviceScan::ExclusiveSum(nullptr, bytes, counts_.data(), offsets_.data(),
                                               n, dev.stream));
    JAX_GMM_RETURN_IF_ERROR(temp_.reserve(dev, static_cast<int64_t>(bytes)));
    JAX_GMM_CUDA(cub::DeviceScan::ExclusiveSum(temp_.data(), bytes, counts_.data(),
                                               offsets_.data(), n, dev.stream));
    fill_kernel<<<blocks_for(n), kThreads, 0, dev.stream>>>(boxes, n, offsets_.data(), cells_x,
                                                           keys(), items());
    JAX_GMM_LAUNCHED("fill_kernel");
  }
  return sort(dev, entries, static_cast<uint64_t>(cells - 1), cells);
}

ffi::Error CellLists::sort(Device& dev, int64_t entries, uint64_t max_key, int64_t cells) {
  const int end_bit = bit_width(max_key);
  if (entries > 1 && end_bit > 0) {  // with one key value the pairs are already in order
    cub::DoubleBuffer<uint64_t> keys(keys_[0].data(), keys_[1].data());
    cub::DoubleBuffer<uint32_t> items(items_[0].data(), items_[1].data());
    size_t bytes = 0;
    JAX_GMM_CUDA(cub::DeviceRadixSort::SortPairs(nullptr, bytes, keys, items, entries, 0, end_bit,
                                                 dev.stream));
    JAX_GMM_RETURN_IF_ERROR(temp_.reserve(dev, static_cast<int64_t>(bytes)));
    JAX_GMM_CUDA(cub::DeviceRadixSort::SortPairs(temp_.data(), bytes, keys, items, entries, 0,
                                                 end_bit, dev.stream));
    // SortPairs flips the key and item buffers together.
    current_ = keys.selector;
  }
  JAX_GMM_RETURN_IF_ERROR(start_.reserve(dev, cells + 1));
  starts_kernel<<<blocks_for(cells + 1), kThreads, 0, dev.stream>>>(keys(), entries, cells,
                                                                   start_.data());
  JAX_GMM_LAUNCHED("starts_kernel");
  return ffi::Error::Success();
}

template <typename T>
ffi::Error make_gaussians(Device& dev, const T* points, const T* scale, int64_t n, T truncate,
                          Gaussian<T>* out) {
  gaussians_kernel<<<blocks_for(n), kThreads, 0, dev.stream>>>(points, scale, n, truncate, out);
  JAX_GMM_LAUNCHED("gaussians_kernel");
  return ffi::Error::Success();
}

template ffi::Error make_gaussians(Device&, const float*, const float*, int64_t, float,
                                   Gaussian<float>*);
template ffi::Error make_gaussians(Device&, const double*, const double*, int64_t, double,
                                   Gaussian<double>*);

}  // namespace gpu
}  // namespace jax_gmm
