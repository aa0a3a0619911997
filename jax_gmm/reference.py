"""Pure-JAX GMM interpolation: the oracle of the tests, and the fallback on
platforms without a native kernel.

It evaluates every (point, query) pair, in blocks of queries so that memory
stays bounded. Its cutoff and validity decisions are those of the native
kernels (cuda/gmm_math.h), operation for operation, and so are the
derivatives of a pair's weight (a custom JVP); JAX's autodiff does the rest.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jax_gmm import _checks

# Must equal cuda/gmm_math.h: 1/sigma is capped at inv_max, and the normaliser
# 1/(2 pi sigma^2) is clamped to [norm_min, norm_max], so that extreme sigma
# stay finite.
_INV_MAX = {np.dtype(np.float32): 1e18, np.dtype(np.float64): 1e150}
_NORM_CLAMPS = {np.dtype(np.float32): (1e-30, 1e30), np.dtype(np.float64): (1e-300, 1e300)}

# Pairs (times channels) evaluated at once by one block.
_BLOCK_PAIRS = 1 << 22


def pixel_centres(height: int, width: int, dtype) -> jax.Array:
    """(H * W, 2) query points (x, y) = (j + 0.5, i + 0.5), row-major."""
    if height * width == 0:  # without the aranges, which may be 2**32 long
        return jnp.zeros((0, 2), dtype)
    y, x = jnp.meshgrid(jnp.arange(height, dtype=dtype), jnp.arange(width, dtype=dtype),
                        indexing="ij")
    return jnp.stack([x.ravel() + 0.5, y.ravel() + 0.5], axis=-1)


def _rounded_square(x):
    """x * x rounded on its own. XLA contracts a product feeding an addition
    into a fused multiply-add, which would move m2 by an ulp and with it the
    cutoff decision; a select between the product and the sum blocks that.
    (x == x only fails for NaN, where x * x is NaN too.)"""
    return jnp.where(x == x, x * x, x)


def _point_constants(points, sigma):
    """Per point: valid, 1/sigma capped at inv_max, whether it was capped, the
    normaliser and whether it was clamped. Invalid points get harmless values."""
    dtype = np.dtype(points.dtype)
    tiny = np.finfo(dtype).tiny
    valid = jnp.isfinite(points).all(-1) & jnp.isfinite(sigma) & (sigma >= tiny)
    sigma = jnp.where(valid, sigma, 1)
    inv = 1 / sigma
    inv_max = dtype.type(_INV_MAX[dtype])
    inv_clamped = inv > inv_max
    inv = jnp.minimum(inv, inv_max)
    # The normaliser's clamp decided on sigma itself, so 1/sigma^2 is only
    # formed where it is finite.
    norm_min, norm_max = _NORM_CLAMPS[dtype]
    sigma_lo, sigma_hi = (math.sqrt(1 / (2 * math.pi * n)) for n in (norm_max, norm_min))
    norm_clamped = ~((sigma > sigma_lo) & (sigma < sigma_hi))
    unclamped = 1 / jnp.where(norm_clamped, 1, sigma)
    norm = jnp.where(norm_clamped, jnp.where(sigma <= sigma_lo, norm_max, norm_min),
                     unclamped * unclamped / (2 * np.pi))
    return valid, inv, inv_clamped, norm.astype(dtype), norm_clamped


def _pair_terms(points, sigma, queries, truncate: float):
    """Weights w (M, N), the same divided by each query's largest, and what
    their derivatives need."""
    dtype = np.dtype(points.dtype)
    valid, inv, inv_clamped, norm, norm_clamped = _point_constants(points, sigma)
    query_ok = jnp.isfinite(queries).all(-1)
    points = jnp.where(valid[:, None], points, 0)
    queries = jnp.where(query_ok[:, None], queries, 0)
    ex = (queries[:, None, 0] - points[None, :, 0]) * inv
    ey = (queries[:, None, 1] - points[None, :, 1]) * inv
    m2 = _rounded_square(ex) + _rounded_square(ey)
    t = dtype.type(truncate)
    inside = query_ok[:, None] & valid[None, :] & (m2 <= t * t)  # NaN m2 (inf * 0) fails
    m2 = jnp.where(inside, m2, 0)
    w = norm * jnp.exp(-0.5 * m2)
    # Explicitly what flushing to zero does: a weight below the smallest
    # normal number is no weight.
    w = jnp.where(inside & (w >= np.finfo(dtype).tiny), w, 0)
    # out is invariant to a common scale of a query's weights: dividing them by
    # their (constant) maximum keeps w / scale <= 1 <= Z / scale, so neither the
    # value nor its gradient (which has 1 / Z^2) under- or overflows for tiny Z.
    scale = lax.stop_gradient(w.max(-1, initial=0, keepdims=True))
    scaled = w / jnp.where(scale > 0, scale, 1)
    return (w, scaled), (ex, ey, m2, inv, inv_clamped, norm_clamped)


@partial(jax.custom_jvp, nondiff_argnums=(3,))
def _weights(points, sigma, queries, truncate: float):
    """w (M, N) of every (query, point) pair, 0 outside the cutoff, and w
    divided by each query's largest w."""
    return _pair_terms(points, sigma, queries, truncate)[0]


