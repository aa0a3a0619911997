// Throughput floor of the per-pair arithmetic of GMM interpolation on a CPU.
//
// Each thread owns one 32 x 32 tile of accumulators [Z | A_0 .. A_C-1] (in
// L1) and adds to every pixel of it, point after point, the work one
// (point, pixel) pair costs in a separable-Gaussian splatting kernel:
//   w = dx2[j] <= limit ? row_factor * col_factor[j] : 0   (1 mul, compare, select)
//   Z += w;  A_c += w * v_c                                 (1 add, C FMAs)
// Nothing else is done: no binning, no exponentials (those are per point and
// row, not per pair), no output writes, full-width rows and no memory traffic
// beyond L1. So this is the least time per pair of a kernel that evaluates
// this arithmetic for every pair: the floor that experiments/benchmark.py
// compares jax_gmm with. (A kernel can still beat it by skipping work, e.g.
// by clipping each row to the cutoff disc instead of masking, where a row
// needs no compare and select.)
//
// Usage: floor CHANNELS THREADS SECONDS
// Prints one line: "pairs_per_second checksum".
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

constexpr int kTile = 32;
// Points per timing check; large enough that reading the clock is free.
constexpr int64_t kPointsPerBatch = 256;

// Adds kPointsPerBatch points to the tile `acc` ([Z | A_0 .. A_C-1], each
// kTile x kTile); returns the pairs done. The per-point constants change with
// the point index so that the compiler cannot fold points together.
template <int C>
int64_t splat_batch(int64_t first_point, float* acc, const float* col_factor, const float* dx2) {
  for (int64_t k = first_point; k < first_point + kPointsPerBatch; ++k) {
    const float row_factor = 1.0f + 1e-3f * static_cast<float>(k & 7);
    float v[C];
    for (int ch = 0; ch < C; ++ch) v[ch] = 0.25f * static_cast<float>(ch + (k & 3));
    for (int r = 0; r < kTile; ++r) {
      // r2 - dy^2, hoisted out of the pixel loop as the real kernels do.
      const float limit = 300.0f - static_cast<float>((r - 16) * (r - 16));
      float* z = acc + r * kTile;
#pragma omp simd
      for (int j = 0; j < kTile; ++j) {
        // Loaded unconditionally: a load under the condition keeps GCC from
        // vectorising the loop for SSE2, which has no masked loads.
        const float product = row_factor * col_factor[j];
        const float w = dx2[j] <= limit ? product : 0.0f;
        z[j] += w;
        for (int ch = 0; ch < C; ++ch) z[(ch + 1) * kTile * kTile + j] += w * v[ch];
      }
    }
  }
  return kPointsPerBatch * kTile * kTile;
}

// Runs one thread until `stop`; returns its pairs and its checksum.
template <int C>
void worker(const std::atomic<bool>* stop, int64_t* pairs, double* checksum) {
  std::vector<float> acc((C + 1) * kTile * kTile, 0.0f);
  float col_factor[kTile], dx2[kTile];
  for (int j = 0; j < kTile; ++j) {
    dx2[j] = static_cast<float>((j - 16) * (j - 16));
    col_factor[j] = 1.0f / (1.0f + dx2[j]);
  }
  int64_t done = 0;
  while (!stop->load(std::memory_order_relaxed)) {
    done += splat_batch<C>(done, acc.data(), col_factor, dx2);
  }
  double sum = 0;
  for (float a : acc) sum += a;
  *pairs = done;
  *checksum = sum;
}

using Worker = void (*)(const std::atomic<bool>*, int64_t*, double*);

// The channel count is a template argument so that the channel loop unrolls
// into one pass over the row, as in the best possible kernel.
Worker worker_for(int channels) {
  switch (channels) {
    case 1: return worker<1>;
    case 2: return worker<2>;
    case 3: return worker<3>;
    case 4: return worker<4>;
    default: return nullptr;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s CHANNELS THREADS SECONDS\n", argv[0]);
    return 2;
  }
  const Worker run = worker_for(std::atoi(argv[1]));
  if (run == nullptr) {
    std::fprintf(stderr, "CHANNELS must be 1 to 4\n");
    return 2;
  }
  const int threads = std::max(1, std::atoi(argv[2]));
  const double seconds = std::atof(argv[3]);
  std::atomic<bool> stop{false};
  std::vector<int64_t> pairs(threads);
  std::vector<double> checksums(threads);
  std::vector<std::thread> pool;
  const auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back(run, &stop, &pairs[t], &checksums[t]);
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : pool) t.join();
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  int64_t total = 0;
  double checksum = 0;
  for (int t = 0; t < threads; ++t) {
    total += pairs[t];
    checksum += checksums[t];
  }
  std::printf("%.6e %.6e\n", static_cast<double>(total) / elapsed, checksum);
  return 0;
}
