// XLA FFI handlers of the CPU module: shape checks, the walk over batch
// elements, and registration. The arithmetic lives in the kernel files.
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "kernels.h"
#include "operands.h"
#include "targets.h"

namespace ffi = xla::ffi;

namespace jax_gmm {
namespace {

#define JAX_GMM_RETURN_IF_ERROR(expr)      \
  do {                                     \
    ffi::Error error_ = (expr);            \
    if (error_.failure()) return error_;   \
  } while (0)
#define JAX_GMM_ASSIGN(lhs, expr)                       \
  auto lhs##_or = (expr);                               \
  if (lhs##_or.has_error()) return lhs##_or.error();    \
  auto lhs = std::move(*lhs##_or)

// The kernel build for this CPU: avx2 where the CPU has AVX2 and FMA, unless
// JAX_GMM_CPU_ISA=baseline asks for the portable build (the tests compare them).
bool use_avx2() {
#if defined(JAX_GMM_HAVE_AVX2)
  static const bool avx2 = [] {
    const char* isa = std::getenv("JAX_GMM_CPU_ISA");
    if (isa && std::string(isa) == "baseline") return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return avx2;
#else
  return false;
#endif
}
#define JAX_GMM_KERNEL(name) (use_avx2() ? avx2::name<T> : baseline::name<T>)

// Sizes read off the buffers: points (..., N, 2) and an output (..., rest, C).
struct Sizes {
  int64_t n, c;
};

template <ffi::DataType DT>
ffi::ErrorOr<Sizes> sizes(ffi::Buffer<DT>& points, ffi::Buffer<DT>& out) {
  const auto pd = points.dimensions();
  const auto od = out.dimensions();
  if (pd.size() < 2 || od.size() < 1) {
    return ffi::Unexpected(ffi::Error::InvalidArgument("points must be (..., N, 2) and out (..., C)"));
  }
  Sizes s{pd[pd.size() - 2], od.back()};
  ffi::Error error = check_count(s.n, "the number of points");
  if (error.failure()) return ffi::Unexpected(std::move(error));
  return s;
}

// The binning depends only on points and sigma, so consecutive batch elements
// that share both (vmap with in_axes=None on them) reuse it.
template <typename Binned>
class BinCache {
 public:
  template <typename Make>
  const Binned& get(const void* points, const void* sigma, const Make& make) {
    if (!binned_ || points != points_ || sigma != sigma_) {
      binned_.emplace(make());
      points_ = points, sigma_ = sigma;
    }
    return *binned_;
  }

 private:
  std::optional<Binned> binned_;
  const void* points_ = nullptr;
  const void* sigma_ = nullptr;
};

template <ffi::DataType DT>
ffi::Error GridForward(ffi::ThreadPool pool, ffi::Buffer<DT> points, ffi::Buffer<DT> values,
                       ffi::Buffer<DT> sigma, ffi::ResultBuffer<DT> out,
                       ffi::ResultBuffer<DT> density, double truncate) {
  using T = ffi::NativeType<DT>;
  JAX_GMM_ASSIGN(s, sizes(points, *out));
  const auto dd = density->dimensions();
  if (dd.size() < 2) return ffi::Error::InvalidArgument("density must be (..., H, W)");
  const int64_t h = dd[dd.size() - 2], w = dd.back();
  const BatchLayout layout(dd, 2);
  JAX_GMM_ASSIGN(p, operand<T>(layout, points, {s.n, 2}, "points"));
  JAX_GMM_ASSIGN(v, operand<T>(layout, values, {s.n, s.c}, "values"));
  JAX_GMM_ASSIGN(sg, operand<T>(layout, sigma, {s.n}, "sigma"));
  JAX_GMM_ASSIGN(o, operand<T>(layout, *out, {h, w, s.c}, "out"));
  BinCache<TiledPoints<T>> cache;
  for (int64_t b = 0; b < layout.count(); ++b) {
    const T* pb = p.at(layout, b);
    const T* sb = sg.at(layout, b);
    const auto& tiled = cache.get(pb, sb, [&] {
      return TiledPoints<T>(pb, sb, s.n, static_cast<T>(truncate), h, w);
    });
    JAX_GMM_KERNEL(grid_forward)(pool, tiled, v.at(layout, b), s.c, o.at(layout, b),
                 density->typed_data() + b * h * w);
  }
  return ffi::Error::Success();
}

template <ffi::DataType DT>
ffi::Error GridBackward(ffi::ThreadPool pool, ffi::Buffer<DT> points, ffi::Buffer<DT> values,
                        ffi::Buffer<DT> sigma, ffi::Buffer<DT> out, ffi::Buffer<DT> density,
                        ffi::Buffer<DT> d_out, ffi::Buffer<DT> d_density,
                        ffi::ResultBuffer<DT> d_points, ffi::ResultBuffer<DT> d_values,
                        ffi::ResultBuffer<DT> d_sigma, double truncate) {
  using T = ffi::NativeType<DT>;
  JAX_GMM_ASSIGN(s, sizes(points, out));
  const auto dd = density.dimensions();
  if (dd.size() < 2) return ffi::Error::InvalidArgument("density must be (..., H, W)");
  const int64_t h = dd[dd.size() - 2], w = dd.back();
  const BatchLayout layout(dd, 2);
  JAX_GMM_ASSIGN(p, operand<T>(layout, points, {s.n, 2}, "points"));
  JAX_GMM_ASSIGN(v, operand<T>(layout, values, {s.n, s.c}, "values"));
  JAX_GMM_ASSIGN(sg, operand<T>(layout, sigma, {s.n}, "sigma"));
  JAX_GMM_ASSIGN(o, operand<T>(layout, out, {h, w, s.c}, "out"));
  JAX_GMM_ASSIGN(go, operand<T>(layout, d_out, {h, w, s.c}, "d_out"));
  JAX_GMM_ASSIGN(gd, operand<T>(layout, d_density, {h, w}, "d_density"));
  JAX_GMM_ASSIGN(rp, operand<T>(layout, *d_points, {s.n, 2}, "d_points"));
  JAX_GMM_ASSIGN(rv, operand<T>(layout, *d_values, {s.n, s.c}, "d_values"));
  JAX_GMM_ASSIGN(rs, operand<T>(layout, *d_sigma, {s.n}, "d_sigma"));
  for (int64_t b = 0; b < layout.count(); ++b) {
    const auto gaussians =
        make_gaussians(p.at(layout, b), sg.at(layout, b), s.n, static_cast<T>(truncate));
    JAX_GMM_KERNEL(grid_backward)(pool, gaussians, h, w, v.at(layout, b), s.c, o.at(layout, b),
                  density.typed_data() + b * h * w, go.at(layout, b), gd.at(layout, b),
                  rp.at(layout, b), rv.at(layout, b), rs.at(layout, b));
  }
  return ffi::Error::Success();
}

template <ffi::DataType DT>
ffi::Error ScatteredForward(ffi::ThreadPool pool, ffi::Buffer<DT> points,
                            ffi::Buffer<DT> values, ffi::Buffer<DT> sigma,
                            ffi::Buffer<DT> queries, ffi::ResultBuffer<DT> out,
                            ffi::ResultBuffer<DT> density, double truncate) {
  using T = ffi::NativeType<DT>;
  JAX_GMM_ASSIGN(s, sizes(points, *out));
  const auto dd = density->dimensions();
  if (dd.size() < 1) return ffi::Error::InvalidArgument("density must be (..., M)");
  const int64_t m = dd.back();
  JAX_GMM_RETURN_IF_ERROR(check_count(m, "the number of queries"));
  const BatchLayout layout(dd, 1);
  JAX_GMM_ASSIGN(p, operand<T>(layout, points, {s.n, 2}, "points"));
  JAX_GMM_ASSIGN(v, operand<T>(layout, values, {s.n, s.c}, "values"));
  JAX_GMM_ASSIGN(sg, operand<T>(layout, sigma, {s.n}, "sigma"));
  JAX_GMM_ASSIGN(q, operand<T>(layout, queries, {m, 2}, "queries"));
  JAX_GMM_ASSIGN(o, operand<T>(layout, *out, {m, s.c}, "out"));
  for (int64_t b = 0; b < layout.count(); ++b) {
    const T* qb = q.at(layout, b);
    const CelledQueries<T> celled(p.at(layout, b), sg.at(layout, b), s.n,
                                  static_cast<T>(truncate), qb, m);
    JAX_GMM_KERNEL(scattered_forward)(pool, celled, v.at(layout, b), s.c, qb, m, o.at(layout, b),
                      density->typed_data() + b * m);
  }
  return ffi::Error::Success();
}

template <ffi::DataType DT>
ffi::Error ScatteredBackward(ffi::ThreadPool pool, ffi::Buffer<DT> points,
                             ffi::Buffer<DT> values, ffi::Buffer<DT> sigma,
                             ffi::Buffer<DT> queries, ffi::Buffer<DT> out,
                             ffi::Buffer<DT> density, ffi::Buffer<DT> d_out,
                             ffi::Buffer<DT> d_density, ffi::ResultBuffer<DT> d_points,
                             ffi::ResultBuffer<DT> d_values, ffi::ResultBuffer<DT> d_sigma,
                             ffi::ResultBuffer<DT> d_queries, double truncate) {
  using T = ffi::NativeType<DT>;
  JAX_GMM_ASSIGN(s, sizes(points, out));
  const auto dd = density.dimensions();
  if (dd.size() < 1) return ffi::Error::InvalidArgument("density must be (..., M)");
  const int64_t m = dd.back();
  JAX_GMM_RETURN_IF_ERROR(check_count(m, "the number of queries"));
  const BatchLayout layout(dd, 1);
  JAX_GMM_ASSIGN(p, operand<T>(layout, points, {s.n, 2}, "points"));
  JAX_GMM_ASSIGN(v, operand<T>(layout, values, {s.n, s.c}, "values"));
  JAX_GMM_ASSIGN(sg, operand<T>(layout, sigma, {s.n}, "sigma"));
  JAX_GMM_ASSIGN(q, operand<T>(layout, queries, {m, 2}, "queries"));
  JAX_GMM_ASSIGN(o, operand<T>(layout, out, {m, s.c}, "out"));
  JAX_GMM_ASSIGN(go, operand<T>(layout, d_out, {m, s.c}, "d_out"));
  JAX_GMM_ASSIGN(gd, operand<T>(layout, d_density, {m}, "d_density"));
  JAX_GMM_ASSIGN(rp, operand<T>(layout, *d_points, {s.n, 2}, "d_points"));
  JAX_GMM_ASSIGN(rv, operand<T>(layout, *d_values, {s.n, s.c}, "d_values"));
  JAX_GMM_ASSIGN(rs, operand<T>(layout, *d_sigma, {s.n}, "d_sigma"));
  JAX_GMM_ASSIGN(rq, operand<T>(layout, *d_queries, {m, 2}, "d_queries"));
  for (int64_t b = 0; b < layout.count(); ++b) {
    const T* qb = q.at(layout, b);
    const CelledQueries<T> celled(p.at(layout, b), sg.at(layout, b), s.n,
                                  static_cast<T>(truncate), qb, m);
    JAX_GMM_KERNEL(scattered_backward)(pool, celled, v.at(layout, b), s.c, qb, m, o.at(layout, b),
                       density.typed_data() + b * m, go.at(layout, b), gd.at(layout, b),
                       rp.at(layout, b), rv.at(layout, b), rs.at(layout, b), rq.at(layout, b));
  }
  return ffi::Error::Success();
}

}  // namespace

#define JAX_GMM_BUF(DT) ffi::Buffer<ffi::DT>
#define JAX_GMM_DEFINE(DT, SUFFIX)                                                            \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(GridForward##SUFFIX, GridForward<ffi::DT>,                    \
                                ffi::Ffi::Bind()                                              \
                                    .Ctx<ffi::ThreadPool>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Ret<JAX_GMM_BUF(DT)>()                                   \
                                    .Ret<JAX_GMM_BUF(DT)>()                                   \
                                    .Attr<double>("truncate"));                               \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(GridBackward##SUFFIX, GridBackward<ffi::DT>,                  \
                                ffi::Ffi::Bind()                                              \
                                    .Ctx<ffi::ThreadPool>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Ret<JAX_GMM_BUF(DT)>()                                   \
                                    .Ret<JAX_GMM_BUF(DT)>()                                   \
                                    .Ret<JAX_GMM_BUF(DT)>()                                   \
                                    .Attr<double>("truncate"));                               \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(ScatteredForward##SUFFIX, ScatteredForward<ffi::DT>,          \
                                ffi::Ffi::Bind()                                              \
                                    .Ctx<ffi::ThreadPool>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Ret<JAX_GMM_BUF(DT)>()                                   \
                                    .Ret<JAX_GMM_BUF(DT)>()                                   \
                                    .Attr<double>("truncate"));                               \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(ScatteredBackward##SUFFIX, ScatteredBackward<ffi::DT>,        \
                                ffi::Ffi::Bind()                                              \
                                    .Ctx<ffi::ThreadPool>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Arg<JAX_GMM_BUF(DT)>()                                   \
                                    .Ret<JAX_GMM_BUF(DT)>()                                   \
                                    .Ret<JAX_GMM_BUF(DT)>()                                   \
                                    .Ret<JAX_GMM_BUF(DT)>()                                   \
                                    .Ret<JAX_GMM_BUF(DT)>()                                   \
                                    .Attr<double>("truncate"));
JAX_GMM_DEFINE(F32, F32)
JAX_GMM_DEFINE(F64, F64)

std::vector<Target> targets() {
  return {
      {"jax_gmm_grid_forward_f32", reinterpret_cast<void*>(GridForwardF32)},
      {"jax_gmm_grid_backward_f32", reinterpret_cast<void*>(GridBackwardF32)},
      {"jax_gmm_scattered_forward_f32", reinterpret_cast<void*>(ScatteredForwardF32)},
      {"jax_gmm_scattered_backward_f32", reinterpret_cast<void*>(ScatteredBackwardF32)},
      {"jax_gmm_grid_forward_f64", reinterpret_cast<void*>(GridForwardF64)},
      {"jax_gmm_grid_backward_f64", reinterpret_cast<void*>(GridBackwardF64)},
      {"jax_gmm_scattered_forward_f64", reinterpret_cast<void*>(ScatteredForwardF64)},
      {"jax_gmm_scattered_backward_f64", reinterpret_cast<void*>(ScatteredBackwardF64)},
  };
}

}  // namespace jax_gmm
