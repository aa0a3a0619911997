"""Enlarging an image consistently: box-downsampling the result gives the input back.

One Gaussian sits at the centre of every input pixel. Rendering the input's
own values at the output size blurs it, and box-downsampling that render does
not give the input back. `upsample` instead solves for the values that do,
by iterative back-projection: start from the input and add, each iteration,
the input minus the box-downsampled render. The Gaussian-weighted mean is a
local averaging, so each iteration shrinks the inconsistency.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import export

from jax_gmm import _checks
from jax_gmm._api import interpolate
from jax_gmm._checks import ArrayLike


#: sigma = SIGMA_PER_FACTOR * factor output pixels by default, fitted by
#: experiments/grid_reconstruction.py on half of scikit-image's photographs.
SIGMA_PER_FACTOR = 0.6


def upsample(image: ArrayLike, factor: int, *, sigma: ArrayLike | None = None,
             iters: int = 20, truncate: float = 4.0, return_density: bool = False
             ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Enlarges an (H, W, C) image by an integer factor, consistently with it.

    The result R satisfies box_downsample(R, factor) = image up to the
    remaining inconsistency after `iters` back-projection steps (each output
    f x f block averages to its input pixel). The values rendered are v with
    v <- v + (image - box_downsample(interpolate(centres, v, sigma, (H f, W f))))
    from v = image, where centres are the input pixels' centres in output pixels.

    Args:
      image: (H, W, C) float image (any range; C channels).
      factor: static integer factor f >= 1.
      sigma: Gaussian width in output pixels (default SIGMA_PER_FACTOR * f):
        positive, a scalar or one per input pixel in row-major order, in any
        of `interpolate`'s forms with N = H W ((N,), (N, 2) or (N, 2, 2)).
      iters: static number of back-projection steps (default 20; 0 renders the
        input values themselves).
      truncate: static cutoff in units of sigma (default 4, so that every
        output pixel is reached).
      return_density: also return Z, (H f, W f), of the Gaussians: 0 at
        the output pixels that none reaches (which are 0 in the image).

    Returns:
      (H f, W f, C) in the image's floating dtype (and with
      ``return_density``, ``(image, density)``). Differentiable in image and
      sigma (reverse mode), and vmap-able over a batch of images.

    Example:
      >>> low = jnp.ones((8, 8, 3)) * 0.5
      >>> jax_gmm.upsample(low, 4).shape
      (32, 32, 3)
    """
    factor = _checks.check_int("factor", factor, 1)
    iters = _checks.check_int("iters", iters, 0)
    truncate = _checks.check_truncate(truncate)
    return_density = _checks.check_flag("return_density", return_density)
    image = jnp.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must have shape (H, W, C), got {image.shape}")
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise ValueError(f"image must have a floating-point dtype, got {image.dtype}")
    if any(map(export.is_symbolic_dim, image.shape)):
        raise ValueError(f"image must have a known shape (H, W, C), got {image.shape}")
    if sigma is None:
        sigma = SIGMA_PER_FACTOR * factor
    # interpolate's own checks, here: inside _upsample's jit sigma is traced,
    # and a width <= 0 would render a blank image rather than raise
    sigma = _checks.as_array("sigma", sigma)
    kind = _checks.check_sigma(sigma, image.shape[0] * image.shape[1])
    _checks.check_static_sigma(sigma, kind, _checks.compute_dtype(image, sigma)[1])
    return _upsample(image, sigma, factor, iters, truncate, return_density)


@partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _upsample(image, sigma, factor: int, iters: int, truncate: float, return_density: bool):
    height, width, channels = image.shape
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    # The centres in float32 at least: in bfloat16, j + 0.5 rounds from j = 128 on.
    centres = jnp.stack([cols.ravel(), rows.ravel()], -1).astype(
        jnp.promote_types(image.dtype, jnp.float32))
    centres = (centres + 0.5) * factor
    target = image.reshape(height * width, channels)  # not -1: C may be 0

    def render(values, return_density=False):  # in the image's dtype, as the loop carries it
        rendered = interpolate(centres, values, sigma, (height * factor, width * factor),
                               truncate=truncate, return_density=return_density)
        return jax.tree.map(lambda x: x.astype(image.dtype), rendered)

    def downsample(result):
        blocks = result.reshape(height, factor, width, factor, channels)
        return blocks.mean(axis=(1, 3)).reshape(height * width, channels)

    def step(_, values):
        return values + (target - downsample(render(values)))

    values = jax.lax.fori_loop(0, iters, step, target)
    return render(values, return_density)
