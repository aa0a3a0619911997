"""Per-point widths from the local density of the points.

Where samples are dense a Gaussian should be narrow, and where they are
sparse, wide enough to cover the gap. `adaptive_sigma` takes each point's
width from the distance to its k-th nearest neighbour, found by a native
k-d tree search (cuda/kd_tree.h: on the CPU, and on a GPU with the tree built
on the host; platforms without a native module run the pure-JAX brute force,
jax_gmm.reference.kth_nearest).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_gmm import _checks, _ffi, _partition
from jax_gmm._checks import ArrayLike


#: Defaults fitted by experiments/scattered_reconstruction.py on half of
#: scikit-image's photographs (random, jittered and edge-concentrated samples,
#: 1-25 % kept) and reported on the other half.
DEFAULT_K = 4
DEFAULT_SCALE = 0.4
#: The cutoff they were fitted with (the experiments render at 4 sigma).
FITTED_TRUNCATE = 4.0

#: Most neighbours the search keeps (cuda/neighbours.h, kMaxNeighbours).
MAX_K = 64


def adaptive_sigma(points: ArrayLike, *, k: int = DEFAULT_K,
                   scale: float = DEFAULT_SCALE) -> jax.Array:
    """Per-point widths sigma_i = scale * (distance from point i to its k-th
    nearest other point), in pixels.

    The defaults (k = 4, scale = 0.4) are the best rule found for rebuilding
    photographs from scattered samples (README, Results), and what
    ``sigma="auto"`` in `interpolate` and `interpolate_at` uses.

    Args:
      points: (N, 2) positions (x, y) in pixels, float.
      k: static neighbour rank, 1 <= k <= 64 (default 4).
      scale: static positive factor (default 0.4).

    Returns:
      sigma, (N,), in the points' floating dtype, ready for `interpolate`.
      Neighbours are ranked by distance, then by index (so the result is
      exact and reproducible). A point with fewer than k other finite points
      takes the farthest of them; a point with none, a non-finite point, or
      one whose k-th neighbour coincides with it gets 0, which makes it
      contribute nothing to a rendering. Differentiable in points (the
      neighbour choice is held fixed; a zero distance has zero gradient),
      and vmap-able. A k-d tree, O(N log N) however the points cluster, on
      the CPU and the GPU (which copies the points to the host to build the
      tree, then searches on the device); elsewhere a brute force, O(N^2).
      Distances are ranked in float64 (under jax_enable_x64 on other
      platforms); on the CPU with XLA's flush-to-zero, so that subnormal
      offsets count as 0 there.

    Example:
      >>> points = jnp.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
      >>> jax_gmm.adaptive_sigma(points, k=1, scale=1.0).tolist()
      [3.0, 3.0, 4.0]
    """
    k = _checks.check_int("k", k, 1)
    if k > MAX_K:
        raise ValueError(f"k must be at most {MAX_K}, got {k}")
    scale = _checks.check_positive("scale", scale)
    points = _checks.as_array("points", points)
    _checks.check_points(points)
    result, kernel = _checks.compute_dtype(points)
    return _adaptive_sigma(points, k, scale, kernel, result)


@partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _adaptive_sigma(points, k: int, scale: float, kernel_dtype, result_dtype):
    # Whole under Explicit mesh axes: the search needs every point, and the
    # gather below is refused on points sharded along N.
    points = _partition.whole_examples((jnp.asarray(points, kernel_dtype),))[0]
    neighbour = _ffi.kth_nearest(jax.lax.stop_gradient(points), k)
    d = points[neighbour] - points
    # Itself (no neighbour, or not finite) or a coincident point: width 0 and
    # zero gradient.
    usable = jnp.isfinite(d).all(-1) & (d != 0).any(-1)
    distance = _norm(jnp.where(usable[:, None], d, jnp.ones_like(d)))
    sigma = jnp.where(usable, distance, 0) * np.asarray(scale, kernel_dtype)
    return sigma.astype(result_dtype)


@jax.custom_jvp
def _norm(d):
    """|d| over the last axis (of length 2), without overflow or underflow."""
    return jnp.hypot(d[..., 0], d[..., 1])


@_norm.defjvp
def _norm_jvp(primals, tangents):
    # The unit vector d / |d| from d scaled by its largest entry: jnp.hypot's
    # own derivative divides by squares that underflow for |d| < 1e-19
    # (float32) and gives NaN.
    (d,), (t,) = primals, tangents
    scaled = d / jnp.max(jnp.abs(d), -1, keepdims=True)
    unit = scaled / jnp.linalg.norm(scaled, axis=-1, keepdims=True)
    return _norm(d), (unit * t).sum(-1)


def resolve_sigma(sigma: Any, points: ArrayLike, truncate: float) -> Any:
    """sigma as given, or for the string "auto" `adaptive_sigma(points)`,
    widened where the cutoff would not reach DEFAULT_SCALE * FITTED_TRUNCATE
    times the k-th neighbour distance (the fitted rule's reach), so that no
    pixel between samples is left uncovered at a smaller truncate."""
    if isinstance(sigma, str):
        if sigma != "auto":
            raise ValueError(f'sigma must be a number, an array or "auto", got {sigma!r}')
        scale = DEFAULT_SCALE * max(1.0, FITTED_TRUNCATE / truncate)
        widths = adaptive_sigma(points, scale=scale)
        # A width of 0 (no usable neighbour) as NaN: the point is left out
        # either way, but a static 0 would fail the check for sigma <= 0.
        return jnp.where(widths > 0, widths, jnp.nan)
    return sigma
