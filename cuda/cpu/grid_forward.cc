// Grid forward: each kTileSize x kTileSize tile of pixels is owned by one
// task, which walks its list of points in point order and adds each point's
// weights over its footprint in the tile. An axis-aligned Gaussian is
// separable, so it costs O(radius) exponentials per tile and one multiply per
// pixel; a tilted one takes an exponential per pixel of its ellipse's rows.
// The images of a vmap that share points are rendered several to a pass over
// each tile (for_each_pass), so the weights are worked out once for them all;
// such a pass keeps each pixel's sums in one cache line (grid_forward_pixels).
#include <algorithm>
#include <cstring>
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
// spare lanes and zero weights would otherwise turn into NaN. kWidth lanes of
// each segment are walked: kLanes, or kLanes / 2 for a narrow footprint.
template <int kC, bool kFinite, bool kSheared, int kWidth, typename T>
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
        for (int j = 0; j < kWidth; ++j) {
          T e2;
          const T w = footprint_weight<kSheared>(g, fp, ey, m2y, row_factor, j0 + j, &e2);
          a[j] += w;
          for (int ch = 0; ch < kC; ++ch) {
            a[(ch + 1) * kTilePlane + j] += kFinite ? w * v[ch] : weighted(w, v[ch]);
          }
        }
      } else {
        T w[kWidth];
#pragma omp simd
        for (int j = 0; j < kWidth; ++j) {
          T e2;
          w[j] = footprint_weight<kSheared>(g, fp, ey, m2y, row_factor, j0 + j, &e2);
          a[j] += w[j];
        }
        for (int64_t ch = 0; ch < C; ++ch) {
          T* a_ch = a + (ch + 1) * kTilePlane;
          const T value = v[ch];
#pragma omp simd
          for (int j = 0; j < kWidth; ++j) {
            a_ch[j] += kFinite ? w[j] * value : weighted(w[j], value);
          }
        }
      }
    }
  }
}

// A narrow footprint (Footprint::narrow: sigma up to about 1, or clipped at
// a tile's edge) walks half a segment: its other half only adds +0, which
// leaves every sum's bits as they were, except that a -0 left by flushing a
// denormal to zero (XLA's threads do) now stays -0 rather than turning +0
// where a later point's spare lanes happened to cover it. 256 x 256 from
// 16,384 points, one thread, strict alternation in one process: sigma 0.5
// 1.17-1.19 -> 0.99-1.00 ms, sigma 1 1.43-1.47 -> 1.16-1.21 ms (minimum of
// calls), sigma 1 with C = 16 5.8 -> 4.7 ms.
template <int kC, bool kFinite, typename T>
void add_point(const Gaussian<T>& g, const Footprint<T>& fp, const T* v, int64_t channels,
               T* acc) {
  with_walk(fp, [&](auto kSheared, auto kWidth) {
    add_footprint<kC, kFinite, kSheared(), kWidth()>(g, fp, v, channels, acc);
  });
}

// Sums per pixel in a pass over several examples: Z, then at most 15
// channels in all, a cache line of float. The pass's accumulator is then
// pixel-major, kPixelSums entries per pixel: a point adds to one line per
// pixel of its footprint, where planes kTilePlane apart cost about two lines
// per plane and row (unaligned). A vmap of 64 RGB images of 256 x 256
// sharing 4,096 points (sigma 2), minimum of calls over seven alternated
// processes on the Xeon: 28.8-35.6 ms against 33.8-44.0 ms with planes (in
// double 66-68 against 70-80 ms).
constexpr int kPixelSums = 16;
// A pass takes pixel-major sums only with at least this many channels: each
// pixel costs all kPixelSums however few are used (zeroing, normalising),
// and with planes 2 images of C = 1 took 0.7-0.9 ms against 1.9-2.1, 3
// images of C = 3 1.6-1.8 against 2.0-2.3; 4 of C = 3 (12 planes) 1.7-2.1
// against 2.0-2.2 pixel-major (the batch above, min of calls, 3 alternated
// processes).
constexpr int kPixelMajorPlanes = 12;

