// Stores that bypass the cache, for output the kernel writes once and never
// reads back: they skip reading each line in before overwriting it, which
// for a fresh output buffer is half the memory traffic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace jax_gmm {

// dst[0 .. n) = src[0 .. n), streaming the 16-byte aligned part of dst.
template <typename T>
void stream_copy(const T* src, int64_t n, T* dst) {
#if defined(__SSE2__)
  constexpr int64_t kPerVector = 16 / sizeof(T);
  int64_t head = (-(reinterpret_cast<uintptr_t>(dst) / sizeof(T))) & (kPerVector - 1);
  if (reinterpret_cast<uintptr_t>(dst) % sizeof(T) != 0 || head > n) head = n;
  std::memcpy(dst, src, head * sizeof(T));
  int64_t k = head;
  for (; k + kPerVector <= n; k += kPerVector) {
    if constexpr (sizeof(T) == 4) {
      _mm_stream_ps(reinterpret_cast<float*>(dst + k), _mm_loadu_ps(reinterpret_cast<const float*>(src + k)));
    } else {
      _mm_stream_pd(reinterpret_cast<double*>(dst + k), _mm_loadu_pd(reinterpret_cast<const double*>(src + k)));
    }
  }
  std::memcpy(dst + k, src + k, (n - k) * sizeof(T));
#else
  std::memcpy(dst, src, n * sizeof(T));
#endif
}

// Orders this thread's streaming stores before its later stores (and so
// before it reports its work done).
inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// Outputs from this size up get huge pages: glibc serves smaller blocks from
// its heap once they have been freed, so they come back without page faults,
// while larger ones are fresh mappings on every call.
constexpr size_t kHugePagesFrom = size_t{32} << 20;

// Asks Linux to back the whole 2 MiB pages of a buffer of at least
// `at_least` bytes (outputs: kHugePagesFrom) with transparent huge pages (honoured where
// /sys/kernel/mm/transparent_hugepage/enabled is "madvise" or "always").
// The first write to each 4 KiB page of a fresh mapping faults, and for a
// 4096 x 4096 x 3 render the faults cost more than the rendering; a 2 MiB
// page faults once. Scratch that is read at random asks from any size
// (at_least 0): a 2 MiB page also spares a TLB miss per read. Only a hint:
// the buffer's contents and ownership are unchanged. JAX_GMM_HUGE_PAGES=0
// turns it off.
inline void advise_huge_pages(void* data, size_t bytes, size_t at_least = kHugePagesFrom) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  static const bool enabled = [] {
    const char* s = std::getenv("JAX_GMM_HUGE_PAGES");
    return !(s && s[0] == '0');
  }();
  if (!enabled || bytes < at_least) return;
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data, (void)bytes;
#endif
}

}  // namespace jax_gmm
