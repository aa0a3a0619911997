"""The forms `sigma` takes, and the Cholesky factor the kernels take.

A point's covariance is Sigma = L L^T with L = [[l11, 0], [l21, l22]] lower
triangular, l11, l22 > 0. Every kernel (native and reference) takes L as a
(N, 3) array `scale` of (l11, l21, l22), formed here in JAX so that gradients
reach whichever form the user gave:

  scalar or (N,)  round Gaussians of width sigma:    L = diag(sigma, sigma);
  (N, 2)          per-axis widths (sigma_x, sigma_y): L = diag(sigma_x, sigma_y);
  (N, 2, 2)       covariance matrices, in pixels^2:   L = cholesky(Sigma).

A covariance's off-diagonal entry is the mean of its two (so each receives
half the gradient). A matrix that is not finite, not positive definite, or so
nearly singular that its Cholesky factor is mostly rounding error
(1 - rho^2 <= 64 eps, rho the correlation, eps the dtype's epsilon) becomes a
NaN factor, which the kernels treat like a NaN sigma: the point contributes
nothing and its gradients are zero.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

#: A covariance counts as singular where 1 - rho^2 <= SINGULAR_EPS * eps.
SINGULAR_EPS = 64


def sigma_kind(shape: tuple[int, ...], n: int) -> str:
    """'round', 'axes' or 'covariance' for a sigma of this shape with N = n
    points; ValueError naming sigma for any other shape."""
    if shape in ((), (n,)):
        return "round"
    if shape == (n, 2):
        return "axes"
    if shape == (n, 2, 2):
        return "covariance"
    raise ValueError(f"sigma must be a scalar, (N,) widths, (N, 2) per-axis widths or "
                     f"(N, 2, 2) covariances with N = {n}, got shape {shape}")


def rounded_product(a, b):
    """a * b rounded on its own. XLA contracts a product feeding an addition
    into a fused multiply-add where it likes (under jit, not eagerly, and
    differently per platform); a select between the product and something
    else blocks that, so every program rounds the same way. (a == a only
    fails for NaN, where a * b is NaN too.)"""
    return jnp.where(a == a, a * b, a)


def _entries(sigma):
    """(s11, s21, s22) of covariances (N, 2, 2), the off-diagonal symmetrised."""
    return sigma[..., 0, 0], (sigma[..., 0, 1] + sigma[..., 1, 0]) / 2, sigma[..., 1, 1]


def _positive_definite(s11, s21, s22, eps: float):
    """Where (s11, s21, s22) is a usable covariance (works on NumPy and JAX arrays)."""
    traced = isinstance(s11, jax.Array)
    xp = jnp if traced else np
    finite = xp.isfinite(s11) & xp.isfinite(s21) & xp.isfinite(s22)
    positive = (s11 > 0) & (s22 > 0)
    safe11 = xp.where(positive, s11, 1)
    # The Cholesky pivot s22 - s21^2 / s11 = s22 (1 - rho^2), formed without
    # the product s11 s22, which could overflow.
    ratio = s21 / safe11
    pivot = s22 - (rounded_product(ratio, s21) if traced else ratio * s21)
    return finite & positive & (pivot > SINGULAR_EPS * eps * s22)


def check_static(sigma: Any, kind: str, dtype: np.dtype) -> None:
    """Raises for a sigma known at trace time that no point could use: a width
    <= 0, or a finite covariance that is not positive definite (or singular in
    the kernel dtype). NaN and inf pass: such a point just contributes nothing."""
    static = np.asarray(sigma, dtype=np.float64)
    if kind != "covariance":
        if np.any(static <= 0):  # NaN compares False
            raise ValueError(f"sigma must be positive, got {static[static <= 0].ravel()[0]}")
        return
    s11, s21, s22 = _entries(static)
    finite = np.isfinite(s11) & np.isfinite(s21) & np.isfinite(s22)
    bad = finite & ~_positive_definite(s11, s21, s22, float(np.finfo(dtype).eps))
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"sigma must hold symmetric positive-definite covariances, not nearly "
                         f"singular; sigma[{i}] = {static[i].tolist()}")


def _diagonal_factor(sigma_x, sigma_y):
    """(sigma_x, 0, sigma_y) along a new last axis. The zero is formed from
    sigma_x, not by `zeros_like`: under vmap that constant would be
    unbatched, and under a mesh of Explicit axes stacking it with a
    batch-sharded sigma is an error. (It is NaN where sigma_x is not finite,
    a point no kernel uses anyway; without a gradient, so that an inf
    cotangent of l21 does not make sigma's NaN.)"""
    return jnp.stack([sigma_x, lax.stop_gradient(sigma_x) * 0, sigma_y], axis=-1)


def to_scale(sigma: jax.Array, n: int) -> jax.Array:
    """The (N, 3) Cholesky factors (l11, l21, l22) of sigma in any of its forms
    (already cast to the kernel dtype); NaN rows for unusable covariances."""
    kind = sigma_kind(sigma.shape, n)
    if kind == "round":
        # A scalar width's (3,) factor, broadcast to (N, 3): one XLA broadcast.
        # Stacking three (N,) broadcasts took 4.4x as long (65,536 points,
        # float32, CPU, the operation alone under jit: 61 against 14 us,
        # minimum of calls). For (N,) widths the stack is already (N, 3).
        return jnp.broadcast_to(_diagonal_factor(sigma, sigma), (n, 3))
    if kind == "axes":
        return _diagonal_factor(sigma[:, 0], sigma[:, 1])
    s11, s21, s22 = _entries(sigma)
    ok = _positive_definite(s11, s21, s22, float(jnp.finfo(sigma.dtype).eps))
    # Factor a harmless identity where the matrix is unusable, so that neither
    # the factor nor its derivative is NaN there (the cotangent that reaches
    # it is zero: the kernels give a NaN factor none).
    s11, s21, s22 = jnp.where(ok, s11, 1), jnp.where(ok, s21, 0), jnp.where(ok, s22, 1)
    l11 = jnp.sqrt(s11)
    l21 = s21 / l11
    # s22 - l21^2 cancels for a nearly singular matrix, so it is rounded the
    # same way in every program: the factor must not depend on jit or platform.
    l22 = jnp.sqrt(s22 - rounded_product(l21, l21))
    return jnp.where(ok[:, None], jnp.stack([l11, l21, l22], axis=-1), jnp.nan)
