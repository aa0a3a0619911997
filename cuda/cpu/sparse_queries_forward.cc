// Forward at queries far fewer than the points (kernels.h, sparse_queries):
// the points are split into a fixed number of chunks, and each chunk's task
// walks its points in order, 64 at a time: it drops those whose centres lie
// far from every query (near_points), makes the others' records and cells,
// each in one vector loop, and adds each one's weights to the queries of
// the cells its bounding box overlaps (short cell rows through
// PendingPairs), in the chunk's own accumulators.
// The chunks' sums are then added in chunk order. The chunks depend on N
// alone, so results are bitwise reproducible for any thread count; no
// atomics.
#include <algorithm>
#include <memory>

#include "kernels.h"
#include "parallel.h"
#include "point_records.h"
#include "query_runs.h"

namespace jax_gmm {
namespace JAX_GMM_ISA {

namespace {
// The chunks of points: the kernel's parallel tasks, each holding its own
// accumulators for every listed query (at most kSparseQueryBytes). A fixed
// number, so that the sums do not depend on the thread count, and no more
// than 16 per call, so that the accumulators stay at most 4 MiB.
constexpr int64_t kMaxChunks = 16;

// A cell row's queries, taken a block at a time in the vector loops (the
// size of the weights buffer on the stack).
constexpr int64_t kBlock = 4 * kRunLanes;

// Pending pairs held before their weights are worked out. A row's append
// writes kRunLanes entries, so a batch is added once it has no room for two
// more rows.
constexpr int64_t kPendingPairs = 512;
static_assert(kPendingPairs >= 4 * kRunLanes, "a flush must leave room for two rows");

// The pairs of a batch of points with the queries of short cell rows (fewer
// than kRunLanes queries, the usual case at M = 1,024: about one per cell),
// gathered so that their weights are worked out in one vector loop and the
// branches on each row's length and on the cutoff leave the point walk.
// Pairs are added in the order they were appended, so every query's sum
// is taken in point order, as by the row loops. 1,024 queries at N = 65,536
// (sigma 2, min of calls over 4 alternated processes on the Xeon): 2.36-2.45
// ms against 2.74-3.19 ms with a scalar loop per row that branched past the
// exponential; 8,192 queries 4.7-5.2 against 5.6-5.7 ms; sigma 16 within
// noise.
template <typename T>
struct PendingPairs {
  GaussianBlock<T> points;       // the batch's records
  int32_t point[kPendingPairs];  // entry of points of each pair
  // List entry of each pair's query: int32 suffices, as each query is listed
  // at most once and sparse_queries caps M at kSparseQueryBytes / 4.
  int32_t query[kPendingPairs];
  T weight[kPendingPairs];  // 0 past the cutoff
  int64_t count = 0;

