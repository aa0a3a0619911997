// Grid forward: each kTileSize x kTileSize tile of pixels is owned by one
// task, which walks its list of points in point order and adds each point's
// weights over the part of its bounding box inside the tile. The Gaussian is
// separable, so a point costs O(radius) exponentials per tile and one multiply
// per pixel.
#include <algorithm>
#include <vector>

#include "channels.h"
#include "kernels.h"
#include "parallel.h"
#include "separable.h"

namespace jax_gmm {
namespace JAX_GMM_ISA {

// Adds one point's weights along one pixel row of a tile: nx pixels with
// squared column offsets dx2[j] at squared row offset dy2. `acc` points at the
// row's first pixel in the Z plane; channel planes follow every `plane`
// entries. kC is C when known at compile time, else 0.
template <int kC, typename T>
inline void accumulate_row(const Gaussian<T>& g, T dy2, T row_factor, int64_t nx,
                           const T* dx2, const T* col_factor, const T* c, int64_t channels,
                           T* acc, int64_t plane) {
  if constexpr (kC > 0) {
    T v[kC];
    for (int ch = 0; ch < kC; ++ch) v[ch] = c[ch];
#pragma omp simd
    for (int j = 0; j < static_cast<int>(nx); ++j) {
      const T f = row_factor * col_factor[j];  // loaded unconditionally, so the select vectorises
      const T w = dx2[j] + dy2 <= g.radius2 ? f : T(0);
      acc[j] += w;
      acc[plane + j] += w * v[0];
      if constexpr (kC > 1) acc[2 * plane + j] += w * v[1];
      if constexpr (kC > 2) acc[3 * plane + j] += w * v[2];
      if constexpr (kC > 3) acc[4 * plane + j] += w * v[3];
    }
  } else {
    T w[kTileSize];
#pragma omp simd
    for (int j = 0; j < static_cast<int>(nx); ++j) {
      const T f = row_factor * col_factor[j];
      w[j] = dx2[j] + dy2 <= g.radius2 ? f : T(0);
      acc[j] += w[j];
    }
    for (int64_t ch = 0; ch < channels; ++ch) {
      T* a = acc + (ch + 1) * plane;
      const T v = c[ch];
#pragma omp simd
      for (int j = 0; j < static_cast<int>(nx); ++j) a[j] += w[j] * v;
    }
  }
}

template <int kC, typename T>
void grid_forward_tile(const TiledPoints<T>& tiled, int64_t tile, const T* values,
                       int64_t channels, T* out, T* density) {
  const int64_t C = kC > 0 ? kC : channels;
  constexpr int64_t plane = kTileSize * kTileSize;
  const int64_t tx0 = (tile % tiled.tiles_x) * kTileSize;
  const int64_t ty0 = (tile / tiled.tiles_x) * kTileSize;
  const int64_t tw = std::min(kTileSize, tiled.width - tx0);
  const int64_t th = std::min(kTileSize, tiled.height - ty0);
  // Accumulators [Z | A_0 | ... | A_C-1], each a kTileSize^2 plane.
  std::vector<T> acc((C + 1) * plane, T(0));
  T col_factor[kTileSize], row_factor[kTileSize], dx2[kTileSize];
  for (int64_t k = tiled.tiles.start[tile]; k < tiled.tiles.start[tile + 1]; ++k) {
    const int64_t i = tiled.tiles.items[k];
    const Gaussian<T>& g = tiled.gaussians[i];
    const Range cols = pixel_range(g.x, g.box_radius, tiled.width);
    const Range rows = pixel_range(g.y, g.box_radius, tiled.height);
    const int64_t x0 = std::max(cols.lo, tx0), x1 = std::min(cols.hi, tx0 + tw - 1);
    const int64_t y0 = std::max(rows.lo, ty0), y1 = std::min(rows.hi, ty0 + th - 1);
    const int64_t nx = x1 - x0 + 1;
    for (int64_t j = 0; j < nx; ++j) {
      const T dx = (T(x0 + j) + T(0.5)) - g.x;
      dx2[j] = dx * dx;
    }
    axis_factors(g.exponent, (T(x0) + T(0.5)) - g.x, nx, col_factor);
    axis_factors(g.exponent, (T(y0) + T(0.5)) - g.y, y1 - y0 + 1, row_factor);
    for (int64_t r = y0; r <= y1; ++r) {
      const T dy = (T(r) + T(0.5)) - g.y;
      accumulate_row<kC>(g, dy * dy, g.norm * row_factor[r - y0], nx, dx2, col_factor,
                         values + i * C, C, &acc[(r - ty0) * kTileSize + (x0 - tx0)], plane);
    }
  }
  for (int64_t r = 0; r < th; ++r) {
    const int64_t p0 = (ty0 + r) * tiled.width + tx0;
    const T* z = &acc[r * kTileSize];
    T* out_row = out + p0 * C;
    std::copy(z, z + tw, density + p0);
#pragma omp simd
    for (int j = 0; j < static_cast<int>(tw); ++j) {
      for (int64_t ch = 0; ch < C; ++ch) out_row[j * C + ch] = normalise(z[(ch + 1) * plane + j], z[j]);
    }
  }
}

template <typename T>
void grid_forward(ThreadPool& pool, const TiledPoints<T>& tiled, const T* values,
                  int64_t channels, T* out, T* density) {
  with_channels(channels, [&](auto kC) {
    parallel_for(pool, tiled.tiles_x * tiled.tiles_y, [&](int64_t tile) {
      grid_forward_tile<kC()>(tiled, tile, values, channels, out, density);
    });
  });
}

#define JAX_GMM_INSTANTIATE(T)                                                                 \
  template void grid_forward<T>(ThreadPool&, const TiledPoints<T>&, const T*, int64_t, T*, T*);
JAX_GMM_INSTANTIATE(float)
JAX_GMM_INSTANTIATE(double)
#undef JAX_GMM_INSTANTIATE

}  // namespace JAX_GMM_ISA
}  // namespace jax_gmm
