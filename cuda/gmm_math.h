// Per-pair arithmetic of GMM interpolation, shared by the CPU and CUDA kernels.
//
// Every kernel computes, for a query q and a point i with centre mu_i, width
// sigma_i and values c_i, the whitened offset e = (q - mu_i) / sigma_i and
//   m2 = e_x^2 + e_y^2,  w_iq = norm_i * exp(-m2 / 2)   if m2 <= truncate^2,
//   norm_i = 1 / (2 pi sigma_i^2),
// and out(q) = sum_i c_i w_iq / Z(q), Z(q) = sum_i w_iq. Working in units of
// sigma keeps every intermediate finite for any finite sigma (|q - mu|^2 and
// (truncate sigma)^2 can overflow; e^2 only past the cutoff, where the pair is
// dropped anyway). Keeping the formulas here means the CPU tests check exactly
// the arithmetic the GPU runs.
#pragma once

#include <math.h>
#include <stdint.h>

#include <type_traits>

#if defined(__CUDACC__)
#define GMM_HD __host__ __device__ __forceinline__
#else
#define GMM_HD inline
#endif

namespace jax_gmm {

// Limits that keep extreme sigma finite. The normaliser is clamped so that a
// sum of millions of weights cannot overflow (float: sigma outside about
// [4e-16, 4e14]; double: [4e-151, 4e149]); 1 / sigma is capped so that the
// position gradients, which carry 1 / sigma^2, stay finite (float: sigma
// below 1e-18; double: 1e-150). A point needs sigma >= `tiny`, the smallest
// normal number, whatever the denormal mode of the thread.
template <typename T>
struct Clamp;
template <>
struct Clamp<float> {
  static constexpr float norm_max = 1e30f;
  static constexpr float norm_min = 1e-30f;
  static constexpr float inv_sigma_max = 1e18f;
  static constexpr float epsilon = 1.1920929e-7f;
  static constexpr float tiny = 1.17549435e-38f;
  static constexpr float max = 3.40282347e38f;
};
template <>
struct Clamp<double> {
  static constexpr double norm_max = 1e300;
  static constexpr double norm_min = 1e-300;
  static constexpr double inv_sigma_max = 1e150;
  static constexpr double epsilon = 2.220446049250313e-16;
  static constexpr double tiny = 2.2250738585072014e-308;
  static constexpr double max = 1.7976931348623157e308;
};

GMM_HD float gmm_exp(float v) { return expf(v); }
GMM_HD double gmm_exp(double v) { return exp(v); }

// Products and sums rounded on their own, never fused into a multiply-add:
// the pair test m2 <= truncate^2 must decide the same on every platform and
// in every kernel. nvcc fuses by default, hence the intrinsics; the CPU
// kernels are compiled with -ffp-contract=off (CMakeLists.txt).
#if defined(__CUDA_ARCH__)
GMM_HD float mul_rn(float a, float b) { return __fmul_rn(a, b); }
GMM_HD double mul_rn(double a, double b) { return __dmul_rn(a, b); }
GMM_HD float add_rn(float a, float b) { return __fadd_rn(a, b); }
GMM_HD double add_rn(double a, double b) { return __dadd_rn(a, b); }
#else
template <typename T>
GMM_HD T mul_rn(T a, T b) { return a * b; }
template <typename T>
GMM_HD T add_rn(T a, T b) { return a + b; }
#endif

// One point's constants, computed once per point and reused for every pair.
// Eight words with no padding, every one written by make_gaussian, so that
// copying a record never reads an uninitialised byte.
template <typename T>
struct Gaussian {
  using Flags = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;
  static constexpr Flags kValid = 1;         // finite centre, finite sigma >= Clamp<T>::tiny
  static constexpr Flags kNormClamped = 2;   // norm no longer depends on sigma
  static constexpr Flags kScaleClamped = 4;  // inv_sigma capped: w no longer depends on mu