  // Appends the pairs of batch point `slot` with list entries [k0, k1),
  // fewer than kRunLanes: a fixed-length write, of which k1 - k0 count.
  void append_row(int32_t slot, int64_t k0, int64_t k1) {
#pragma omp simd
    for (int j = 0; j < kRunLanes; ++j) {
      point[count + j] = slot;
      query[count + j] = static_cast<int32_t>(k0 + j);
    }
    count += k1 - k0;
  }
  // Room for two more rows, as the walk appends a point's two rows at once.
  bool full() const { return count > kPendingPairs - 2 * kRunLanes; }
};

// The cells that each of a batch's points overlaps (layout.h, box_cells),
// worked out in one vector loop: one point at a time, the four double
// divisions and their branches were about a third of the point walk.
struct BatchCells {
  int64_t x_lo[kBlockPoints], x_hi[kBlockPoints], y_lo[kBlockPoints], y_hi[kBlockPoints];
};

template <typename T>
void batch_cells(const CellLayout& layout, const GaussianBlock<T>& g, int64_t count,
                 BatchCells& cells) {
  const CellLayout l = layout;  // a copy: read through the reference, it kept the loop scalar
#pragma omp simd
  for (int64_t k = 0; k < count; ++k) {
    const Box box = box_cells(l, g.valid(k), g.x[k], g.y[k], g.box_x[k], g.box_y[k]);
    cells.x_lo[k] = box.x.lo;
    cells.x_hi[k] = box.x.hi;
    cells.y_lo[k] = box.y.lo;
    cells.y_hi[k] = box.y.hi;
  }
}

// Adds the pending pairs to the chunk's planes [Z | A_0 | ...] (`listed`
// entries each) and empties `pending`; index[slot] is the point of the
// batch's slot.
template <typename T>
void add_pending(PendingPairs<T>& pending, const T* xs, const T* ys, const T* values,
                 const int64_t* index, int64_t C, int64_t listed, T* z) {
  const int64_t count = pending.count;
  // pair_m2 and cutoff_weight, as the row loops took them, so the same bits;
  // pair_m2 of an axis-aligned point is also run_weights' m2 (long rows),
  // bit for bit: its shear term is +-0. ivdep rather than omp simd, whose
  // per-lane copy of the record GCC fills by a scatter it cannot emulate.
#pragma GCC ivdep
  for (int64_t j = 0; j < count; ++j) {
    const Gaussian<T> g = pending.points.get(pending.point[j]);
    const int32_t k = pending.query[j];
    pending.weight[j] = cutoff_weight(g, pair_m2(g, xs[k] - g.x, ys[k] - g.y));
  }
  for (int64_t j = 0; j < count; ++j) {
    // Most pairs: past the cutoff. Skipping a zero weight inside it (an
    // underflow) changes no bit either: the sums start at +0 and never hold
    // -0, and weighted(0, v) is 0.
    if (pending.weight[j] == T(0)) continue;
    const int64_t k = pending.query[j];
    const T w = pending.weight[j];
    const T* v = values + index[pending.point[j]] * C;
    z[k] += w;
    for (int64_t ch = 0; ch < C; ++ch) z[(ch + 1) * listed + k] += weighted(w, v[ch]);
  }
  pending.count = 0;
}
}  // namespace

template <typename T>
void sparse_queries_forward(ThreadPool& pool, const SparseQueries<T>& sparse, const T* values,
                            int64_t channels, int64_t m, T* out, T* density) {
  std::fill(out, out + m * channels, T(0));  // queries in no cell (unreachable, not finite) stay 0
  if (density) std::fill(density, density + m, T(0));
  const int64_t C = channels, n = sparse.n, planes = C + 1;
  const int64_t listed = sparse.x.size();
  if (listed == 0) return;
  const CellLayout& l = sparse.layout;
  const std::vector<int64_t>& start = sparse.cells.start;
  const T* xs = sparse.x.data();
  const T* ys = sparse.y.data();
  const int64_t chunks =
      std::clamp<int64_t>((n + kMembersPerChunk - 1) / kMembersPerChunk, 1, kMaxChunks);
  const int64_t per_chunk = (n + chunks - 1) / chunks;
  // Chunk c's planes [Z | A_0 | ... | A_C-1], `listed` entries each, in list order.
  UninitVector<T> acc(chunks * planes * listed);
  parallel_for(pool, chunks, [&](int64_t c) {
    T* z = acc.data() + c * planes * listed;
    std::fill(z, z + planes * listed, T(0));
    T w[kBlock];
    const auto pending = std::make_unique<PendingPairs<T>>();
    BatchCells cells;
    int64_t index[kBlockPoints];
    const int64_t end = std::min(n, (c + 1) * per_chunk);
    for (int64_t first = c * per_chunk; first < end; first += kBlockPoints) {
      const int64_t span = std::min(end - first, kBlockPoints);
      const int64_t batch = near_points(sparse.near, sparse.points, first, span, index);
      if (batch == 0) continue;
      if (batch == span) {
        point_block(sparse.points, sparse.scale, first, batch, sparse.truncate, pending->points);
      } else {
        // The near points' coordinates and factors side by side, so that
        // point_block's vector loop reads them in order.
        T xy[2 * kBlockPoints], factors[3 * kBlockPoints];
        for (int64_t k = 0; k < batch; ++k) {
          std::copy_n(sparse.points + 2 * index[k], 2, xy + 2 * k);
          std::copy_n(sparse.scale + 3 * index[k], 3, factors + 3 * k);
        }
        point_block(xy, factors, 0, batch, sparse.truncate, pending->points);
      }
      batch_cells(l, pending->points, batch, cells);
      for (int32_t slot = 0; slot < batch; ++slot) {
        const int64_t i = index[slot];
        const int64_t x_lo = cells.x_lo[slot], x_hi = cells.x_hi[slot];
        const int64_t y_lo = cells.y_lo[slot], y_hi = cells.y_hi[slot];
        if (x_lo > x_hi || y_lo > y_hi) continue;  // no cell: an empty box
        // The usual box, one or two rows of short lists: both rows appended
        // without branches, the second empty unless the box is two rows
        // tall. Boxes of one row or two, mixed at random, mispredicted once
        // per point or so.
        if (y_hi - y_lo <= 1) {
          const bool tall = y_hi > y_lo;
          const int64_t* row0 = start.data() + y_lo * l.cells_x;
          const int64_t* row1 = row0 + (tall ? l.cells_x : 0);
          const int64_t a0 = row0[x_lo], b0 = row0[x_hi + 1];
          const int64_t a1 = row1[x_lo], b1 = tall ? row1[x_hi + 1] : a1;
          if (b0 - a0 < kRunLanes && b1 - a1 < kRunLanes) {
            pending->append_row(slot, a0, b0);
            pending->append_row(slot, a1, b1);
            if (pending->full()) add_pending(*pending, xs, ys, values, index, C, listed, z);
            continue;
          }
        }
        const Gaussian<T> g = pending->points.get(slot);
        for (int64_t ky = y_lo; ky <= y_hi; ++ky) {
          // The row's cells are consecutive, and so are their lists.
          const int64_t row = ky * l.cells_x;
          const int64_t k1 = start[row + x_hi + 1];
          int64_t k0 = start[row + x_lo];
          if (k1 - k0 < kRunLanes) {
            pending->append_row(slot, k0, k1);
            if (pending->full()) add_pending(*pending, xs, ys, values, index, C, listed, z);
            continue;
          }
          // A long row: the earlier pairs first, so each query's sum stays in point order.
          add_pending(*pending, xs, ys, values, index, C, listed, z);
          const T* v = values + i * C;
          for (; k0 < k1; k0 += kBlock) {
            const int64_t count = std::min(kBlock, k1 - k0);
            run_weights(g, xs + k0, ys + k0, count, w);
            add_run(w, count, v, C, listed, z + k0);
          }
        }
      }
      add_pending(*pending, xs, ys, values, index, C, listed, z);
    }
  });
  // The chunks' sums, added into chunk 0's planes in chunk order from +0,
  // in unit-stride vector loops: the additions of a loop over the chunks
  // per query (+0 first, which turns a -0 that flush-to-zero, on in XLA's
  // threads, may leave in a chunk's sum into +0), whose reads 16 KiB apart
  // took a twentieth of a 1,024-query call.
  const int64_t entries = planes * listed;
  T* total = acc.data();
  parallel_for(pool, (entries + kMembersPerChunk - 1) / kMembersPerChunk, [&](int64_t b) {
    const int64_t lo = b * kMembersPerChunk, hi = std::min(entries, lo + kMembersPerChunk);
#pragma omp simd
    for (int64_t e = lo; e < hi; ++e) total[e] = T(0) + total[e];
    for (int64_t c = 1; c < chunks; ++c) {
      const T* part = acc.data() + c * entries;
#pragma omp simd
      for (int64_t e = lo; e < hi; ++e) total[e] += part[e];
    }
  });
  const uint32_t* items = sparse.cells.items.data();
  parallel_over(pool, listed, [&](int64_t k) {
    const int64_t q = items[k];
    const T z = total[k];
    if (density) density[q] = z;
    for (int64_t ch = 0; ch < C; ++ch) out[q * C + ch] = normalise(total[(ch + 1) * listed + k], z);
  });
}

#define JAX_GMM_INSTANTIATE(T)                                                                 \
  template void sparse_queries_forward<T>(ThreadPool&, const SparseQueries<T>&, const T*,     \
                                          int64_t, int64_t, T*, T*);
JAX_GMM_INSTANTIATE(float)
JAX_GMM_INSTANTIATE(double)
#undef JAX_GMM_INSTANTIATE

}  // namespace JAX_GMM_ISA
}  // namespace jax_gmm
