// XLA FFI handlers of the CPU module: shape checks, the walk over batch
// elements, and registration. The arithmetic lives in the kernel files.
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "kernels.h"
#include "operands.h"
#include "streaming.h"
#include "targets.h"

namespace ffi = xla::ffi;

namespace jax_gmm {
namespace {

// The kernel builds (CMakeLists.txt), from the portable one up.
enum class Isa { kBaseline, kAvx2, kAvx512 };

// The best build this CPU runs, capped by JAX_GMM_CPU_ISA=baseline|avx2
// (the tests compare the builds).
Isa cpu_isa() {
  static const Isa isa = [] {
    Isa best = Isa::kBaseline;
#if defined(JAX_GMM_X86_ISAS)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      best = Isa::kAvx2;
      if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
        best = Isa::kAvx512;
      }
    }
#endif
    const char* cap = std::getenv("JAX_GMM_CPU_ISA");
    const std::string name = cap ? cap : "";
    if (name == "baseline") return Isa::kBaseline;
    if (name == "avx2") return std::min(best, Isa::kAvx2);
    return best;
  }();
  return isa;
}

}  // namespace

// For build_info(): which kernel build the calls run.
const char* cpu_isa_name() {
  switch (cpu_isa()) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "baseline";
  }
}

namespace {

#if defined(JAX_GMM_X86_ISAS)
#define JAX_GMM_KERNEL(name)                                                 \
  (cpu_isa() == Isa::kAvx512 ? avx512::name<T>                              \
   : cpu_isa() == Isa::kAvx2 ? avx2::name<T>                                \
                             : baseline::name<T>)
#else
#define JAX_GMM_KERNEL(name) (baseline::name<T>)
#endif

// The records of points (N, 2) with Cholesky factors scale (N, 3).
template <typename T>
UninitVector<Gaussian<T>> records_of(ffi::ThreadPool& pool, const T* points, const T* scale,
                                     int64_t n, double truncate) {
  UninitVector<Gaussian<T>> records(n);
  JAX_GMM_KERNEL(point_records)(pool, points, scale, n, static_cast<T>(truncate), records.data());
  return records;
}

// The same points binned into the tiles of an H x W image.
template <typename T>
TiledPoints<T> make_tiled_points(ffi::ThreadPool& pool, const T* points, const T* scale,
                                 int64_t n, double truncate, int64_t height, int64_t width) {
  UninitVector<Gaussian<T>> records(n);
  UninitVector<TileBox> boxes(n);
  JAX_GMM_KERNEL(tiled_records)(pool, points, scale, n, static_cast<T>(truncate), height, width,
                                records.data(), boxes.data());
  return TiledPoints<T>(pool, std::move(records), std::move(boxes), height, width);
}

// The binning depends only on points, scale (and queries), so consecutive
// batch elements that share them (vmap with in_axes=None on them) reuse it.
template <typename Binned>
class BinCache {
 public:
  template <typename Make>
  const Binned& get(const void* points, const void* scale, const void* queries,
                    const Make& make) {
    if (!binned_ || points != points_ || scale != scale_ || queries != queries_) {
      binned_.emplace(make());
      points_ = points, scale_ = scale, queries_ = queries;
    }
    return *binned_;
  }

