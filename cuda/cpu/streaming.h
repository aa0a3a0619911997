// Stores that bypass the cache, for output the kernel writes once and never
// reads back: they skip reading each line in before overwriting it, which
// for a fresh output buffer is half the memory traffic.
#pragma once

#include <cstdint>
#include <cstring>

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

}  // namespace jax_gmm
