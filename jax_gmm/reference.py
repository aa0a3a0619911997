"""Pure-JAX GMM interpolation: the oracle of the tests, and the fallback on
platforms without a native kernel.

It evaluates every (point, query) pair, in blocks of queries so that memory
stays bounded. Its cutoff and validity decisions are those of the native
kernels (cuda/gmm_math.h), operation for operation, and so are the
derivatives of a pair's weight (a custom JVP); JAX's autodiff does the rest.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import export, lax

from jax_gmm import _checks
from jax_gmm._covariance import rounded_product as _rounded

# Must equal cuda/gmm_math.h: each entry of P = L^-1 is capped at inv_max,
# and the normaliser 1/(2 pi l11 l22) clamped to [norm_min, norm_max], so
# that extreme widths stay finite.
_INV_MAX = {np.dtype(np.float32): 1e18, np.dtype(np.float64): 1e151}
_NORM_CLAMPS = {np.dtype(np.float32): (1e-30, 1e30), np.dtype(np.float64): (1e-300, 1e300)}

# Pairs (times channels) evaluated at once by one block.
_BLOCK_PAIRS = 1 << 22


def pixel_centres(height: int, width: int, dtype: Any) -> jax.Array:
    """(H * W, 2) query points (x, y) = (j + 0.5, i + 0.5), row-major."""
    if height * width == 0:  # without the aranges, which may be 2**32 long
        return jnp.zeros((0, 2), dtype)
    y, x = jnp.meshgrid(jnp.arange(height, dtype=dtype), jnp.arange(width, dtype=dtype),
                        indexing="ij")
    return jnp.stack([x.ravel() + 0.5, y.ravel() + 0.5], axis=-1)


def contributes(points: jax.Array, scale: jax.Array) -> jax.Array:
    """(N,) bool: which points the kernels use. The others (a non-finite
    position or factor, or a diagonal entry of L below the dtype's smallest
    normal number, as for a width <= 0) contribute nothing anywhere."""
    tiny = np.finfo(points.dtype).tiny
    return (jnp.isfinite(points).all(-1) & jnp.isfinite(scale).all(-1)
            & (scale[:, 0] >= tiny) & (scale[:, 2] >= tiny))


def _point_constants(points, scale):
    """Per point (N,): valid, P = L^-1 as (p11, p21, p22) with each entry
    capped at inv_max, whether one was capped, the normaliser, whether it was
    clamped, and 1 / l11, 1 / l22 uncapped (the normaliser's derivative).
    Invalid points get harmless values."""
    dtype = np.dtype(points.dtype)
    l11, l21, l22 = scale[:, 0], scale[:, 1], scale[:, 2]
    valid = contributes(points, scale)
    l11, l21, l22 = jnp.where(valid, l11, 1), jnp.where(valid, l21, 0), jnp.where(valid, l22, 1)
    inv11, inv22 = 1 / l11, 1 / l22
    norm_min, norm_max = _NORM_CLAMPS[dtype]
    norm = _rounded(inv11, inv22) * dtype.type(1 / (2 * np.pi))  # inf where it overflows
    norm_clamped = ~((norm < norm_max) & (norm > norm_min))
    norm = jnp.clip(norm, norm_min, norm_max).astype(dtype)
    inv_max = dtype.type(_INV_MAX[dtype])
    p11, p22 = jnp.minimum(inv11, inv_max), jnp.minimum(inv22, inv_max)
    p21 = -_rounded(_rounded(l21, p11), p22)
    scale_clamped = (inv11 > inv_max) | (inv22 > inv_max) | ~(jnp.abs(p21) <= inv_max)
    p21 = jnp.clip(p21, -inv_max, inv_max)
    return valid, (p11, p21, p22), scale_clamped, norm, (norm_clamped, inv11, inv22)


def _pair_terms(points, scale, queries, truncate: float):
    """Weights w (M, N), the same divided by each query's largest, and what
    their derivatives need."""
    dtype = np.dtype(points.dtype)
    valid, (p11, p21, p22), scale_clamped, norm, normaliser = _point_constants(points, scale)
    query_ok = jnp.isfinite(queries).all(-1)
    points = jnp.where(valid[:, None], points, 0)
    queries = jnp.where(query_ok[:, None], queries, 0)
    dx = queries[:, None, 0] - points[None, :, 0]
    dy = queries[:, None, 1] - points[None, :, 1]
    ex = dx * p11
    ey = _rounded(dx, p21) + _rounded(dy, p22)
    m2 = _rounded(ex, ex) + _rounded(ey, ey)
    with np.errstate(over="ignore"):  # a huge truncate's square is inf, as in the kernels
        t = dtype.type(truncate)
        cutoff2 = t * t
    inside = query_ok[:, None] & valid[None, :] & (m2 <= cutoff2)  # NaN m2 (inf * 0) fails
    m2 = jnp.where(inside, m2, 0)
    w = norm * jnp.exp(-0.5 * m2)
    # Explicitly what flushing to zero does: a weight below the smallest
    # normal number is no weight.
    w = jnp.where(inside & (w >= np.finfo(dtype).tiny), w, 0)
    # out is invariant to a common scale of a query's weights: dividing them by
    # their (constant) maximum keeps w / scale <= 1 <= Z / scale, so neither the
    # value nor its gradient (which has 1 / Z^2) under- or overflows for tiny Z.
    top = lax.stop_gradient(w.max(-1, initial=0, keepdims=True))
    scaled = w / jnp.where(top > 0, top, 1)
    return (w, scaled), (ex, ey, (p11, p21, p22), scale_clamped, normaliser)


@partial(jax.custom_jvp, nondiff_argnums=(3,))
def _weights(points, scale, queries, truncate: float):
    """w (M, N) of every (query, point) pair, 0 outside the cutoff, and w
    divided by each query's largest w."""
    return _pair_terms(points, scale, queries, truncate)[0]


@_weights.defjvp
def _weights_jvp(truncate, primals, tangents):
    # With e = P (q - mu): d w / d mu = w P^T e, d w / d q = -that, and
    # d w / d L = w ((P^T e) e^T - diag(1 / l11, 1 / l22)) on the lower triangle
    # (cuda/gmm_math.h, finish_point_grad), each term dropped where the factor
    # it comes from is clamped. P^T e is formed before anything else multiplies
    # it, so a query on its point (e = 0) gets exactly 0; w comes last, so that
    # a cotangent meets w / scale in [0, 1] on the way to out and nothing
    # underflows in between. Pairs with w = 0 pass no cotangent at all: inf or
    # NaN cotangents at a query reach only the points that weigh it.
    (w, scaled), (ex, ey, (p11, p21, p22), scale_clamped, (norm_clamped, inv11, inv22)) = (
        _pair_terms(*primals, truncate))
    d_points, d_scale, d_queries = tangents
    # Factors of pairs that do not exist stay 0: e may overflow there.
    weighed = w > 0
    moves = weighed & ~scale_clamped
    ex, ey = jnp.where(moves, ex, 0), jnp.where(moves, ey, 0)
    gx = p11 * ex + p21 * ey
    gy = p22 * ey
    normalised = jnp.where(norm_clamped, 0, 1)
    g11 = jnp.where(weighed, gx * ex - normalised * inv11, 0)
    g21 = gy * ex
    g22 = jnp.where(weighed, gy * ey - normalised * inv22, 0)
    relative = (gx * (d_points[None, :, 0] - d_queries[:, None, 0])
                + gy * (d_points[None, :, 1] - d_queries[:, None, 1])
                + g11 * d_scale[None, :, 0] + g21 * d_scale[None, :, 1]
                + g22 * d_scale[None, :, 2])
    return (w, scaled), (jnp.where(weighed, w * relative, 0),
                         jnp.where(weighed, scaled * relative, 0))


def _evaluate_block(points, values, scale, queries, truncate):
    w, scaled = _weights(points, scale, queries, truncate)
    total = scaled.sum(-1)
    reached = total > 0
    # Pair by pair rather than a matmul: a value reaches only the queries its
    # point weighs (an inf value must not make 0 * inf = NaN elsewhere).
    weighed = (w > 0)[:, :, None]
    num = (scaled[:, :, None] * jnp.where(weighed, values[None], 0)).sum(1)
    out = num / jnp.where(reached, total, 1)[:, None]
    return jnp.where(reached[:, None], out, 0), w.sum(-1)


def evaluate(points: jax.Array, values: jax.Array, scale: jax.Array, queries: jax.Array,
             truncate: float) -> tuple[jax.Array, jax.Array]:
    """(out (M, C), density (M,)) at queries (M, 2), for points (N, 2) with
    values (N, C) and Cholesky factors `scale` (N, 3) (jax_gmm._covariance)."""
    n, m, c = points.shape[0], queries.shape[0], values.shape[-1]
    block = max(1, _BLOCK_PAIRS // max(_checks.count_bound(n) * _checks.count_bound(c), 1))
    if not export.is_symbolic_dim(m) and m <= block:
        return _evaluate_block(points, values, scale, queries, truncate)
    blocks = -(-m // block)
    padded = jnp.concatenate([queries, jnp.full((blocks * block - m, 2), jnp.nan, queries.dtype)])
    # Recompute each block in the backward pass rather than storing N x M weights.
    run = jax.checkpoint(lambda q: _evaluate_block(points, values, scale, q, truncate))
    out, density = lax.map(run, padded.reshape(blocks, block, 2))
    return out.reshape(-1, c)[:m], density.reshape(-1)[:m]


def kth_nearest(points: jax.Array, k: int) -> jax.Array:
    """(N,) int32: for each point, its k-th nearest other finite point by
    squared distance then index, the farthest one if there are fewer than k,
    and the point itself if there is none or it is not finite
    (cuda/neighbours.h). Brute force, O(N^2) in blocks of rows;
    distances in float64 under jax_enable_x64 (as the native search always
    does), else in the points' dtype."""
    n = points.shape[0]
    if n == 0:
        return jnp.zeros((0,), jnp.int32)
    symbolic = export.is_symbolic_dim(n)  # jax.export: any n >= 1
    points = points.astype(jax.dtypes.canonicalize_dtype(jnp.float64))  # float64 where enabled
    valid = jnp.isfinite(points).all(-1)
    others = jnp.where(valid[:, None], points, 0)
    index = jnp.arange(n, dtype=jnp.int32)

    def block(rows):
        d = points[rows][:, None, :] - others[None]
        d2 = _rounded(d[..., 0], d[..., 0]) + _rounded(d[..., 1], d[..., 1])
        excluded = ~valid[None] | (index[None] == rows[:, None])
        # Excluded points last: at inf, above every distance (one that
        # overflowed counts as the largest finite number). top_k puts the
        # lower index first among equal values: ties by index.
        key = jnp.where(excluded, jnp.inf, jnp.minimum(d2, jnp.finfo(d2.dtype).max))
        if symbolic:  # k more columns, excluded, so that top_k has k to take
            key = jnp.pad(key, ((0, 0), (0, k)), constant_values=jnp.inf)
        _, order = lax.top_k(-key, k if symbolic else min(k, n))
        found = jnp.minimum((~excluded).sum(-1), k)
        pick = jnp.take_along_axis(order, jnp.maximum(found - 1, 0)[:, None], -1)[:, 0]
        return jnp.where(valid[rows] & (found > 0), pick, rows)

    size = max(1, _BLOCK_PAIRS // _checks.count_bound(n))
    size = size if symbolic else min(n, size)
    blocks = -(-n // size)
    rows = jnp.minimum(jnp.arange(blocks * size, dtype=jnp.int32), n - 1).reshape(blocks, size)
    return lax.map(block, rows).reshape(-1)[:n]


def smoothed(out: jax.Array, density: jax.Array, eps: float) -> jax.Array:
    """sum_i c_i w_i / (Z + eps) from out = sum_i c_i w_i / Z (the `eps` option):
    out Z / (Z + eps), 0 where Z = 0; JAX differentiates the product."""
    if eps == 0:
        return out
    with np.errstate(over="ignore"):  # eps beyond the dtype's range is inf: out becomes 0
        eps = np.asarray(eps, density.dtype)
    # Where Z = 0 the factor is 0, not 0 / 0 for an eps that rounds to 0 in
    # the dtype (the select on both sides keeps the gradient finite there).
    reached = density > 0
    return out * jnp.where(reached, density / jnp.where(reached, density + eps, 1), 0)[..., None]


# Compiled as one program, like jax_gmm's own entry points: op-by-op
# dispatch of the blocks, selects and custom JVP is many times slower.
@partial(jax.jit, static_argnums=(3, 4, 5, 6, 7, 8))
def _grid(points, values, sigma, height, width, truncate, eps, kernel_dtype, result_dtype):
    args = _checks.to_kernel(kernel_dtype, points, values, sigma)
    out, density = evaluate(*args, pixel_centres(height, width, kernel_dtype), truncate)
    out = smoothed(out, density, eps).reshape(height, width, values.shape[-1])
    return out.astype(result_dtype), density.reshape(height, width).astype(result_dtype)


@partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _scattered(points, values, sigma, queries, truncate, eps, kernel_dtype, result_dtype):
    out, density = evaluate(*_checks.to_kernel(kernel_dtype, points, values, sigma, queries),
                            truncate)
    return smoothed(out, density, eps).astype(result_dtype), density.astype(result_dtype)


def interpolate(points: Any, values: Any, sigma: Any, shape: tuple[int, int], *,
                truncate: float = 3.0, eps: float = 0.0, return_density: bool = False):
    """Reference version of `jax_gmm.interpolate` (same arguments and result;
    sigma="auto" and remat_rows are not taken)."""
    args, result, kernel = _checks.check_inputs(points, values, sigma)
    height, width = _checks.check_shape(shape)
    truncate, eps = _checks.check_truncate(truncate), _checks.check_eps(eps)
    return_density = _checks.check_flag("return_density", return_density)
    out, density = _grid(*args, height, width, truncate, eps, kernel, result)
    return (out, density) if return_density else out


def interpolate_at(points: Any, values: Any, sigma: Any, queries: Any, *,
                   truncate: float = 3.0, eps: float = 0.0, return_density: bool = False):
    """Reference version of `jax_gmm.interpolate_at` (same arguments and
    result, queries of any leading shape (..., 2) included; sigma="auto" is
    not taken)."""
    queries, leading = _checks.flat_queries(queries)
    args, result, kernel = _checks.check_inputs(points, values, sigma, queries)
    truncate, eps = _checks.check_truncate(truncate), _checks.check_eps(eps)
    return_density = _checks.check_flag("return_density", return_density)
    out, density = _scattered(*args, truncate, eps, kernel, result)
    out, density = out.reshape(*leading, out.shape[-1]), density.reshape(leading)
    return (out, density) if return_density else out
