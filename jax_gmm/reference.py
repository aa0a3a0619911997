"""Pure-JAX GMM interpolation: the oracle of the tests, and the fallback on
platforms without a native kernel.

It evaluates every (point, query) pair, in blocks of queries so that memory
stays bounded, and takes its gradients from JAX's autodiff. Same conventions,
clamps and edge-case results as the native kernels (see `jax_gmm.interpolate`).
"""

from __future__ import annotations

import math
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


def _sigma_bounds(dtype) -> tuple[float, float, float]:
    """The sigma below which the exponent is clamped, and the sigma range (lo,
    hi) outside which the normaliser is clamped (cuda/gmm_math.h's Clamp<T>)."""
    norm_min, norm_max, exponent_min = _CLAMPS[np.dtype(dtype)]
    return (math.sqrt(0.5 / -exponent_min), math.sqrt(1 / (2 * math.pi * norm_max)),
            math.sqrt(1 / (2 * math.pi * norm_min)))


def _evaluate_block(points, values, sigma, queries, truncate):
    norm_min, norm_max, exponent_min = _CLAMPS[np.dtype(points.dtype)]
    # Non-finite inputs are swapped for harmless ones before any arithmetic, and
    # every clamp is taken on a safe value: masked pairs must carry zero
    # cotangents, not 0 * inf = NaN.
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
    inside = query_ok[:, None] & point_ok[None, :] & (d2 <= radius * radius)
    d2 = jnp.where(inside, d2, 0)  # far pairs' d2 may be inf
    # -1 / (2 sigma^2) and 1 / (2 pi sigma^2), clamped like the native kernels.
    # Written in 1 / sigma and decided on sigma itself, so that no derivative
    # overflows for huge or tiny sigma (the clamped side gets a zero gradient).
    exponent_below, norm_lo, norm_hi = _sigma_bounds(points.dtype)
    exponent_ok = sigma > exponent_below
    inv = 1 / jnp.where(exponent_ok, sigma, 1)
    exponent = jnp.where(exponent_ok, -0.5 * inv * inv, exponent_min)
    norm_ok = (sigma > norm_lo) & (sigma < norm_hi)
    inv = 1 / jnp.where(norm_ok, sigma, 1)
    norm = jnp.where(norm_ok, inv * inv / (2 * np.pi), jnp.where(sigma <= norm_lo, norm_max, norm_min))
    # Where the exponent is clamped, w no longer depends on the positions (as in
    # the native kernels); without this, d w / d d2 = -1e37 w meets d d2 = 0.
    d2 = jnp.where(exponent_ok[None, :], d2, jax.lax.stop_gradient(d2))
    w = jnp.where(inside, norm * jnp.exp(exponent * d2), 0)
    density = w.sum(-1)
    # out is invariant to a common scale of a query's weights: dividing them by
    # their (constant) maximum keeps w / scale <= 1 <= Z / scale, so neither the
    # value nor its gradient (which has 1 / Z^2) under- or overflows for tiny Z.
    scale = jax.lax.stop_gradient(w.max(-1, initial=0))
    scaled = w / jnp.where(scale > 0, scale, 1)[:, None]
    total = scaled.sum(-1)
    reached = total > 0
    out = (scaled @ values) / jnp.where(reached, total, 1)[:, None]
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


def interpolate(points: Any, values: Any, sigma: Any, shape: tuple[int, int], *,
                truncate: float = 3.0, return_density: bool = False):
    """Reference version of `jax_gmm.interpolate` (same arguments and result)."""
    args, result, kernel = _checks.check_inputs(points, values, sigma)
    height, width = _checks.check_shape(shape)
    truncate = _checks.check_truncate(truncate)
    out, density = evaluate(*_checks.to_kernel(kernel, *args),
                            pixel_centres(height, width, kernel), truncate)
    out = out.reshape(height, width, -1).astype(result)
    density = density.reshape(height, width).astype(result)
    return (out, density) if return_density else out


def interpolate_at(points: Any, values: Any, sigma: Any, queries: Any, *,
                   truncate: float = 3.0, return_density: bool = False):
    """Reference version of `jax_gmm.interpolate_at` (same arguments and result)."""
    args, result, kernel = _checks.check_inputs(points, values, sigma, queries)
    truncate = _checks.check_truncate(truncate)
    out, density = evaluate(*_checks.to_kernel(kernel, *args), truncate)
    out, density = out.astype(result), density.astype(result)
    return (out, density) if return_density else out
