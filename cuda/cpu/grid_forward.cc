// Grid forward: each kTileSize x kTileSize tile of pixels is owned by one
// task, which walks its list of points in point order and adds each point's
// weights over its footprint in the tile. An axis-aligned Gaussian is
// separable, so it costs O(radius) exponentials per tile and one multiply per
// pixel; a tilted one takes an exponential per pixel of its ellipse's rows.
#include <algorithm>
#include <memory>

#include "channels.h"
#include "footprint.h"
#include "kernels.h"
#include "parallel.h"
#include "streaming.h"

namespace jax_gmm {
namespace JAX_GMM_ISA {
namespace {

// Adds one point's weights to a tile's accumulator planes [Z | A_0 | ...],
// kTilePlane apart; `acc` is at the footprint's first pixel in the Z plane.
// kC is C when known at compile time, else 0. With kFinite false (a value
// is inf or NaN) only pixels of nonzero weight receive the value, which
// spare lanes and zero weights would otherwise turn into NaN.
template <int kC, bool kFinite, bool kSheared, typename T>
void add_footprint(const Gaussian<T>& g, const Footprint<T>& fp, const T* v, int64_t channels,
                   T* acc) {
  const int64_t C = kC > 0 ? kC : channels;
  for (int r = 0; r < fp.rows; ++r) {
    const T ey = fp.ey[r], m2y = fp.m2y[r], row_factor = fp.row_factor[r];
    const int first = kSheared ? fp.first_segment[r] : 0;
    const int last = kSheared ? fp.last_segment[r] : fp.segments - 1;
    for (int s = first; s <= last; ++s) {
      T* a = acc + r * kTileSize + s * kLanes;
      const int j0 = s * kLanes;
      if constexpr (kC > 0) {  // one loop over every plane: GCC vectorises it reliably
#pragma omp simd
        for (int j = 0; j < kLanes; ++j) {
          T e2;
          const T w = footprint_weight<kSheared>(g, fp, ey, m2y, row_factor, j0 + j, &e2);
          a[j] += w;
          for (int ch = 0; ch < kC; ++ch) {
            a[(ch + 1) * kTilePlane + j] += kFinite ? w * v[ch] : weighted(w, v[ch]);
          }
        }
      } else {
        T w[kLanes];
#pragma omp simd
        for (int j = 0; j < kLanes; ++j) {
          T e2;
          w[j] = footprint_weight<kSheared>(g, fp, ey, m2y, row_factor, j0 + j, &e2);
          a[j] += w[j];
        }
        for (int64_t ch = 0; ch < C; ++ch) {
          T* a_ch = a + (ch + 1) * kTilePlane;
          const T value = v[ch];
#pragma omp simd
          for (int j = 0; j < kLanes; ++j) {
            a_ch[j] += kFinite ? w[j] * value : weighted(w[j], value);
          }
        }
      }
    }
  }
}

template <int kC, bool kFinite, typename T>
void add_point(const Gaussian<T>& g, const Footprint<T>& fp, const T* v, int64_t channels,
               T* acc) {
  if (fp.sheared) {
    add_footprint<kC, kFinite, true>(g, fp, v, channels, acc);
  } else {
    add_footprint<kC, kFinite, false>(g, fp, v, channels, acc);
  }
}

// Channels per pass over a tile's points when C is large, so that one pass's
// accumulator planes (kTilePlane entries each, 64 KiB in float) stay in
// cache: with every channel in one pass, time per channel grew 3-8x from
// C = 96 to C = 1024 (experiments/results/channel_groups_ab.md). Each pass
// clips the footprints again; at C = 96 (two passes) that was within noise.
constexpr int64_t kChannelGroup = 64;

// Adds channels [c0, c0 + group) of the tile's points into `acc` (planes
// [Z | A_c0 | ...]), normalises them and writes them to out; the density
// too if c0 == 0. values and out have C channels per point and pixel.
template <int kC, typename T>
void grid_forward_group(const TiledPoints<T>& tiled, const TileRect& tile, int64_t t,
                        const T* values, int64_t channels, int64_t c0, int64_t group, T* acc,
                        T* row, T* out, T* density) {
  const int64_t C = kC > 0 ? kC : channels;
  Footprint<T> fp;
  const uint32_t* items = tiled.tiles.items.data();
  const int64_t first = tiled.tiles.start[t], last = tiled.tiles.start[t + 1];
  for (int64_t k = first; k < last; ++k) {
    // The list is in point order, not in memory order of the tile: fetch ahead.
    if (k + 4 < last) {
      __builtin_prefetch(&tiled.gaussians[items[k + 4]]);
      __builtin_prefetch(values + items[k + 4] * C + c0);
    }
    const int64_t i = items[k];
    const Gaussian<T>& g = tiled.gaussians[i];
    if (!clip_footprint(g, tile, tiled.width, tiled.height, fp)) continue;
    const T* v = values + i * C + c0;
    T* a = acc + fp.offset(tile);
    if (all_finite(v, group)) {
      add_point<kC, true>(g, fp, v, group, a);
    } else {
      add_point<kC, false>(g, fp, v, group, a);
    }
  }
  // Normalise each channel plane in place, then interleave whole rows into out.
  for (int64_t r = 0; r < tile.height; ++r) {
    const T* z = &acc[r * kTileSize];
    for (int64_t ch = 0; ch < group; ++ch) {
      T* a = &acc[(ch + 1) * kTilePlane + r * kTileSize];
#pragma omp simd
      for (int j = 0; j < kTileSize; ++j) a[j] = normalise(a[j], z[j]);
    }
    const int64_t p0 = (tile.y0 + r) * tiled.width + tile.x0;
    if (group == C) {
      for (int64_t j = 0; j < tile.width; ++j) {
        for (int64_t ch = 0; ch < C; ++ch) row[j * C + ch] = z[(ch + 1) * kTilePlane + j];
      }
      stream_copy(row, tile.width * C, out + p0 * C);
    } else {  // this group's channels of each pixel: a run of `group` in out per pixel
      for (int64_t j = 0; j < tile.width; ++j) {
        for (int64_t ch = 0; ch < group; ++ch) row[j * group + ch] = z[(ch + 1) * kTilePlane + j];
      }
      for (int64_t j = 0; j < tile.width; ++j) {
        stream_copy(row + j * group, group, out + (p0 + j) * C + c0);
      }
    }
    if (c0 == 0) stream_copy(z, tile.width, density + p0);
  }
}

template <int kC, typename T>
void grid_forward_tile(const TiledPoints<T>& tiled, int64_t t, const T* values,
                       int64_t channels, T* out, T* density) {
  const int64_t C = kC > 0 ? kC : channels;
  const int64_t group = std::min(C, kC > 0 ? C : kChannelGroup);
  const TileRect tile = tiled.tile(t);
  // Accumulator planes, then one interleaved output row.
  const auto acc = tile_scratch<T>((group + 1) * kTilePlane + kTileSize * C);
  T* row = acc.get() + (group + 1) * kTilePlane;
  for (int64_t c0 = 0; c0 < C; c0 += group) {
    const int64_t count = std::min(group, C - c0);
    if (c0 > 0) std::fill(acc.get(), acc.get() + (count + 1) * kTilePlane, T(0));
    grid_forward_group<kC>(tiled, tile, t, values, C, c0, count, acc.get(), row, out, density);
  }
  stream_fence();
}

}  // namespace

template <typename T>
void grid_forward(ThreadPool& pool, const TiledPoints<T>& tiled, const T* values,
                  int64_t channels, T* out, T* density) {
  with_channels(channels, [&](auto kC) {
    parallel_for(pool, tiled.tiles_x * tiled.tiles_y, [&](int64_t t) {
      grid_forward_tile<kC()>(tiled, t, values, channels, out, density);
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
