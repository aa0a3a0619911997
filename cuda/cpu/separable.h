// Axis factors exp(exponent * d^2) at unit steps d = d0, d0 + 1, ...: the CPU
// kernels walk bounding boxes, so one point needs a row and a column of them.
#pragma once

#include <cmath>
#include <cstdint>

#include "gmm_math.h"

namespace jax_gmm {

// With f(d) = exp(a d^2), f(d + 1) = f(d) * exp(a (2d + 1)) and the ratio
// itself steps by exp(2a): three exponentials per row instead of one per
// pixel. Run in double, the recurrence loses about one ulp of double per step,
// far below float32 and the float64 tests' tolerance. Where the intermediate
// exp(a (2d + 1)) could overflow (sigma far below a pixel), take exp directly.
template <typename T>
void axis_factors(T exponent, T d0, int64_t count, T* out) {
  const double a = exponent;
  const double reach = std::fabs(static_cast<double>(d0)) + static_cast<double>(count) + 1.0;
  if (!(-a * reach * reach * 2.0 < 600.0)) {
    for (int64_t k = 0; k < count; ++k) out[k] = axis_factor(exponent, d0 + T(k));
    return;
  }
  const double d = d0;
  double f = std::exp(a * d * d);
  double ratio = std::exp(a * (2.0 * d + 1.0));
  const double step = std::exp(2.0 * a);
  for (int64_t k = 0; k < count; ++k) {
    out[k] = static_cast<T>(f);
    f *= ratio;
    ratio *= step;
  }
}

}  // namespace jax_gmm
