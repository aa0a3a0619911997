// Recognising queries that are pixel centres (kernels.h, CentreImage), and
// reading their values off the rendered image. Both passes are bound by
// memory once vectorised, so the loops keep to float arithmetic and selects.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "channels.h"
#include "footprint.h"
#include "kernels.h"
#include "parallel.h"

namespace jax_gmm {
namespace JAX_GMM_ISA {
namespace {

// Below 2^22, x - 0.5 is exact in float and double alike, so it is a whole
// number exactly when x is a centre, and whole numbers fit an int32.
template <typename T>
constexpr T kCentreLimit = T(int64_t{1} << 22);

// Whether a coordinate c is a pixel centre, j + 0.5 for a whole j >= 0, and j.
template <typename T>
bool is_centre(T c, int32_t& j) {
  const T f = c - T(0.5);
  const bool inside = (f >= 0) & (f < kCentreLimit<T>);  // false for NaN
  j = static_cast<int32_t>(inside ? f : T(0));            // keeps the conversion defined
  return inside & (static_cast<T>(j) == f);
}

struct ChunkScan {
  bool centres = true;  // every query a centre
  bool steps = true;    // each query the next column's or on the next row
  int32_t cols = 0, rows = 0;  // the largest j and i
};

}  // namespace

template <typename T>
CentreImage centre_image(ThreadPool& pool, const T* queries, int64_t m) {
  int32_t j0, i0;
  if (m == 0 || !is_centre(queries[0], j0) || !is_centre(queries[1], i0)) {
    return {};  // most arbitrary queries stop here
  }
  const int64_t chunks = (m + kMembersPerChunk - 1) / kMembersPerChunk;
  std::vector<ChunkScan> scans(chunks);
  parallel_for(pool, chunks, [&](int64_t c) {
    const T* q = queries;  // a local, or GCC reloads it from the closure and gives up
    // Query 0 was checked above and steps from no query.
    const int64_t k0 = std::max<int64_t>(1, c * kMembersPerChunk);
    const int64_t k1 = std::min(m, (c + 1) * kMembersPerChunk);
    int centres = 1, steps = 1;
    int32_t cols = 0, rows = 0;
#pragma omp simd reduction(& : centres, steps) reduction(max : cols, rows)
    for (int64_t k = k0; k < k1; ++k) {
      const T x = q[2 * k], y = q[2 * k + 1], px = q[2 * k - 2], py = q[2 * k - 1];
      int32_t j, i;
      centres &= is_centre(x, j) & is_centre(y, i);
      cols = std::max(cols, j);
      rows = std::max(rows, i);
      steps &= ((x == px + T(1)) & (y == py)) | (y == py + T(1));
    }
    scans[c] = {centres != 0, steps != 0, cols, rows};
  });
  CentreImage image{i0 + int64_t{1}, j0 + int64_t{1}};
  bool steps = true;
  for (const ChunkScan& scan : scans) {
    if (!scan.centres) return {};
    image.width = std::max<int64_t>(image.width, scan.cols + 1);
    image.height = std::max<int64_t>(image.height, scan.rows + 1);
    steps = steps && scan.steps;
  }
  const int64_t pixels = image.height * image.width;  // < 2^44
  const int64_t walked = image.height * ((image.width + kLanes - 1) / kLanes * kLanes);
  if (walked > kCentreImagePixelsPerQuery * m || pixels >= (int64_t{1} << 32)) return {};
  // In order: each query is the next column's or on the next row. The rows
  // are then consecutive, each a run of consecutive columns no longer than
  // W, so m = H * W queries fill every row from column 0: query k is pixel k.
  image.in_order = steps && pixels == m;
  return image;
}

template <typename T>
void read_centres(ThreadPool& pool, const T* queries, int64_t m, const CentreImage& image,
                  int64_t channels, const T* packed, T* out, T* density) {
  parallel_for(pool, (m + kMembersPerChunk - 1) / kMembersPerChunk, [&](int64_t c) {
    const int64_t k0 = c * kMembersPerChunk, n = std::min(m - k0, kMembersPerChunk);
    const T* q = queries + 2 * k0;
    int64_t pixel[kMembersPerChunk];
    const double width = static_cast<double>(image.width);
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) {  // exact in double: each term is below 2^44
      pixel[k] = static_cast<int64_t>((double(q[2 * k + 1]) - 0.5) * width +
                                      (double(q[2 * k]) - 0.5));
    }
    // Shuffled queries read the image at random, a cache miss each: the pixels
    // kAhead queries on are fetched early so that the misses overlap.
    constexpr int64_t kAhead = 32;
    with_channels(channels, [&](auto kC) {
      const int64_t C = kC() > 0 ? kC() : channels;
      for (int64_t k = 0; k < n; ++k) {
        if (k + kAhead < n) __builtin_prefetch(packed + pixel[k + kAhead] * (C + 1));
        const T* p = packed + pixel[k] * (C + 1);
        if (density) density[k0 + k] = p[0];
        // Not copy_n: that was a memmove call per query.
        for (int64_t ch = 0; ch < C; ++ch) out[(k0 + k) * C + ch] = p[1 + ch];
      }
    });
  });
}

#define JAX_GMM_INSTANTIATE(T)                                                                \
  template CentreImage centre_image<T>(ThreadPool&, const T*, int64_t);                       \
  template void read_centres<T>(ThreadPool&, const T*, int64_t, const CentreImage&, int64_t, \
                                const T*, T*, T*);
JAX_GMM_INSTANTIATE(float)
JAX_GMM_INSTANTIATE(double)
#undef JAX_GMM_INSTANTIATE

}  // namespace JAX_GMM_ISA
}  // namespace jax_gmm
