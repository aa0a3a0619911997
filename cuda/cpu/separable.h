// Axis factors exp(-(d / sigma)^2 / 2) at unit steps d = d0, d0 + 1, ...: the CPU
// kernels walk bounding boxes, so one point needs a row and a column of them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "gmm_math.h"

namespace jax_gmm {
namespace JAX_GMM_ISA {  // one copy per instruction-set build (kernels.h)

// double: the factor at unit pixel steps is f(d) = exp(a d^2) with
// a = -inv_sigma^2 / 2, and f(d + 2) = f(d) * exp(a (4d + 4)), a ratio that
// steps by exp(2a)^4: two interleaved chains (even and odd offsets) of one
// multiply each, so a row costs five exponentials instead of one per pixel,
// and the chains overlap their latencies. The recurrence loses about one ulp
// per step, far below the tests' tolerance. Where an intermediate could
// overflow (sigma far below a pixel, or offsets beyond double's range),
// underflow (sigma beyond about 1e154) or the row is short, it takes
// exp(-m2 / 2) directly. (float takes every factor
// directly, with exp_nonpositive, in footprint.h's loop.)
template <typename T>
void axis_factors(T inv_sigma, T d0, const T* m2, int64_t count, T* out) {
  const double a = -0.5 * double(inv_sigma) * double(inv_sigma);
  const double reach = std::fabs(static_cast<double>(d0)) + static_cast<double>(count) + 2.0;
  // a subnormal (inv_sigma below about 1e-154) would read as 0 in a thread
  // that flushes denormals, and every factor would come out 1.
  if (count < 6 || !(-a * reach * reach * 4.0 < 600.0) || !(-a >= Clamp<double>::tiny)) {
    for (int64_t k = 0; k < count; ++k) out[k] = axis_factor(m2[k]);
    return;
  }
  const double d1 = double(d0) + 1.0;
  double even = std::exp(a * (double(d0) * d0)), odd = std::exp(a * (d1 * d1));
  double even_ratio = std::exp(a * (4.0 * d0 + 4.0));
  double odd_ratio = std::exp(a * (4.0 * d1 + 4.0));
  const double step = std::exp(8.0 * a);
  int64_t k = 0;
  for (; k + 1 < count; k += 2) {
    out[k] = static_cast<T>(even);
    out[k + 1] = static_cast<T>(odd);
    even *= even_ratio;
    odd *= odd_ratio;
    even_ratio *= step;
    odd_ratio *= step;
  }
  if (k < count) out[k] = static_cast<T>(even);
}

// Constants of exp_nonpositive per type: ln2 split in two parts so that
// n ln2_hi is exact, the Taylor degree, and where the result leaves the
// normal range.
template <typename T>
struct ExpParts;
template <>
struct ExpParts<float> {
  using Bits = int32_t;
  static constexpr float kLog2e = 1.44269504f, kLn2Hi = 0.693145751953125f,
                         kLn2Lo = 1.42860677e-6f, kLowest = -87.0f;
  static constexpr int kDegree = 6, kMinExponent = -126, kBias = 127, kMantissa = 23;
};
template <>
struct ExpParts<double> {
  using Bits = int64_t;
  static constexpr double kLog2e = 1.4426950408889634, kLn2Hi = 6.93147180369123816490e-01,
                          kLn2Lo = 1.90821492927058770002e-10, kLowest = -708.0;
  static constexpr int kDegree = 13, kMinExponent = -1022, kBias = 1023, kMantissa = 52;
};

constexpr double factorial(int k) { return k <= 1 ? 1.0 : k * factorial(k - 1); }

// exp_nonpositive's Taylor coefficients 1 / k!, k = 0 .. kDegree, each
// rounded once to T at compile time. Written as T(1) / T(factorial(k)) in
// the Horner loop they were folded for float, but for double's 13 terms GCC
// kept a call to factorial and a division per term in every pair's
// exponential, and the loops around it scalar: float64 tilted points on
// 512 x 512 from 16,384 points took 39-53 ms forward against 5.8-6.5 ms
// now, 78-103 against 15-16 ms for value_and_grad, and 262,144 float64
// queries 27-35 against 15-16 ms (minimum of calls, three alternated
// processes; the same bits). The loop is unrolled so that the pair loops
// around it stay vector loops.
template <typename T>
struct TaylorTerms {
  static constexpr int kDegree = ExpParts<T>::kDegree;
  T inverse_factorial[kDegree + 1] = {};
  constexpr TaylorTerms() {
    for (int k = 0; k <= kDegree; ++k) inverse_factorial[k] = T(1) / T(factorial(k));
  }
};
template <typename T>
inline constexpr TaylorTerms<T> kTaylorTerms{};

// exp(x) for x <= 0, written so that loops over it vectorise (std::exp is a
// library call, one element at a time): x = n ln2 + r with |r| <= ln2 / 2,
// exp(r) by its Taylor polynomial, and 2^n put straight into the exponent
// bits. float: degree 6, about 2.5e-7 relative error, below float32 rounding
// of the sums it enters; double: degree 13 (truncation below 4e-18), within
// 1 ulp of std::exp over [-708, 0]. 0 below -87 (float) or -708 (double),
// where the result leaves the normal range anyway. Always inlined: a loop
// that takes two of them (footprint.h's fill_one_segment) otherwise calls it
// one element at a time.
template <typename T>
[[gnu::always_inline]] inline T exp_nonpositive(T x) {
  using P = ExpParts<T>;
  // nearest integer for x <= 0; clamped so 2^n stays normal (selects on ints,
  // unlike std::max, keep GCC from vectorising the loop)
  const int n = std::max(static_cast<int>(x * P::kLog2e - T(0.5)), P::kMinExponent);
  const T nt = static_cast<T>(n);
  const T r = (x - nt * P::kLn2Hi) - nt * P::kLn2Lo;
  const T* c = kTaylorTerms<T>.inverse_factorial;
  T p = c[P::kDegree];
#pragma GCC unroll 16
  for (int k = P::kDegree - 1; k >= 0; --k) p = p * r + c[k];
  const typename P::Bits bits = (static_cast<typename P::Bits>(n) + P::kBias) << P::kMantissa;
  T scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const T y = p * scale;
  return x >= P::kLowest ? y : T(0);
}

}  // namespace JAX_GMM_ISA
}  // namespace jax_gmm
