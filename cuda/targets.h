// The FFI targets a native module exports; bindings.cc turns them into the
// capsules that jax.ffi.register_ffi_target takes.
#pragma once

#include <vector>

namespace jax_gmm {

struct Target {
  const char* name;  // jax_gmm_{grid,scattered}_{forward,backward}_{f32,f64}
  void* handler;
};

// Defined once per module: cpu/handlers.cc and gpu/handlers.cu.
std::vector<Target> targets();

}  // namespace jax_gmm