// Adds one point's weights to a pixel-major accumulator (`acc` at the
// footprint's first pixel); sums[0] = 1 (Z), sums[1 + k] the pass's values
// and 0 past them. Each pixel's sums are added in the same order, from the
// same weights, as add_footprint's, so the results are bitwise the same. As
// there, a segment's spare lanes (zero weight) reach up to kLanes - 1 pixels
// past the footprint, within the kTilePlane * kPixelSums entries' padding;
// of a narrow footprint's segment, kWidth = kLanes / 2 lanes are walked (a
// vmap of 64 RGB images sharing 4,096 points, one thread: 16.5 -> 14.9 ms at
// sigma 0.5, 20.4 -> 18.4 ms at sigma 1, minimum of calls, strict
// alternation).
template <bool kFinite, bool kSheared, int kWidth, typename T>
void add_footprint_pixels(const Gaussian<T>& g, const Footprint<T>& fp, const T* sums, T* acc) {
  for (int r = 0; r < fp.rows; ++r) {
    const T ey = fp.ey[r], m2y = fp.m2y[r], row_factor = fp.row_factor[r];
    const int first = kSheared ? fp.first_segment[r] : 0;
    const int last = kSheared ? fp.last_segment[r] : fp.segments - 1;
    for (int s = first; s <= last; ++s) {
      T w[kWidth];
#pragma omp simd
      for (int j = 0; j < kWidth; ++j) {
        T e2;
        w[j] = footprint_weight<kSheared>(g, fp, ey, m2y, row_factor, s * kLanes + j, &e2);
      }
      T* a = acc + (r * kTileSize + s * kLanes) * kPixelSums;
      for (int j = 0; j < kWidth; ++j) {
        T* pixel = a + j * kPixelSums;
        const T wj = w[j];
#pragma omp simd
        for (int k = 0; k < kPixelSums; ++k) {
          pixel[k] += kFinite ? wj * sums[k] : weighted(wj, sums[k]);
        }
      }
    }
  }
}

// Channels per pass over a tile's points, so that one pass's accumulator
// planes (kTilePlane entries each, 64 KiB in float) stay in cache: with every
// channel in one pass, time per channel grew 3-8x from C = 96 to C = 1024
// (experiments/results/channel_groups_ab.md). Each pass clips the footprints
// again; at C = 96 (two passes) that was within noise. 16 rather than 64 (1
// MiB of float planes, not 4): a vmap of 64 RGB images sharing their points
// ran 16.4-16.7 ms against 17.8-18.8 (min of calls, alternated builds), one
// image of 16 to 256 channels within noise of it.
constexpr int64_t kChannelGroup = 16;

// What one pass over a tile's points renders: channels [c0, c0 + channels)
// of the run's examples [e0, e0 + examples). A pass takes either part of one
// example's channels or all the channels of several examples, whose planes
// follow one another: the weights are shared, so several small images cost
// one image of their channels together.
struct Pass {
  int64_t e0, examples, c0, channels;
  int64_t planes() const { return examples * channels; }
  // Several whole examples (c0 = 0, channels = C: see for_each_pass) whose
  // channels nearly fill kPixelSums: a pixel-major accumulator.
  bool pixel_major() const {
    return examples > 1 && planes() >= kPixelMajorPlanes && planes() < kPixelSums;
  }
  // Entries of the pass's accumulator.
  int64_t entries() const { return (pixel_major() ? kPixelSums : planes() + 1) * kTilePlane; }
};

// The passes over a run of `examples` with C channels each, in order: whole
// examples, as many as a pixel-major pass holds (kPixelSums - 1 channels);
// at C = 8 two, in planes (one example per pass took up to 20% longer); one
// example per pass up to C = 16; beyond, one example in channel groups. With
// no channels, one pass still writes every example's density (if any).
template <typename Body>
void for_each_pass(int64_t examples, int64_t C, const Body& body) {
  const int64_t fit = C == 0                          ? examples
                      : (kPixelSums - 1) / C >= 2 ? (kPixelSums - 1) / C
                                                  : kChannelGroup / C;
  const int64_t per_pass = std::clamp<int64_t>(fit, 1, examples);
  const int64_t group = std::min(C, kChannelGroup);
  for (int64_t e0 = 0; e0 < examples; e0 += per_pass) {
    int64_t c0 = 0;
    do {
      body(Pass{e0, std::min(per_pass, examples - e0), c0, std::min(group, C - c0)});
      c0 += group;
    } while (c0 < C);
  }
}

