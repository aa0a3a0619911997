"""custom_vjp rules: the forward saves its outputs, the backward kernels
recompute the weights from them and return every cotangent in one call.

Every forward's rules take symbolic zeros: when only the image is
differentiated (the usual case), the grid's density cotangent is never
materialised, and the scattered backward computes only the cotangents of the
inputs that are differentiated (points, values and scale together, queries
apart).

`grid_out` and `scattered_out` return out alone, for callers that want
neither the density nor eps: undifferentiated they make no density at all,
and differentiated they run the full forward and share its backward.

Second order (grad of grad, jacrev of jacrev, a Hessian as
jacrev(jacrev(f))) works in reverse mode: each backward call is itself a
custom_vjp whose VJP is the pure-JAX reference's backward differentiated by
JAX, which costs O(N x M) work and memory in blocks (jax_gmm.reference). The
forward rules call the differentiable functions, not the bare FFI calls, so
that a derivative of the saved outputs is defined too.

Forward mode (jvp, jacfwd, linearize, hessian) cannot pass through a
custom_vjp: JAX raises "can't apply forward-mode autodiff (jvp) to a
custom_vjp function". Use jax.jacrev, or jax_gmm.reference for forward mode.
"""

from __future__ import annotations

from functools import partial

import jax
from jax.custom_derivatives import SymbolicZero

from jax_gmm import _ffi, _partition


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def grid(points, values, scale, height: int, width: int, truncate: float):
    """(out (H, W, C), density (H, W)) for Cholesky factors scale (N, 3)."""
    return _ffi.grid_forward(points, values, scale, height, width, truncate)


def _grid_fwd(points, values, scale, height, width, truncate):
    points, values, scale = points.value, values.value, scale.value  # CustomVJPPrimal
    out, density = grid(points, values, scale, height, width, truncate)
    return (out, density), (points, values, scale, out, density)


def _grid_bwd(height, width, truncate, residuals, cotangents):
    d_out, d_density = (None if isinstance(d, SymbolicZero) else d for d in cotangents)
    points, values, scale = residuals[:3]
    if d_out is None and d_density is None:
        return tuple(map(_partition.zeros_like, (points, values, scale)))
    if d_out is None:
        d_out = _partition.zeros_like(residuals[3])
    return grid_backward(*residuals, d_out, d_density, height, width, truncate)


grid.defvjp(_grid_fwd, _grid_bwd, symbolic_zeros=True)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def grid_out(points, values, scale, height: int, width: int, truncate: float):
    """out (H, W, C) of `grid` alone: undifferentiated, no density is made."""
    return _ffi.grid_forward(points, values, scale, height, width, truncate, density=False)


def _grid_out_fwd(points, values, scale, height, width, truncate):
    (out, _), residuals = _grid_fwd(points, values, scale, height, width, truncate)
    return out, residuals


def _grid_out_bwd(height, width, truncate, residuals, d_out):
    return _grid_bwd(height, width, truncate, residuals, (d_out, None))


grid_out.defvjp(_grid_out_fwd, _grid_out_bwd, symbolic_zeros=True)


@partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9))
def grid_backward(points, values, scale, out, density, d_out, d_density, height: int,
                  width: int, truncate: float):
    """Cotangents (points, values, scale) of `grid`; d_density None means zero."""
    return _ffi.grid_backward(points, values, scale, out, density, d_out, d_density, truncate)


def _grid_backward_fwd(points, values, scale, out, density, d_out, d_density, height, width,
                       truncate):
    cotangents = grid_backward(points, values, scale, out, density, d_out, d_density, height,
                               width, truncate)
    return cotangents, (points, values, scale, d_out, d_density)


def _grid_backward_bwd(height, width, truncate, residuals, cotangents):
    # out and density are functions of (points, values, scale) that the native
    # backward takes precomputed: the reference recomputes them, so the whole
    # derivative flows to (points, values, scale) and none to out and density.
    # Its cotangents summed over devices as _ffi.grid_backward sums them, so
    # that inside shard_map they are typed as the incoming ones.
    def backward(*args):
        cotangents = _ffi.reference_grid_backward(*args, height=height, width=width,
                                                  truncate=truncate)
        return _partition.summed_like(cotangents, args[:3])

    _, vjp = jax.vjp(backward, *residuals)
    d_points, d_values, d_scale, dd_out, dd_density = vjp(cotangents)
    return d_points, d_values, d_scale, None, None, dd_out, dd_density


