// XLA FFI handlers of the CUDA module: shape checks, the walk over batch
// elements, and registration. Same targets, operands and attributes as
// cpu/handlers.cc; the kernels live in the other files of this folder.
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "kernels.cuh"
#include "operands.h"
#include "targets.h"

namespace jax_gmm {
namespace gpu {
namespace {

// Runs body(b) for every batch element b, after build(points, scale, queries)
// has binned that element's inputs (queries is null on a grid). A binning
// depends only on those, so consecutive elements that share them (vmap with
// in_axes=None on them) reuse it rather than binning again.
template <typename T, typename Build, typename Body>
ffi::Error for_each_example(const Call<T>& call, const Build& build, const Body& body) {
  const auto& l = call.layout;
  const T* built[3] = {nullptr, nullptr, nullptr};
  for (int64_t b = 0; b < l.count(); ++b) {
    const T* inputs[3] = {call.points.at(l, b), call.scale.at(l, b),
                          call.queries.at(l, b)};
    if (b == 0 || !std::equal(inputs, inputs + 3, built)) {
      JAX_GMM_RETURN_IF_ERROR(build(inputs[0], inputs[1], inputs[2]));
      std::copy(inputs, inputs + 3, built);
    }
    JAX_GMM_RETURN_IF_ERROR(body(b));
  }
  return ffi::Error::Success();
}

template <ffi::DataType DT>
ffi::Error GridForward(cudaStream_t stream, int32_t device, CallContext context,
                       ffi::Buffer<DT> points, ffi::Buffer<DT> values, ffi::Buffer<DT> scale,
                       ffi::ResultBuffer<DT> out, ffi::ResultBuffer<DT> density, double truncate) {
  using T = ffi::NativeType<DT>;
  JAX_GMM_ASSIGN(call, check_forward<T>(points, values, scale, nullptr, *out, &*density));
  const auto& l = call.layout;
  DeviceScope scope;
  JAX_GMM_RETURN_IF_ERROR(scope.enter(device));
  ScratchArena scratch(context);
  Device dev{stream, scratch};
  TileBinning<T> tiles;
  return for_each_example(
      call,
      [&](const T* p, const T* s, const T*) {
        return tiles.build(dev, p, s, call.n, static_cast<T>(truncate), call.h, call.w);
      },
      [&](int64_t b) {
        return grid_forward(dev, tiles, call.values.at(l, b), call.c, call.out.at(l, b),
                            call.density.at(l, b));
      });
}

template <ffi::DataType DT>
ffi::Error GridBackward(cudaStream_t stream, int32_t device, CallContext context,
                        ffi::Buffer<DT> points, ffi::Buffer<DT> values, ffi::Buffer<DT> scale,
                        ffi::Buffer<DT> out, ffi::Buffer<DT> density, ffi::Buffer<DT> d_out,
                        ffi::Buffer<DT> d_density, ffi::ResultBuffer<DT> d_points,
                        ffi::ResultBuffer<DT> d_values, ffi::ResultBuffer<DT> d_scale,
                        double truncate) {
  using T = ffi::NativeType<DT>;
  JAX_GMM_ASSIGN(call, check_backward<T>(points, values, scale, nullptr, out, density, d_out,
                                         d_density, *d_points, *d_values, *d_scale, nullptr));
  const auto& l = call.layout;
  DeviceScope scope;
  JAX_GMM_RETURN_IF_ERROR(scope.enter(device));
  ScratchArena scratch(context);
  Device dev{stream, scratch};
  Scratch<T> folded;
  for (int64_t b = 0; b < l.count(); ++b) {  // no binning: a point's pixels form its box
    JAX_GMM_RETURN_IF_ERROR(grid_backward(
        dev, folded, call.points.at(l, b), call.scale.at(l, b), call.n, static_cast<T>(truncate),
        call.h, call.w, call.values.at(l, b), call.c, call.out.at(l, b), call.density.at(l, b),
        call.d_out.at(l, b), call.d_density.at(l, b), call.d_points.at(l, b),
        call.d_values.at(l, b), call.d_scale.at(l, b)));
  }
  return ffi::Error::Success();
}

template <ffi::DataType DT>
ffi::Error ScatteredForward(cudaStream_t stream, int32_t device, CallContext context,
                            ffi::Buffer<DT> points, ffi::Buffer<DT> values, ffi::Buffer<DT> scale,
                            ffi::Buffer<DT> queries, ffi::ResultBuffer<DT> out,
                            ffi::ResultBuffer<DT> density, double truncate) {
  using T = ffi::NativeType<DT>;
  JAX_GMM_ASSIGN(call, check_forward<T>(points, values, scale, &queries, *out, &*density));
  const auto& l = call.layout;
  DeviceScope scope;
  JAX_GMM_RETURN_IF_ERROR(scope.enter(device));
  ScratchArena scratch(context);
  Device dev{stream, scratch};
  CellBinning<T> cells;
  return for_each_example(
      call,
      [&](const T* p, const T* s, const T* q) {
        return cells.build(dev, p, s, call.n, static_cast<T>(truncate), q, call.m);
      },
      [&](int64_t b) {
        return scattered_forward(dev, cells, call.values.at(l, b), call.c, call.queries.at(l, b),
                                 call.m, call.out.at(l, b), call.density.at(l, b));
      });
}

template <ffi::DataType DT>
ffi::Error ScatteredBackward(cudaStream_t stream, int32_t device, CallContext context,
                             ffi::Buffer<DT> points, ffi::Buffer<DT> values,
                             ffi::Buffer<DT> scale, ffi::Buffer<DT> queries, ffi::Buffer<DT> out,
                             ffi::Buffer<DT> density, ffi::Buffer<DT> d_out,
                             ffi::Buffer<DT> d_density, ffi::ResultBuffer<DT> d_points,
                             ffi::ResultBuffer<DT> d_values, ffi::ResultBuffer<DT> d_scale,
                             ffi::ResultBuffer<DT> d_queries, double truncate,
                             bool point_grads, bool query_grads) {
  using T = ffi::NativeType<DT>;
  JAX_GMM_ASSIGN(call, check_backward<T>(points, values, scale, &queries, out, density, d_out,
                                         d_density, *d_points, *d_values, *d_scale,
                                         &*d_queries));
  const auto& l = call.layout;
  DeviceScope scope;
  JAX_GMM_RETURN_IF_ERROR(scope.enter(device));
  ScratchArena scratch(context);
  Device dev{stream, scratch};
  CellBinning<T> cells;
  Scratch<T> folded;
  return for_each_example(
      call,
      [&](const T* p, const T* s, const T* q) {
        return cells.build(dev, p, s, call.n, static_cast<T>(truncate), q, call.m);
      },
      [&](int64_t b) {
        return scattered_backward(
            dev, folded, cells, call.values.at(l, b), call.c, call.queries.at(l, b), call.m,
            call.out.at(l, b), call.density.at(l, b), call.d_out.at(l, b),
            call.d_density.at(l, b), call.d_points.at(l, b), call.d_values.at(l, b),
            call.d_scale.at(l, b), call.d_queries.at(l, b), point_grads, query_grads);
      });
}

template <ffi::DataType DT>
ffi::Error KthNearest(cudaStream_t stream, int32_t device, CallContext context,
                      ffi::Buffer<DT> points, ffi::ResultBuffer<ffi::S32> index, int64_t k) {
  using T = ffi::NativeType<DT>;
  JAX_GMM_ASSIGN(call, check_kth_nearest<T>(points, *index, k));
  DeviceScope scope;
  JAX_GMM_RETURN_IF_ERROR(scope.enter(device));
  ScratchArena scratch(context);
  Device dev{stream, scratch};
  NeighbourScratch tree;
  for (int64_t b = 0; b < call.layout.count(); ++b) {
    JAX_GMM_RETURN_IF_ERROR(kth_nearest(dev, tree, call.points.at(call.layout, b), call.n,
                                        static_cast<int>(k), index->typed_data() + b * call.n));
  }
  return ffi::Error::Success();
}

// XLA's stream, the ordinal of its device and the call's context (for
// scratch memory), then the buffers (operands.h).
template <ffi::DataType DT, int kArgs, int kRets>
auto bind() {
  return bind_buffers<DT, kArgs, kRets>(ffi::Ffi::Bind()
                                            .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                            .Ctx<ffi::DeviceOrdinal>()
                                            .Ctx<CallContext>());
}

}  // namespace

#define JAX_GMM_DEFINE(DT)                                                                   \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(CudaGridForward##DT, GridForward<ffi::DT>,                   \
                                (bind<ffi::DT, 3, 2>()));                                    \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(CudaGridBackward##DT, GridBackward<ffi::DT>,                 \
                                (bind<ffi::DT, 7, 3>()));                                    \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(CudaScatteredForward##DT, ScatteredForward<ffi::DT>,         \
                                (bind<ffi::DT, 4, 2>()));                                    \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(CudaScatteredBackward##DT, ScatteredBackward<ffi::DT>,       \
                                (bind<ffi::DT, 8, 4>()                                       \
                                     .Attr<bool>("point_grads")                              \
                                     .Attr<bool>("query_grads")));
JAX_GMM_DEFINE(F32)
JAX_GMM_DEFINE(F64)
#undef JAX_GMM_DEFINE

#define JAX_GMM_DEFINE_KTH_NEAREST(DT)                                          \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(CudaKthNearest##DT, KthNearest<ffi::DT>,        \
                                ffi::Ffi::Bind()                                \
                                    .Ctx<ffi::PlatformStream<cudaStream_t>>()   \
                                    .Ctx<ffi::DeviceOrdinal>()                  \
                                    .Ctx<CallContext>()                         \
                                    .Arg<ffi::Buffer<ffi::DT>>()                \
                                    .Ret<ffi::Buffer<ffi::S32>>()               \
                                    .Attr<int64_t>("k"));
