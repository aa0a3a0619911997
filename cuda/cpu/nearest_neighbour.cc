// The k-th nearest other point of every point on the CPU: the k-d tree of
// kd_tree.h, searched from every point in parallel.
#include "binning.h"
#include "kd_tree.h"
#include "kernels.h"

namespace jax_gmm {

template <typename T>
void kth_nearest(ThreadPool& pool, const T* points, int64_t n, int k, int32_t* index) {
  const KdTree<T> tree(points, n);
  const KdNode* nodes = tree.nodes().data();
  const int64_t node_count = static_cast<int64_t>(tree.nodes().size());
  const int64_t* order = tree.order().data();
  parallel_over(pool, n, [&](int64_t i) {
    index[i] = kth_nearest_of(nodes, node_count, order, points, i, k);
  });
}

template void kth_nearest<float>(ThreadPool&, const float*, int64_t, int, int32_t*);
template void kth_nearest<double>(ThreadPool&, const double*, int64_t, int, int32_t*);

}  // namespace jax_gmm
