// Per-pair arithmetic of GMM interpolation, shared by the CPU and CUDA kernels.
//
// Point i is a Gaussian with centre mu_i, covariance Sigma_i = L_i L_i^T
// (L_i lower triangular with a positive diagonal: the Cholesky factor, which
// the Python layer forms from a scalar, per-axis or full sigma) and values c_i.
// Every kernel computes, for a query q, the whitened offset e = P_i (q - mu_i)
// with P_i = L_i^-1, and
//   m2 = e_x^2 + e_y^2,  w_iq = norm_i * exp(-m2 / 2)   if m2 <= truncate^2,
//   norm_i = 1 / (2 pi det L_i),
// and out(q) = sum_i c_i w_iq / Z(q), Z(q) = sum_i w_iq. Working in whitened
// units keeps every intermediate finite for any finite L (|q - mu|^2 and
// (truncate sigma)^2 can overflow; e^2 only past the cutoff, where the pair is
// dropped anyway). A round point has P = I / sigma, where every formula here
// gives the same bits as for a scalar width. Keeping the formulas here means
// the CPU tests check exactly the arithmetic the GPU runs.
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

// Limits that keep extreme widths finite (a width here is a diagonal entry
// of L, sigma for a round point). The normaliser is clamped so that a sum of
// millions of weights cannot overflow (float: sigma outside about [4e-16,
// 4e14]; double: [4e-151, 4e149]); each entry of P = L^-1 is capped so that
// the position gradients, which carry P^T P, stay finite (float: sigma below
// 1e-18; double: 1e-151). A point needs both widths >= `tiny`, the smallest
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
  static constexpr double inv_sigma_max = 1e151;
  static constexpr double epsilon = 2.220446049250313e-16;
  static constexpr double tiny = 2.2250738585072014e-308;
  static constexpr double max = 1.7976931348623157e308;
};

// Where both entries of P's diagonal are capped the normaliser is clamped, so
// an unclamped normaliser always holds 1 / l of a capped entry (finish_point_grad).
static_assert(Clamp<float>::inv_sigma_max * Clamp<float>::inv_sigma_max * 0.15915494309189535 >
                  Clamp<float>::norm_max, "float caps");
static_assert(Clamp<double>::inv_sigma_max * Clamp<double>::inv_sigma_max * 0.15915494309189535 >
                  Clamp<double>::norm_max, "double caps");

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
// Ten words with no padding, every one written by make_gaussian, so that
// copying a record never reads an uninitialised byte.
template <typename T>
struct Gaussian {
  using Flags = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;
  static constexpr Flags kValid = 1;         // finite centre and L, diagonal >= Clamp<T>::tiny
  static constexpr Flags kNormClamped = 2;   // norm no longer depends on L
  static constexpr Flags kScaleClamped = 4;  // an entry of P capped: w no longer depends on mu, L

  T x, y;           // centre, pixels
  T p11, p21, p22;  // P = L^-1 = [[p11, 0], [p21, p22]], 1 / pixels, each capped at inv_sigma_max
  T norm;           // 1 / (2 pi det L), clamped
  T cutoff2;        // truncate^2: a pair counts iff m2 <= cutoff2; -1 for an invalid point
  T box_x, box_y;   // half-sides of the cutoff ellipse's bounding box, widened by a few ulps
  Flags flags;

  GMM_HD bool valid() const { return flags & kValid; }
  GMM_HD bool norm_clamped() const { return flags & kNormClamped; }
  GMM_HD bool scale_clamped() const { return flags & kScaleClamped; }
  // Round or per-axis: the weight factorises into a column and a row factor.
  GMM_HD bool axis_aligned() const { return p21 == T(0); }
};
static_assert(sizeof(Gaussian<float>) == 10 * sizeof(float), "Gaussian<float> has padding");
static_assert(sizeof(Gaussian<double>) == 10 * sizeof(double), "Gaussian<double> has padding");

template <typename T>
GMM_HD bool is_finite(T v) {
  return v - v == T(0);  // false for NaN and +-inf
}

template <typename T>
GMM_HD T abs_value(T v) {
  return v < T(0) ? -v : v;
}

// 1 / l capped at inv_sigma_max; sets kScaleClamped in `flags` if capped.
template <typename T, typename Flags>
GMM_HD T capped_inverse(T l, Flags* flags) {
  const T inv = T(1) / l;  // finite: l is normal
  if (inv > Clamp<T>::inv_sigma_max) *flags |= Gaussian<T>::kScaleClamped;
  return inv > Clamp<T>::inv_sigma_max ? Clamp<T>::inv_sigma_max : inv;
}

