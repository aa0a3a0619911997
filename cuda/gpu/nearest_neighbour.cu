// The k-th nearest other point of every point on the GPU: the points are
// copied to the host, which builds kd_tree.h's tree (median splits do not map
// well onto a GPU, and the build is O(N log N) against the search's O(N k
// log N)); the tree goes back to the device, where one thread per point runs
// the same search as the CPU (kd_tree.h), so both return the same index.
#include <cstdint>
#include <vector>

#include "kd_tree.h"
#include "kernels.cuh"

namespace jax_gmm {
namespace gpu {

namespace {

template <typename T>
__global__ void kth_nearest_kernel(const KdNode* nodes, int64_t node_count, const int64_t* order,
                                   const T* points, int64_t n, int k, int32_t* index) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    index[i] = kth_nearest_of(nodes, node_count, order, points, i, k);
  }
}

// Copies a host array into `slot` on the device (grown if it must be). From
// pageable memory the copy is staged before cudaMemcpyAsync returns, so the
// host array may be freed at once.
template <typename U>
ffi::Error to_device(Device& dev, Scratch<U>& slot, const std::vector<U>& host) {
  JAX_GMM_RETURN_IF_ERROR(slot.reserve(dev, static_cast<int64_t>(host.size())));
  JAX_GMM_CUDA(cudaMemcpyAsync(slot.data(), host.data(), host.size() * sizeof(U),
                               cudaMemcpyHostToDevice, dev.stream));
  return ffi::Error::Success();
}

}  // namespace

template <typename T>
ffi::Error kth_nearest(Device& dev, NeighbourScratch& scratch, const T* points, int64_t n, int k,
                       int32_t* index) {
  if (n == 0) return ffi::Error::Success();
  std::vector<T> host(2 * n);
  JAX_GMM_CUDA(cudaMemcpyAsync(host.data(), points, host.size() * sizeof(T),
                               cudaMemcpyDeviceToHost, dev.stream));
  JAX_GMM_CUDA(cudaStreamSynchronize(dev.stream));
  const KdTree<T> tree(host.data(), n);
  const int64_t node_count = static_cast<int64_t>(tree.nodes().size());
  if (node_count > 0) {  // no finite point: no tree, and every point is its own answer
    JAX_GMM_RETURN_IF_ERROR(to_device(dev, scratch.nodes, tree.nodes()));
    JAX_GMM_RETURN_IF_ERROR(to_device(dev, scratch.order, tree.order()));
  }
  kth_nearest_kernel<<<blocks_for(n), kThreads, 0, dev.stream>>>(
      scratch.nodes.data(), node_count, scratch.order.data(), points, n, k, index);
  JAX_GMM_LAUNCHED("kth_nearest_kernel");
  return ffi::Error::Success();
}

template ffi::Error kth_nearest<float>(Device&, NeighbourScratch&, const float*, int64_t, int,
                                       int32_t*);
template ffi::Error kth_nearest<double>(Device&, NeighbourScratch&, const double*, int64_t, int,
                                        int32_t*);

}  // namespace gpu
}  // namespace jax_gmm
