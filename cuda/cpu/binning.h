// Binning of points into cells so that each query (or tile of pixels) gathers
// only from the points whose cutoff disc can reach it.
//
// Points are "splatted": a point is listed in every cell its bounding box
// overlaps, in increasing point order. Each cell's list is therefore a fixed
// sequence and every sum over it is reproducible bit for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "gmm_math.h"
#include "layout.h"
#include "parallel.h"
#include "ranges.h"

namespace jax_gmm {

using xla::ffi::ThreadPool;

// An allocator whose vectors leave new elements of trivial type
// uninitialised on resize, for arrays a parallel pass then writes in full:
// value-initialising them first zeroed megabytes on one thread, each page's
// first touch (a fault) included.
template <typename T>
struct DefaultInit : std::allocator<T> {
  DefaultInit() = default;
  template <typename U>
  DefaultInit(const DefaultInit<U>&) noexcept {}
  template <typename U>
  struct rebind {
    using other = DefaultInit<U>;
  };
  template <typename U>
  void construct(U* p) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

template <typename T>
using UninitVector = std::vector<T, DefaultInit<T>>;

// Members per chunk of the parallel passes, and a cap on chunks x cells (the
// per-chunk counts). Chunks are fixed by the sizes alone, so no result
// depends on the thread count.
constexpr int64_t kMembersPerChunk = 4096;
constexpr int64_t kMaxChunkCounts = int64_t{1} << 22;
// A cap on a build's chunks: its prefix sum over (cell, chunk) counts runs on
// one thread, and at 1M queries in 13k cells 64 chunks cost 0.8 ms more than 16.
constexpr int64_t kMaxBuildChunks = 16;

// body(i) for i in [0, count), in parallel over fixed chunks.
template <typename Body>
void parallel_over(ThreadPool& pool, int64_t count, const Body& body) {
  parallel_for(pool, (count + kMembersPerChunk - 1) / kMembersPerChunk, [&](int64_t c) {
    for (int64_t i = c * kMembersPerChunk; i < std::min(count, (c + 1) * kMembersPerChunk); ++i) {
      body(i);
    }
  });
}

// The chunks' partial results in order, combined from `none`:
// fold(first, last, none) folds members [first, last) of one chunk of
// kMembersPerChunk, in an order fixed by the chunk alone. A fixed grouping, so
// the same result for every thread count even when `combine` rounds.
template <typename R, typename Fold, typename Combine>
R fold_chunks(ThreadPool& pool, int64_t count, R none, const Fold& fold, const Combine& combine) {
  const int64_t chunks = (count + kMembersPerChunk - 1) / kMembersPerChunk;
  std::vector<R> partial(chunks, none);
  parallel_for(pool, chunks, [&](int64_t c) {
    partial[c] = fold(c * kMembersPerChunk, std::min(count, (c + 1) * kMembersPerChunk), none);
  });
  R total = none;
  for (const R& r : partial) total = combine(total, r);
  return total;
}

// The combination, in fold_chunks' grouping, of of(i) for i in [0, count),
// starting from `none`.
template <typename R, typename Of, typename Combine>
R reduce_over(ThreadPool& pool, int64_t count, R none, const Of& of, const Combine& combine) {
  return fold_chunks(
      pool, count, none,
      [&](int64_t first, int64_t last, R sum) {
        for (int64_t i = first; i < last; ++i) sum = combine(sum, of(i));
        return sum;
      },
      combine);
}

// Compressed lists: the members of cell k are items[start[k] .. start[k+1]).
struct CellLists {
  std::vector<int64_t> start;
  UninitVector<uint32_t> items;

  // `visit(i, emit)` calls emit(cell) for every cell of member i. It is called
  // twice per member (count, then fill) and from several threads at once, so
  // it must be deterministic and write nothing shared. It may also emit
  // `cells`, one past the last cell, a sink whose members are dropped: a
  // visit that emits a fixed number of candidates, the absent ones to the
  // sink, has no branches that depend on the data. Two parallel passes over
  // chunks of members: count each chunk's members per cell, then write them
  // where a prefix sum over (cell, chunk) puts them, so that every cell lists
  // its members in increasing order.
  template <typename Visit>
  void build(ThreadPool& pool, int64_t cells, int64_t members, const Visit& visit) {
    const int64_t chunks = std::clamp<int64_t>(
        std::min((members + kMembersPerChunk - 1) / kMembersPerChunk,
                 kMaxChunkCounts / std::max<int64_t>(cells, 1)),
        1, kMaxBuildChunks);
    const int64_t per_chunk = (members + chunks - 1) / chunks;
    const int64_t stride = cells + 1;                // the cells, then the sink
    std::vector<int64_t> slot(chunks * stride, 0);  // counts, then write positions
    parallel_for(pool, chunks, [&](int64_t c) {
      int64_t* count = slot.data() + c * stride;
      for (int64_t i = c * per_chunk; i < std::min(members, (c + 1) * per_chunk); ++i) {
        visit(i, [&](int64_t k) { ++count[k]; });
      }
    });
    start.assign(cells + 1, 0);
    int64_t next = 0;
    for (int64_t k = 0; k <= cells; ++k) {  // the sink's entries follow the last cell's
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t count = slot[c * stride + k];
        slot[c * stride + k] = next;
        next += count;
      }
      if (k < cells) start[k + 1] = next;
    }
    items.resize(next);
    parallel_for(pool, chunks, [&](int64_t c) {
      int64_t* next = slot.data() + c * stride;
      for (int64_t i = c * per_chunk; i < std::min(members, (c + 1) * per_chunk); ++i) {
        visit(i, [&](int64_t k) { items[next[k]++] = static_cast<uint32_t>(i); });
      }
    });
    items.resize(start[cells]);
  }
};

// Fetches a point's record ahead of use, both cache lines of it: a record is
// 40 (float) or 80 (double) bytes, so many straddle two, and its flags, read
// first, sit at the end.
template <typename T>
inline void prefetch_record(const Gaussian<T>& g) {
  __builtin_prefetch(&g);
  __builtin_prefetch(reinterpret_cast<const char*>(&g + 1) - 1);
}

// Points per GaussianBlock.
constexpr int64_t kBlockPoints = 64;

// The records of a block of points, one array per field, for the vector
// loops over points: GCC writes and reads the fields of records 40 or 80
// bytes apart one lane at a time (making a block of float records took 19
// cycles a point that way, 6 this way, on the EPYC), or not at all.
template <typename T>
struct GaussianBlock {
  using Flags = typename Gaussian<T>::Flags;
  T x[kBlockPoints], y[kBlockPoints];
  T p11[kBlockPoints], p21[kBlockPoints], p22[kBlockPoints];
  T norm[kBlockPoints], cutoff2[kBlockPoints];
  T box_x[kBlockPoints], box_y[kBlockPoints];
  Flags flags[kBlockPoints];