 private:
  std::optional<Binned> binned_;
  const void* points_ = nullptr;
  const void* scale_ = nullptr;
  const void* queries_ = nullptr;
};

// The backward's binning of one batch element: its queries in cells, and
// points splatted into them: all of them where near is unset, else only
// those near lists, gathered in point order (scatter_rows relies on the
// order).
template <typename T>
struct BackwardBins {
  std::optional<UninitVector<uint32_t>> near;  // the binned points' indices, increasing
  CelledQueries<T> celled;
};

// rows[index[k]] of a (., width) array, into row k of the result (K, width).
// Plain loops: copy_n on rows of 2 or 3 numbers was a memmove call each.
template <typename T>
UninitVector<T> gather_rows(const T* rows, int64_t width, const UninitVector<uint32_t>& index) {
  UninitVector<T> out(index.size() * width);
  for (size_t k = 0; k < index.size(); ++k) {
    for (int64_t j = 0; j < width; ++j) out[k * width + j] = rows[index[k] * width + j];
  }
  return out;
}

// Row k of rows (K, width) into row index[k] of out (n, width), and zeros
// into the others; index increases. Each row is written once.
template <typename T>
void scatter_rows(ffi::ThreadPool& pool, const T* rows, int64_t width,
                  const UninitVector<uint32_t>& index, int64_t n, T* out) {
  parallel_for(pool, (n + kMembersPerChunk - 1) / kMembersPerChunk, [&](int64_t c) {
    const int64_t lo = c * kMembersPerChunk, hi = std::min(n, lo + kMembersPerChunk);
    const int64_t count = index.size();
    int64_t k = std::lower_bound(index.begin(), index.end(), lo) - index.begin();
    int64_t next = lo;  // the chunk's first row not yet written
    for (; k < count && index[k] < hi; ++k) {
      std::fill(out + next * width, out + index[k] * width, T(0));
      for (int64_t j = 0; j < width; ++j) out[index[k] * width + j] = rows[k * width + j];
      next = index[k] + int64_t{1};
    }
    std::fill(out + next * width, out + hi * width, T(0));
  });
}

// At few queries (sparse_queries) only the points near one of them
// (near_point_list, the sparse forward's filter) are gathered, binned and
// walked: the others' pairs have zero weight, and their cotangents are
// zeros. The backward alone, in points and values, at 256 queries among
// 65,536 points (sigma 2 on 512 x 512; minimum of calls, three alternated
// processes on the EPYC) took 2.9-3.2 ms against 5.4-6.8 ms when every
// point was recorded and walked, and only the far ones' cells left out; at
// 1,024 queries, with 58% of the points near one, no less. SparseQueries
// is made for its grid alone: its lists are O(M), small beside the points.
template <typename T>
BackwardBins<T> backward_bins(ffi::ThreadPool& pool, const T* points, const T* scale, int64_t n,
                              const T* queries, int64_t m, int64_t channels, double truncate) {
  if (sparse_queries(n, m, channels, sizeof(T))) {
    const T t = static_cast<T>(truncate);
    const PointReach reach = JAX_GMM_KERNEL(points_reach)(pool, points, scale, n, t);
    const SparseQueries<T> sparse(pool, points, scale, n, t, reach, queries, m);
    if (sparse.near.grid.cells() > 0) {
      UninitVector<uint32_t> near = JAX_GMM_KERNEL(near_point_list)(pool, sparse.near, points, n);
      const UninitVector<T> p = gather_rows(points, 2, near), s = gather_rows(scale, 3, near);
      auto records = records_of(pool, p.data(), s.data(), near.size(), truncate);
      return {std::move(near), CelledQueries<T>(pool, std::move(records), queries, m)};
    }
  }
  return {std::nullopt, CelledQueries<T>(pool, records_of(pool, points, scale, n, truncate),
                                         queries, m)};
}

// Batch element b's points binned into the image's tiles.
template <typename T>
const TiledPoints<T>& tiled_points(BinCache<TiledPoints<T>>& cache, ffi::ThreadPool& pool,
                                   const Call<T>& call, int64_t b, double truncate) {
  const T* p = call.points.at(call.layout, b);
  const T* s = call.scale.at(call.layout, b);
  return cache.get(p, s, nullptr, [&] {
    return make_tiled_points(pool, p, s, call.n, truncate, call.h, call.w);
  });
}

// One past the last of the batch elements from `begin` on that share its
// points, scale and queries (vmap with in_axes None on them; a grid call has
// no queries): the forwards bin them once and render them together.
template <typename T>
int64_t shared_run_end(const Call<T>& call, int64_t begin) {
  const auto& l = call.layout;
  int64_t end = begin + 1;
  const auto same = [&](const Operand<T>& x) { return x.at(l, end) == x.at(l, begin); };
  while (end < l.count() && same(call.points) && same(call.scale) && same(call.queries)) ++end;
  return end;
}

// Huge pages for the large results of a call (streaming.h).
template <typename... Results>
void advise_huge_pages_for(Results&... results) {
  (advise_huge_pages(results->untyped_data(), results->size_bytes()), ...);
}

// The grid forward of a checked call; call.density empty writes no density.
template <typename T>
void grid_forward_call(ffi::ThreadPool& pool, const Call<T>& call, double truncate) {
  const auto& l = call.layout;
  for (int64_t begin = 0, end; begin < l.count(); begin = end) {
    end = shared_run_end(call, begin);
    const TiledPoints<T> tiled = make_tiled_points(
        pool, call.points.at(l, begin), call.scale.at(l, begin), call.n, truncate, call.h, call.w);
    SharedPointsRun<T> run;
    for (int64_t b = begin; b < end; ++b) {
      run.values.push_back(call.values.at(l, b));
      run.out.push_back(call.out.at(l, b));
      run.density.push_back(call.density.at(l, b));
    }
    JAX_GMM_KERNEL(grid_forward)(pool, tiled, run, call.c);
  }
}

template <ffi::DataType DT>
ffi::Error GridForward(ffi::ThreadPool pool, ffi::Buffer<DT> points, ffi::Buffer<DT> values,
                       ffi::Buffer<DT> scale, ffi::ResultBuffer<DT> out,
                       ffi::ResultBuffer<DT> density, double truncate) {
  using T = ffi::NativeType<DT>;
  JAX_GMM_ASSIGN(call, check_forward<T>(points, values, scale, nullptr, *out, &*density));
  advise_huge_pages_for(out, density);
  grid_forward_call(pool, call, truncate);
  return ffi::Error::Success();
}

// The grid forward's out alone, for calls that are not differentiated: no
// density plane to allocate and write, a quarter of an RGB image's bytes. A
// vmap over 64 RGB images of 256^2 sharing their points, which writes the
// density once per image, takes 25.8-28.3 ms against 31.6-35.1 ms with it
// (min of calls, 3 alternated rounds on the Xeon).
template <ffi::DataType DT>
ffi::Error GridOut(ffi::ThreadPool pool, ffi::Buffer<DT> points, ffi::Buffer<DT> values,
                   ffi::Buffer<DT> scale, ffi::ResultBuffer<DT> out, double truncate) {
  using T = ffi::NativeType<DT>;
  JAX_GMM_ASSIGN(call, check_forward<T>(points, values, scale, nullptr, *out, nullptr));
  advise_huge_pages_for(out);
  grid_forward_call(pool, call, truncate);
  return ffi::Error::Success();
}

template <ffi::DataType DT>
ffi::Error GridBackward(ffi::ThreadPool pool, ffi::Buffer<DT> points, ffi::Buffer<DT> values,
                        ffi::Buffer<DT> scale, ffi::Buffer<DT> out, ffi::Buffer<DT> density,
                        ffi::Buffer<DT> d_out, ffi::Buffer<DT> d_density,
                        ffi::ResultBuffer<DT> d_points, ffi::ResultBuffer<DT> d_values,
                        ffi::ResultBuffer<DT> d_scale, double truncate) {
  using T = ffi::NativeType<DT>;
  JAX_GMM_ASSIGN(call, check_backward<T>(points, values, scale, nullptr, out, density, d_out,
                                         d_density, *d_points, *d_values, *d_scale, nullptr,
                                         /*zero_d_density=*/true));
  advise_huge_pages_for(d_points, d_values, d_scale);
  const auto& l = call.layout;
  BinCache<TiledPoints<T>> cache;
  for (int64_t b = 0; b < l.count(); ++b) {
    const auto& tiled = tiled_points(cache, pool, call, b, truncate);
    JAX_GMM_KERNEL(grid_backward)(pool, tiled, call.values.at(l, b), call.c, call.out.at(l, b),
                                  call.density.at(l, b), call.d_out.at(l, b),
                                  call.d_density.at(l, b), call.d_points.at(l, b),
                                  call.d_values.at(l, b), call.d_scale.at(l, b));
  }
  return ffi::Error::Success();
}

// The most scratch forward_at_centres holds at once: a vmap renders its
// images in groups that fit, so that its memory stays that of its outputs.
constexpr int64_t kCentreScratchBytes = int64_t{256} << 20;

// Batch elements [begin, end), which share points, scale and queries, at
// queries that are the centres of `image`: rendered together by the grid
// forward, into the outputs when the queries list the image in order, else
// packed into scratch (one cache line per pixel read) that each element's
// queries are then read off.
template <typename T>
void forward_at_centres(ffi::ThreadPool& pool, const Call<T>& call, int64_t begin, int64_t end,
                        const CentreImage& image, double truncate) {
  const auto& l = call.layout;
  const TiledPoints<T> tiled =
      make_tiled_points(pool, call.points.at(l, begin), call.scale.at(l, begin), call.n, truncate,
                        image.height, image.width);
  const int64_t per_image = image.height * image.width * (call.c + 1);  // density, then out
  const int64_t group =
      image.in_order ? end - begin
                     : std::clamp<int64_t>(kCentreScratchBytes / (per_image * sizeof(T)), 1,
                                           end - begin);
  UninitVector<T> scratch(image.in_order ? 0 : group * per_image);
  advise_huge_pages(scratch.data(), scratch.size() * sizeof(T), /*at_least=*/0);  // read at random
  for (int64_t first = begin; first < end; first += group) {
    const int64_t last = std::min(end, first + group);
    SharedPointsRun<T> run;
    run.packed = !image.in_order;
    for (int64_t b = first; b < last; ++b) {
      run.values.push_back(call.values.at(l, b));
      run.out.push_back(image.in_order ? call.out.at(l, b)
                                       : scratch.data() + (b - first) * per_image);
      run.density.push_back(image.in_order ? call.density.at(l, b) : nullptr);
    }
    JAX_GMM_KERNEL(grid_forward)(pool, tiled, run, call.c);
    if (image.in_order) continue;
    for (int64_t b = first; b < last; ++b) {
      JAX_GMM_KERNEL(read_centres)(pool, call.queries.at(l, b), call.m, image, call.c,
                                   run.out[b - first], call.out.at(l, b), call.density.at(l, b));
    }
  }
}

// The scattered forward of a checked call; call.density empty writes no density.
template <typename T>
void scattered_forward_call(ffi::ThreadPool& pool, const Call<T>& call, double truncate) {
  const auto& l = call.layout;
  for (int64_t begin = 0, end; begin < l.count(); begin = end) {
    end = shared_run_end(call, begin);
    const T* q = call.queries.at(l, begin);
    const CentreImage image = JAX_GMM_KERNEL(centre_image)(pool, q, call.m);
    if (image.height > 0) {
      forward_at_centres(pool, call, begin, end, image, truncate);
      continue;
    }
    if (sparse_queries(call.n, call.m, call.c, sizeof(T))) {
      const T* points = call.points.at(l, begin);
      const T* scale = call.scale.at(l, begin);
      const PointReach reach =
          JAX_GMM_KERNEL(points_reach)(pool, points, scale, call.n, static_cast<T>(truncate));
      const SparseQueries<T> sparse(pool, points, scale, call.n, static_cast<T>(truncate), reach,
                                    q, call.m);
      for (int64_t b = begin; b < end; ++b) {
        JAX_GMM_KERNEL(sparse_queries_forward)(pool, sparse, call.values.at(l, b), call.c,
                                               call.m, call.out.at(l, b), call.density.at(l, b));
      }
      continue;
    }
    const CelledQueries<T> celled(
        pool, records_of(pool, call.points.at(l, begin), call.scale.at(l, begin), call.n, truncate),
        q, call.m);
    for (int64_t b = begin; b < end; ++b) {
      JAX_GMM_KERNEL(scattered_forward)(pool, celled, call.values.at(l, b), call.c, q, call.m,
                                        call.out.at(l, b), call.density.at(l, b));
    }
  }
}

template <ffi::DataType DT>
ffi::Error ScatteredForward(ffi::ThreadPool pool, ffi::Buffer<DT> points,
                            ffi::Buffer<DT> values, ffi::Buffer<DT> scale,
                            ffi::Buffer<DT> queries, ffi::ResultBuffer<DT> out,
                            ffi::ResultBuffer<DT> density, double truncate) {
  using T = ffi::NativeType<DT>;
  JAX_GMM_ASSIGN(call, check_forward<T>(points, values, scale, &queries, *out, &*density));
  advise_huge_pages_for(out, density);
  scattered_forward_call(pool, call, truncate);
  return ffi::Error::Success();
}

// The scattered forward's out alone, as GridOut.
template <ffi::DataType DT>
ffi::Error ScatteredOut(ffi::ThreadPool pool, ffi::Buffer<DT> points, ffi::Buffer<DT> values,
                        ffi::Buffer<DT> scale, ffi::Buffer<DT> queries,
                        ffi::ResultBuffer<DT> out, double truncate) {
  using T = ffi::NativeType<DT>;
  JAX_GMM_ASSIGN(call, check_forward<T>(points, values, scale, &queries, *out, nullptr));
  advise_huge_pages_for(out);
  scattered_forward_call(pool, call, truncate);
  return ffi::Error::Success();
}

template <ffi::DataType DT>
ffi::Error ScatteredBackward(ffi::ThreadPool pool, ffi::Buffer<DT> points,
                             ffi::Buffer<DT> values, ffi::Buffer<DT> scale,
                             ffi::Buffer<DT> queries, ffi::Buffer<DT> out,
                             ffi::Buffer<DT> density, ffi::Buffer<DT> d_out,
                             ffi::Buffer<DT> d_density, ffi::ResultBuffer<DT> d_points,
                             ffi::ResultBuffer<DT> d_values, ffi::ResultBuffer<DT> d_scale,
                             ffi::ResultBuffer<DT> d_queries, double truncate,
                             bool point_grads, bool query_grads) {
  using T = ffi::NativeType<DT>;
  JAX_GMM_ASSIGN(call, check_backward<T>(points, values, scale, &queries, out, density, d_out,
                                         d_density, *d_points, *d_values, *d_scale,
                                         &*d_queries));
  advise_huge_pages_for(d_points, d_values, d_scale, d_queries);
  const auto& l = call.layout;
  BinCache<BackwardBins<T>> cache;
  for (int64_t b = 0; b < l.count(); ++b) {
    const T* p = call.points.at(l, b);
    const T* s = call.scale.at(l, b);
    const T* q = call.queries.at(l, b);
    const BackwardBins<T>& bins = cache.get(p, s, q, [&] {
      return backward_bins(pool, p, s, call.n, q, call.m, call.c, truncate);
    });
    const auto backward = [&](const T* values, T* d_points, T* d_values, T* d_scale) {
      JAX_GMM_KERNEL(scattered_backward)(
          pool, bins.celled, values, call.c, q, call.m, call.out.at(l, b),
          call.density.at(l, b), call.d_out.at(l, b), call.d_density.at(l, b), d_points,
          d_values, d_scale, call.d_queries.at(l, b), point_grads, query_grads);
    };
    if (!bins.near) {
      backward(call.values.at(l, b), call.d_points.at(l, b), call.d_values.at(l, b),
               call.d_scale.at(l, b));
      continue;
    }
    const UninitVector<uint32_t>& near = *bins.near;
    const int64_t k = near.size();
    UninitVector<T> d_points(2 * k), d_values(k * call.c), d_scale(3 * k);
    backward(gather_rows(call.values.at(l, b), call.c, near).data(), d_points.data(),
             d_values.data(), d_scale.data());
    scatter_rows(pool, d_points.data(), 2, near, call.n, call.d_points.at(l, b));
    scatter_rows(pool, d_values.data(), call.c, near, call.n, call.d_values.at(l, b));
    scatter_rows(pool, d_scale.data(), 3, near, call.n, call.d_scale.at(l, b));
  }
  return ffi::Error::Success();
}

template <ffi::DataType DT>
ffi::Error KthNearest(ffi::ThreadPool pool, ffi::Buffer<DT> points,
                      ffi::ResultBuffer<ffi::S32> index, int64_t k) {
  using T = ffi::NativeType<DT>;
  JAX_GMM_ASSIGN(call, check_kth_nearest<T>(points, *index, k));
  for (int64_t b = 0; b < call.layout.count(); ++b) {
    kth_nearest(pool, call.points.at(call.layout, b), call.n, static_cast<int>(k),
                index->typed_data() + b * call.n);
  }
  return ffi::Error::Success();
}

}  // namespace

