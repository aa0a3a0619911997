// Grid backward, tile by tile like the forward: a task folds its tile's
// cotangents, out and Z into [g_0 | ... | g_C-1 | offset = g . out - Z h | 1/Z]
// (see gmm_math.h), then gathers each listed point's sums over its footprint
// in the tile into that (point, tile) entry's partial. A second pass adds each
// point's partials in a fixed order. No atomics: results are bitwise
// reproducible. Memory: a tile-sized buffer per task and kValues + C numbers
// per (point, tile) entry, for one chunk of points at a time (grid_backward).
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <vector>

#include "channels.h"
#include "footprint.h"
#include "kernels.h"
#include "parallel.h"

namespace jax_gmm {
namespace JAX_GMM_ISA {
namespace {

constexpr int64_t kPointsPerTask = 1024;

// Fields of one partial: the sums that finish_point_grad takes (PointSums),
// then d_values.
enum Field { kU, kUEx, kUEy, kUXx, kUXy, kUYy, kValues };

// Writes the tile's folded planes, kTilePlane apart, into zero-filled
// `folded`: pixels outside the image and the spare lanes stay 0, so every lane
// a gather reads is finite unless a cotangent, out or Z is. Returns whether
// every entry is finite.
template <int kC, typename T>
bool fold_tile(const TileRect& tile, int64_t width, int64_t channels, const T* out,
               const T* density, const T* d_out, const T* d_density, T* folded) {
  const int64_t C = kC > 0 ? kC : channels;
  for (int64_t r = 0; r < tile.height; ++r) {
    const int64_t p0 = (tile.y0 + r) * width + tile.x0;
    T* f = folded + r * kTileSize;
#pragma omp simd
    for (int j = 0; j < static_cast<int>(tile.width); ++j) {
      const int64_t p = p0 + j;
      const T h = d_density ? d_density[p] : T(0);
      fold_query(d_out + p * C, out + p * C, density[p], h, C, f + j, kTilePlane);
    }
  }
  return all_finite(folded, (C + 2) * kTilePlane);
}

// The cotangents u of one row segment's first kWidth pairs (of kLanes), into
// u; adds each pair's ratio * g to d_c (kLanes per channel) and returns e_y^2
// per lane in e2.
// `fo` is the segment's first pixel in folded plane 0. With kFinite false (a
// folded entry is inf or NaN) only pairs of nonzero weight contribute, which
// spare lanes and zero weights would otherwise turn into NaN.
template <int kC, bool kFinite, bool kSheared, int kWidth, typename T>
inline void segment_cotangents(const Gaussian<T>& g, const Footprint<T>& fp, int r, int j0,
                               const T* c, int64_t channels, const T* fo, T* d_c, T* u, T* e2) {
  const int64_t C = kC > 0 ? kC : channels;
  const T ey = fp.ey[r], m2y = fp.m2y[r], row_factor = fp.row_factor[r];
  const T* offset = fo + C * kTilePlane;
  const T* inv_density = fo + (C + 1) * kTilePlane;
  if constexpr (kC > 0) {  // one loop over every plane: GCC vectorises it reliably
#pragma omp simd
    for (int j = 0; j < kWidth; ++j) {
      const T w = footprint_weight<kSheared>(g, fp, ey, m2y, row_factor, j0 + j, &e2[j]);
      const T ratio = weight_ratio(w, inv_density[j]);
      const bool keep = kFinite || ratio != T(0);
      T dot = 0;
      for (int ch = 0; ch < kC; ++ch) {
        const T g_ch = fo[ch * kTilePlane + j];
        dot += g_ch * c[ch];
        d_c[ch * kLanes + j] += keep ? ratio * g_ch : T(0);
      }
      u[j] = keep ? pair_cotangent(ratio, dot, offset[j]) : T(0);
    }
  } else {
    T ratio[kLanes], dot[kLanes];
#pragma omp simd
    for (int j = 0; j < kWidth; ++j) {
      const T w = footprint_weight<kSheared>(g, fp, ey, m2y, row_factor, j0 + j, &e2[j]);
      ratio[j] = weight_ratio(w, inv_density[j]);
      dot[j] = T(0);
    }
    for (int64_t ch = 0; ch < C; ++ch) {
      const T* g_ch = fo + ch * kTilePlane;
      T* d_c_ch = d_c + ch * kLanes;
      const T value = c[ch];
#pragma omp simd
      for (int j = 0; j < kWidth; ++j) {
        dot[j] += g_ch[j] * value;
        d_c_ch[j] += kFinite || ratio[j] != T(0) ? ratio[j] * g_ch[j] : T(0);
      }
    }
#pragma omp simd
    for (int j = 0; j < kWidth; ++j) {
      u[j] = kFinite || ratio[j] != T(0) ? pair_cotangent(ratio[j], dot[j], offset[j]) : T(0);
    }
  }
}

// Each field's kLanes lanes summed pairwise into its lane 0, in a fixed tree:
// reproducible, and each level's half known at compile time, so that it is
// whole vector adds rather than a loop of run-time length.
template <int kHalf, typename T>
void sum_lanes(T* lanes, int64_t fields) {
  for (int64_t f = 0; f < fields; ++f) {
    T* field = lanes + f * kLanes;
#pragma omp simd
    for (int j = 0; j < kHalf; ++j) field[j] += field[j + kHalf];
  }
  if constexpr (kHalf > 1) sum_lanes<kHalf / 2>(lanes, fields);
}

// Zeroes the first kWidth lanes of `fields` runs of kLanes. Where fields is
// known at compile time (a fixed channel count), the loop unrolls into one
// vector store per run: GCC turned a fill loop, or std::fill, into `rep
// stos`, whose start-up cost per point was a tenth of the backward's time in
// its tiles (1024^2 from 65,536 points at sigma 2, AVX-512 on an AMD EPYC).
template <int kWidth, typename T>
inline void zero_lanes(T* lanes, int64_t fields) {
  typedef T Vector
      __attribute__((vector_size(kWidth * sizeof(T)), aligned(sizeof(T)), may_alias));
#pragma GCC unroll 16
  for (int64_t f = 0; f < fields; ++f) {
    *reinterpret_cast<Vector*>(lanes + f * kLanes) = Vector{};
  }
}

// One point's sums over its footprint in a tile, into `partial` (kValues + C
// fields). `folded` is at the footprint's first pixel in plane 0; `lanes` is
// scratch for per-lane sums, kLanes per field, of which the first kWidth
// are used: only the first kWidth pairs of each segment are walked.
template <int kC, bool kFinite, bool kSheared, int kWidth, typename T>
void gather_footprint(const Gaussian<T>& g, const Footprint<T>& fp, const T* c,
                      int64_t channels, const T* folded, T* lanes, T* partial) {
  const int64_t C = kC > 0 ? kC : channels, fields = kValues + C;
  zero_lanes<kWidth>(lanes, fields);
  T* su = lanes + kU * kLanes;
  T* sex = lanes + kUEx * kLanes;
  T* sey = lanes + kUEy * kLanes;
  T* sxx = lanes + kUXx * kLanes;
  T* sxy = lanes + kUXy * kLanes;
  T* syy = lanes + kUYy * kLanes;
  T* d_c = lanes + kValues * kLanes;
  T u[kLanes], e2[kLanes];
  if constexpr (kSheared) {
    // e_y varies along the row: every sum per pair, over each row's span.
    for (int r = 0; r < fp.rows; ++r) {
      for (int s = fp.first_segment[r]; s <= fp.last_segment[r]; ++s) {
        const int j0 = s * kLanes;
        segment_cotangents<kC, kFinite, true, kWidth>(g, fp, r, j0, c, C,
                                                      folded + r * kTileSize + j0, d_c, u, e2);
        const T* ex = fp.ex + j0;
        const T* m2x = fp.m2x + j0;
        const T* sx = fp.sx + j0;
#pragma omp simd
        for (int j = 0; j < kWidth; ++j) {
          const T ey = add_rn(sx[j], fp.ey[r]);
          su[j] += u[j];
          sex[j] += u[j] * ex[j];
          sey[j] += u[j] * ey;
          sxx[j] += u[j] * m2x[j];
          sxy[j] += u[j] * (ex[j] * ey);
          syy[j] += u[j] * e2[j];
        }
      }
    }
  } else {
    // e_x is fixed down a column and e_y along a row: walk each segment's
    // column of rows, summing u, u e_y and u e_y^2 per lane, and multiply by
    // the column's e_x and e_x^2 once per segment. Three sums per pair, where
    // all six would cost the backward a fifth of its time.
    T col_u[kLanes], col_uy[kLanes], col_uyy[kLanes];
    for (int s = 0; s < fp.segments; ++s) {
      const int j0 = s * kLanes;
      std::fill(col_u, col_u + kLanes, T(0));
      std::fill(col_uy, col_uy + kLanes, T(0));
      std::fill(col_uyy, col_uyy + kLanes, T(0));
      for (int r = 0; r < fp.rows; ++r) {
        segment_cotangents<kC, kFinite, false, kWidth>(g, fp, r, j0, c, C,
                                                       folded + r * kTileSize + j0, d_c, u, e2);
        const T ey = fp.ey[r], m2y = fp.m2y[r];
#pragma omp simd
        for (int j = 0; j < kWidth; ++j) {
          col_u[j] += u[j];
          col_uy[j] += u[j] * ey;
          col_uyy[j] += u[j] * m2y;
        }
      }
      const T* ex = fp.ex + j0;
      const T* m2x = fp.m2x + j0;
#pragma omp simd
      for (int j = 0; j < kWidth; ++j) {
        su[j] += col_u[j];
        sex[j] += col_u[j] * ex[j];
        sxx[j] += col_u[j] * m2x[j];
        sey[j] += col_uy[j];
        sxy[j] += col_uy[j] * ex[j];
        syy[j] += col_uyy[j];
      }
    }
  }
  sum_lanes<kWidth / 2>(lanes, fields);
  for (int64_t f = 0; f < fields; ++f) partial[f] = lanes[f * kLanes];
}

// A narrow footprint walks half its segment, as in the forward (add_point):
// the other half's pairs have zero weight. It also zeroes and sums only
// that half's lanes (zero_lanes and sum_lanes of kWidth), where adding the
// other half's +0 lanes could only turn a -0 partial into +0: the second
// pass of grid_backward adds the partials from +0, so every result has the
// bits of walking the whole segment. 256 x 256 from 16,384 points,
// value_and_grad, one thread, strict alternation in one process: sigma 0.5
// 3.38-3.60 -> 3.16-3.41 ms, sigma 1 4.16-4.28 -> 3.82-3.86 ms (minimum of
// calls), walking half; summing half then took the clip and gather of a
// point at sigma 0.5 and 1 from 124 and 146 to 109 and 131 ns on AVX2, and
// sigma 0.5 from 194 to 177 ns on baseline x86-64 (experiments/kernel_ab.sh).
template <int kC, bool kFinite, typename T>
void gather_point(const Gaussian<T>& g, const Footprint<T>& fp, const T* c, int64_t channels,
                  const T* folded, T* lanes, T* partial) {
  with_walk(fp, [&](auto kSheared, auto kWidth) {
    gather_footprint<kC, kFinite, kSheared(), kWidth()>(g, fp, c, channels, folded, lanes,
                                                         partial);
  });
}

// The points [first, last) of a chunk (see grid_backward) whose partials
// are at `partials`, the first of them for entry tiled.point_start[first].
struct Chunk {
  int64_t first, last;
};

template <int kC, typename T>
void grid_backward_tile(const TiledPoints<T>& tiled, int64_t t, const Chunk& chunk,
                        const T* values, int64_t channels, const T* out, const T* density,
                        const T* d_out, const T* d_density, T* partials) {
  const int64_t C = kC > 0 ? kC : channels;
  // The tile's list is in point order: the chunk's points are one run of it.
  const uint32_t* items = tiled.tiles.items.data();
  const uint32_t* list_end = items + tiled.tiles.start[t + 1];
  const uint32_t* run = std::lower_bound(items + tiled.tiles.start[t], list_end, chunk.first);
  const int64_t first = run - items;
  const int64_t last = std::lower_bound(run, list_end, chunk.last) - items;
  if (first == last) return;
  const int64_t entry0 = tiled.point_start[chunk.first];
  const TileRect tile = tiled.tile(t);
  const int64_t tx = t % tiled.tiles_x, ty = t / tiled.tiles_x;  // once, not per point
  // Folded planes, then the gather's per-lane sums.
  const auto scratch = tile_scratch<T>((C + 2) * kTilePlane + (kValues + C) * kLanes);
  T* folded = scratch.get();
  T* lanes = folded + (C + 2) * kTilePlane;
  const bool finite = fold_tile<kC>(tile, tiled.width, C, out, density, d_out, d_density, folded);
  Footprint<T> fp;
  for (int64_t k = first; k < last; ++k) {
    if (k + 4 < last) {  // the list is in point order, not in memory order of the tile
      const uint32_t ahead = items[k + 4];  // every per-point array, or entry_of misses
      prefetch_record(tiled.gaussians[ahead]);
      __builtin_prefetch(values + ahead * C);
      __builtin_prefetch(&tiled.boxes[ahead]);
      __builtin_prefetch(&tiled.point_start[ahead]);
    }
    // The entries are in point order, so a tile writes its points' partials
    // far apart: fetch, for writing, the entry of the point two ahead, whose
    // box and start the lines above fetched two points ago. Without it the
    // stores waited on their lines, and the headline value_and_grad took
    // about a tenth longer.
    if (k + 2 < last) {
      T* next_entry = partials + (tiled.entry_of(items[k + 2], tx, ty) - entry0) * (kValues + C);
      __builtin_prefetch(next_entry, /*rw=*/1);
      __builtin_prefetch(next_entry + kValues + C - 1, /*rw=*/1);  // it may span two lines
    }
    const int64_t i = items[k];
    const Gaussian<T>& g = tiled.gaussians[i];
    T* partial = partials + (tiled.entry_of(i, tx, ty) - entry0) * (kValues + C);
    if (!clip_footprint(g, tile, tiled.width, tiled.height, fp)) {
      std::fill(partial, partial + kValues + C, T(0));
      continue;
    }
    const T* f = folded + fp.offset(tile);
    if (finite) {
      gather_point<kC, true>(g, fp, values + i * C, C, f, lanes, partial);
    } else {
      gather_point<kC, false>(g, fp, values + i * C, C, f, lanes, partial);
    }
  }
}

// Partials of at most this many bytes exist at once (JAX_GMM_BACKWARD_BYTES,
// read per call, overrides it for tests): wide points cover thousands of
// tiles each, and their entries alone could outgrow memory. Each chunk over
// the budget costs one more pass folding the cotangents of the tiles it
// reaches, cheap beside the pairs of points this wide.
constexpr int64_t kPartialBytes = int64_t{1} << 26;

int64_t partial_budget(int64_t bytes_per_entry) {
  const char* text = std::getenv("JAX_GMM_BACKWARD_BYTES");
  const int64_t bytes = text && std::atoll(text) > 0 ? std::atoll(text) : kPartialBytes;
  return std::max<int64_t>(1, bytes / bytes_per_entry);
}

}  // namespace

// The points are taken in chunks whose entries fit the budget (a chunk holds
// at least one point); each chunk's tiles fold their cotangents again. A
// point's partials, and the fixed order its second pass adds them in, do not
// depend on the chunking, so neither does any result.
template <typename T>
void grid_backward(ThreadPool& pool, const TiledPoints<T>& tiled, const T* values,
                   int64_t channels, const T* out, const T* density, const T* d_out,
                   const T* d_density, T* d_points, T* d_values, T* d_scale) {
  const int64_t C = channels, n = tiled.gaussians.size(), fields = kValues + C;
  const std::vector<int64_t>& start = tiled.point_start;
  const int64_t budget = partial_budget(fields * static_cast<int64_t>(sizeof(T)));
  std::vector<Chunk> chunks;
  int64_t largest = 0;
  for (int64_t first = 0, last; first < n; first = last) {
    for (last = first + 1; last < n && start[last + 1] - start[first] <= budget;) ++last;
    chunks.push_back({first, last});
    largest = std::max(largest, start[last] - start[first]);
  }
  const std::unique_ptr<T[]> partials(new T[largest * fields]);
  for (const Chunk& chunk : chunks) {
    with_channels(C, [&](auto kC) {
      parallel_for(pool, tiled.tiles_x * tiled.tiles_y, [&](int64_t t) {
        grid_backward_tile<kC()>(tiled, t, chunk, values, C, out, density, d_out, d_density,
                                 partials.get());
      });
    });
    const int64_t points = chunk.last - chunk.first;
    parallel_for(pool, (points + kPointsPerTask - 1) / kPointsPerTask, [&](int64_t task) {
      const int64_t end = std::min(chunk.last, chunk.first + (task + 1) * kPointsPerTask);
      for (int64_t i = chunk.first + task * kPointsPerTask; i < end; ++i) {
        T sums[kValues] = {};  // in Field order
        T* d_value = d_values + i * C;
        std::fill(d_value, d_value + C, T(0));
        for (int64_t e = start[i]; e < start[i + 1]; ++e) {
          const T* partial = &partials[(e - start[chunk.first]) * fields];
          for (int f = 0; f < kValues; ++f) sums[f] += partial[f];
          for (int64_t ch = 0; ch < C; ++ch) d_value[ch] += partial[kValues + ch];
        }
        const PointSums<T> point{sums[kU], sums[kUEx], sums[kUEy],
                                 sums[kUXx], sums[kUXy], sums[kUYy]};
        finish_point_grad(tiled.gaussians[i], point, &d_points[2 * i], &d_points[2 * i + 1],
                          &d_scale[3 * i]);
      }
    });
  }
}

#define JAX_GMM_INSTANTIATE(T)                                                              \
  template void grid_backward<T>(ThreadPool&, const TiledPoints<T>&, const T*, int64_t,   \
                                 const T*, const T*, const T*, const T*, T*, T*, T*);
JAX_GMM_INSTANTIATE(float)
JAX_GMM_INSTANTIATE(double)
#undef JAX_GMM_INSTANTIATE

}  // namespace JAX_GMM_ISA
}  // namespace jax_gmm
