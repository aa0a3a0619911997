"""Public API: GMM interpolation on a pixel grid or at arbitrary queries."""

from __future__ import annotations

from functools import partial

import jax

from jax_gmm import _autodiff, _checks, _partition, _remat, adaptive, reference
from jax_gmm._checks import ArrayLike


@partial(jax.jit, static_argnums=(3, 4, 5, 6, 7, 8, 9, 10))
def _grid(points, values, sigma, height, width, truncate, eps, kernel_dtype, result_dtype,
          return_density, remat_rows):
    """(out, density), or (out, None) when neither the caller nor eps needs the density."""

    def render(top, rows, points, values, scale):  # image rows [top, top + rows)
        points = _remat.shifted(points, top)
        if not return_density and eps == 0:
            out = _autodiff.grid_out(points, values, scale, rows, width, truncate)
            return out.astype(result_dtype), None
        out, density = _autodiff.grid(points, values, scale, rows, width, truncate)
        return (reference.smoothed(out, density, eps).astype(result_dtype),
                density.astype(result_dtype))

    # Whole before the custom_vjp, so that the gradients come back typed as
    # the user's arguments under Explicit mesh axes (reshard's transpose).
    args = _partition.whole_examples(_checks.to_kernel(kernel_dtype, points, values, sigma))
    remat_rows = _remat.choose_rows(remat_rows, height, width, args[1].shape[-1],
                                    kernel_dtype.itemsize, args[0].shape[0])
    if remat_rows >= height:
        return render(0, height, *args)
    return _remat.banded(render, height, remat_rows, args)


@partial(jax.jit, static_argnums=(4, 5, 6, 7, 8))
def _scattered(points, values, sigma, queries, truncate, eps, kernel_dtype, result_dtype,
               return_density):
    """(out, density), or (out, None) when neither the caller nor eps needs the density."""
    args = _partition.whole_examples(_checks.to_kernel(kernel_dtype, points, values, sigma,
                                                       queries))
    if not return_density and eps == 0:
        return _autodiff.scattered_out(*args, truncate).astype(result_dtype), None
    out, density = _autodiff.scattered(*args, truncate)
    return reference.smoothed(out, density, eps).astype(result_dtype), density.astype(result_dtype)