// XLA's CPU thread pool, then the buffers (operands.h).
template <ffi::DataType DT, int kArgs, int kRets>
auto bind() {
  return bind_buffers<DT, kArgs, kRets>(ffi::Ffi::Bind().Ctx<ffi::ThreadPool>());
}

#define JAX_GMM_DEFINE(DT, SUFFIX)                                                            \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(GridForward##SUFFIX, GridForward<ffi::DT>,                    \
                                (bind<ffi::DT, 3, 2>()));                                     \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(GridOut##SUFFIX, GridOut<ffi::DT>,                            \
                                (bind<ffi::DT, 3, 1>()));                                     \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(GridBackward##SUFFIX, GridBackward<ffi::DT>,                  \
                                (bind<ffi::DT, 7, 3>()));                                     \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(ScatteredForward##SUFFIX, ScatteredForward<ffi::DT>,          \
                                (bind<ffi::DT, 4, 2>()));                                     \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(ScatteredOut##SUFFIX, ScatteredOut<ffi::DT>,                  \
                                (bind<ffi::DT, 4, 1>()));                                     \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(ScatteredBackward##SUFFIX, ScatteredBackward<ffi::DT>,        \
                                (bind<ffi::DT, 8, 4>()                                        \
                                     .Attr<bool>("point_grads")                               \
                                     .Attr<bool>("query_grads")));