// row[j * C + ch] = entry j of plane ch (planes kTilePlane apart) for j <
// width; kC is C when known at compile time, else 0.
template <int kC, typename T>
void interleave(const T* plane, int64_t channels, int64_t width, T* row) {
  const int64_t C = kC > 0 ? kC : channels;
  for (int64_t j = 0; j < width; ++j) {
    for (int64_t ch = 0; ch < C; ++ch) row[j * C + ch] = plane[ch * kTilePlane + j];
  }
}

// Pixels j < width of a packed image (SharedPointsRun::packed): row[j * (C +
// 1)] = z[j], then entry j of each of the C planes, kTilePlane apart. kC is C
// when known at compile time, else 0.
template <int kC, typename T>
void interleave_packed(const T* z, const T* plane, int64_t channels, int64_t width, T* row) {
  const int64_t C = kC > 0 ? kC : channels;
  for (int64_t j = 0; j < width; ++j) {
    row[j * (C + 1)] = z[j];
    for (int64_t ch = 0; ch < C; ++ch) row[j * (C + 1) + 1 + ch] = plane[ch * kTilePlane + j];
  }
}

// Calls add(g, fp, v) for each of the tile's points that reaches it, in list
// order, with fp its clipped footprint and v its pass.planes() values (the
// examples' channels one after another).
template <typename T, typename Add>
void for_each_tile_point(const TiledPoints<T>& tiled, const TileRect& tile, int64_t t,
                         const SharedPointsRun<T>& run, int64_t C, const Pass& pass,
                         const Add& add) {
  const T* values = run.values[pass.e0];
  T gathered[kChannelGroup];  // the pass's values of one point, when it spans examples
  Footprint<T> fp;
  const uint32_t* items = tiled.tiles.items.data();
  const int64_t first = tiled.tiles.start[t], last = tiled.tiles.start[t + 1];
  for (int64_t k = first; k < last; ++k) {
    // The list is in point order, not in memory order of the tile: fetch ahead.
    if (k + 4 < last) {
      prefetch_record(tiled.gaussians[items[k + 4]]);
      __builtin_prefetch(values + items[k + 4] * C + pass.c0);
    }
    const int64_t i = items[k];
    const Gaussian<T>& g = tiled.gaussians[i];
    if (!clip_footprint(g, tile, tiled.width, tiled.height, fp)) continue;
    const T* v = values + i * C + pass.c0;
    if (pass.examples > 1 && C > 0) {
      // C known at compile time where it can be: a copy of C entries of run-time
      // length is a call to memmove, a twenty-fifth of a vmap's time
      with_channels(C, [&](auto kC) {
        const int64_t n = kC() > 0 ? kC() : C;
        // for_each_pass gives examples * C <= kChannelGroup; the bound lets
        // GCC see that `gathered` is not overrun
        const int64_t examples = std::min(pass.examples, kChannelGroup / n);
        for (int64_t e = 0; e < examples; ++e) {
          std::copy_n(run.values[pass.e0 + e] + i * n, n, gathered + e * n);
        }
      });
      v = gathered;
    }
    add(g, fp, v);
  }
}

// Entries write_pixel_row copies per pixel when C is known (with_channels: C <= 4).
constexpr int kPixelCopy = 4;

