// The Python face of a native module (_cpu or _cuda): one capsule per FFI
// target, and the facts build_info() reports.
#include <nanobind/nanobind.h>

#include "targets.h"
#include "xla/ffi/api/c_api.h"

namespace nb = nanobind;

#if defined(JAX_GMM_CPU_MODULE)
namespace jax_gmm {
const char* cpu_isa_name();  // cpu/handlers.cc
}
#endif

NB_MODULE(JAX_GMM_MODULE_NAME, m) {
  m.def("registrations", [] {
    nb::dict d;
    for (const jax_gmm::Target& t : jax_gmm::targets()) d[t.name] = nb::capsule(t.handler);
    return d;
  });
  m.def("build_info", [] {
    nb::dict d;
    d["ffi_api_version"] = nb::make_tuple(XLA_FFI_API_MAJOR, XLA_FFI_API_MINOR);
    d["jaxlib_version"] = JAX_GMM_JAXLIB_VERSION;
    d["compile_flags"] = JAX_GMM_COMPILE_FLAGS;
#if defined(JAX_GMM_CPU_MODULE)
    d["kernel"] = jax_gmm::cpu_isa_name();
#endif
    return d;
  });
}
