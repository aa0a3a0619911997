"""custom_vjp rules: the forward saves its outputs, the backward kernels
recompute the weights from them and return every cotangent in one call.

The grid rule takes symbolic zeros: when only the image is differentiated
(the usual case), the density cotangent is never materialised.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from jax_gmm import _ffi


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def grid(points, values, sigma, height: int, width: int, truncate: float):
    """(out (H, W, C), density (H, W)) for per-point sigma (N,)."""
    return _ffi.grid_forward(points, values, sigma, height, width, truncate)


def _grid_fwd(points, values, sigma, height, width, truncate):
    points, values, sigma = points.value, values.value, sigma.value  # CustomVJPPrimal
    out, density = _ffi.grid_forward(points, values, sigma, height, width, truncate)
    return (out, density), (points, values, sigma, out, density)


def _grid_bwd(height, width, truncate, residuals, cotangents):
    d_out, d_density = cotangents
    if isinstance(d_out, SymbolicZero):
        d_out = jnp.zeros(d_out.shape, d_out.dtype)
    if isinstance(d_density, SymbolicZero):
        d_density = None
    return _ffi.grid_backward(*residuals, d_out, d_density, truncate)


grid.defvjp(_grid_fwd, _grid_bwd, symbolic_zeros=True)


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def scattered(points, values, sigma, queries, truncate: float):
    """(out (M, C), density (M,)) at queries (M, 2) for per-point sigma (N,)."""
    return _ffi.scattered_forward(points, values, sigma, queries, truncate)


def _scattered_fwd(points, values, sigma, queries, truncate):
    out, density = _ffi.scattered_forward(points, values, sigma, queries, truncate)
    return (out, density), (points, values, sigma, queries, out, density)


def _scattered_bwd(truncate, residuals, cotangents):
    return _ffi.scattered_backward(*residuals, *cotangents, truncate)


scattered.defvjp(_scattered_fwd, _scattered_bwd)
