"""The eps option: out = sum_i c_i N_i / (Z + eps), against the float64 brute
force, its gradients against finite differences, and its argument check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jax_gmm
from brute_force import gmm, gmm_grid

IMPLS = {"native": jax_gmm, "reference": jax_gmm.reference}


def scene(rng, n=60, c=3, dtype=np.float64):
    points = rng.uniform(-3, 23, (n, 2)).astype(dtype)
    values = rng.uniform(-1, 1, (n, c)).astype(dtype)
    sigma = rng.uniform(0.6, 2.5, n).astype(dtype)
    return points, values, sigma


@pytest.mark.parametrize("impl,dtype,rtol", [("native", np.float64, 1e-12),
                                              ("native", np.float32, 2e-5),
                                              ("reference", np.float64, 1e-12)])
@pytest.mark.parametrize("eps", [1e-4, 1.0])
def test_matches_brute_force(rng, impl, dtype, rtol, eps):
    points, values, sigma = scene(rng, dtype=dtype)
    out, density = IMPLS[impl].interpolate(points, values, sigma, (17, 21), eps=eps,
                                           return_density=True)
    want_out, want_density = gmm_grid(points, values, sigma, (17, 21), eps=eps)
    np.testing.assert_allclose(out, want_out, rtol=rtol, atol=rtol * np.abs(want_out).max())
    np.testing.assert_allclose(density, want_density, rtol=rtol,
                               atol=rtol * want_density.max())
    queries = rng.uniform(-5, 25, (40, 2)).astype(dtype)
    got = IMPLS[impl].interpolate_at(points, values, sigma, queries, eps=eps)
    want = gmm(points, values, sigma, queries, eps=eps)[0]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


def test_zero_eps_is_the_exact_mean(rng):
    points, values, sigma = scene(rng)
    np.testing.assert_array_equal(jax_gmm.interpolate(points, values, sigma, (9, 9), eps=0.0),
                                  jax_gmm.interpolate(points, values, sigma, (9, 9)))


def test_fades_where_the_gaussians_thin_out():
    """One point: the exact mean holds its value up to the cutoff; with eps the
    value fades with the weight, Z / (Z + eps)."""
    point, value = np.array([[0.5, 0.5]]), np.array([[2.0]])
    queries = np.array([[0.5, 0.5], [2.5, 0.5], [3.4, 0.5], [4.0, 0.5]])
    exact = jax_gmm.interpolate_at(point, value, 1.0, queries)
    out, density = jax_gmm.interpolate_at(point, value, 1.0, queries, eps=1e-3,
                                          return_density=True)
    np.testing.assert_array_equal(exact[:3, 0], 2.0)
    np.testing.assert_allclose(out[:, 0], 2.0 * density / (density + 1e-3), rtol=1e-12)
    assert out[0, 0] > out[1, 0] > out[2, 0] > 0 and out[3, 0] == 0 == density[3]


@pytest.mark.parametrize("impl,order", [("native", 2), ("reference", 1)])
def test_gradients_match_finite_differences(rng, impl, order):
    points, values, sigma = scene(rng, n=12, c=2)
    queries = rng.uniform(0, 20, (15, 2))
    f = jax.jit(lambda p, v, s, q: IMPLS[impl].interpolate_at(p, v, s, q, truncate=8.0, eps=1e-3))
    check_grads(f, (points, values, sigma, queries), order=order, modes=["rev"], eps=1e-6)
    g = jax.jit(lambda p, v, s: IMPLS[impl].interpolate(p, v, s, (6, 7), truncate=8.0, eps=1e-3))
    check_grads(g, (points[:6] / 3, values[:6], sigma[:6]), order=1, modes=["rev"], eps=1e-6)


def test_no_nan_gradient_where_nothing_reaches():
    points, values = np.array([[1.5, 1.5]]), np.array([[1.0]])
    loss = lambda p, v, s: jnp.sum(jax_gmm.interpolate(p, v, s, (8, 8), eps=1e-2))  # noqa: E731
    grads = jax.grad(loss, argnums=(0, 1, 2))(points, values, 0.5)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


@pytest.mark.parametrize("eps", [-1e-3, np.inf, np.nan, "1e-3", True])
def test_bad_eps_raises(eps):
    with pytest.raises(ValueError, match="eps must be"):
        jax_gmm.interpolate(np.zeros((1, 2)), np.ones((1, 1)), 1.0, (2, 2), eps=eps)
