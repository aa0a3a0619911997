// Axis factors exp(exponent * d^2) at unit steps d = d0, d0 + 1, ...: the CPU
// kernels walk bounding boxes, so one point needs a row and a column of them.
#pragma once

#include <cmath>
#include <cstdint>

#include "gmm_math.h"

namespace jax_gmm {

// With f(d) = exp(a d^2), f(d + 2) = f(d) * exp(a (4d + 4)) and that ratio
// steps by exp(8a): two interleaved chains (even and odd offsets) of one
// multiply each, so a row costs five exponentials, not one per pixel, and the
// chains overlap their latencies. Seeds are computed in T's precision (expf
// for float: one ulp); the steps run in double, so the error does not grow.
// Where an intermediate could overflow (sigma far below a pixel) or the row is
// short, take exp directly.
template <typename T>
void axis_factors(T exponent, T d0, int64_t count, T* out) {
  const double a = exponent;
  const double reach = std::fabs(static_cast<double>(d0)) + static_cast<double>(count) + 2.0;
  if (count < 6 || !(-a * reach * reach * 4.0 < 600.0)) {
    for (int64_t k = 0; k < count; ++k) out[k] = axis_factor(exponent, d0 + T(k));
    return;
  }
  const T d1 = d0 + T(1);
  double even = gmm_exp(exponent * (d0 * d0)), odd = gmm_exp(exponent * (d1 * d1));
  double even_ratio = gmm_exp(exponent * (T(4) * d0 + T(4)));
  double odd_ratio = gmm_exp(exponent * (T(4) * d1 + T(4)));
  const double step = gmm_exp(T(8) * exponent);
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

}  // namespace jax_gmm
