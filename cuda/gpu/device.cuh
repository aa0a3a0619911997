// Host-side plumbing of the CUDA module: errors, scratch memory, launches.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// nvcc's front end and the host compiler flag the XLA headers' switches over
// every enumerator as "missing return" (940, -Wreturn-type) and their
// always_inline templates (2473); harmless there, they would bury this
// module's own warnings.
#pragma nv_diag_suppress 940
#pragma nv_diag_suppress 2473
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wreturn-type"
#include "xla/ffi/api/ffi.h"
#pragma GCC diagnostic pop
#pragma nv_diag_default 940
#pragma nv_diag_default 2473

namespace jax_gmm {
namespace gpu {

namespace ffi = xla::ffi;

#define JAX_GMM_RETURN_IF_ERROR(expr)    \
  do {                                   \
    ffi::Error error_ = (expr);          \
    if (error_.failure()) return error_; \
  } while (0)

// `what` failed with CUDA error `code`, as a message XLA shows the user.
inline ffi::Error cuda_error(cudaError_t code, const char* what) {
  return ffi::Error::Internal(std::string("jax_gmm: ") + what + " failed: " +
                              cudaGetErrorName(code) + " (" + cudaGetErrorString(code) + ")");
}

#define JAX_GMM_CUDA_NAMED(expr, what)                                   \
  do {                                                                   \
    const cudaError_t code_ = (expr);                                    \
    if (code_ != cudaSuccess) return ::jax_gmm::gpu::cuda_error(code_, what); \
  } while (0)
#define JAX_GMM_CUDA(expr) JAX_GMM_CUDA_NAMED(expr, #expr)
// After a <<<...>>> launch: a bad configuration is only reported here.
#define JAX_GMM_LAUNCHED(kernel) JAX_GMM_CUDA_NAMED(cudaGetLastError(), "launch of " kernel)

// The FFI API and the execution context of a call, decoded as a context
// (Ctx<CallContext>() in the binding), for the C API calls that ffi.h's
// wrappers do not expose as needed: ScratchAllocator reports a failed
// allocation only to a diagnostic engine that no one reads.
struct CallContext {
  const XLA_FFI_Api* api;
  XLA_FFI_ExecutionContext* ctx;
};

}  // namespace gpu
}  // namespace jax_gmm

template <>
struct xla::ffi::CtxDecoding<jax_gmm::gpu::CallContext> {
  using Type = jax_gmm::gpu::CallContext;
  static std::optional<Type> Decode(const XLA_FFI_Api* api, XLA_FFI_ExecutionContext* ctx,
                                    DiagnosticEngine&) {
    return Type{api, ctx};
  }
};

namespace jax_gmm {
namespace gpu {

// XLA's device memory for the call's temporaries, all freed when the handler
// returns (as ffi::ScratchAllocator does), with XLA's own error text when an
// allocation fails.
class ScratchArena {
 public:
  explicit ScratchArena(CallContext call) : call_(call) {}
  ScratchArena(const ScratchArena&) = delete;
  ScratchArena& operator=(const ScratchArena&) = delete;
  ~ScratchArena() {
    for (const Block& b : blocks_) {
      XLA_FFI_DeviceMemory_Free_Args args{XLA_FFI_DeviceMemory_Free_Args_STRUCT_SIZE, nullptr,
                                          call_.ctx, b.bytes, b.data};
      if (XLA_FFI_Error* error = call_.api->XLA_FFI_DeviceMemory_Free(&args)) destroy(error);
    }
  }

  // XLA's allocator rejects any alignment above 16 ("Unsupported alignment");
  // its blocks are 256-byte aligned anyway, and CUB aligns its own temporaries.
  ffi::Error allocate(size_t bytes, void** data) {
    XLA_FFI_DeviceMemory_Allocate_Args args{XLA_FFI_DeviceMemory_Allocate_Args_STRUCT_SIZE,
                                            nullptr, call_.ctx, bytes, 16, nullptr};
    if (XLA_FFI_Error* error = call_.api->XLA_FFI_DeviceMemory_Allocate(&args)) {
      XLA_FFI_Error_GetMessage_Args message{XLA_FFI_Error_GetMessage_Args_STRUCT_SIZE, nullptr,
                                            error, nullptr};
      call_.api->XLA_FFI_Error_GetMessage(&message);
      std::string text = "jax_gmm: could not allocate " + std::to_string(bytes) +
                         " bytes of GPU scratch memory: " +
                         (message.message ? message.message : "(no message)");
      destroy(error);
      return ffi::Error(ffi::ErrorCode::kResourceExhausted, std::move(text));
    }
    blocks_.push_back({args.data, bytes});
    *data = args.data;
    return ffi::Error::Success();
  }