// Writes row r of the tile, pass.examples images of C channels each from
// `normed` (pixel-major, kPixelSums per pixel: Z, then the normalised
// channels; kPixelCopy spare entries follow the last pixel), into the
// examples' out and density (if any); `row` is scratch with room for
// kPixelCopy entries past tile.width * C.
template <int kC, typename T>
void write_pixel_row(const TiledPoints<T>& tiled, const TileRect& tile, int64_t r,
                     const SharedPointsRun<T>& run, int64_t channels, const Pass& pass,
                     const T* normed, T* row) {
  const int64_t C = kC > 0 ? kC : channels;
  const int64_t p0 = (tile.y0 + r) * tiled.width + tile.x0;
  for (int64_t e = 0; e < pass.examples; ++e) {
    const T* sums = normed + 1 + e * C;
    T* out = run.out[pass.e0 + e];
    if (run.packed) {
      for (int64_t j = 0; j < tile.width; ++j) {
        row[j * (C + 1)] = normed[j * kPixelSums];
        for (int64_t ch = 0; ch < C; ++ch) row[j * (C + 1) + 1 + ch] = sums[j * kPixelSums + ch];
      }
      stream_copy(row, tile.width * (C + 1), out + p0 * (C + 1));
      continue;
    }
    if constexpr (kC > 0) {
      // kPixelCopy entries per pixel, in pixel order, so that each copy's
      // entries past C are overwritten by the next pixel's (row and normed
      // have room past their ends): a fixed-size copy per pixel, one vector
      // load and store for float, where a loop over the channels gathered
      // them one at a time (a vmap of 64 RGB images sharing 4,096 points
      // spent a seventh of its time there).
      static_assert(kC <= kPixelCopy, "one copy per pixel");
      for (int64_t j = 0; j < tile.width; ++j) {
        std::memcpy(row + j * C, sums + j * kPixelSums, kPixelCopy * sizeof(T));
      }
    } else {
      for (int64_t j = 0; j < tile.width; ++j) {
        for (int64_t ch = 0; ch < C; ++ch) row[j * C + ch] = sums[j * kPixelSums + ch];
      }
    }
    stream_copy(row, tile.width * C, out + p0 * C);
    T* density = run.density[pass.e0 + e];
    if (!density) continue;
    for (int64_t j = 0; j < tile.width; ++j) row[j] = normed[j * kPixelSums];
    stream_copy(row, tile.width, density + p0);
  }
}

// A pass over several whole examples (Pass::pixel_major): adds the tile's
// points into the pixel-major `acc`, then normalises each pixel's sums and
// writes every example's out and density (if any).
template <typename T>
void grid_forward_pixels(const TiledPoints<T>& tiled, const TileRect& tile, int64_t t,
                         const SharedPointsRun<T>& run, int64_t C, const Pass& pass, T* acc,
                         T* row) {
  const int64_t planes = pass.planes();
  for_each_tile_point(tiled, tile, t, run, C, pass,
                      [&](const Gaussian<T>& g, const Footprint<T>& fp, const T* v) {
                        alignas(64) T sums[kPixelSums] = {T(1)};
                        std::copy_n(v, planes, sums + 1);
                        T* a = acc + fp.offset(tile) * kPixelSums;
                        const bool finite = all_finite(v, planes);
                        with_walk(fp, [&](auto kSheared, auto kWidth) {
                          if (finite) {
                            add_footprint_pixels<true, kSheared(), kWidth()>(g, fp, sums, a);
                          } else {
                            add_footprint_pixels<false, kSheared(), kWidth()>(g, fp, sums, a);
                          }
                        });
                      });
  // One row, then spare entries; zeroed, because write_pixel_row's copies
  // read the spare entries and the pixels past tile.width, which nothing writes.
  alignas(64) T normed[kTileSize * kPixelSums + kPixelCopy] = {};
  for (int64_t r = 0; r < tile.height; ++r) {
    const T* a = acc + r * kTileSize * kPixelSums;
    for (int64_t j = 0; j < tile.width; ++j) {
      const T z = a[j * kPixelSums];
#pragma omp simd
      for (int k = 0; k < kPixelSums; ++k) {
        normed[j * kPixelSums + k] = normalise(a[j * kPixelSums + k], z);
      }
      normed[j * kPixelSums] = z;
    }
    with_channels(C, [&](auto kC) {
      write_pixel_row<kC()>(tiled, tile, r, run, C, pass, normed, row);
    });
  }
}

