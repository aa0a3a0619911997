// Binning for arbitrary queries, on the cell layout of layout.h, the CPU's
// (cpu/binning.cc): cells about one mean box radius wide over the queries
// some point can reach, at most max_cells(M) of them. Reachable queries go
// into one cell each (the others into none), points into every cell their
// box overlaps.
//
// The points' reach and the queries' box come from two-level reductions
// with a partition fixed by N and M alone, so the grid, and with it the
// order of every sum in the backward pass, does not depend on the device.
#include <cub/block/block_reduce.cuh>

#include <cstdint>

#include "kernels.cuh"

namespace jax_gmm {
namespace gpu {

namespace {

// Blocks of the first reduction levels; the last level reduces their
// partials with one thread each.
constexpr int kPartials = 256;
static_assert(kPartials == kThreads, "a block reduces the partials one per thread");

struct CombineReach {
  __device__ PointReach operator()(const PointReach& a, const PointReach& b) const {
    return combine(a, b);
  }
};

struct Hull {
  __device__ Interval operator()(const Interval& a, const Interval& b) const { return hull(a, b); }
};

// The block's combination of every thread's v, valid in thread 0.
template <typename R, typename Op>
__device__ R block_reduce(const R& v, Op op) {
  using Reduce = cub::BlockReduce<R, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  const R r = Reduce(temp).Reduce(v, op);
  __syncthreads();  // before a later call reuses `temp`
  return r;
}

// Level 1 over the points: block b reduces points b * kThreads + t + k * stride.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    reach_kernel(const Gaussian<T>* gaussians, int64_t n, PointReach* partials) {
  PointReach r = no_reach();
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < n;
       i += int64_t{kPartials} * kThreads) {
    r = combine(r, point_reach(gaussians[i]));
  }
  const PointReach total = block_reduce(r, CombineReach());
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// Every point's reach, in every thread of the block.
__device__ PointReach total_reach(const PointReach* partials) {
  __shared__ PointReach shared;
  const PointReach r = block_reduce(partials[threadIdx.x], CombineReach());
  if (threadIdx.x == 0) shared = r;
  __syncthreads();
  return shared;
}

// Level 1 over the queries: the box of the reachable ones, x at
// partials[2 b] and y at partials[2 b + 1].
template <typename T>
__global__ void __launch_bounds__(kThreads)
    query_box_kernel(const PointReach* reach_partials, const T* queries, int64_t m,
                     Interval* partials) {
  const PointReach reach = total_reach(reach_partials);
  Interval bx = no_interval(), by = no_interval();
  for (int64_t q = blockIdx.x * int64_t{kThreads} + threadIdx.x; q < m;
       q += int64_t{kPartials} * kThreads) {
    const T x = queries[2 * q], y = queries[2 * q + 1];
    if (!query_reachable(reach, x, y)) continue;
    bx = hull(bx, {double(x), double(x)});
    by = hull(by, {double(y), double(y)});
  }
  bx = block_reduce(bx, Hull());
  by = block_reduce(by, Hull());
  if (threadIdx.x == 0) partials[2 * blockIdx.x] = bx, partials[2 * blockIdx.x + 1] = by;
}

// Level 2, one block: the layout, by layout.h's rule, as the CPU makes it.
__global__ void __launch_bounds__(kPartials)
    layout_kernel(const PointReach* reach_partials, const Interval* box_partials, int64_t m,
                  CellSetup* setup) {
  const PointReach reach = total_reach(reach_partials);
  const Interval bx = block_reduce(box_partials[2 * threadIdx.x], Hull());
  const Interval by = block_reduce(box_partials[2 * threadIdx.x + 1], Hull());
  if (threadIdx.x != 0) return;
  setup->layout = cell_layout(bx, by, reach, m, kCellRadiiGpu);
  setup->reach = reach;
  setup->pairs = 0;
}

template <typename T>
__global__ void cell_boxes_kernel(const Gaussian<T>* gaussians, int64_t n, CellSetup* setup,
                                  Box* boxes) {
  const CellLayout layout = setup->layout;
  unsigned long long pairs[1] = {0};
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const Box b = point_cells(layout, gaussians[i]);
    boxes[i] = b;
    pairs[0] += static_cast<unsigned long long>(b.count());
  }
  add_block_totals(pairs, &setup->pairs);
}

// Key of query q: its cell, or cells (past every cell) if it is in none.
template <typename T>
__global__ void query_keys_kernel(const T* queries, int64_t m, const CellSetup* setup,
                                  uint64_t* keys, uint32_t* items) {
  const CellLayout layout = setup->layout;
  const PointReach reach = setup->reach;
  for (int64_t q = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; q < m;
       q += int64_t{gridDim.x} * blockDim.x) {
    const int64_t cell = query_cell(layout, reach, queries[2 * q], queries[2 * q + 1]);
    keys[q] = static_cast<uint64_t>(cell >= 0 ? cell : layout.cells());
    items[q] = static_cast<uint32_t>(q);
  }
}

}  // namespace

