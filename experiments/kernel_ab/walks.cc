// One variant of the CPU grid kernels' per-point work, for kernel_ab.sh,
// which compiles this file twice, each time against another copy of
// cuda/ and into its own namespace (JAX_GMM_ISA = va or vb), and links
// both into one program that times them in alternation.
#include <algorithm>
#include <chrono>
#include <random>
#include <vector>

#include "cpu/grid_backward.cc"
#include "cpu/grid_forward.cc"
#include "cpu/point_records.h"

namespace jax_gmm {
// TiledPoints::tile is defined in binning.cc, which neither walk here needs.
template <typename T>
TileRect TiledPoints<T>::tile(int64_t) const {
  return {};
}
}  // namespace jax_gmm

#define KERNEL_AB_NAME2(a, b) a##b
#define KERNEL_AB_NAME(a, b) KERNEL_AB_NAME2(a, b)

// Best time over `reps` passes, in ns per point, of one 128 x 128 tile's
// walk over `points` float32 round points of width sigma (centres uniform
// in the tile, at least 8 pixels from its edges), C = 3, truncate 3:
// mode 0 clips each footprint, 1 also adds it (the forward), 2 also
// gathers its cotangent sums (the backward, on random folded planes).
double KERNEL_AB_NAME(time_walk_, JAX_GMM_ISA)(float sigma, int mode, int points, int reps) {
  using namespace jax_gmm;
  using namespace jax_gmm::JAX_GMM_ISA;
  constexpr int C = 3;
  std::mt19937 rng(0);
  std::uniform_real_distribution<float> centre(8, kTileSize - 8), value(0.1f, 1.0f);
  std::vector<float> xy(2 * points), scale(3 * points), values(C * points);
  for (int i = 0; i < points; ++i) {
    xy[2 * i] = centre(rng), xy[2 * i + 1] = centre(rng);
    scale[3 * i] = sigma, scale[3 * i + 1] = 0, scale[3 * i + 2] = sigma;
    for (int ch = 0; ch < C; ++ch) values[C * i + ch] = value(rng);
  }
  std::vector<Gaussian<float>> g(points);
  point_gaussians(xy.data(), scale.data(), 0, points, 3.0f, g.data());
  const TileRect tile{0, 0, kTileSize, kTileSize};
  const auto planes = tile_scratch<float>((C + 2) * kTilePlane + (kValues + C) * kLanes);
  for (int64_t k = 0; k < (C + 2) * kTilePlane; ++k) planes[k] = value(rng);
  float* lanes = planes.get() + (C + 2) * kTilePlane;
  std::vector<float> partials((kValues + C) * points);
  Footprint<float> fp;
  double best = 1e30;
  for (int rep = 0; rep < reps; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < points; ++i) {
      if (!clip_footprint(g[i], tile, 1024, 1024, fp)) continue;
      float* at = planes.get() + fp.offset(tile);
      if (mode == 1) add_point<C, true>(g[i], fp, &values[C * i], C, at);
      if (mode == 2) {
        gather_point<C, true>(g[i], fp, &values[C * i], C, at, lanes,
                              &partials[(kValues + C) * i]);
      }
    }
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    best = std::min(best, took.count());
  }
  return best / points * 1e9;
}