grid_backward.defvjp(_grid_backward_fwd, _grid_backward_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def scattered(points, values, scale, queries, truncate: float):
    """(out (M, C), density (M,)) at queries (M, 2) for Cholesky factors scale (N, 3)."""
    return _ffi.scattered_forward(points, values, scale, queries, truncate)


def _scattered_fwd(points, values, scale, queries, truncate):
    # Which inputs are differentiated (static): the usual call differentiates
    # points, values or scale at fixed queries, and the backward then skips the
    # queries' cotangents, a third of its work; a warp of the queries skips
    # the points'.
    point_grads = points.perturbed or values.perturbed or scale.perturbed
    query_grads = queries.perturbed
    points, values, scale, queries = (x.value for x in (points, values, scale, queries))
    out, density = scattered(points, values, scale, queries, truncate)
    return (out, density), (points, values, scale, queries, out, density, point_grads,
                            query_grads)


def _scattered_bwd(truncate, residuals, cotangents):
    points, values, scale, queries, out, density, point_grads, query_grads = residuals
    d_out, d_density = (None if isinstance(d, SymbolicZero) else d for d in cotangents)
    if d_out is None and d_density is None:
        return tuple(map(_partition.zeros_like, (points, values, scale, queries)))
    if d_out is None:
        d_out = _partition.zeros_like(out)
    if d_density is None:
        d_density = _partition.zeros_like(density)
    return scattered_backward(points, values, scale, queries, out, density, d_out, d_density,
                              truncate, point_grads, query_grads)


scattered.defvjp(_scattered_fwd, _scattered_bwd, symbolic_zeros=True)


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def scattered_out(points, values, scale, queries, truncate: float):
    """out (M, C) of `scattered` alone: undifferentiated, no density is made."""
    return _ffi.scattered_forward(points, values, scale, queries, truncate, density=False)


def _scattered_out_fwd(points, values, scale, queries, truncate):
    (out, _), residuals = _scattered_fwd(points, values, scale, queries, truncate)
    return out, residuals


def _scattered_out_bwd(truncate, residuals, d_out):
    return _scattered_bwd(truncate, residuals, (d_out, None))


scattered_out.defvjp(_scattered_out_fwd, _scattered_out_bwd, symbolic_zeros=True)


@partial(jax.custom_vjp, nondiff_argnums=(8, 9, 10))
def scattered_backward(points, values, scale, queries, out, density, d_out, d_density,
                       truncate: float, point_grads: bool, query_grads: bool):
    """Cotangents (points, values, scale, queries) of `scattered`; those of
    (points, values, scale) unless point_grads, and of queries unless
    query_grads, are left out (zeros, or on the fallback the full values)
    and the caller discards them."""
    return _ffi.scattered_backward(points, values, scale, queries, out, density, d_out,
                                   d_density, truncate, point_grads, query_grads)


def _scattered_backward_fwd(points, values, scale, queries, out, density, d_out, d_density,
                            truncate, point_grads, query_grads):
    cotangents = scattered_backward(points, values, scale, queries, out, density, d_out,
                                    d_density, truncate, point_grads, query_grads)
    return cotangents, (points, values, scale, queries, d_out, d_density)


def _scattered_backward_bwd(truncate, point_grads, query_grads, residuals, cotangents):
    # As for the grid: the whole derivative goes to the independent inputs,
    # and the cotangents are summed as _ffi.scattered_backward sums them.
    # The cotangents left out are discarded, so theirs arrive here as zeros,
    # and differentiating the full backward is exact.
    def backward(*args):
        cotangents = _ffi.reference_scattered_backward(*args, truncate=truncate)
        return _partition.summed_like(cotangents, args[:4])

    _, vjp = jax.vjp(backward, *residuals)
    d_points, d_values, d_scale, d_queries, dd_out, dd_density = vjp(cotangents)
    return d_points, d_values, d_scale, d_queries, None, None, dd_out, dd_density


scattered_backward.defvjp(_scattered_backward_fwd, _scattered_backward_bwd)
