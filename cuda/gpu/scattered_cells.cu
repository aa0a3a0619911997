// Binning for arbitrary queries, on the cell grid of cpu/scattered_forward.cc:
// cells about one mean cutoff radius wide over the finite queries, at most
// max(1024, 2M) of them. Queries go into one cell each (non-finite ones into
// none), points into every cell their box overlaps.
//
// The grid's bounds and mean radius come from a two-level reduction with a
// partition fixed by N and M alone, so the grid, and with it the order of
// every sum in the backward pass, does not depend on the device.
#include <cub/block/block_reduce.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels.cuh"

namespace jax_gmm {
namespace gpu {

namespace {

// Blocks of the first reduction level; the second reduces their partials.
constexpr int kPartials = 256;

template <typename T>
__device__ Extent<T> empty_extent() {
  return {T(INFINITY), T(-INFINITY), T(INFINITY), T(-INFINITY), T(0), 0};
}

template <typename T>
struct Combine {
  __device__ Extent<T> operator()(const Extent<T>& a, const Extent<T>& b) const {
    return {fmin(a.x_lo, b.x_lo), fmax(a.x_hi, b.x_hi), fmin(a.y_lo, b.y_lo),
            fmax(a.y_hi, b.y_hi), a.radius_sum + b.radius_sum, a.valid + b.valid};
  }
};

template <typename T, int kBlock>
__device__ Extent<T> block_extent(const Extent<T>& e) {
  using Reduce = cub::BlockReduce<Extent<T>, kBlock>;
  __shared__ typename Reduce::TempStorage temp;
  return Reduce(temp).Reduce(e, Combine<T>());
}

// Level 1: block b of kPartials reduces the items b * kThreads + t + k * stride.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    extent_kernel(const Gaussian<T>* gaussians, int64_t n, const T* queries, int64_t m,
                  Extent<T>* partials) {
  Extent<T> e = empty_extent<T>();
  const int64_t items = n > m ? n : m;
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < items;
       i += int64_t{kPartials} * kThreads) {
    if (i < m) {
      const T x = queries[2 * i], y = queries[2 * i + 1];
      if (is_finite(x) && is_finite(y)) {
        e.x_lo = fmin(e.x_lo, x), e.x_hi = fmax(e.x_hi, x);
        e.y_lo = fmin(e.y_lo, y), e.y_hi = fmax(e.y_hi, y);
      }
    }
    if (i < n) {
      const Gaussian<T> g = gaussians[i];
      if (g.valid() && is_finite(g.box_radius)) e.radius_sum += g.box_radius, ++e.valid;
    }
  }
  const Extent<T> total = block_extent<T, kThreads>(e);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// Level 2, one block of kPartials threads: the grid, as the CPU lays it out.
template <typename T>
__global__ void __launch_bounds__(kPartials)
    cell_grid_kernel(const Extent<T>* partials, int64_t m, CellSetup<T>* setup) {
  const Extent<T> e = block_extent<T, kPartials>(partials[threadIdx.x]);
  if (threadIdx.x != 0) return;
  CellGrid<T> grid{T(0), T(0), T(1), 0, 0};
  if (e.x_lo <= e.x_hi && e.valid > 0) {  // a finite query, and a point to reach it
    grid.origin_x = e.x_lo;
    grid.origin_y = e.y_lo;
    const T span_x = e.x_hi - e.x_lo, span_y = e.y_hi - e.y_lo;
    const T span = fmax(span_x, span_y);
    grid.cell = fmax(e.radius_sum / T(e.valid), span * T(1e-6));
    const auto count = [&](T s) { return static_cast<int64_t>(floor(s / grid.cell)) + 1; };
    const T max_cells = T(max(int64_t{1024}, 2 * m));
    if (!(T(count(span_x)) * T(count(span_y)) <= max_cells)) {
      grid.cell = span / floor(sqrt(max_cells)) * T(1.0001);
    }
    grid.cells_x = max(int64_t{1}, count(span_x));
    grid.cells_y = max(int64_t{1}, count(span_y));
  }
  setup->grid = grid;
  setup->pairs = 0;
}

template <typename T>
__global__ void cell_rects_kernel(const Gaussian<T>* gaussians, int64_t n,
                                  CellSetup<T>* setup, Rect* rects) {
  const CellGrid<T> grid = setup->grid;
  unsigned long long pairs[1] = {0};
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    Range cx{1, 0}, cy{1, 0};
    cell_box(gaussians[i], grid, &cx, &cy);
    rects[i] = make_rect(cx, cy);
    pairs[0] += rect_cells(rects[i]);
  }
  add_block_totals(pairs, &setup->pairs);
}

// Key of query q: its cell, or cells (past every cell) if it is not finite.
template <typename T>
__global__ void query_keys_kernel(const T* queries, int64_t m, const CellSetup<T>* setup,
                                  uint32_t* keys, uint32_t* items) {
  const CellGrid<T> grid = setup->grid;
  const int64_t cells = grid.cells_x * grid.cells_y;
  for (int64_t q = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; q < m;
       q += int64_t{gridDim.x} * blockDim.x) {
    const T x = queries[2 * q], y = queries[2 * q + 1];
    int64_t key = cells;
    if (is_finite(x) && is_finite(y) && cells > 0) {
      const Range cx = cell_range(x, x, grid.origin_x, grid.cell, grid.cells_x);
      const Range cy = cell_range(y, y, grid.origin_y, grid.cell, grid.cells_y);
      // The grid spans every finite query; the test only guards against rounding.
      if (!cx.empty() && !cy.empty()) key = cy.lo * grid.cells_x + cx.lo;
    }
    keys[q] = static_cast<uint32_t>(key);
    items[q] = static_cast<uint32_t>(q);
  }
}

}  // namespace

