// kernel_ab.sh's driver: times variants va (the base) and vb (the working
// tree) in alternation, round by round, so that both see the same machine
// state, and prints each one's best and median and the per-round ratio.
//
//   kernel_ab MODE SIGMA...   (MODE as in walks.cc: 0 clip, 1 forward, 2 backward)
#include <pmmintrin.h>
#include <xmmintrin.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

double time_walk_va(float sigma, int mode, int points, int reps);
double time_walk_vb(float sigma, int mode, int points, int reps);

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODE SIGMA...\n", argv[0]);
    return 2;
  }
  // As XLA's CPU threads run.
  _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
  _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
  constexpr int kRounds = 15, kPoints = 2048, kReps = 20;
  const int mode = std::atoi(argv[1]);
  for (int a = 2; a < argc; ++a) {
    const float sigma = std::atof(argv[a]);
    std::vector<double> base, head, ratio;
    for (int r = 0; r < kRounds; ++r) {
      base.push_back(time_walk_va(sigma, mode, kPoints, kReps));
      head.push_back(time_walk_vb(sigma, mode, kPoints, kReps));
      ratio.push_back(head.back() / base.back());
    }
    std::sort(base.begin(), base.end());
    std::sort(head.begin(), head.end());
    std::sort(ratio.begin(), ratio.end());
    const int mid = kRounds / 2;
    std::printf(
        "mode %d sigma %g: base %.1f (median %.1f), new %.1f (median %.1f) ns per point; "
        "new / base per round %.3f-%.3f, median %.3f\n",
        mode, sigma, base[0], base[mid], head[0], head[mid], ratio[0], ratio[kRounds - 1],
        ratio[mid]);
  }
}
