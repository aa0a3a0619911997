// Per-pair arithmetic of GMM interpolation, shared by the CPU and CUDA kernels.
//
// Every kernel computes, for a query q and a point i with centre mu_i, width
// sigma_i and values c_i,
//   w_iq = norm_i * exp(exponent_i * |q - mu_i|^2)   if |q - mu_i|^2 <= radius2_i
//   norm_i = 1 / (2 pi sigma_i^2),  exponent_i = -1 / (2 sigma_i^2),
// and out(q) = sum_i c_i w_iq / Z(q), Z(q) = sum_i w_iq. Keeping the formulas
// here means the CPU tests check exactly the arithmetic the GPU runs.
#pragma once

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define GMM_HD __host__ __device__ __forceinline__
#else
#define GMM_HD inline
#endif

namespace jax_gmm {

// Clamps that keep extreme sigma finite. The normaliser is clamped so that a
// sum of millions of weights cannot overflow (float: sigma outside about
// [4e-16, 4e14]; double: [4e-151, 4e149]); the exponent is clamped so that
// exponent * 0 is never -inf * 0. Inside the clamps the formulas are exact.
template <typename T>
struct Clamp;
template <>
struct Clamp<float> {
  static constexpr float norm_max = 1e30f;
  static constexpr float norm_min = 1e-30f;
  static constexpr float exponent_min = -1e37f;
  static constexpr float epsilon = 1.1920929e-7f;
  static constexpr float max = 3.40282347e38f;
};
template <>
struct Clamp<double> {
  static constexpr double norm_max = 1e300;
  static constexpr double norm_min = 1e-300;
  static constexpr double exponent_min = -1e306;
  static constexpr double epsilon = 2.220446049250313e-16;
  static constexpr double max = 1.7976931348623157e308;
};

GMM_HD float gmm_exp(float v) { return expf(v); }
GMM_HD double gmm_exp(double v) { return exp(v); }

// One point's constants, computed once per point and reused for every pair.
template <typename T>
struct Gaussian {
  T x, y;        // centre, pixels
  T sigma;       // width, pixels
  T radius2;     // (truncate * sigma)^2: a pair counts iff d2 <= radius2
  T box_radius;  // radius widened by a few ulps, for bounding boxes
  T exponent;    // -1 / (2 sigma^2), clamped
  T norm;        // 1 / (2 pi sigma^2), clamped
  bool norm_clamped;
  bool exponent_clamped;
  bool valid;  // finite centre, finite positive sigma
};

template <typename T>
GMM_HD bool is_finite(T v) {
  return v - v == T(0);  // false for NaN and +-inf
}

template <typename T>
GMM_HD Gaussian<T> make_gaussian(T x, T y, T sigma, T truncate) {
  Gaussian<T> g;
  g.x = x;
  g.y = y;
  g.sigma = sigma;
  g.valid = is_finite(x) && is_finite(y) && is_finite(sigma) && sigma > T(0);
  if (!g.valid) {
    g.radius2 = T(-1);  // no d2 satisfies d2 <= -1
    g.box_radius = T(0);
    g.exponent = T(0);
    g.norm = T(0);
    g.norm_clamped = g.exponent_clamped = true;
    return g;
  }
  const T radius = truncate * sigma;
  g.radius2 = radius * radius;
  // A pixel whose centre rounds just inside the cutoff must not fall outside
  // the box: widen it by a relative margin far above rounding error.
  const T margin = T(64) * Clamp<T>::epsilon;
  const T ax = x < T(0) ? -x : x;
  const T ay = y < T(0) ? -y : y;
  g.box_radius = radius + margin * (radius + (ax > ay ? ax : ay) + T(1));
  const T two_var = T(2) * sigma * sigma;
  const T exponent = T(-1) / two_var;  // -inf when sigma^2 underflows
  g.exponent_clamped = !(exponent > Clamp<T>::exponent_min);
  g.exponent = g.exponent_clamped ? Clamp<T>::exponent_min : exponent;
  const T norm = T(1) / (T(3.14159265358979323846) * two_var);
  g.norm_clamped = !(norm < Clamp<T>::norm_max) || !(norm > Clamp<T>::norm_min);
  g.norm = norm < Clamp<T>::norm_min   ? Clamp<T>::norm_min
           : norm > Clamp<T>::norm_max ? Clamp<T>::norm_max
                                       : norm;
  return g;
}

// Gaussian factor of one axis: exp(exponent * d^2). The 2D weight is
// norm * axis_factor(dx) * axis_factor(dy), which lets kernels that walk a
// point's bounding box take O(radius) exponentials instead of O(radius^2).
template <typename T>
GMM_HD T axis_factor(T exponent, T d) {
  return gmm_exp(exponent * (d * d));
}

// Weight of one pair given the offset q - mu; zero outside the cutoff.
template <typename T>
GMM_HD T pair_weight(const Gaussian<T>& g, T dx, T dy) {
  const T d2 = dx * dx + dy * dy;
  return d2 <= g.radius2 ? g.norm * gmm_exp(g.exponent * d2) : T(0);
}

// out(q) = A(q) / Z(q), or 0 where no weight reached q.
template <typename T>
GMM_HD T normalise(T weighted_sum, T density) {
  return density > T(0) ? weighted_sum / density : T(0);
}

// Backward, per query. With cotangents g (on out, C channels) and h (on Z),
//   dL/dw_iq = g_q . (c_i - out_q) / Z_q + h_q = (g_q . c_i - offset_q) / Z_q,
//   offset_q = g_q . out_q - Z_q h_q.
// Kernels keep g_q, offset_q and 1/Z_q apart and form the ratio w_iq / Z_q,
// which lies in [0, 1], per pair: pre-scaling g_q by 1/Z_q would overflow
// where Z_q is tiny (a wide cutoff's tails) and turn into inf - inf = NaN.
// 1/Z, 0 where Z = 0, and finite even for a subnormal Z (so that w * (1/Z)
// is never inf * 0).
template <typename T>
GMM_HD T inverse_density(T density) {
  const T inv = T(1) / density;
  return density > T(0) ? (inv < Clamp<T>::max ? inv : Clamp<T>::max) : T(0);
}

// Writes one query's folded cotangents: g_ch at folded[ch * stride], offset
// at folded[C * stride] and 1/Z at folded[(C + 1) * stride], so callers choose
// the layout (channel planes on the CPU grid, one record per query elsewhere).
template <typename T>
GMM_HD void fold_query(const T* d_out, const T* out, T density, T d_density, int64_t channels,
                       T* folded, int64_t stride) {
  T offset = -density * d_density;
  for (int64_t ch = 0; ch < channels; ++ch) {
    folded[ch * stride] = d_out[ch];
    offset += d_out[ch] * out[ch];
  }
  folded[channels * stride] = offset;
  folded[(channels + 1) * stride] = inverse_density(density);
}

// w / Z for one pair, in [0, 1] (0 outside the cutoff, where w = 0); the cap
// absorbs rounding and a capped 1/Z. Both factors are finite, so no NaN.
template <typename T>
GMM_HD T weight_ratio(T weight, T inv_density) {
  const T r = weight * inv_density;
  return r < T(1) ? r : T(1);
}

// Backward, per pair: u = w * dL/dw = ratio * (g . c_i - offset), the factor
// shared by the point and query cotangents; dL/dc_i += ratio * g.
// The per-point sums of u, u*(q - mu_i) and u*d2 go to finish_point_grad.
template <typename T>
GMM_HD T pair_cotangent(T ratio, T g_dot_values, T offset) {
  return ratio * (g_dot_values - offset);
}

// 1 / sigma^2 as it enters the position gradients: d w / d mu = w (q - mu) / sigma^2.
// Zero when the exponent is clamped, where w no longer depends on mu.
template <typename T>
GMM_HD T position_gain(const Gaussian<T>& g) {
  return g.exponent_clamped ? T(0) : T(-2) * g.exponent;
}

// Per pair, at the query: dL/dq -= u (q - mu_i) / sigma_i^2, with (dx, dy) = q - mu_i.
// Skipped for u = 0, where a clamped gain could otherwise make 0 * inf.
template <typename T>
GMM_HD void add_query_grad(const Gaussian<T>& g, T u, T dx, T dy, T* gx, T* gy) {
  if (u != T(0)) {
    const T gain = position_gain(g);
    *gx -= u * gain * dx;
    *gy -= u * gain * dy;
  }
}

// Per-point gradients from the sums over its footprint:
//   sum_u = sum_q u_iq, sum_u_dx = sum_q u_iq (q_x - mu_x), likewise dy,
//   sum_u_d2 = sum_q u_iq |q - mu|^2.
// d w / d sigma = w (d2 / sigma^3 - 2 / sigma); each term is dropped where its
// factor is clamped, since there the clamped value does not depend on sigma.
template <typename T>
GMM_HD void finish_point_grad(const Gaussian<T>& g, T sum_u, T sum_u_dx, T sum_u_dy,
                              T sum_u_d2, T* d_x, T* d_y, T* d_sigma) {
  if (!g.valid) {
    *d_x = *d_y = *d_sigma = T(0);
    return;
  }
  const T gain = position_gain(g);
  *d_x = gain * sum_u_dx;
  *d_y = gain * sum_u_dy;
  const T spread = g.exponent_clamped ? T(0) : gain * sum_u_d2;
  const T scale = g.norm_clamped ? T(0) : T(2) * sum_u;
  *d_sigma = (spread - scale) / g.sigma;
}

}  // namespace jax_gmm