 private:
  struct Block {
    void* data;
    size_t bytes;
  };
  void destroy(XLA_FFI_Error* error) {
    XLA_FFI_Error_Destroy_Args args{XLA_FFI_Error_Destroy_Args_STRUCT_SIZE, nullptr, error};
    call_.api->XLA_FFI_Error_Destroy(&args);
  }

  CallContext call_;
  std::vector<Block> blocks_;
};

// Makes the device of XLA's stream (the call's device ordinal) current on
// the calling thread while a handler runs, and then restores the previous
// one: kernels and CUB launch on the current device, which in a process with
// several GPUs need not be the stream's.
class DeviceScope {
 public:
  DeviceScope() = default;
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
  ffi::Error enter(int32_t ordinal) {
    JAX_GMM_CUDA(cudaGetDevice(&previous_));
    if (previous_ != ordinal) {
      JAX_GMM_CUDA(cudaSetDevice(ordinal));
      restore_ = true;
    }
    return ffi::Error::Success();
  }
  ~DeviceScope() {
    if (restore_) cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0;
  bool restore_ = false;
};

// What every stage needs from the FFI call: XLA's stream, on which all work
// is queued, and the call's scratch memory, the only source of temporaries.
struct Device {
  cudaStream_t stream;
  ScratchArena& scratch;
};

// A scratch array that lives for the whole FFI call. The batch elements of a
// call run one after another on one stream, so a later element can reuse an
// earlier one's array; it is reallocated only when it must grow (XLA frees
// every allocation when the handler returns).
template <typename U>
class Scratch {
 public:
  ffi::Error reserve(Device& dev, int64_t count) {
    if (count <= capacity_) return ffi::Error::Success();
    const int64_t grown = std::max(count, capacity_ + capacity_ / 2);
    void* data = nullptr;
    JAX_GMM_RETURN_IF_ERROR(dev.scratch.allocate(static_cast<size_t>(grown) * sizeof(U), &data));
    data_ = static_cast<U*>(data);
    capacity_ = grown;
    return ffi::Error::Success();
  }
  U* data() const { return data_; }

 private:
  U* data_ = nullptr;
  int64_t capacity_ = 0;
};

// Copies a small result of earlier kernels to the host and waits for it: the
// sizes of the binning's lists are data-dependent and size the allocations.
template <typename U>
ffi::Error read_back(Device& dev, const U* device, U* host) {
  JAX_GMM_CUDA(cudaMemcpyAsync(host, device, sizeof(U), cudaMemcpyDeviceToHost, dev.stream));
  JAX_GMM_CUDA(cudaStreamSynchronize(dev.stream));
  return ffi::Error::Success();
}

// Zeroes `count` elements (all-zero bytes are +0.0).
template <typename U>
ffi::Error zero(Device& dev, U* data, int64_t count) {
  if (count == 0) return ffi::Error::Success();
  JAX_GMM_CUDA(cudaMemsetAsync(data, 0, static_cast<size_t>(count) * sizeof(U), dev.stream));
  return ffi::Error::Success();
}

// Threads per block of the one-item-per-thread (or per-warp) kernels.
constexpr int kThreads = 256;
constexpr int kWarp = 32;

// Blocks for `items` items of `per_block` each. Kernels loop with a grid
// stride, so the cap only bounds the launch. Callers skip items == 0.
inline unsigned int blocks_for(int64_t items, int64_t per_block = kThreads) {
  return static_cast<unsigned int>(std::min<int64_t>((items + per_block - 1) / per_block, 1 << 20));
}

// Calls f(std::integral_constant<int, K>()) with K, the number of channels a
// kernel accumulates in registers at once: every channel up to 4 (so RGB is
// one pass), else chunks of 4.
template <typename F>
ffi::Error with_channel_chunk(int64_t channels, F&& f) {
  switch (channels) {
    case 2: return f(std::integral_constant<int, 2>());
    case 3: return f(std::integral_constant<int, 3>());
    case 0:
    case 1: return f(std::integral_constant<int, 1>());
    default: return f(std::integral_constant<int, 4>());
  }
}

// Passes over the channels: at least one, which also yields the density
// (and, backward, the position and scale cotangents) when there are none.
inline int64_t channel_chunks(int64_t channels, int k) {
  return std::max<int64_t>(1, (channels + k - 1) / k);
}

}  // namespace gpu
}  // namespace jax_gmm