// A pass over channels [c0, c0 + channels) of its examples, one after
// another: adds the tile's points into `acc` (planes [Z | the channels],
// kTilePlane apart), normalises them and writes each example's out; its
// density too if the pass starts at channel 0. kC is pass.planes() when
// known at compile time, else 0.
template <int kC, typename T>
void grid_forward_planes(const TiledPoints<T>& tiled, const TileRect& tile, int64_t t,
                         const SharedPointsRun<T>& run, int64_t C, const Pass& pass, T* acc,
                         T* row) {
  const int64_t planes = kC > 0 ? kC : pass.planes();
  for_each_tile_point(tiled, tile, t, run, C, pass,
                      [&](const Gaussian<T>& g, const Footprint<T>& fp, const T* v) {
                        T* a = acc + fp.offset(tile);
                        if (all_finite(v, planes)) {
                          add_point<kC, true>(g, fp, v, planes, a);
                        } else {
                          add_point<kC, false>(g, fp, v, planes, a);
                        }
                      });
  // Normalise each channel plane in place, then interleave whole rows into out.
  for (int64_t r = 0; r < tile.height; ++r) {
    const T* z = &acc[r * kTileSize];
    for (int64_t ch = 0; ch < planes; ++ch) {
      T* a = &acc[(ch + 1) * kTilePlane + r * kTileSize];
#pragma omp simd
      for (int j = 0; j < kTileSize; ++j) a[j] = normalise(a[j], z[j]);
    }
    const int64_t p0 = (tile.y0 + r) * tiled.width + tile.x0;
    for (int64_t e = 0; e < pass.examples; ++e) {
      const T* plane = z + (e * pass.channels + 1) * kTilePlane;  // the example's first channel
      T* out = run.out[pass.e0 + e];
      if (run.packed && pass.channels == C) {  // whole pixels
        with_channels(C, [&](auto kE) {
          interleave_packed<kE()>(z, plane, C, tile.width, row);
        });
        stream_copy(row, tile.width * (C + 1), out + p0 * (C + 1));
        continue;
      }
      with_channels(pass.channels, [&](auto kE) {
        interleave<kE()>(plane, pass.channels, tile.width, row);
      });
      const int64_t stride = run.packed ? C + 1 : C;  // per pixel in out
      const int64_t first = run.packed ? 1 + pass.c0 : pass.c0;
      if (pass.channels == C) {
        stream_copy(row, tile.width * C, out + p0 * C);
      } else {  // a run of pass.channels in out per pixel
        for (int64_t j = 0; j < tile.width; ++j) {
          stream_copy(row + j * pass.channels, pass.channels, out + (p0 + j) * stride + first);
        }
      }
      if (pass.c0 != 0) continue;
      if (run.packed) {
        for (int64_t j = 0; j < tile.width; ++j) out[(p0 + j) * stride] = z[j];
      } else if (T* density = run.density[pass.e0 + e]) {
        stream_copy(z, tile.width, density + p0);
      }
    }
  }
}

template <typename T>
void grid_forward_tile(const TiledPoints<T>& tiled, int64_t t, const SharedPointsRun<T>& run,
                       int64_t C) {
  const TileRect tile = tiled.tile(t);
  int64_t most = 0;
  for_each_pass(run.size(), C, [&](const Pass& p) { most = std::max(most, p.entries()); });
  // The accumulator, then one interleaved output row (packed: with densities),
  // which leaves room for write_pixel_row's spare entries.
  const auto acc = tile_scratch<T>(most + kTileSize * (C + 1));
  T* row = acc.get() + most;
  bool zeroed = true;
  for_each_pass(run.size(), C, [&](const Pass& pass) {
    if (!zeroed) std::fill(acc.get(), acc.get() + pass.entries(), T(0));
    if (pass.pixel_major()) {
      grid_forward_pixels(tiled, tile, t, run, C, pass, acc.get(), row);
    } else {
      with_channels(pass.planes(), [&](auto kC) {
        grid_forward_planes<kC()>(tiled, tile, t, run, C, pass, acc.get(), row);
      });
    }
    zeroed = false;
  });
  stream_fence();
}

}  // namespace

template <typename T>
void grid_forward(ThreadPool& pool, const TiledPoints<T>& tiled, const SharedPointsRun<T>& run,
                  int64_t channels) {
  parallel_for(pool, tiled.tiles_x * tiled.tiles_y, [&](int64_t t) {
    grid_forward_tile(tiled, t, run, channels);
  });
}

#define JAX_GMM_INSTANTIATE(T)                                                                 \
  template void grid_forward<T>(ThreadPool&, const TiledPoints<T>&, const SharedPointsRun<T>&, \
                                int64_t);
JAX_GMM_INSTANTIATE(float)
JAX_GMM_INSTANTIATE(double)
#undef JAX_GMM_INSTANTIATE

}  // namespace JAX_GMM_ISA
}  // namespace jax_gmm
