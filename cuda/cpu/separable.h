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

// exp(x) for x <= 0 in float, written so that loops over it vectorise
// (about 2.5e-7 relative error, below float32 rounding of the sums it enters):
// x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two parts so n ln2 is exact),
// exp(r) by its degree-6 Taylor polynomial (truncation below 1.2e-7
// relative), and 2^n put straight into the exponent bits. 0 below -87, where
// float exp underflows anyway.
inline float exp_nonpositive(float x) {
  // nearest integer for x <= 0; clamped so 2^n stays a normal float (selects on
  // ints, unlike std::max, keep GCC from vectorising the loop)
  const int n = std::max(static_cast<int>(x * 1.44269504f - 0.5f), -126);
  const float nf = static_cast<float>(n);
  const float r = (x - nf * 0.693145751953125f) - nf * 1.42860677e-6f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const float y = p * scale;
  return x >= -87.0f ? y : 0.0f;
}

// The same for double, so that the loops of tilted points and of arbitrary
// queries vectorise in float64 too (std::exp is a library call, one pixel at
// a time: 4-5x float's time, where 2x is the width's due). The same split of
// ln2, with n ln2_hi exact for |n| < 2^21; exp(r) by its degree-13 Taylor
// polynomial (truncation below 4e-18 relative, so within a few ulp of
// std::exp: Horner's rounding); 0 below -708, where double exp leaves the
// normal range (the weights there are below 1e-307).
inline double exp_nonpositive(double x) {
  const int n = std::max(static_cast<int>(x * 1.4426950408889634 - 0.5), -1022);
  const double nd = static_cast<double>(n);
  const double r = (x - nd * 6.93147180369123816490e-01) - nd * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;  // 1 / 13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const int64_t bits = (static_cast<int64_t>(n) + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const double y = p * scale;
  return x >= -708.0 ? y : 0.0;
}

}  // namespace JAX_GMM_ISA
}  // namespace jax_gmm