JAX_GMM_DEFINE_KTH_NEAREST(F32)
JAX_GMM_DEFINE_KTH_NEAREST(F64)
#undef JAX_GMM_DEFINE_KTH_NEAREST

}  // namespace gpu

std::vector<Target> targets() {
  return {
      {"jax_gmm_grid_forward_f32", reinterpret_cast<void*>(gpu::CudaGridForwardF32)},
      {"jax_gmm_grid_backward_f32", reinterpret_cast<void*>(gpu::CudaGridBackwardF32)},
      {"jax_gmm_scattered_forward_f32", reinterpret_cast<void*>(gpu::CudaScatteredForwardF32)},
      {"jax_gmm_scattered_backward_f32", reinterpret_cast<void*>(gpu::CudaScatteredBackwardF32)},
      {"jax_gmm_grid_forward_f64", reinterpret_cast<void*>(gpu::CudaGridForwardF64)},
      {"jax_gmm_grid_backward_f64", reinterpret_cast<void*>(gpu::CudaGridBackwardF64)},
      {"jax_gmm_scattered_forward_f64", reinterpret_cast<void*>(gpu::CudaScatteredForwardF64)},
      {"jax_gmm_scattered_backward_f64", reinterpret_cast<void*>(gpu::CudaScatteredBackwardF64)},
      {"jax_gmm_kth_nearest_f32", reinterpret_cast<void*>(gpu::CudaKthNearestF32)},
      {"jax_gmm_kth_nearest_f64", reinterpret_cast<void*>(gpu::CudaKthNearestF64)},
  };
}

}  // namespace jax_gmm