template <typename T>
ffi::Error CellBinning<T>::build(Device& dev, const T* points, const T* sigma, int64_t n,
                                 T truncate, const T* queries, int64_t m) {
  grid = CellGrid<T>{T(0), T(0), T(1), 0, 0};
  n_ = n;
  if (n == 0 || m == 0) return ffi::Error::Success();
  JAX_GMM_RETURN_IF_ERROR(gaussians_.reserve(dev, n));
  JAX_GMM_RETURN_IF_ERROR(partials_.reserve(dev, kPartials));
  JAX_GMM_RETURN_IF_ERROR(setup_.reserve(dev, 1));
  JAX_GMM_RETURN_IF_ERROR(rects_.reserve(dev, n));
  JAX_GMM_RETURN_IF_ERROR(queries_.reserve(dev, m));
  JAX_GMM_RETURN_IF_ERROR(make_gaussians(dev, points, sigma, n, truncate, gaussians_.data()));
  extent_kernel<<<kPartials, kThreads, 0, dev.stream>>>(gaussians_.data(), n, queries, m,
                                                         partials_.data());
  JAX_GMM_LAUNCHED("extent_kernel");
  cell_grid_kernel<<<1, kPartials, 0, dev.stream>>>(partials_.data(), m, setup_.data());
  JAX_GMM_LAUNCHED("cell_grid_kernel");
  cell_rects_kernel<<<blocks_for(n), kThreads, 0, dev.stream>>>(gaussians_.data(), n,
                                                               setup_.data(), rects_.data());
  JAX_GMM_LAUNCHED("cell_rects_kernel");
  query_keys_kernel<<<blocks_for(m), kThreads, 0, dev.stream>>>(
      queries, m, setup_.data(), queries_.keys(), queries_.items());
  JAX_GMM_LAUNCHED("query_keys_kernel");
  CellSetup<T> setup;
  JAX_GMM_RETURN_IF_ERROR(read_back(dev, setup_.data(), &setup));

  const CellGrid<T> full = setup.grid;
  const int64_t cells = full.cells_x * full.cells_y;
  if (cells == 0) return ffi::Error::Success();  // no pair at all: grid stays empty
  // Keys are 32-bit, with one value past the last cell for non-finite queries.
  constexpr uint64_t kLimit = std::numeric_limits<uint32_t>::max() - 1;
  if (static_cast<uint64_t>(cells) > kLimit || setup.pairs > kLimit) {
    return ffi::Error::InvalidArgument(
        "jax_gmm: too many cells or (cell, point) pairs for the GPU kernel (" +
        std::to_string(cells) + " cells, " + std::to_string(setup.pairs) +
        " pairs); use fewer queries or points");
  }
  grid = full;
  JAX_GMM_RETURN_IF_ERROR(points_.splat(dev, rects_.data(), n, static_cast<uint32_t>(grid.cells_x),
                                        static_cast<uint32_t>(cells),
                                        static_cast<int64_t>(setup.pairs)));
  return queries_.sort(dev, m, static_cast<uint32_t>(cells), static_cast<uint32_t>(cells));
}

template class CellBinning<float>;
template class CellBinning<double>;

}  // namespace gpu
}  // namespace jax_gmm