// sqrt(1 + s^2) for the bounding box; |s| where s^2 would lose the 1 or overflow.
template <typename T>
GMM_HD T hypot_one(T s) {
  const T a = abs_value(s);
  return a > T(1) / Clamp<T>::epsilon ? a : sqrt(add_rn(T(1), mul_rn(a, a)));
}

// The part of a record that L and truncate alone decide: everything but the
// centre and the box's margin, which grows with the centre. Points that
// share L share it, so a block of them needs its divisions once
// (cpu/point_records.h).
template <typename T>
struct GaussianShape {
  using Flags = typename Gaussian<T>::Flags;
  T p11, p21, p22, norm, cutoff2;
  T radius_x, radius_y;  // the box's half-sides before the margin
  Flags flags;           // kValid unset: L is not finite, or its diagonal is below tiny
};

// The shape of a point with Cholesky factor L = [[l11, 0], [l21, l22]]. A
// round point of width sigma has l11 = l22 = sigma, l21 = 0.
template <typename T>
GMM_HD GaussianShape<T> gaussian_shape(T l11, T l21, T l22, T truncate) {
  using G = Gaussian<T>;
  GaussianShape<T> s;
  if (!(is_finite(l11) && is_finite(l21) && is_finite(l22) && l11 >= Clamp<T>::tiny &&
        l22 >= Clamp<T>::tiny)) {
    s.p11 = s.p21 = s.p22 = s.norm = s.radius_x = s.radius_y = T(0);
    s.cutoff2 = T(-1);
    s.flags = G::kNormClamped | G::kScaleClamped;
    return s;
  }
  typename G::Flags flags = G::kValid;
  // The normaliser from the uncapped inverses: its own clamp covers them.
  const T norm = mul_rn(T(1) / l11, T(1) / l22) * T(0.15915494309189533577);  // 1 / (2 pi)
  if (!(norm < Clamp<T>::norm_max) || !(norm > Clamp<T>::norm_min)) flags |= G::kNormClamped;
  s.norm = norm < Clamp<T>::norm_min   ? Clamp<T>::norm_min
           : norm > Clamp<T>::norm_max ? Clamp<T>::norm_max
                                       : norm;
  s.p11 = capped_inverse(l11, &flags);
  s.p22 = capped_inverse(l22, &flags);
  // P's off-diagonal entry, -l21 / (l11 l22), from the capped inverses, so
  // that the effective covariance (P^T P)^-1 never reaches beyond L's along
  // y; -0 for a round or per-axis point, which leaves e_y exact.
  const T p21 = -mul_rn(mul_rn(l21, s.p11), s.p22);
  if (!(abs_value(p21) <= Clamp<T>::inv_sigma_max)) flags |= G::kScaleClamped;
  s.p21 = abs_value(p21) <= Clamp<T>::inv_sigma_max ? p21
          : p21 < T(0)                              ? -Clamp<T>::inv_sigma_max
                                                    : Clamp<T>::inv_sigma_max;
  s.flags = flags;
  s.cutoff2 = mul_rn(truncate, truncate);
  // The bounding box of the ellipse m2 <= truncate^2 of P: half-sides
  // truncate / p11 and truncate hypot(p21 / p11, 1) / p22 (inf beyond the
  // dtype's range: boxes clamp it).
  const T shear = s.p21 == T(0) ? T(1) : hypot_one(s.p21 / s.p11);  // p21 != 0: p11 != 0
  s.radius_x = truncate / s.p11;
  s.radius_y = mul_rn(truncate / s.p22, shear);
  return s;
}

// The record of the point at (x, y) of shape s.
template <typename T>
GMM_HD Gaussian<T> place_gaussian(const GaussianShape<T>& s, T x, T y) {
  using G = Gaussian<T>;
  G g;
  g.x = x;
  g.y = y;
  if (!((s.flags & G::kValid) && is_finite(x) && is_finite(y))) {
    g.p11 = g.p21 = g.p22 = T(0);
    g.norm = T(0);
    g.cutoff2 = T(-1);  // no m2 satisfies m2 <= -1
    g.box_x = g.box_y = T(0);
    g.flags = G::kNormClamped | G::kScaleClamped;
    return g;
  }
  g.p11 = s.p11, g.p21 = s.p21, g.p22 = s.p22;
  g.norm = s.norm, g.cutoff2 = s.cutoff2, g.flags = s.flags;
  // A pixel whose centre rounds just inside the cutoff must not fall outside
  // the box: widen each side by a relative margin far above rounding error.
  // (At the box's extreme points the rounding error of e_y stays a few ulps
  // of the half-side, whatever the shear: checked by brute force up to
  // shears of 1e12.)
  const T margin = T(64) * Clamp<T>::epsilon;
  const T ax = abs_value(x), ay = abs_value(y);
  const T centre = ax > ay ? ax : ay;
  // Rounded op by op, so that boxes, and the cell layout that averages them,
  // are the same bits on every platform.
  g.box_x = add_rn(s.radius_x, mul_rn(margin, add_rn(add_rn(s.radius_x, centre), T(1))));
  g.box_y = add_rn(s.radius_y, mul_rn(margin, add_rn(add_rn(s.radius_y, centre), T(1))));
  return g;
}

