// parallel_for over XLA's CPU thread pool.
//
// Work is split into a fixed list of items; which thread runs an item never
// changes what the item computes, so results are bitwise reproducible. The
// calling thread takes items too and only waits for runs of items that other
// threads have already taken, so a busy (or one-thread) pool cannot deadlock
// the call.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace jax_gmm {

// Upper bound on threads per call: JAX_GMM_NUM_THREADS if set to a positive
// number (for scaling measurements), else every thread of XLA's pool.
inline int64_t thread_limit(xla::ffi::ThreadPool& pool) {
  static const int64_t env = [] {
    const char* s = std::getenv("JAX_GMM_NUM_THREADS");
    return s ? std::max<int64_t>(0, std::atoll(s)) : int64_t{0};
  }();
  const int64_t pool_threads = std::max<int64_t>(1, pool.num_threads());
  return env > 0 ? std::min(env, pool_threads) : pool_threads;
}

// Runs of items per worker in parallel_for. Below 2 * kRunsPerWorker items
// per worker (the tiles of most images, the chunks of most point sets) each
// item is taken alone, so that items of uneven cost still even out;
// thousands of small ones (the cells of arbitrary queries) are taken in runs
// of items / (workers * kRunsPerWorker), rounded down.
constexpr int64_t kRunsPerWorker = 64;

template <typename Body>
void parallel_for(xla::ffi::ThreadPool& pool, int64_t items, const Body& body) {
  const int64_t workers = std::min<int64_t>(thread_limit(pool), items);
  if (workers <= 1) {
    for (int64_t i = 0; i < items; ++i) body(i);
    return;
  }
  struct Shared {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    int64_t items, grain;
    std::function<void(int64_t)> body;
    std::mutex mutex;
    std::condition_variable finished;
  };
  auto shared = std::make_shared<Shared>();
  shared->items = items;
  shared->body = [&body](int64_t i) { body(i); };
  // Taken one at a time, thousands of small items spent their time passing
  // the counters' cache line between the cores: 4,096 queries among 4,096
  // points ran slower on two threads than on one.
  shared->grain = std::max<int64_t>(1, items / (workers * kRunsPerWorker));
  // Helpers that start after the last item was taken return at once without
  // touching `body`; the shared state outlives them through the shared_ptr.
  auto drain = [](Shared& s) {
    for (int64_t first; (first = s.next.fetch_add(s.grain)) < s.items;) {
      const int64_t last = std::min(s.items, first + s.grain);
      for (int64_t i = first; i < last; ++i) s.body(i);
      if (s.done.fetch_add(last - first) + (last - first) == s.items) {
        std::lock_guard<std::mutex> lock(s.mutex);
        s.finished.notify_all();
      }
    }
  };
  for (int64_t w = 1; w < workers; ++w) {
    pool.Schedule([shared, drain] { drain(*shared); });
  }
  drain(*shared);
  std::unique_lock<std::mutex> lock(shared->mutex);
  shared->finished.wait(lock, [&] { return shared->done.load() == items; });
}

}  // namespace jax_gmm
