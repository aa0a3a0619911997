// Shape checks shared by the CPU and CUDA handlers: an operand is a buffer of
// examples with known trailing dimensions behind the batch axes of the call.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "batch.h"
#include "neighbours.h"
#include "xla/ffi/api/ffi.h"

namespace jax_gmm {

template <typename T>
struct Operand {
  T* data = nullptr;
  int64_t example_size = 0;      // elements in one example
  std::vector<int64_t> strides;  // in examples, 0 along broadcast batch axes

  // Example b's data; null for an absent operand (a call without it).
  T* at(const BatchLayout& layout, int64_t b) const {
    return data ? data + layout.example(b, strides) * example_size : nullptr;
  }
};

inline std::string shape_string(xla::ffi::Span<const int64_t> dims) {
  std::string s = "(";
  for (size_t k = 0; k < dims.size(); ++k) s += (k ? ", " : "") + std::to_string(dims[k]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

// Checks that `buffer` is (batch..., *example) and points `slot` at it.
template <typename T, typename Buffer>
xla::ffi::Error bind_operand(Operand<T>& slot, const BatchLayout& layout, Buffer& buffer,
                             const std::vector<int64_t>& example, const char* name) {
  const auto dims = buffer.dimensions();
  const int rank = static_cast<int>(example.size());
  bool ok = static_cast<int>(dims.size()) == layout.rank() + rank;
  for (int k = 0; ok && k < rank; ++k) ok = dims[dims.size() - rank + k] == example[k];
  if (!ok) {
    return xla::ffi::Error::InvalidArgument(
        std::string(name) + " has shape " + shape_string(dims) + ", expected batch axes then " +
        shape_string(xla::ffi::Span<const int64_t>(example)));
  }
  auto strides = layout.strides(dims, rank, name);
  if (strides.has_error()) return strides.error();
  int64_t size = 1;
  for (int64_t d : example) size *= d;
  slot = Operand<T>{reinterpret_cast<T*>(buffer.untyped_data()), size, std::move(*strides)};
  return xla::ffi::Error::Success();
}

}  // namespace jax_gmm

namespace jax_gmm {

// The index lists of the binning are 32-bit.
inline xla::ffi::Error check_count(int64_t count, const char* what) {
  if (count >= (int64_t{1} << 32)) {
    return xla::ffi::Error::InvalidArgument(std::string(what) + " must be fewer than 2^32");
  }
  return xla::ffi::Error::Success();
}

// The most pixels along an image side (jax_gmm/_checks.py's limit too): the
// CPU kernels take a pixel's index along a side as an int32, with room for
// a segment's spare lanes past it.
constexpr int64_t kMaxSide = int64_t{1} << 30;

// Every buffer of one FFI call, checked. N comes from points, and C and the
// query layout from out: (..., H, W, C) on a grid, (..., M, C) at queries.
// Operands a call does not have stay empty.
template <typename T>
struct Call {
  BatchLayout layout;
  int64_t n = 0, c = 0;
  int64_t h = 1, w = 0, m = 0;  // queries: m = H * W on a grid, m = w at arbitrary queries
  Operand<T> points, values, scale, queries, out, density;
  Operand<T> d_out, d_density, d_points, d_values, d_scale, d_queries;
};

#define JAX_GMM_CHECK(expr)                                         \
  do {                                                              \
    xla::ffi::Error error_ = (expr);                                \
    if (error_.failure()) return xla::ffi::Unexpected(std::move(error_)); \
  } while (0)

// In a handler: `auto lhs = *expr`, or return the error of `expr`.
#define JAX_GMM_ASSIGN(lhs, expr)                    \
  auto lhs##_or = (expr);                            \
  if (lhs##_or.has_error()) return lhs##_or.error(); \
  auto lhs = std::move(*lhs##_or)

// Lets callers pass a plain nullptr for an absent buffer (std::type_identity in C++20).
template <typename X>
struct NoDeduceImpl {
  using type = X;
};
template <typename X>
using NoDeduce = typename NoDeduceImpl<X>::type;

// Forward operands; `queries` is null on a grid, and `density` null for a
// call that returns out alone (call.density then stays empty). The batch
// axes are those of the output out unless `layout` gives them (a backward
// call, where out and density are operands that may be broadcast).
template <typename T, typename Buffer>
xla::ffi::ErrorOr<Call<T>> check_forward(Buffer& points, Buffer& values, Buffer& scale,
                                         NoDeduce<Buffer>* queries, Buffer& out,
                                         NoDeduce<Buffer>* density,
                                         const BatchLayout* layout = nullptr) {
  const auto pd = points.dimensions(), od = out.dimensions();
  const size_t query_rank = queries ? 1 : 2;
  if (pd.size() < 2 || od.size() < query_rank + 1) {
    return xla::ffi::Unexpected(xla::ffi::Error::InvalidArgument(
        "points must be (..., N, 2), out (..., " + std::string(queries ? "M" : "H, W") +
        ", C) and density likewise without C"));
  }
  Call<T> call{layout ? *layout : BatchLayout(od, static_cast<int>(query_rank) + 1)};
  call.n = pd[pd.size() - 2];
  call.c = od.back();
  call.w = od[od.size() - 2];
  call.h = queries ? 1 : od[od.size() - 3];
  call.m = call.h * call.w;
  JAX_GMM_CHECK(check_count(call.n, "the number of points"));
  JAX_GMM_CHECK(check_count(call.m, "the number of queries"));
  if (!queries && call.m > 0 && (call.h > kMaxSide || call.w > kMaxSide)) {
    return xla::ffi::Unexpected(xla::ffi::Error::InvalidArgument(
        "the image's sides must be at most 2^30 pixels, got " + shape_string(od)));
  }
  const std::vector<int64_t> query_dims =
      queries ? std::vector<int64_t>{call.m} : std::vector<int64_t>{call.h, call.w};
  std::vector<int64_t> out_dims = query_dims;
  out_dims.push_back(call.c);
  JAX_GMM_CHECK(bind_operand(call.points, call.layout, points, {call.n, 2}, "points"));
  JAX_GMM_CHECK(bind_operand(call.values, call.layout, values, {call.n, call.c}, "values"));
  JAX_GMM_CHECK(bind_operand(call.scale, call.layout, scale, {call.n, 3}, "scale"));
  if (queries) {
    JAX_GMM_CHECK(bind_operand(call.queries, call.layout, *queries, {call.m, 2}, "queries"));
  }
  JAX_GMM_CHECK(bind_operand(call.out, call.layout, out, out_dims, "out"));
  if (density) {
    JAX_GMM_CHECK(bind_operand(call.density, call.layout, *density, query_dims, "density"));
  }
  return call;
}

// Backward operands: the forward's, then cotangents in and out. `queries` and
// `d_queries` are null on a grid. With `zero_d_density`, a d_density without
// elements stands for zeros and leaves call.d_density empty (data null).
template <typename T, typename Buffer>
xla::ffi::ErrorOr<Call<T>> check_backward(Buffer& points, Buffer& values, Buffer& scale,
                                          NoDeduce<Buffer>* queries, Buffer& out,
                                          Buffer& density, Buffer& d_out, Buffer& d_density,
                                          Buffer& d_points, Buffer& d_values, Buffer& d_scale,
                                          NoDeduce<Buffer>* d_queries,
                                          bool zero_d_density = false) {
  // The batch axes are the outputs': d_points is (..., N, 2). Every operand,
  // the forward's results included, may be broadcast along them (vmap over
  // the cotangent alone, as jax.jacrev does, batches d_out only).
  if (d_points.dimensions().size() < 2) {
    return xla::ffi::Unexpected(
        xla::ffi::Error::InvalidArgument("d_points must be (..., N, 2)"));
  }
  const BatchLayout layout(d_points.dimensions(), 2);
  auto forward = check_forward<T>(points, values, scale, queries, out, &density, &layout);
  if (forward.has_error()) return forward;
  Call<T> call = std::move(*forward);
  const auto out_dims = out.dimensions(), density_dims = density.dimensions();
  const int qr = queries ? 1 : 2;
  const std::vector<int64_t> o(out_dims.end() - qr - 1, out_dims.end());
  const std::vector<int64_t> d(density_dims.end() - qr, density_dims.end());
  JAX_GMM_CHECK(bind_operand(call.d_out, call.layout, d_out, o, "d_out"));
  if (!(zero_d_density && d_density.element_count() == 0)) {
    JAX_GMM_CHECK(bind_operand(call.d_density, call.layout, d_density, d, "d_density"));
  }
  JAX_GMM_CHECK(bind_operand(call.d_points, call.layout, d_points, {call.n, 2}, "d_points"));
  JAX_GMM_CHECK(bind_operand(call.d_values, call.layout, d_values, {call.n, call.c}, "d_values"));
  JAX_GMM_CHECK(bind_operand(call.d_scale, call.layout, d_scale, {call.n, 3}, "d_scale"));
  if (d_queries) {
    JAX_GMM_CHECK(bind_operand(call.d_queries, call.layout, *d_queries, {call.m, 2}, "d_queries"));
  }
  return call;
}

// The operands of kth_nearest: points (..., N, 2), whose batch axes are
// those of the int32 result (..., N), and the neighbour rank k.
template <typename T>
struct NeighbourCall {
  BatchLayout layout;
  int64_t n = 0;
  Operand<T> points;
};

template <typename T, typename Buffer, typename Index>
xla::ffi::ErrorOr<NeighbourCall<T>> check_kth_nearest(Buffer& points, Index& index, int64_t k) {
  if (k < 1 || k > kMaxNeighbours) {
    return xla::ffi::Unexpected(xla::ffi::Error::InvalidArgument(
        "k must be in [1, " + std::to_string(kMaxNeighbours) + "], got " + std::to_string(k)));
  }
  const auto dims = index.dimensions();
  if (dims.size() == 0) {
    return xla::ffi::Unexpected(
        xla::ffi::Error::InvalidArgument("points must have shape (..., N, 2)"));
  }
  NeighbourCall<T> call{BatchLayout(dims, 1), dims.back()};
  if (call.n >= (int64_t{1} << 31)) {  // the result is int32
    return xla::ffi::Unexpected(xla::ffi::Error::InvalidArgument("points must be fewer than 2^31"));
  }
  JAX_GMM_CHECK(bind_operand(call.points, call.layout, points, {call.n, 2}, "points"));
  return call;
}

#undef JAX_GMM_CHECK

// The binding every handler shares after its context: kArgs buffers in, kRets
// buffers out, and the static cutoff `truncate`.
template <xla::ffi::DataType DT, int kArgs, int kRets, typename Binding>
auto bind_buffers(Binding&& binding) {
  if constexpr (kArgs > 0) {
    return bind_buffers<DT, kArgs - 1, kRets>(
        std::move(binding).template Arg<xla::ffi::Buffer<DT>>());
  } else if constexpr (kRets > 0) {
    return bind_buffers<DT, 0, kRets - 1>(std::move(binding).template Ret<xla::ffi::Buffer<DT>>());
  } else {
    return std::move(binding).template Attr<double>("truncate");
  }
}

}  // namespace jax_gmm