// The record of the point at (x, y) with Cholesky factor L = [[l11, 0],
// [l21, l22]].
template <typename T>
GMM_HD Gaussian<T> make_gaussian(T x, T y, T l11, T l21, T l22, T truncate) {
  return place_gaussian(gaussian_shape(l11, l21, l22, truncate), x, y);
}

// The centre of pixel `index` along an axis, and its offset from `centre`:
// every kernel forms a pixel's offset this way, so that all of them (CPU and
// GPU, forward and backward) feed the same numbers to the pair test. Any
// integer type gives the same bits for the same index: the CPU footprints'
// vector loops pass an int32 (an image side is at most kMaxSide pixels,
// operands.h), as x86 has no vector conversion from int64 below AVX-512.
template <typename T, typename Index>
GMM_HD T pixel_offset(Index index, T centre) {
  return (T(index) + T(0.5)) - centre;
}

// The whitened offset e = P d of the pair at offset d = (dx, dy) = q - mu.
template <typename T>
struct Whitened {
  T x, y;
};

// e_x = p11 dx alone: for an axis-aligned point, kernels take it per column.
template <typename T>
GMM_HD T whiten_x(const Gaussian<T>& g, T dx) {
  return mul_rn(dx, g.p11);
}

// p22 dy, the row's part of e_y (all of it for an axis-aligned point).
template <typename T>
GMM_HD T whiten_y(const Gaussian<T>& g, T dy) {
  return mul_rn(dy, g.p22);
}

// p21 dx, the column's part of e_y; -0 or +0 for an axis-aligned point
// (NaN for an infinite dx, which no kernel forms: queries are finite).
template <typename T>
GMM_HD T shear_x(const Gaussian<T>& g, T dx) {
  return mul_rn(dx, g.p21);
}

template <typename T>
GMM_HD Whitened<T> whiten(const Gaussian<T>& g, T dx, T dy) {
  return {whiten_x(g, dx), add_rn(shear_x(g, dx), whiten_y(g, dy))};
}

template <typename T>
GMM_HD T square(T e) {
  return mul_rn(e, e);
}

// m2 = e_x^2 + e_y^2 of the pair at offset (dx, dy) = q - mu.
template <typename T>
GMM_HD T pair_m2(const Gaussian<T>& g, T dx, T dy) {
  const Whitened<T> e = whiten(g, dx, dy);
  return add_rn(square(e.x), square(e.y));
}

// Whether the pair with this m2 exists. False for a NaN m2 (from inf * 0).
template <typename T>
GMM_HD bool in_cutoff(const Gaussian<T>& g, T m2) {
  return m2 <= g.cutoff2;
}

// Gaussian factor of one axis, exp(-m2_axis / 2). The weight of an
// axis-aligned point is norm * axis_factor(e_x^2) * axis_factor(e_y^2), which
// lets kernels that walk its bounding box take O(radius) exponentials instead
// of O(radius^2).
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
// The per-point sums of u and its products with e go to finish_point_grad.
// Zero for ratio = 0, whatever g . c_i and the offset are: cotangents and
// values reach only pairs of positive weight.
template <typename T>
GMM_HD T pair_cotangent(T ratio, T g_dot_values, T offset) {
  return ratio != T(0) ? ratio * (g_dot_values - offset) : T(0);
}