JAX_GMM_DEFINE(F32, F32)
JAX_GMM_DEFINE(F64, F64)

#define JAX_GMM_DEFINE_KTH_NEAREST(DT, SUFFIX)                                 \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(KthNearest##SUFFIX, KthNearest<ffi::DT>,       \
                                ffi::Ffi::Bind()                               \
                                    .Ctx<ffi::ThreadPool>()                    \
                                    .Arg<ffi::Buffer<ffi::DT>>()               \
                                    .Ret<ffi::Buffer<ffi::S32>>()              \
                                    .Attr<int64_t>("k"));
JAX_GMM_DEFINE_KTH_NEAREST(F32, F32)
JAX_GMM_DEFINE_KTH_NEAREST(F64, F64)

std::vector<Target> targets() {
  return {
      {"jax_gmm_grid_forward_f32", reinterpret_cast<void*>(GridForwardF32)},
      {"jax_gmm_grid_out_f32", reinterpret_cast<void*>(GridOutF32)},
      {"jax_gmm_grid_backward_f32", reinterpret_cast<void*>(GridBackwardF32)},
      {"jax_gmm_scattered_forward_f32", reinterpret_cast<void*>(ScatteredForwardF32)},
      {"jax_gmm_scattered_out_f32", reinterpret_cast<void*>(ScatteredOutF32)},
      {"jax_gmm_scattered_backward_f32", reinterpret_cast<void*>(ScatteredBackwardF32)},
      {"jax_gmm_grid_forward_f64", reinterpret_cast<void*>(GridForwardF64)},
      {"jax_gmm_grid_out_f64", reinterpret_cast<void*>(GridOutF64)},
      {"jax_gmm_grid_backward_f64", reinterpret_cast<void*>(GridBackwardF64)},
      {"jax_gmm_scattered_forward_f64", reinterpret_cast<void*>(ScatteredForwardF64)},
      {"jax_gmm_scattered_out_f64", reinterpret_cast<void*>(ScatteredOutF64)},
      {"jax_gmm_scattered_backward_f64", reinterpret_cast<void*>(ScatteredBackwardF64)},
      {"jax_gmm_kth_nearest_f32", reinterpret_cast<void*>(KthNearestF32)},
      {"jax_gmm_kth_nearest_f64", reinterpret_cast<void*>(KthNearestF64)},
  };
}

}  // namespace jax_gmm
