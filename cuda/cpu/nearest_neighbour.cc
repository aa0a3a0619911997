// The k-th nearest other point of every point, in a k-d tree: median splits
// along the wider side, then a depth-first search per point that skips
// every subtree that cannot hold a better neighbour (neighbours.h). A tree
// rather than a uniform grid, because it keeps O(log N) per point however
// the points cluster (a grid sized for the mean density walks O(N) points
// per query in a dense cluster, or from a far outlier). Exact, and
// independent of the thread count: ties are broken by index.
#include <algorithm>
#include <cmath>
#include <vector>

#include "binning.h"
#include "kernels.h"
#include "neighbours.h"

namespace jax_gmm {
namespace {

// Points per leaf: enough to amortise a node's bookkeeping.
constexpr int64_t kLeafSize = 8;

struct Node {
  Rect box;           // of the node's points
  int64_t min_index;  // their smallest index
  int64_t begin, end; // their slots in KdTree::order
  int64_t left, right; // children, -1 for a leaf
};

template <typename T>
class KdTree {
 public:
  KdTree(const T* points, int64_t n) : points_(points) {
    for (int64_t i = 0; i < n; ++i) {
      if (std::isfinite(points[2 * i]) && std::isfinite(points[2 * i + 1])) order_.push_back(i);
    }
    if (!order_.empty()) build(0, static_cast<int64_t>(order_.size()));
  }

  // The k nearest other points of point i, best first, into best[]; returns
  // how many there are (fewer than k if the tree has fewer other points).
  int search(int64_t i, int k, Neighbour* best) const {
    int count = 0;
    if (order_.empty()) return 0;
    const T x = points_[2 * i], y = points_[2 * i + 1];
    // Median splits keep the depth below 32 for N < 2^31, and the stack
    // holds at most one pending sibling per level.
    int64_t stack[64] = {0};
    int depth = 1;
    while (depth > 0) {
      const Node& node = nodes_[stack[--depth]];
      if (count == k && cannot_beat(squared_distance_to(node.box, x, y), node.min_index,
                                    best[k - 1])) {
        continue;
      }
      if (node.left < 0) {
        for (int64_t s = node.begin; s < node.end; ++s) {
          const int64_t j = order_[s];
          if (j == i) continue;
          keep_nearest(best, count, k,
                       {squared_distance(x, y, points_[2 * j], points_[2 * j + 1]), j});
        }
        continue;
      }
      // The nearer child last, so that it is searched first.
      const double left = squared_distance_to(nodes_[node.left].box, x, y);
      const double right = squared_distance_to(nodes_[node.right].box, x, y);
      const bool left_first = left <= right;
      stack[depth++] = left_first ? node.right : node.left;
      stack[depth++] = left_first ? node.left : node.right;
    }
    return count;
  }

 private:
  int64_t build(int64_t begin, int64_t end) {
    Rect box = {INFINITY, INFINITY, -INFINITY, -INFINITY};
    int64_t min_index = order_[begin];
    for (int64_t s = begin; s < end; ++s) {
      const int64_t j = order_[s];
      const double px = points_[2 * j], py = points_[2 * j + 1];
      box = {std::min(box.lo_x, px), std::min(box.lo_y, py), std::max(box.hi_x, px),
             std::max(box.hi_y, py)};
      min_index = std::min(min_index, j);
    }
    const int64_t id = static_cast<int64_t>(nodes_.size());
    nodes_.push_back({box, min_index, begin, end, -1, -1});
    if (end - begin <= kLeafSize) return id;
    // Split at the median of the wider side, ties by index: coincident
    // points are then split by index, so that min_index lets the search
    // skip all but O(log N) subtrees of a cluster of them.
    const int axis = box.hi_y - box.lo_y > box.hi_x - box.lo_x ? 1 : 0;
    const int64_t mid = begin + (end - begin) / 2;
    std::nth_element(order_.begin() + begin, order_.begin() + mid, order_.begin() + end,
                     [&](int64_t a, int64_t b) {
                       const T pa = points_[2 * a + axis], pb = points_[2 * b + axis];
                       return pa < pb || (pa == pb && a < b);
                     });
    const int64_t left = build(begin, mid);
    const int64_t right = build(mid, end);
    nodes_[id].left = left;
    nodes_[id].right = right;
    return id;
  }

  const T* points_;
  std::vector<int64_t> order_;  // the finite points, grouped by node
  std::vector<Node> nodes_;     // nodes_[0] is the root
};

}  // namespace

template <typename T>
void kth_nearest(ThreadPool& pool, const T* points, int64_t n, int k, int32_t* index) {
  const KdTree<T> tree(points, n);
  parallel_over(pool, n, [&](int64_t i) {
    index[i] = static_cast<int32_t>(i);  // no neighbour: itself, at distance 0
    if (!(std::isfinite(points[2 * i]) && std::isfinite(points[2 * i + 1]))) return;
    Neighbour best[kMaxNeighbours];
    const int count = tree.search(i, k, best);
    if (count > 0) index[i] = static_cast<int32_t>(best[count - 1].index);
  });
}

template void kth_nearest<float>(ThreadPool&, const float*, int64_t, int, int32_t*);
template void kth_nearest<double>(ThreadPool&, const double*, int64_t, int, int32_t*);

}  // namespace jax_gmm