  void set(int64_t k, Gaussian<T> g) {  // by value: a reference kept vector loops scalar
    x[k] = g.x, y[k] = g.y, p11[k] = g.p11, p21[k] = g.p21, p22[k] = g.p22;
    norm[k] = g.norm, cutoff2[k] = g.cutoff2, box_x[k] = g.box_x, box_y[k] = g.box_y;
    flags[k] = g.flags;
  }
  Gaussian<T> get(int64_t k) const {
    return {x[k], y[k], p11[k], p21[k], p22[k], norm[k], cutoff2[k], box_x[k], box_y[k], flags[k]};
  }
  // Gaussian::valid, read off cutoff2 (place_gaussian sets -1 exactly when it
  // leaves kValid unset, and truncate^2 >= 0 otherwise: truncate is checked
  // positive, never NaN): GCC folds the flag test into a one-bit cast that
  // kept every loop calling this scalar.
  bool valid(int64_t k) const { return cutoff2[k] >= T(0); }
};

// The reach of the first `count` records of a block (box_reach of each,
// combined in a fixed grouping). Always inlined: each instruction-set build
// needs its own vector loops, and a call to this shared template would reach
// whichever build's copy the linker kept (kernels.h).
template <typename T>
[[gnu::always_inline]] inline PointReach block_reach(const GaussianBlock<T>& b, int64_t count) {
  // The radii of a block are summed in this many interleaved chains, then
  // pairwise: one chain of 64 dependent adds was a third of the pass.
  constexpr int64_t kChains = 8;
  static_assert(kChains == 8 && kBlockPoints % kChains == 0, "whole chains, summed pairwise");
  // Each point's reach into plain arrays, then the hull over them (min and
  // max are exact in any order; no bound is NaN): in one loop with the float
  // records' loads GCC left both scalar, which made this pass most of a call
  // of a few queries among many points.
  double x_lo_of[kBlockPoints], x_hi_of[kBlockPoints];
  double y_lo_of[kBlockPoints], y_hi_of[kBlockPoints];
  double radius_of[kBlockPoints] = {}, widest_of[kBlockPoints];
  int64_t finite_of[kBlockPoints];
#pragma omp simd
  for (int64_t k = 0; k < count; ++k) {
    const PointReach r = box_reach(b.valid(k), b.x[k], b.y[k], b.box_x[k], b.box_y[k]);
    x_lo_of[k] = r.x.lo, x_hi_of[k] = r.x.hi, y_lo_of[k] = r.y.lo, y_hi_of[k] = r.y.hi;
    radius_of[k] = r.radius_sum, widest_of[k] = r.widest, finite_of[k] = r.finite_radii;
  }
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  double widest = 0.0;
  int64_t finite = 0;
#pragma omp simd reduction(min : x_lo, y_lo) reduction(max : x_hi, y_hi, widest) \
    reduction(+ : finite)
  for (int64_t k = 0; k < count; ++k) {
    const Interval x = hull({x_lo, x_hi}, {x_lo_of[k], x_hi_of[k]});
    const Interval y = hull({y_lo, y_hi}, {y_lo_of[k], y_hi_of[k]});
    x_lo = x.lo, x_hi = x.hi, y_lo = y.lo, y_hi = y.hi;
    widest = widest > widest_of[k] ? widest : widest_of[k];
    finite += finite_of[k];
  }
  double chains[kChains] = {};
  for (int64_t k0 = 0; k0 < kBlockPoints; k0 += kChains) {  // 0 past count
    for (int64_t j = 0; j < kChains; ++j) chains[j] += radius_of[k0 + j];
  }
  const double radius_sum = ((chains[0] + chains[1]) + (chains[2] + chains[3])) +
                            ((chains[4] + chains[5]) + (chains[6] + chains[7]));
  return {{x_lo, x_hi}, {y_lo, y_hi}, radius_sum, finite, widest};
}

// The points' reach, combined over blocks of at most kBlockPoints in
// fold_chunks' grouping (fixed blocks, each with a fixed grouping), so the
// same bits for any thread count. block(first, count) is the reach of points
// [first, first + count).
template <typename Block>
PointReach reach_of(ThreadPool& pool, int64_t n, const Block& block) {
  return fold_chunks(
      pool, n, no_reach(),
      [&](int64_t begin, int64_t end, PointReach sum) {
        for (int64_t first = begin; first < end; first += kBlockPoints) {
          sum = combine(sum, block(first, std::min(kBlockPoints, end - first)));
        }
        return sum;
      },
      [](const PointReach& a, const PointReach& b) { return combine(a, b); });
}

}  // namespace jax_gmm
