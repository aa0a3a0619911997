"""jax_gmm: differentiable non-uniform image interpolation with Gaussian mixtures.

`interpolate` renders an (H, W, C) image and `interpolate_at` evaluates at
arbitrary points; both run as native XLA FFI kernels where built (see
`build_info`) and as the pure-JAX `jax_gmm.reference` elsewhere.
"""

from jax_gmm import reference
from jax_gmm._api import interpolate, interpolate_at
from jax_gmm._ffi import FFI_TARGETS
from jax_gmm._native import build_info

__all__ = ["FFI_TARGETS", "build_info", "interpolate", "interpolate_at", "reference"]
__version__ = "0.1.0"
