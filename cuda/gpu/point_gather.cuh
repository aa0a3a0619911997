// The backward passes' per-point gather, shared by the grid and scattered
// kernels.
//
// A point's cotangents are sums over the queries (pixels) its box covers. One
// warp owns a point: each lane sums its share of the queries in a fixed order
// and a fixed butterfly of shuffles adds the lanes up, so the result is the
// same bit for bit on every run, without atomics.
#pragma once

#include <cstdint>

#include "device.cuh"
#include "gmm_math.h"

namespace jax_gmm {
namespace gpu {

// u = w dL/dw of a pair with weight ratio w / Z, values c and the query's
// folded record f (gmm_math.h: g at stride apart, then offset).
template <typename T>
__device__ T pair_u(T ratio, const T* f, int64_t stride, const T* c, int64_t channels) {
  T dot = 0;
  for (int64_t ch = 0; ch < channels; ++ch) dot += f[ch * stride] * c[ch];
  return pair_cotangent(ratio, dot, f[channels * stride]);
}

// w / Z of a pair with weight w at the query whose folded record is f.
template <typename T>
__device__ T pair_ratio(T w, const T* f, int64_t stride, int64_t channels) {
  return weight_ratio(w, f[(channels + 1) * stride]);
}

// Sum over the warp, the same in every lane: a + b == b + a, so the two lanes
// of each butterfly step hold equal sums.
template <typename T>
__device__ T warp_sum(T v) {
  for (int d = kWarp / 2; d > 0; d /= 2) v += __shfl_xor_sync(0xffffffffu, v, d);
  return v;
}

// Cotangents of the point g with values c (channels of them), gathered from
// the queries of its footprint: footprint.visit(lane, f) calls
// f(qx, qy, folded, stride) for this lane's share of them, in a fixed order.
// All 32 lanes of the warp call it; lane 0 writes d_point (2), d_values and
// d_scale (3). Channels go K at a time; the first pass also sums for
// position and scale.
template <typename T, int K, typename Footprint>
__device__ void gather_point(const Gaussian<T>& g, const T* c, int64_t channels,
                             const Footprint& footprint, T* d_point, T* d_values, T* d_scale) {
  const bool lead = threadIdx.x % kWarp == 0;
  for (int64_t c0 = 0; c0 == 0 || c0 < channels; c0 += K) {
    const bool first = c0 == 0;
    PointSums<T> sums;
    T d_c[K] = {};
    footprint.visit(threadIdx.x % kWarp, [&](T qx, T qy, const T* f, int64_t stride) {
      const T dx = qx - g.x, dy = qy - g.y;
      const T ratio = pair_ratio(pair_weight(g, dx, dy), f, stride, channels);
      if (!(ratio > T(0))) return;  // every cotangent of the pair is 0
      if (first) {
        sums.add(pair_u(ratio, f, stride, c, channels), whiten(g, dx, dy));
      }
#pragma unroll
      for (int k = 0; k < K; ++k) {
        if (c0 + k < channels) d_c[k] += ratio * f[(c0 + k) * stride];
      }
    });
    if (first) {
      const PointSums<T> total{warp_sum(sums.u),    warp_sum(sums.u_ex), warp_sum(sums.u_ey),
                               warp_sum(sums.u_xx), warp_sum(sums.u_xy), warp_sum(sums.u_yy)};
      if (lead) finish_point_grad(g, total, d_point, d_point + 1, d_scale);
    }
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const T total = warp_sum(d_c[k]);
      if (lead && c0 + k < channels) d_values[c0 + k] = total;
    }
  }
}

// Grid-stride loop of warps over points: `body(i)` runs on all 32 lanes of a
// warp for each point i it owns. Launch with kThreads threads per block.
template <typename Body>
__device__ void for_each_point_warp(int64_t n, const Body& body) {
  const int64_t warps = int64_t{gridDim.x} * (kThreads / kWarp);
  for (int64_t i = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / kWarp; i < n; i += warps) {
    body(i);
  }
}

}  // namespace gpu
}  // namespace jax_gmm
