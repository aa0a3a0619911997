// Grid forward: each kTileSize x kTileSize tile of pixels is owned by one
// task, which walks its list of points in point order and adds each point's
// weights over the part of its bounding box inside the tile. The Gaussian is
// separable, so a point costs O(radius) exponentials per tile and one multiply
// per pixel.
#include <algorithm>
#include <vector>

#include "kernels.h"
#include "parallel.h"

namespace jax_gmm {

template <typename T>
TiledPoints<T>::TiledPoints(const T* points, const T* sigma, int64_t n, T truncate,
                            int64_t height, int64_t width)
    : height(height),
      width(width),
      tiles_x((width + kTileSize - 1) / kTileSize),
      tiles_y((height + kTileSize - 1) / kTileSize),
      gaussians(make_gaussians(points, sigma, n, truncate)) {
  tiles.build(tiles_x * tiles_y, n, [&](int64_t i, auto emit) {
    const Gaussian<T>& g = gaussians[i];
    if (!g.valid) return;
    const Range cols = pixel_range(g.x, g.box_radius, width);
    const Range rows = pixel_range(g.y, g.box_radius, height);
    if (cols.empty() || rows.empty()) return;
    for (int64_t ty = rows.lo / kTileSize; ty <= rows.hi / kTileSize; ++ty) {
      for (int64_t tx = cols.lo / kTileSize; tx <= cols.hi / kTileSize; ++tx) {
        emit(ty * tiles_x + tx);
      }
    }
  });
}

// Masked weights of one point along one pixel row: w[j] for the pixels
// x0 .. x0 + count - 1 of row centre y.
template <typename T>
inline void row_weights(const Gaussian<T>& g, T dy, T row_factor, int64_t x0, int64_t count,
                        const T* col_factor, T* w) {
  const T dy2 = dy * dy;
#pragma omp simd
  for (int64_t j = 0; j < count; ++j) {
    const T dx = (T(x0 + j) + T(0.5)) - g.x;
    w[j] = dx * dx + dy2 <= g.radius2 ? row_factor * col_factor[j] : T(0);
  }
}

template <typename T>
void grid_forward(ThreadPool& pool, const TiledPoints<T>& tiled, const T* values,
                  int64_t channels, T* out, T* density) {
  const int64_t C = channels;
  parallel_for(pool, tiled.tiles_x * tiled.tiles_y, [&](int64_t tile) {
    const int64_t tx0 = (tile % tiled.tiles_x) * kTileSize;
    const int64_t ty0 = (tile / tiled.tiles_x) * kTileSize;
    const int64_t tw = std::min(kTileSize, tiled.width - tx0);
    const int64_t th = std::min(kTileSize, tiled.height - ty0);
    // Accumulators, channel-major so the pixel loops vectorise: [Z | A_0 | ... | A_C-1].
    std::vector<T> acc((C + 1) * kTileSize * kTileSize, T(0));
    std::vector<T> col_factor(kTileSize), row_factor(kTileSize), w(kTileSize);
    for (int64_t k = tiled.tiles.start[tile]; k < tiled.tiles.start[tile + 1]; ++k) {
      const int64_t i = tiled.tiles.items[k];
      const Gaussian<T>& g = tiled.gaussians[i];
      const Range cols = pixel_range(g.x, g.box_radius, tiled.width);
      const Range rows = pixel_range(g.y, g.box_radius, tiled.height);
      const int64_t x0 = std::max(cols.lo, tx0), x1 = std::min(cols.hi, tx0 + tw - 1);
      const int64_t y0 = std::max(rows.lo, ty0), y1 = std::min(rows.hi, ty0 + th - 1);
      const int64_t nx = x1 - x0 + 1;
      for (int64_t j = 0; j < nx; ++j) {
        col_factor[j] = axis_factor(g.exponent, (T(x0 + j) + T(0.5)) - g.x);
      }
      for (int64_t r = y0; r <= y1; ++r) {
        row_factor[r - y0] = g.norm * axis_factor(g.exponent, (T(r) + T(0.5)) - g.y);
      }
      const T* c = values + i * C;
      for (int64_t r = y0; r <= y1; ++r) {
        row_weights(g, (T(r) + T(0.5)) - g.y, row_factor[r - y0], x0, nx, col_factor.data(),
                    w.data());
        T* z = acc.data() + (r - ty0) * kTileSize + (x0 - tx0);
#pragma omp simd
        for (int64_t j = 0; j < nx; ++j) z[j] += w[j];
        for (int64_t ch = 0; ch < C; ++ch) {
          T* a = z + (ch + 1) * kTileSize * kTileSize;
          const T v = c[ch];
#pragma omp simd
          for (int64_t j = 0; j < nx; ++j) a[j] += w[j] * v;
        }
      }
    }
    for (int64_t r = 0; r < th; ++r) {
      for (int64_t j = 0; j < tw; ++j) {
        const int64_t p = (ty0 + r) * tiled.width + (tx0 + j);
        const T z = acc[r * kTileSize + j];
        density[p] = z;
        for (int64_t ch = 0; ch < C; ++ch) {
          out[p * C + ch] = normalise(acc[(ch + 1) * kTileSize * kTileSize + r * kTileSize + j], z);
        }
      }
    }
  });
}

#define JAX_GMM_INSTANTIATE(T)                                                                 \
  template struct TiledPoints<T>;                                                             \
  template void grid_forward<T>(ThreadPool&, const TiledPoints<T>&, const T*, int64_t, T*, T*);
JAX_GMM_INSTANTIATE(float)
JAX_GMM_INSTANTIATE(double)
#undef JAX_GMM_INSTANTIATE

}  // namespace jax_gmm
