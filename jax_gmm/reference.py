"""Pure-JAX GMM interpolation: the oracle of the tests, and the fallback on
platforms without a native kernel.

It evaluates every (point, query) pair, in blocks of queries so that memory
stays bounded, and takes its gradients from JAX's autodiff. Same conventions,
clamps and edge-case results as the native kernels (see `jax_gmm.interpolate`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jax_gmm import _checks

# Must equal cuda/gmm_math.h's Clamp<T>: the normaliser 1/(2 pi sigma^2) and
# the exponent -1/(2 sigma^2) are clamped so extreme sigma stay finite.
_CLAMPS = {
    np.dtype(np.float32): (1e-30, 1e30, -1e37),
    np.dtype(np.float64): (1e-300, 1e300, -1e306),
}

# Pairs evaluated at once by one block.
_BLOCK_PAIRS = 1 << 22


def pixel_centres(height: int, width: int, dtype) -> jax.Array:
    """(H * W, 2) query points (x, y) = (j + 0.5, i + 0.5), row-major."""
    y, x = jnp.meshgrid(jnp.arange(height, dtype=dtype), jnp.arange(width, dtype=dtype),
                        indexing="ij")
    return jnp.stack([x.ravel() + 0.5, y.ravel() + 0.5], axis=-1)


def _evaluate_block(points, values, sigma, queries, truncate):
    norm_min, norm_max, exponent_min = _CLAMPS[np.dtype(points.dtype)]
    # Non-finite inputs are swapped for harmless ones before any arithmetic, so
    # that masked pairs carry zero cotangents instead of 0 * NaN.
    point_ok = jnp.isfinite(points).all(-1) & jnp.isfinite(sigma) & (sigma > 0)
    query_ok = jnp.isfinite(queries).all(-1)
    points = jnp.where(point_ok[:, None], points, 0)
    values = jnp.where(point_ok[:, None], values, 0)
    sigma = jnp.where(point_ok, sigma, 1)
    queries = jnp.where(query_ok[:, None], queries, 0)

    dx = queries[:, None, 0] - points[None, :, 0]
    dy = queries[:, None, 1] - points[None, :, 1]
    d2 = dx * dx + dy * dy
    radius = truncate * sigma
    two_var = 2 * sigma * sigma
    exponent = jnp.maximum(-1 / two_var, exponent_min)
    norm = jnp.clip(1 / (np.pi * two_var), norm_min, norm_max)
    inside = query_ok[:, None] & point_ok[None, :] & (d2 <= radius * radius)
    w = jnp.where(inside, norm * jnp.exp(exponent * d2), 0)
    density = w.sum(-1)
    reached = density > 0
    out = (w @ values) / jnp.where(reached, density, 1)[:, None]
    return jnp.where(reached[:, None], out, 0), density


def evaluate(points, values, sigma, queries, truncate: float):
    """(out (M, C), density (M,)) at queries (M, 2), for per-point sigma (N,)."""
    n, m = points.shape[0], queries.shape[0]
    block = max(1, _BLOCK_PAIRS // max(n, 1))
    if m <= block:
        return _evaluate_block(points, values, sigma, queries, truncate)
    blocks = -(-m // block)
    padded = jnp.concatenate([queries, jnp.full((blocks * block - m, 2), jnp.nan, queries.dtype)])
    # Recompute each block in the backward pass rather than storing N x M weights.
    run = jax.checkpoint(lambda q: _evaluate_block(points, values, sigma, q, truncate))
    out, density = lax.map(run, padded.reshape(blocks, block, 2))
    return out.reshape(-1, values.shape[-1])[:m], density.reshape(-1)[:m]


def _prepare(points, values, sigma, *extra):
    n = _checks.check_points(points)
    _checks.check_values(values, n)
    _checks.check_sigma(sigma, n)
    result, kernel = _checks.compute_dtype(points, values, sigma, *extra)
    cast = lambda x: jnp.asarray(x, kernel)  # noqa: E731
    return result, cast, jnp.broadcast_to(cast(sigma), (n,))


def interpolate(points: Any, values: Any, sigma: Any, shape: tuple[int, int], *,
                truncate: float = 3.0, return_density: bool = False):
    """Reference version of `jax_gmm.interpolate` (same arguments and result)."""
    height, width = _checks.check_shape(shape)
    truncate = _checks.check_truncate(truncate)
    result, cast, sigma = _prepare(points, values, sigma)
    queries = pixel_centres(height, width, sigma.dtype)
    out, density = evaluate(cast(points), cast(values), sigma, queries, truncate)
    out = out.reshape(height, width, -1).astype(result)
    density = density.reshape(height, width).astype(result)
    return (out, density) if return_density else out


def interpolate_at(points: Any, values: Any, sigma: Any, queries: Any, *,
                   truncate: float = 3.0, return_density: bool = False):
    """Reference version of `jax_gmm.interpolate_at` (same arguments and result)."""
    _checks.check_points(queries, "queries")
    truncate = _checks.check_truncate(truncate)
    result, cast, sigma = _prepare(points, values, sigma, queries)
    out, density = evaluate(cast(points), cast(values), sigma, cast(queries), truncate)
    out, density = out.astype(result), density.astype(result)
    return (out, density) if return_density else out
