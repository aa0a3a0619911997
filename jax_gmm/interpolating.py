"""Interpolating values: a mixture that passes through its samples.

`interpolate` with values = samples renders a Gaussian-weighted mean, which
smooths the samples: at a sample position it returns a blend of that sample
and its neighbours. `fit_values` instead solves for the values c that the
mixture maps back to the samples at the sample positions,

    A c = s,   (A c)_j = sum_i c_i N(p_j | p_i, Sigma_i) / Z(p_j),

a linear system with one row and one column per point. A is not symmetric
(each point has its own width), and with widths of the order of the spacing
it is nearly singular, with eigenvalues near 0, some of negative real part
(the cutoff makes the kernel indefinite), so plain residual correction,
c <- c + (s - A c), can diverge; restarted GMRES never increases the residual.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from jax_gmm import _checks, _covariance, _partition, adaptive, reference
from jax_gmm._api import interpolate_at
from jax_gmm._checks import ArrayLike


#: GMRES restarts after this many steps, keeping RESTART + 1 arrays of the
#: samples' size. On smooth samples at 300-4000 random points with widths
#: 0.3-0.4 x the distance to the 4th nearest point (tol 1e-4), restarts after
#: 20, 30, 50 or 100 steps converged in 22-67 steps, within 15 % of each other.
RESTART = 30


def fit_values(points: ArrayLike, samples: ArrayLike, sigma: ArrayLike, *,
               truncate: float = 3.0, iters: int = 100, tol: float = 1e-4) -> jax.Array:
    """Solves for the values with which the mixture reproduces its samples.

    Returns c such that ``interpolate_at(points, c, sigma, points,
    truncate=truncate)`` equals the samples: that evaluation is a linear map
    A of c, and c solves A c = samples by GMRES from c = samples, restarted
    every `RESTART` steps. At the start of each restart cycle the residual
    is recomputed exactly, and the solve stops there once

        ||samples - A c||_2 <= tol * ||samples||_2

    (norms over all N x C entries), or after `iters` steps; either way it
    returns the last iterate, so check ``interpolate_at(points, c, sigma,
    points, truncate=truncate) - samples`` where convergence matters. Render
    c with `interpolate` or `interpolate_at` with the same points, sigma and
    truncate.

    Exact interpolation reproduces the samples, but between them it can
    overshoot: on photographs with 1-10 % of the pixels kept and sigma = 0.4
    x the distance to the 4th nearest point, the rendering of the solution
    measured 0.3-3.5 dB below the plain mean (values = samples), and
    0.1-0.8 dB above it at 25 % (experiments/scattered_reconstruction.py;
    `jax_gmm.reconstruct` beats both). It suits smooth data. Wider
    Gaussians make A nearly singular: at 0.6 x that distance the residual
    stalled above tol and c grew to 40-3000 times the samples' range.

    Args:
      points: (N, 2) sample positions (x, y), in pixels, where the Gaussians
        sit.
      samples: (N, C) values to reproduce at the points.
      sigma: a scalar, (N,) or (N, 2) widths in pixels, (N, 2, 2)
        covariances in pixels^2, or "auto", as in `interpolate`.
      truncate: static cutoff, a Mahalanobis distance, as in `interpolate`
        (default 3).
      iters: static bound on the GMRES steps (default 100), each one
        evaluation of A; recomputing the residual at the start of each cycle
        costs one more. The gradient's solve has the same bound.
      tol: static relative tolerance of the stopping rule above (default 1e-4).

    Returns:
      c, (N, C), in the inputs' dtype promoted together (float32 or float64;
      narrower floats are solved in float32). Samples that are all 0 give 0;
      a NaN or infinite sample makes every value NaN. A point that
      contributes nothing (a non-finite position or sigma, a traced width
      <= 0, an unusable covariance, a width of 0 from "auto") is left out:
      its value is 0, its sample is ignored, and its gradients are 0.

    Differentiable in points, samples and sigma, in reverse mode, by implicit
    differentiation: the gradient is that of the exact solution of A c =
    samples (computed with a second GMRES solve, with A's transpose and the
    same `iters` and `tol`), so it matches the returned c to the accuracy of
    the solves. Forward mode raises as for `interpolate`, and so does a second
    derivative (the backward's GMRES is a while_loop). Composes with jit
    and vmap. Raises ValueError at trace time for wrong shapes, dtypes or
    settings.

    Example:
      >>> points = jnp.array([[2.0, 2.0], [5.0, 2.5], [3.0, 5.0]])
      >>> samples = jnp.array([[1.0], [0.0], [2.0]])
      >>> c = fit_values(points, samples, 2.0, tol=1e-6)
      >>> bool(jnp.allclose(jax_gmm.interpolate_at(points, c, 2.0, points), samples, atol=1e-5))
      True
    """
    truncate = _checks.check_truncate(truncate)
    iters = _checks.check_int("iters", iters, 1)
    tol = _checks.check_positive("tol", tol)
    points, samples = _checks.as_array("points", points), _checks.as_array("samples", samples)
    _checks.check_values(samples, _checks.check_points(points), "samples")
    sigma = adaptive.resolve_sigma(sigma, points, truncate)
    args, result_dtype, kernel_dtype = _checks.check_inputs(points, samples, sigma)
    # Whole along N under Explicit mesh axes: the solve builds its basis
    # unsharded, and the gradients come back typed as the arguments.
    points, samples, sigma = _partition.whole_examples(
        tuple(jnp.asarray(x, kernel_dtype) for x in args))
    samples = jnp.where(_contributing(points, sigma)[:, None], samples, 0)
    return jnp.asarray(_solve(points, samples, sigma, truncate, iters, tol), result_dtype)


def _contributing(points, sigma):
    """(N,) bool: the points that the kernels use (reference.contributes)."""
    return reference.contributes(points, _covariance.to_scale(sigma, points.shape[0]))


def _mixture(points, values, sigma, truncate, contributing):
    """A applied to values: the mixture evaluated at its own points, where a
    point that contributes nothing (not `contributing`: a NaN position, an
    unusable sigma) has the identity's row and column instead of A's. Its
    column in A is 0 and its row would ask the others to sum to its sample
    at its position: with the identity, and its sample set to 0, it is left
    out of the solve and gets the value 0."""
    mixed = interpolate_at(points, values, sigma, points, truncate=truncate)
    return jnp.where(contributing[:, None], mixed, values)


# The custom_vjp is not jitted itself, only its two halves: outside jit the
# forward solve then compiles once per shape and is reused by jax.grad's
# forward pass, which calls it on plain arrays.
@partial(jax.jit, static_argnums=(3, 4, 5))
def _forward(points, samples, sigma, truncate, iters, tol):
    contributing = _contributing(points, sigma)
    return _gmres(lambda c: _mixture(points, c, sigma, truncate, contributing), samples, iters,
                  tol)


@partial(jax.jit, static_argnums=(4, 5, 6))
def _backward(points, sigma, values, d_values, truncate, iters, tol):
    # With A c = s: dc = A^-1 (ds - dA c), so ds = A^-T g and the points and
    # sigma get the VJP of A c at -A^-T g, points as centres and as queries.
    contributing = _contributing(points, sigma)
    _, transposed = jax.vjp(lambda c: _mixture(points, c, sigma, truncate, contributing), values)
    d_samples = _gmres(lambda g: transposed(g)[0], d_values, iters, tol)
    _, operator_vjp = jax.vjp(lambda p, s: _mixture(p, values, s, truncate, contributing),
                              points, sigma)
    d_points, d_sigma = operator_vjp(-d_samples)
    return d_points, d_samples, d_sigma


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _solve(points, samples, sigma, truncate, iters, tol):
    return _forward(points, samples, sigma, truncate, iters, tol)


def _solve_fwd(points, samples, sigma, truncate, iters, tol):
    values = _forward(points, samples, sigma, truncate, iters, tol)
    return values, (points, sigma, values)


def _solve_bwd(truncate, iters, tol, residuals, d_values):
    return _backward(*residuals, d_values, truncate, iters, tol)


_solve.defvjp(_solve_fwd, _solve_bwd)


def _gmres(matvec: Callable[[jax.Array], jax.Array], b: jax.Array, iters: int, tol: float
           ) -> jax.Array:
    """x with ||b - matvec(x)|| <= tol ||b||, by GMRES from x = b restarted
    every RESTART steps, or the iterate after `iters` steps.

    jax.scipy.sparse.linalg.gmres would need matvec's transpose at trace time
    (it wraps its solve in lax.custom_linear_solve), and the kernels'
    custom_vjp has none."""
    restart = min(RESTART, iters)
    dtype = b.dtype
    atol = tol * jnp.linalg.norm(b)

    def safe_divide(v, d):  # under vmap the loops also run finished members, whose d may be 0
        return v / jnp.where(d > 0, d, 1)

    def unconverged(residual_norm):  # true for NaN, which then runs out of steps
        return ~(residual_norm <= atol)

    def arnoldi_step(state):
        # Classical Gram-Schmidt twice, then Givens rotations that keep the
        # Hessenberg matrix triangular and |g[k + 1]| the residual's norm.
        k, steps, basis, triangle, cos, sin, g = state
        w = matvec(basis[k])
        h = jnp.zeros(restart + 1, dtype)
        for _ in range(2):
            projection = jnp.tensordot(basis, w, w.ndim)
            w = w - jnp.tensordot(projection, basis, 1)
            h = h + projection
        w_norm = jnp.linalg.norm(w)
        basis = basis.at[k + 1].set(safe_divide(w, w_norm))

        def rotate(i, h):
            hi, hj = h[i], h[i + 1]
            return h.at[i].set(cos[i] * hi + sin[i] * hj).at[i + 1].set(cos[i] * hj - sin[i] * hi)

        h = lax.fori_loop(0, k, rotate, h)
        radius = jnp.hypot(h[k], w_norm)
        cos = cos.at[k].set(jnp.where(radius > 0, safe_divide(h[k], radius), 1))
        sin = sin.at[k].set(safe_divide(w_norm, radius))
        triangle = triangle.at[:, k].set(jnp.where(jnp.arange(restart) == k, radius, h[:restart]))
        g = g.at[k + 1].set(-sin[k] * g[k]).at[k].set(cos[k] * g[k])
        return k + 1, steps + 1, basis, triangle, cos, sin, g

    def cycle(state):
        x, _, steps = state
        residual = b - matvec(x)
        residual_norm = jnp.linalg.norm(residual)
        basis = jnp.zeros((restart + 1, *b.shape), dtype).at[0].set(
            safe_divide(residual, residual_norm))
        # Unused columns stay the identity's, so the triangular solve sets their y to 0.
        triangle = jnp.eye(restart, dtype=dtype)
        cos, sin = jnp.ones(restart, dtype), jnp.zeros(restart, dtype)
        g = jnp.zeros(restart + 1, dtype).at[0].set(residual_norm)
        k, steps, basis, triangle, _, _, g = lax.while_loop(
            lambda s: (s[0] < restart) & (s[1] < iters) & unconverged(jnp.abs(s[6][s[0]])),
            arnoldi_step, (0, steps, basis, triangle, cos, sin, g))
        # A zero on the diagonal is a breakdown (the next direction lies in
        # the basis, as when A is singular): that column gets no weight,
        # rather than a division by 0.
        broken = jnp.diagonal(triangle) == 0
        y = jax.scipy.linalg.solve_triangular(
            triangle + jnp.diag(broken.astype(dtype)),
            jnp.where((jnp.arange(restart) < k) & ~broken, g[:restart], 0))
        return x + jnp.tensordot(y, basis[:restart], 1), unconverged(residual_norm), steps

    x, *_ = lax.while_loop(lambda s: s[1] & (s[2] < iters), cycle, (b, True, 0))
    return x
