// Grid backward: fold every pixel's cotangents, then one warp per point
// gathers over the pixels of the point's own bounding box (point_gather.cuh).
// No binning is needed: a box is a rectangle of pixels.
#include <cstdint>

#include "kernels.cuh"
#include "point_gather.cuh"

namespace jax_gmm {
namespace gpu {

namespace {

// Channel-major [g_0 | ... | g_C-1 | offset | 1/Z] (gmm_math.h), pixels
// apart, so that the lanes of a warp, on neighbouring pixels, read
// neighbouring words.
template <typename T>
__global__ void fold_pixels_kernel(const T* out, const T* density, const T* d_out,
                                   const T* d_density, int64_t pixels, int64_t channels,
                                   T* folded) {
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < pixels;
       p += int64_t{gridDim.x} * blockDim.x) {
    fold_query(d_out + p * channels, out + p * channels, density[p], d_density[p], channels,
               folded + p, pixels);
  }
}

// The pixels of a box, row-major: lane l takes pixels l, l + 32, ... of it.
template <typename T>
struct PixelFootprint {
  Range cols, rows;
  int64_t width, pixels;
  const T* folded;

  template <typename F>
  __device__ void visit(int lane, F&& f) const {
    if (cols.empty() || rows.empty()) return;
    const int64_t box_width = cols.hi - cols.lo + 1;
    const int64_t step_rows = kWarp / box_width, step_cols = kWarp % box_width;
    int64_t r = rows.lo + lane / box_width, j = lane % box_width;
    while (r <= rows.hi) {
      const int64_t x = cols.lo + j;
      f(T(x) + T(0.5), T(r) + T(0.5), folded + r * width + x, pixels);
      r += step_rows;
      j += step_cols;
      if (j >= box_width) j -= box_width, ++r;
    }
  }
};

template <typename T, int K>
__global__ void __launch_bounds__(kThreads)
    grid_gather_kernel(const T* points, const T* scale, int64_t n, T truncate, int64_t height,
                       int64_t width, const T* values, int64_t channels, const T* folded,
                       T* d_points, T* d_values, T* d_scale) {
  for_each_point_warp(n, [&](int64_t i) {
    const T* l = scale + 3 * i;  // Cholesky factor (l11, l21, l22)
    const Gaussian<T> g =
        make_gaussian(points[2 * i], points[2 * i + 1], l[0], l[1], l[2], truncate);
    PixelFootprint<T> footprint{{1, 0}, {1, 0}, width, height * width, folded};
    pixel_box(g, height, width, &footprint.cols, &footprint.rows);
    gather_point<T, K>(g, values + i * channels, channels, footprint, d_points + 2 * i,
                       d_values + i * channels, d_scale + 3 * i);
  });
}

}  // namespace

template <typename T>
ffi::Error grid_backward(Device& dev, Scratch<T>& folded, const T* points, const T* scale,
                         int64_t n, T truncate, int64_t height, int64_t width, const T* values,
                         int64_t channels, const T* out, const T* density, const T* d_out,
                         const T* d_density, T* d_points, T* d_values, T* d_scale) {
  const int64_t pixels = height * width;
  if (n == 0) return ffi::Error::Success();
  if (pixels == 0) {
    JAX_GMM_RETURN_IF_ERROR(zero(dev, d_points, 2 * n));
    JAX_GMM_RETURN_IF_ERROR(zero(dev, d_values, n * channels));
    return zero(dev, d_scale, 3 * n);
  }
  JAX_GMM_RETURN_IF_ERROR(folded.reserve(dev, (channels + 2) * pixels));
  fold_pixels_kernel<<<blocks_for(pixels), kThreads, 0, dev.stream>>>(
      out, density, d_out, d_density, pixels, channels, folded.data());
  JAX_GMM_LAUNCHED("fold_pixels_kernel");
  return with_channel_chunk(channels, [&](auto k) {
    grid_gather_kernel<T, decltype(k)::value>
        <<<blocks_for(n, kThreads / kWarp), kThreads, 0, dev.stream>>>(
            points, scale, n, truncate, height, width, values, channels, folded.data(), d_points,
            d_values, d_scale);
    JAX_GMM_LAUNCHED("grid_gather_kernel");
    return ffi::Error::Success();
  });
}

#define JAX_GMM_INSTANTIATE(T)                                                                \
  template ffi::Error grid_backward<T>(Device&, Scratch<T>&, const T*, const T*, int64_t, T, \
                                       int64_t, int64_t, const T*, int64_t, const T*, const T*, \
                                       const T*, const T*, T*, T*, T*);
JAX_GMM_INSTANTIATE(float)
JAX_GMM_INSTANTIATE(double)
#undef JAX_GMM_INSTANTIATE

}  // namespace gpu
}  // namespace jax_gmm