@_weights.defjvp
def _weights_jvp(truncate, primals, tangents):
    # d w / d mu = w ex / sigma (per axis), d w / d q = -that, and
    # d w / d sigma = w (m2 - 2) / sigma, each term dropped where the factor
    # it comes from is clamped. ex / sigma is formed before anything else
    # multiplies it, so a query on its point (ex = 0) gets exactly 0; w comes
    # last, so that a cotangent meets w / scale in [0, 1] on the way to out and
    # nothing underflows in between. Pairs with w = 0 pass no cotangent at all:
    # inf or NaN cotangents at a query reach only the points that weigh it.
    (w, scaled), (ex, ey, m2, inv, inv_clamped, norm_clamped) = _pair_terms(*primals, truncate)
    d_points, d_sigma, d_queries = tangents
    # Factors of pairs that do not exist stay 0: ex / sigma may overflow there.
    weighed = w > 0
    moves = weighed & ~inv_clamped
    gx = jnp.where(moves, ex * inv, 0)
    gy = jnp.where(moves, ey * inv, 0)
    gs = jnp.where(weighed, (jnp.where(moves, m2, 0) - jnp.where(norm_clamped, 0, 2)) * inv, 0)
    relative = (gx * (d_points[None, :, 0] - d_queries[:, None, 0])
                + gy * (d_points[None, :, 1] - d_queries[:, None, 1])
                + gs * d_sigma[None, :])
    return (w, scaled), (jnp.where(weighed, w * relative, 0),
                         jnp.where(weighed, scaled * relative, 0))


def _evaluate_block(points, values, sigma, queries, truncate):
    w, scaled = _weights(points, sigma, queries, truncate)
    total = scaled.sum(-1)
    reached = total > 0
    # Pair by pair rather than a matmul: a value reaches only the queries its
    # point weighs (an inf value must not make 0 * inf = NaN elsewhere).
    weighed = (w > 0)[:, :, None]
    num = (scaled[:, :, None] * jnp.where(weighed, values[None], 0)).sum(1)
    out = num / jnp.where(reached, total, 1)[:, None]
    return jnp.where(reached[:, None], out, 0), w.sum(-1)


def evaluate(points, values, sigma, queries, truncate: float):
    """(out (M, C), density (M,)) at queries (M, 2), for per-point sigma (N,)."""
    n, m, c = points.shape[0], queries.shape[0], values.shape[-1]
    block = max(1, _BLOCK_PAIRS // max(n * c, 1))
    if m <= block:
        return _evaluate_block(points, values, sigma, queries, truncate)
    blocks = -(-m // block)
    padded = jnp.concatenate([queries, jnp.full((blocks * block - m, 2), jnp.nan, queries.dtype)])
    # Recompute each block in the backward pass rather than storing N x M weights.
    run = jax.checkpoint(lambda q: _evaluate_block(points, values, sigma, q, truncate))
    out, density = lax.map(run, padded.reshape(blocks, block, 2))
    return out.reshape(-1, c)[:m], density.reshape(-1)[:m]


def smoothed(out, density, eps: float):
    """sum_i c_i w_i / (Z + eps) from out = sum_i c_i w_i / Z (the `eps` option):
    out Z / (Z + eps), 0 where Z = 0; JAX differentiates the product."""
    if eps == 0:
        return out
    return out * (density / (density + eps))[..., None]


def interpolate(points: Any, values: Any, sigma: Any, shape: tuple[int, int], *,
                truncate: float = 3.0, eps: float = 0.0, return_density: bool = False):
    """Reference version of `jax_gmm.interpolate` (same arguments and result)."""
    args, result, kernel = _checks.check_inputs(points, values, sigma)
    height, width = _checks.check_shape(shape)
    truncate, eps = _checks.check_truncate(truncate), _checks.check_eps(eps)
    out, density = evaluate(*_checks.to_kernel(kernel, *args),
                            pixel_centres(height, width, kernel), truncate)
    out = smoothed(out, density, eps)
    out = out.reshape(height, width, out.shape[-1]).astype(result)
    density = density.reshape(height, width).astype(result)
    return (out, density) if return_density else out


def interpolate_at(points: Any, values: Any, sigma: Any, queries: Any, *,
                   truncate: float = 3.0, eps: float = 0.0, return_density: bool = False):
    """Reference version of `jax_gmm.interpolate_at` (same arguments and result)."""
    args, result, kernel = _checks.check_inputs(points, values, sigma, queries)
    truncate, eps = _checks.check_truncate(truncate), _checks.check_eps(eps)
    out, density = evaluate(*_checks.to_kernel(kernel, *args), truncate)
    out, density = smoothed(out, density, eps).astype(result), density.astype(result)
    return (out, density) if return_density else out