// Per pair, at the query: d w / d q = -w P^T e, so dL/dq -= u P^T e, with
// (dx, dy) = q - mu_i; zero when P is capped, where w no longer depends on
// the offset. Gradients are formed from e (at most truncate inside the cutoff)
// times P, never from d times Sigma^-1: that underflows for a huge Gaussian
// and overflows for a tiny one, where it could meet d = 0. Skipped for u = 0,
// where e may be inf (a pair beyond the cutoff).
// With P capped the factor is multiplied by 0 rather than skipped, so that
// a NaN u stays NaN, as in the reference.
template <typename T>
GMM_HD void add_query_grad(const Gaussian<T>& g, T u, T dx, T dy, T* gx, T* gy) {
  if (u != T(0)) {
    const T moves = g.scale_clamped() ? T(0) : T(1);
    const Whitened<T> e = whiten(g, dx, dy);
    *gx -= u * (moves * (g.p11 * e.x + g.p21 * e.y));
    *gy -= u * (moves * (g.p22 * e.y));
  }
}

// One point's sums over the pairs of its footprint: u, u e_x, u e_y and the
// second moments u e_x^2, u e_x e_y, u e_y^2 (e = P (q - mu)).
template <typename T>
struct PointSums {
  T u = 0, u_ex = 0, u_ey = 0, u_xx = 0, u_xy = 0, u_yy = 0;

  GMM_HD void add(T u_pair, Whitened<T> e) {
    u += u_pair;
    u_ex += u_pair * e.x;
    u_ey += u_pair * e.y;
    u_xx += u_pair * (e.x * e.x);
    u_xy += u_pair * (e.x * e.y);
    u_yy += u_pair * (e.y * e.y);
  }
  GMM_HD void add(const PointSums& o) {
    u += o.u;
    u_ex += o.u_ex;
    u_ey += o.u_ey;
    u_xx += o.u_xx;
    u_xy += o.u_xy;
    u_yy += o.u_yy;
  }
};

// Per-point gradients from the sums over its footprint. With log w =
// -|P d|^2 / 2 - log(l11 l22) + const and P = L^-1,
//   d w / d mu = w P^T e,
//   d w / d L  = w ((P^T e) e^T - diag(1 / l11, 1 / l22))  (lower triangle),
// so d_l11 = p11 S_xx + p21 S_xy - S_u / l11, d_l21 = p22 S_xy and
// d_l22 = p22 S_yy - S_u / l22 (1 / l11 = p11 unless p11 is capped). The
// terms from e are dropped where P is capped, and those from the normaliser
// where it is clamped: there the clamped value does not depend on L.
template <typename T>
GMM_HD void finish_point_grad(const Gaussian<T>& g, const PointSums<T>& s, T* d_x, T* d_y,
                              T* d_scale) {
  if (!g.valid()) {
    *d_x = *d_y = d_scale[0] = d_scale[1] = d_scale[2] = T(0);
    return;
  }
  // Terms dropped where P is capped are multiplied by 0, not selected away:
  // a NaN sum (a NaN value or cotangent the point weighs) stays NaN, as in
  // the reference. (The sums first: a capped P times a large finite sum
  // could overflow.) The p21 terms of a round or per-axis point, though,
  // are selected away rather than formed as -0 times a sum that an inf
  // value can make inf (NaN, where the reference has +-inf); a NaN u still
  // reaches d_x through u_ex. A tilted point's sums can still meet inf * 0
  // where the reference's per-pair products do not.
  const T moves = g.scale_clamped() ? T(0) : T(1);
  const T ex = moves * s.u_ex, ey = moves * s.u_ey;
  const T xx = moves * s.u_xx, xy = moves * s.u_xy, yy = moves * s.u_yy;
  const bool tilted = !g.axis_aligned();
  *d_x = g.p11 * ex + (tilted ? g.p21 * ey : T(0));
  *d_y = g.p22 * ey;
  d_scale[0] = g.p11 * xx + (tilted ? g.p21 * xy : T(0));
  d_scale[1] = g.p22 * xy;
  d_scale[2] = g.p22 * yy;
  if (g.norm_clamped()) {
    d_scale[0] += T(0) * s.u;
    d_scale[2] += T(0) * s.u;
  } else {
    // The normaliser's terms need 1 / l, not the capped entry of P: with
    // p11 capped (and the normaliser not clamped, so p22 is not: the
    // static_asserts on Clamp), 1 / l11 = 2 pi norm / p22, and likewise the
    // other way round.
    const T two_pi_norm = T(6.283185307179586477) * g.norm;
    const T cap = Clamp<T>::inv_sigma_max;
    d_scale[0] -= (g.p11 < cap ? g.p11 : two_pi_norm / g.p22) * s.u;
    d_scale[2] -= (g.p22 < cap ? g.p22 : two_pi_norm / g.p11) * s.u;
  }
}

}  // namespace jax_gmm
