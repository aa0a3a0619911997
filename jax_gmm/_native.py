"""Loading the native modules and registering their XLA FFI targets."""

from __future__ import annotations

import importlib
import re
import warnings
from typing import Any

import jax
import jaxlib

# Platform names as jax.ffi.register_ffi_target and lax.platform_dependent spell them.
_MODULES = {"cpu": ("_cpu", "cpu"), "cuda": ("_cuda", "CUDA")}

#: The install line that builds the CUDA module, for the messages below.
CUDA_INSTALL = ('pip install scikit-build-core nanobind && pip install --no-build-isolation '
                '-e ".[test]" -Ccmake.define.JAX_GMM_CUDA=ON')


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _load(platform: str) -> dict[str, Any] | None:
    module_name, ffi_platform = _MODULES[platform]
    try:
        module = importlib.import_module(f"jax_gmm.{module_name}")
    except ImportError:
        return None
    info = dict(module.build_info())
    # Handlers built with newer XLA FFI headers than the running jaxlib's are
    # rejected by XLA at call time; say why and fall back to the reference.
    if _version(jaxlib.__version__) < _version(info["jaxlib_version"]):
        warnings.warn(
            f"jax_gmm: the {platform} module was built against jaxlib "
            f"{info['jaxlib_version']} but jaxlib {jaxlib.__version__} is running; "
            "using the pure-JAX reference instead. Rebuild with "
            "`pip install --no-build-isolation -e .` in this environment.",
            stacklevel=3,
        )
        return None
    for name, capsule in module.registrations().items():
        jax.ffi.register_ffi_target(name, capsule, platform=ffi_platform)
    info["targets"] = sorted(module.registrations())
    return info


_BUILT = {platform: _load(platform) for platform in _MODULES}

#: Platforms (as lax.platform_dependent names them) with native kernels.
NATIVE_PLATFORMS: tuple[str, ...] = tuple(p for p, info in _BUILT.items() if info)

_warned_gpu = False


def _gpu_visible() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:  # no GPU backend
        return False


def warn_if_gpu_without_module() -> None:
    """Warns, once per process, when JAX has a GPU but jax_gmm no CUDA module:
    calls on the GPU then run the pure-JAX reference, far slower."""
    global _warned_gpu
    if _warned_gpu or "cuda" in NATIVE_PLATFORMS:
        return
    _warned_gpu = True
    if _gpu_visible():
        warnings.warn(
            "jax_gmm: JAX runs on a GPU but jax_gmm has no CUDA module, so calls on the GPU "
            "use the pure-JAX reference (O(N x M), far slower). Build it with: "
            + CUDA_INSTALL,
            stacklevel=4,
        )


def build_info() -> dict[str, Any]:
    """Which native modules were built, how, and where calls go.

    Returns:
      A dict with one entry per platform, ``"cpu"`` and ``"cuda"``: ``None``
      when that module is not available, else a dict with ``ffi_api_version``
      (the XLA FFI API version of the headers it was compiled against),
      ``jaxlib_version`` (the jaxlib those headers came from),
      ``compile_flags`` and the registered ``targets``; the CPU entry also has
      ``kernel``, the kernel build chosen for this CPU at run time
      (``"baseline"``, ``"avx2"`` or ``"avx512"``). ``"jaxlib"`` gives the
      running jaxlib version, ``"backend"`` JAX's default backend and
      ``"calls"`` where calls on it go: ``"native"`` or ``"reference"``.

    Example:
      >>> jax_gmm.build_info()["calls"]
      'native'
    """
    backend = jax.default_backend()
    native = {"cpu": "cpu", "gpu": "cuda"}.get(backend) in NATIVE_PLATFORMS
    return {"jaxlib": jaxlib.__version__, **{p: info for p, info in _BUILT.items()},
            "backend": backend, "calls": "native" if native else "reference"}
