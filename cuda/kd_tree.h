// The k-d tree of the k-th-nearest-neighbour search (jax_gmm.adaptive_sigma):
// built on the host, searched per point on the host (cpu/nearest_neighbour.cc)
// or on the device (gpu/nearest_neighbour.cu) by the same function, so that
// the CPU tests cover the search the GPU runs, and both return the same index.
//
// A tree rather than a uniform grid, because it keeps O(log N) per point
// however the points cluster (a grid sized for the mean density walks O(N)
// points per query in a dense cluster, or from a far outlier). Exact, and
// independent of the thread count: ties are broken by index (neighbours.h).
#pragma once

#include <math.h>
#include <stdint.h>

#include <algorithm>
#include <vector>

#include "neighbours.h"

namespace jax_gmm {

// Points per leaf: enough to amortise a node's bookkeeping.
constexpr int64_t kLeafSize = 8;
// Median splits keep the depth below 32 for N < 2^31 (the handlers' limit),
// and the search's stack holds at most one pending sibling per level.
constexpr int kMaxDepth = 64;

// Nine 8-byte fields: no padding, the same layout on host and device.
struct KdNode {
  Rect box;              // of the node's points
  int64_t min_index;     // their smallest index
  int64_t begin, end;    // their slots in the tree's order
  int64_t left, right;   // children, -1 for a leaf
};
static_assert(sizeof(KdNode) == 9 * 8, "KdNode has padding");

// The k nearest other points of point i, best first, into best[]; returns how
// many there are (fewer than k if the tree holds fewer other points). nodes[0]
// is the root; `order` lists the finite points' indices, grouped by node;
// points is (N, 2). With no nodes, there are none.
template <typename T>
GMM_HD int kd_search(const KdNode* nodes, int64_t node_count, const int64_t* order,
                     const T* points, int64_t i, int k, Neighbour* best) {
  int count = 0;
  if (node_count == 0) return 0;
  const T x = points[2 * i], y = points[2 * i + 1];
  int64_t stack[kMaxDepth];
  stack[0] = 0;
  int depth = 1;
  while (depth > 0) {
    const KdNode& node = nodes[stack[--depth]];
    if (count == k &&
        cannot_beat(squared_distance_to(node.box, x, y), node.min_index, best[k - 1])) {
      continue;
    }
    if (node.left < 0) {
      for (int64_t s = node.begin; s < node.end; ++s) {
        const int64_t j = order[s];
        if (j == i) continue;
        keep_nearest(best, count, k,
                     {squared_distance(x, y, points[2 * j], points[2 * j + 1]), j});
      }
      continue;
    }
    // The nearer child last, so that it is searched first.
    const double left = squared_distance_to(nodes[node.left].box, x, y);
    const double right = squared_distance_to(nodes[node.right].box, x, y);
    const bool left_first = left <= right;
    stack[depth++] = left_first ? node.right : node.left;
    stack[depth++] = left_first ? node.left : node.right;
  }
  return count;
}

// Point i's entry of kth_nearest's result: the index of its k-th nearest
// other finite point, the farthest if there are fewer than k, and i itself
// if there is none or point i is not finite.
template <typename T>
GMM_HD int32_t kth_nearest_of(const KdNode* nodes, int64_t node_count, const int64_t* order,
                              const T* points, int64_t i, int k) {
  if (!(is_finite(points[2 * i]) && is_finite(points[2 * i + 1]))) return int32_t(i);
  Neighbour best[kMaxNeighbours];
  const int count = kd_search(nodes, node_count, order, points, i, k, best);
  return int32_t(count > 0 ? best[count - 1].index : i);
}

// The tree of the finite points among points (N, 2), built on the host: median
// splits along the wider side of each node's box.
template <typename T>
class KdTree {
 public:
  KdTree(const T* points, int64_t n) : points_(points) {
    for (int64_t i = 0; i < n; ++i) {
      if (is_finite(points[2 * i]) && is_finite(points[2 * i + 1])) order_.push_back(i);
    }
    if (!order_.empty()) build(0, static_cast<int64_t>(order_.size()));
  }

  const std::vector<KdNode>& nodes() const { return nodes_; }
  const std::vector<int64_t>& order() const { return order_; }

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
  std::vector<KdNode> nodes_;   // nodes_[0] is the root
};

}  // namespace jax_gmm