def interpolate(points: ArrayLike, values: ArrayLike, sigma: ArrayLike, shape: tuple[int, int],
                *, truncate: float = 3.0, eps: float = 0.0, return_density: bool = False,
                remat_rows: int | None = None) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Renders the (H, W, C) image of a Gaussian-weighted mean of scattered values.

    The pixel at row i, column j is the query q = (j + 0.5, i + 0.5), and

        out(q) = sum_i c_i N(q | mu_i, Sigma_i) / Z(q),
        Z(q)   = sum_i N(q | mu_i, Sigma_i),

    with N(q | mu, Sigma) = exp(-d^T Sigma^-1 d / 2) / (2 pi sqrt(det Sigma)),
    d = q - mu, summed over the points with d^T Sigma_i^-1 d <= truncate^2
    (decided on the whitened offset e = L^-1 d, Sigma = L L^T, rounded step by
    step, identically on every platform).

    Args:
      points: (N, 2) positions mu_i as (x, y) = (column, row), in pixels.
      values: (N, C) values c_i.
      sigma: the Gaussians' shapes, in pixels: a scalar or (N,) widths
        (Sigma_i = sigma_i^2 I), (N, 2) per-axis widths (sigma_x, sigma_y), or
        (N, 2, 2) covariance matrices in pixels^2 (the off-diagonal entry used
        is the mean of the two; each gets half its gradient). For an
        unconstrained parametrisation (a Cholesky factor, or scales and an
        angle), build Sigma from it in JAX and differentiate through that.
        Or "auto": per-point widths from the points' density,
        `jax_gmm.adaptive_sigma(points)`, 0.4 x the distance d_4 to the 4th
        nearest other point, widened below truncate 4 so that the cutoff
        still reaches 1.6 d_4 (0.533 d_4 at truncate 3); differentiable in
        the points.
      shape: static (H, W) of the output image, each side at most 2**30 pixels.
      truncate: static cutoff, a Mahalanobis distance (in units of sigma for
        round points; default 3).
      eps: static smoothing of the normaliser (default 0): out = sum_i c_i
        N_i / (Z + eps). With eps > 0 the image fades to 0 where the Gaussians
        thin out, instead of holding the nearest colour up to the cutoff and
        then dropping to 0, so that gradients see pixels that are barely
        covered (fitting, optimisation); Image-GS uses 1e-4 with sigma of a
        few pixels. eps is in the units of Z, 1 / pixel^2.
      return_density: also return Z, to mask pixels that no point reaches.
        Without it (and with eps 0) the CPU kernel writes no density plane
        unless the call is differentiated.
      remat_rows: static; the memory of a differentiated call. Reverse mode
        normally keeps out and density, H x W x (C + 1) values, from the
        forward for the backward. With remat_rows < H it keeps none: the
        forward renders bands of remat_rows rows, and the backward renders
        each band again and differentiates it at once, so that one band's
        residuals exist at a time (out and its cotangent are still whole),
        for the cost of a second forward. The differentiated forward's
        values then match the whole image's to rounding; an undifferentiated
        call renders the whole image regardless. None (default) keeps the
        whole image's residuals when they take at most 1 GiB (per image: a
        vmapped batch counts one) and otherwise uses bands of about 64 MiB,
        fewer where N is large (every band bins all N points); a value >= H
        never bands. Second derivatives keep every band's.
        Under a mesh with Explicit axes the default never bands and a value
        < H raises ValueError: JAX cannot yet vmap the bands' loop there.

    Returns:
      out, (H, W, C); with ``return_density``, ``(out, density)`` where density
      is Z, (H, W). The dtype is that of the inputs promoted together (float32
      or float64; narrower floats are computed in float32).

    Where no point reaches a pixel, out and density are 0 there and so are
    their gradients. A point with a non-finite position or sigma, a width
    below the dtype's smallest normal number, or a covariance that is not
    positive definite or is singular to rounding (1 - rho^2 <= 64 eps, rho
    the correlation, eps the dtype's epsilon) contributes nothing and gets
    zero gradients; a static (not traced) width <= 0 or finite unusable
    covariance raises ValueError instead.
    A pair of weight 0 passes nothing either way, so an inf value reaches
    only the pixels its point weighs. 1 / sigma is capped at 1e18 (float32;
    1e151 in float64) and the normaliser 1 / (2 pi sigma^2) clamped to
    [1e-30, 1e30] ([1e-300, 1e300]), so sigma beyond about [4e-16, 4e14]
    pixels (float32) weighs as if at that bound (per axis of the Cholesky
    factor, for covariances). README.md, Conventions, has the full rules.

    Differentiable in points, values and sigma, and composes with jit, vmap
    (over any leading axes, with unbatched arguments shared, not copied),
    grad and jacrev, to any order in reverse mode (second and higher
    derivatives go through jax_gmm.reference's formula, O(N x M)). Forward
    mode (jax.jvp, jax.jacfwd, jax.hessian, calling a jax.linearize result)
    raises "TypeError: can't apply forward-mode autodiff (jvp) to a
    custom_vjp function": use jax.jacrev (a Hessian as
    jax.jacrev(jax.jacrev(f))), or jax_gmm.reference for forward mode.
    Raises ValueError at trace time for wrong shapes or dtypes.

    Example:
      >>> points = jnp.array([[4.0, 3.0], [10.0, 6.5]])
      >>> values = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
      >>> jax_gmm.interpolate(points, values, 2.0, (8, 16)).shape
      (8, 16, 3)
      >>> render = jax.jit(jax_gmm.interpolate, static_argnums=3)  # shape is static
      >>> grad = jax.grad(lambda p: render(p, values, 2.0, (8, 16)).sum())(points)
    """
    truncate, eps = _checks.check_truncate(truncate), _checks.check_eps(eps)
    sigma = adaptive.resolve_sigma(sigma, points, truncate)
    args, result_dtype, kernel_dtype = _checks.check_inputs(points, values, sigma)
    height, width = _checks.check_shape(shape)
    if remat_rows is not None:
        remat_rows = _checks.check_int("remat_rows", remat_rows, 1)
    out, density = _grid(*args, height, width, truncate, eps, kernel_dtype, result_dtype,
                         _checks.check_flag("return_density", return_density), remat_rows)
    return (out, density) if return_density else out


def interpolate_at(points: ArrayLike, values: ArrayLike, sigma: ArrayLike, queries: ArrayLike,
                   *, truncate: float = 3.0, eps: float = 0.0, return_density: bool = False
                   ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Evaluates the Gaussian-weighted mean of scattered values at arbitrary queries.

    Same function as `interpolate`, at query points instead of pixel centres.

    Args:
      points: (N, 2) positions mu_i as (x, y), in pixels.
      values: (N, C) values c_i.
      sigma: a scalar, (N,) or (N, 2) widths, (N, 2, 2) covariances, or
        "auto", as in `interpolate`.
      queries: (..., 2) query positions (x, y), in pixels: (M, 2), or any
        leading shape, such as (H', W', 2) for a warp's sampling grid.
      truncate: static cutoff, a Mahalanobis distance, as in `interpolate` (default 3).
      eps: static smoothing of the normaliser, as in `interpolate`.
      return_density: also return Z at the queries. Without it (and with eps
        0) the CPU kernel writes no density unless the call is differentiated.

    Returns:
      out, (..., C) for queries (..., 2); with ``return_density``,
      ``(out, density)`` with density (...).

    Differentiable in points, values, sigma and queries, in reverse mode to
    any order; forward mode raises as for `interpolate`. A non-finite query
    gets out = density = 0 and a zero gradient; other edge cases as in
    `interpolate`.

    On the CPU, queries that are all pixel centres (j + 0.5, i + 0.5) of one
    image whose top-left pixel is (0, 0), in any order and as many (repeats
    included) as a quarter of its pixels (its width rounded up to a multiple
    of 16), are answered by rendering that image as `interpolate` does and
    reading them off it: the same numbers, bit for bit, at about the cost of
    `interpolate`. This is checked at run time; other queries are evaluated
    one by one.

    Example:
      >>> points = jnp.array([[4.0, 3.0], [10.0, 6.5]])
      >>> values = jnp.array([[1.0], [3.0]])
      >>> out, density = jax_gmm.interpolate_at(points, values, 2.0, jnp.array([[7.0, 4.75]]),
      ...                                       return_density=True)
      >>> out.shape, density.shape
      ((1, 1), (1,))
    """
    truncate, eps = _checks.check_truncate(truncate), _checks.check_eps(eps)
    queries, leading = _checks.flat_queries(queries)
    sigma = adaptive.resolve_sigma(sigma, points, truncate)
    args, result_dtype, kernel_dtype = _checks.check_inputs(points, values, sigma, queries)
    out, density = _scattered(*args, truncate, eps, kernel_dtype, result_dtype,
                              _checks.check_flag("return_density", return_density))
    out = out.reshape(*leading, out.shape[-1])
    return (out, density.reshape(leading)) if return_density else out
