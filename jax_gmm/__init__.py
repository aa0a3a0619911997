"""jax_gmm: differentiable non-uniform image interpolation with Gaussian mixtures.

`interpolate` renders an (H, W, C) image and `interpolate_at` evaluates at
arbitrary points (round Gaussians, per-axis widths or full covariances);
`adaptive_sigma` gives per-point widths from the points' density,
`fit_values` values that reproduce the samples, `reconstruct` rebuilds an
image from scattered samples (steered, locally linear), `upsample` enlarges
an image consistently and `fit_image` fits Gaussians to an image with optax.
The kernels run as native XLA FFI calls where built (see `build_info`) and
as the pure-JAX `jax_gmm.reference` elsewhere.

jax.export refuses custom calls it does not know; `FFI_TARGETS` names the
package's, to allow them (running the exported artefact needs jax_gmm
imported, which registers the kernels):

    >>> from jax import export
    >>> checks = [export.DisabledSafetyCheck.custom_call(t) for t in jax_gmm.FFI_TARGETS]
    >>> f = jax.jit(lambda p, v: jax_gmm.interpolate(p, v, 1.5, (8, 8)))
    >>> p, v = jnp.zeros((3, 2)) + 4, jnp.ones((3, 1))
    >>> blob = export.export(f, disabled_checks=checks)(p, v).serialize()
    >>> export.deserialize(blob).call(p, v).shape
    (8, 8, 1)
"""

from jax_gmm import reference, sharding
from jax_gmm._api import interpolate, interpolate_at
from jax_gmm._ffi import FFI_TARGETS
from jax_gmm._native import build_info
from jax_gmm.adaptive import adaptive_sigma
from jax_gmm.fitting import fit_image
from jax_gmm.interpolating import fit_values
from jax_gmm.reconstruction import reconstruct
from jax_gmm.upsampling import upsample

__all__ = ["FFI_TARGETS", "adaptive_sigma", "build_info", "fit_image", "fit_values", "interpolate",
           "interpolate_at", "reconstruct", "reference", "sharding", "upsample"]
__version__ = "0.1.0"
