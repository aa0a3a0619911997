// Per-cell member lists on the GPU, built without any order-dependent step.
//
// A member (a point, or a query) is listed in one or more cells as
// (cell, member) pairs written in member order; a stable radix sort by cell
// then leaves each cell's list in increasing member order. Every sum a kernel
// takes over a list is therefore in one fixed order, and bitwise reproducible.
#pragma once

#include <cstdint>

#include <cub/block/block_reduce.cuh>

#include "device.cuh"
#include "gmm_math.h"
#include "layout.h"

namespace jax_gmm {
namespace gpu {

// Kernel view of the lists: the members of cell k are
// items[start[k] .. start[k + 1]), and keys[j] is the cell of items[j].
// Members (points, queries) number fewer than 2^32 (operands.h); cells and
// (cell, member) pairs may not, so keys and positions are 64-bit.
struct ListsView {
  const int64_t* start;
  const uint32_t* items;
  const uint64_t* keys;
};

class CellLists {
 public:
  // Member i of n is listed in every cell of boxes[i], on a grid `cells_x`
  // wide with `cells` > 0 cells; `entries` is the number of (cell, member) pairs.
  ffi::Error splat(Device& dev, const Box* boxes, int64_t n, int64_t cells_x, int64_t cells,
                   int64_t entries);

  // For members with one key each: room for `entries` pairs, which the caller
  // writes to keys() and items() in member order before calling sort().
  ffi::Error reserve(Device& dev, int64_t entries);
  uint64_t* keys() const { return keys_[current_].data(); }
  uint32_t* items() const { return items_[current_].data(); }

  // Sorts the pairs by key (every key <= max_key) and finds where each of
  // the cells 0 .. cells starts (start[cells] is where keys >= cells begin).
  ffi::Error sort(Device& dev, int64_t entries, uint64_t max_key, int64_t cells);

  ListsView view() const { return {start_.data(), items(), keys()}; }

 private:
  Scratch<uint64_t> keys_[2], counts_, offsets_;
  Scratch<uint32_t> items_[2];
  Scratch<int64_t> start_;
  Scratch<char> temp_;
  int current_ = 0;  // which of keys_/items_ holds the pairs
};

// out[i] = make_gaussian of point i, for n > 0 points.
template <typename T>
ffi::Error make_gaussians(Device& dev, const T* points, const T* scale, int64_t n, T truncate,
                          Gaussian<T>* out);

// Adds values[k] of every thread of the block into totals[k]. Integer sums do
// not depend on the order of the atomics. All kThreads threads must call it.
template <int N>
__device__ void add_block_totals(const unsigned long long (&values)[N],
                                 unsigned long long* totals) {
  using Reduce = cub::BlockReduce<unsigned long long, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  for (int k = 0; k < N; ++k) {
    const unsigned long long sum = Reduce(temp).Sum(values[k]);
    if (threadIdx.x == 0 && sum != 0) atomicAdd(totals + k, sum);
    __syncthreads();  // before the next reduction reuses `temp`
  }
}

}  // namespace gpu
}  // namespace jax_gmm