  T x, y;        // centre, pixels
  T sigma;       // width, pixels
  T inv_sigma;   // 1 / sigma, capped at Clamp<T>::inv_sigma_max
  T norm;        // 1 / (2 pi sigma^2), clamped
  T cutoff2;     // truncate^2: a pair counts iff m2 <= cutoff2; -1 for an invalid point
  T box_radius;  // truncate * sigma widened by a few ulps, for bounding boxes
  Flags flags;

  GMM_HD bool valid() const { return flags & kValid; }
  GMM_HD bool norm_clamped() const { return flags & kNormClamped; }
  GMM_HD bool scale_clamped() const { return flags & kScaleClamped; }
};
static_assert(sizeof(Gaussian<float>) == 8 * sizeof(float), "Gaussian<float> has padding");
static_assert(sizeof(Gaussian<double>) == 8 * sizeof(double), "Gaussian<double> has padding");

template <typename T>
GMM_HD bool is_finite(T v) {
  return v - v == T(0);  // false for NaN and +-inf
}

template <typename T>
GMM_HD Gaussian<T> make_gaussian(T x, T y, T sigma, T truncate) {
  using G = Gaussian<T>;
  G g;
  g.x = x;
  g.y = y;
  g.sigma = sigma;
  if (!(is_finite(x) && is_finite(y) && is_finite(sigma) && sigma >= Clamp<T>::tiny)) {
    g.inv_sigma = T(0);
    g.norm = T(0);
    g.cutoff2 = T(-1);  // no m2 satisfies m2 <= -1
    g.box_radius = T(0);
    g.flags = G::kNormClamped | G::kScaleClamped;
    return g;
  }
  g.flags = G::kValid;
  const T inv = T(1) / sigma;  // finite: sigma is normal
  const T norm = mul_rn(inv, inv) * T(0.15915494309189533577);  // 1 / (2 pi)
  if (!(norm < Clamp<T>::norm_max) || !(norm > Clamp<T>::norm_min)) g.flags |= G::kNormClamped;
  g.norm = norm < Clamp<T>::norm_min   ? Clamp<T>::norm_min
           : norm > Clamp<T>::norm_max ? Clamp<T>::norm_max
                                       : norm;
  if (inv > Clamp<T>::inv_sigma_max) g.flags |= G::kScaleClamped;
  g.inv_sigma = inv > Clamp<T>::inv_sigma_max ? Clamp<T>::inv_sigma_max : inv;
  g.cutoff2 = mul_rn(truncate, truncate);
  // A pixel whose centre rounds just inside the cutoff must not fall outside
  // the box: widen it by a relative margin far above rounding error. (With a
  // capped inv_sigma the cutoff is truncate / inv_sigma, below this radius.)
  const T radius = mul_rn(truncate, sigma);  // inf beyond float's range: boxes clamp it
  const T margin = T(64) * Clamp<T>::epsilon;
  const T ax = x < T(0) ? -x : x;
  const T ay = y < T(0) ? -y : y;
  // Rounded op by op, so that boxes, and the cell layout that averages them,
  // are the same bits on every platform.
  const T reach = add_rn(add_rn(radius, ax > ay ? ax : ay), T(1));
  g.box_radius = add_rn(radius, mul_rn(margin, reach));
  return g;
}

// The centre of pixel `index` along an axis, and its offset from `centre`:
// every kernel forms a pixel's offset this way, so that all of them (CPU and
// GPU, forward and backward) feed the same numbers to the pair test.
template <typename T>
GMM_HD T pixel_offset(int64_t index, T centre) {
  return (T(index) + T(0.5)) - centre;
}

// The whitened offset d / sigma along one axis.
template <typename T>
GMM_HD T whiten(const Gaussian<T>& g, T d) {
  return mul_rn(d, g.inv_sigma);
}

// (d / sigma)^2 for an offset d along one axis.
template <typename T>
GMM_HD T axis_m2(const Gaussian<T>& g, T d) {
  const T e = whiten(g, d);
  return mul_rn(e, e);
}

// m2 of the pair at offset (dx, dy) = q - mu.
template <typename T>
GMM_HD T pair_m2(const Gaussian<T>& g, T dx, T dy) {
  return add_rn(axis_m2(g, dx), axis_m2(g, dy));
}

// Whether the pair with this m2 exists. False for a NaN m2 (from inf * 0).
template <typename T>
GMM_HD bool in_cutoff(const Gaussian<T>& g, T m2) {
  return m2 <= g.cutoff2;
}

// Gaussian factor of one axis, exp(-m2_axis / 2). The 2D weight is
// norm * axis_factor(m2_x) * axis_factor(m2_y), which lets kernels that walk
// a point's bounding box take O(radius) exponentials instead of O(radius^2).
template <typename T>
GMM_HD T axis_factor(T m2_axis) {
  return gmm_exp(T(-0.5) * m2_axis);
}

// Weight of one pair given the offset q - mu; zero outside the cutoff.
template <typename T>
GMM_HD T pair_weight(const Gaussian<T>& g, T dx, T dy) {
  const T m2 = pair_m2(g, dx, dy);
  return in_cutoff(g, m2) ? g.norm * gmm_exp(T(-0.5) * m2) : T(0);
}

// w * v, and 0 for w = 0 even when v is inf or NaN: a value reaches only the
// queries where its point's weight is positive.
template <typename T>
GMM_HD T weighted(T w, T v) {
  return w != T(0) ? w * v : T(0);
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
// The per-point sums of u, u*e and u*m2 go to finish_point_grad.
// Zero for ratio = 0, whatever g . c_i and the offset are: cotangents and
// values reach only pairs of positive weight.
template <typename T>
GMM_HD T pair_cotangent(T ratio, T g_dot_values, T offset) {
  return ratio != T(0) ? ratio * (g_dot_values - offset) : T(0);
}

// 1 / sigma as it enters the position gradients, d w / d mu = w e / sigma with
// e = (q - mu) / sigma: zero when inv_sigma is capped, where w no longer
// depends on mu. Gradients are formed from e (at most truncate inside the
// cutoff) times this, never from d / sigma^2: 1 / sigma^2 underflows for huge
// sigma and overflows for tiny sigma, where it could meet d = 0.
template <typename T>
GMM_HD T position_gain(const Gaussian<T>& g) {
  return g.scale_clamped() ? T(0) : g.inv_sigma;
}

// Per pair, at the query: dL/dq -= u e / sigma, with (dx, dy) = q - mu_i.
// Skipped for u = 0, where e may be inf (a pair beyond the cutoff).
template <typename T>
GMM_HD void add_query_grad(const Gaussian<T>& g, T u, T dx, T dy, T* gx, T* gy) {
  if (u != T(0)) {
    const T gain = position_gain(g);
    *gx -= u * (whiten(g, dx) * gain);
    *gy -= u * (whiten(g, dy) * gain);
  }
}

// Per-point gradients from the sums over its footprint:
//   sum_u = sum_q u_iq, sum_u_ex = sum_q u_iq e_x (e = (q - mu) / sigma),
//   likewise ey, and sum_u_m2 = sum_q u_iq m2_iq.
// d w / d sigma = w (m2 - 2) / sigma; each term is dropped where its factor
// is clamped, since there the clamped value does not depend on sigma.
template <typename T>
GMM_HD void finish_point_grad(const Gaussian<T>& g, T sum_u, T sum_u_ex, T sum_u_ey,
                              T sum_u_m2, T* d_x, T* d_y, T* d_sigma) {
  if (!g.valid()) {
    *d_x = *d_y = *d_sigma = T(0);
    return;
  }
  const T gain = position_gain(g);
  *d_x = gain * sum_u_ex;
  *d_y = gain * sum_u_ey;
  const T spread = g.scale_clamped() ? T(0) : sum_u_m2;
  const T scale = g.norm_clamped() ? T(0) : T(2) * sum_u;
  *d_sigma = (spread - scale) / g.sigma;
}

}  // namespace jax_gmm