template <typename T>
ffi::Error CellBinning<T>::build(Device& dev, const T* points, const T* scale, int64_t n,
                                 T truncate, const T* queries, int64_t m) {
  grid = no_cells();
  n_ = n;
  if (n == 0 || m == 0) return ffi::Error::Success();
  JAX_GMM_RETURN_IF_ERROR(gaussians_.reserve(dev, n));
  JAX_GMM_RETURN_IF_ERROR(reach_partials_.reserve(dev, kPartials));
  JAX_GMM_RETURN_IF_ERROR(box_partials_.reserve(dev, 2 * kPartials));
  JAX_GMM_RETURN_IF_ERROR(setup_.reserve(dev, 1));
  JAX_GMM_RETURN_IF_ERROR(boxes_.reserve(dev, n));
  JAX_GMM_RETURN_IF_ERROR(queries_.reserve(dev, m));
  JAX_GMM_RETURN_IF_ERROR(make_gaussians(dev, points, scale, n, truncate, gaussians_.data()));
  reach_kernel<<<kPartials, kThreads, 0, dev.stream>>>(gaussians_.data(), n,
                                                        reach_partials_.data());
  JAX_GMM_LAUNCHED("reach_kernel");
  query_box_kernel<<<kPartials, kThreads, 0, dev.stream>>>(reach_partials_.data(), queries, m,
                                                            box_partials_.data());
  JAX_GMM_LAUNCHED("query_box_kernel");
  layout_kernel<<<1, kPartials, 0, dev.stream>>>(reach_partials_.data(), box_partials_.data(), m,
                                                 setup_.data());
  JAX_GMM_LAUNCHED("layout_kernel");
  cell_boxes_kernel<<<blocks_for(n), kThreads, 0, dev.stream>>>(gaussians_.data(), n,
                                                               setup_.data(), boxes_.data());
  JAX_GMM_LAUNCHED("cell_boxes_kernel");
  query_keys_kernel<<<blocks_for(m), kThreads, 0, dev.stream>>>(
      queries, m, setup_.data(), queries_.keys(), queries_.items());
  JAX_GMM_LAUNCHED("query_keys_kernel");
  CellSetup setup;
  JAX_GMM_RETURN_IF_ERROR(read_back(dev, setup_.data(), &setup));

  const int64_t cells = setup.layout.cells();
  if (cells == 0) return ffi::Error::Success();  // no pair at all: grid stays empty
  grid = setup.layout;
  JAX_GMM_RETURN_IF_ERROR(points_.splat(dev, boxes_.data(), n, grid.cells_x, cells,
                                        static_cast<int64_t>(setup.pairs)));
  return queries_.sort(dev, m, static_cast<uint64_t>(cells), cells);
}

template class CellBinning<float>;
template class CellBinning<double>;

}  // namespace gpu
}  // namespace jax_gmm
