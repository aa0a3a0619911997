"""adaptive_sigma and sigma="auto": the native k-th nearest neighbour search
against a float64 brute force (ties, duplicates, non-finite and far points,
degenerate layouts), its gradient, vmap, and the argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jax_gmm
from brute_force import kth_nearest, neighbour_layouts
from jax_gmm import _ffi, reference


PADDED = 400
reference_kth = jax.jit(lambda p: reference.kth_nearest(p, 4))


@pytest.mark.parametrize("k", [1, 4, 9])
def test_native_search_matches_brute_force(rng, k):
    for name, points in neighbour_layouts(rng).items():
        expected = kth_nearest(points, k)
        native = np.asarray(_ffi.kth_nearest(jnp.asarray(points), k))
        np.testing.assert_array_equal(native, expected, err_msg=name)
        if k == 4:  # the fallback on platforms without the native search
            # Padded with NaN points (never anyone's neighbour): one compilation.
            padded = np.concatenate([points, np.full((PADDED - len(points), 2), np.nan)])
            np.testing.assert_array_equal(reference_kth(jnp.asarray(padded))[:len(points)],
                                          expected, err_msg=name)


def test_float32_search_matches_brute_force_distances(rng):
    points = rng.uniform(0, 512, (3000, 2)).astype(np.float32)
    found = np.asarray(_ffi.kth_nearest(jnp.asarray(points), 4))
    expected = kth_nearest(points, 4)
    p = points.astype(np.float64)
    np.testing.assert_array_equal(np.linalg.norm(p[found] - p, axis=-1),
                                  np.linalg.norm(p[expected] - p, axis=-1))


@pytest.mark.parametrize("points", [np.zeros((0, 2)), np.array([[3.0, 4.0]]),
                                    np.full((5, 2), 2.5), np.array([[np.nan, 0.0], [1.0, 1.0]])])
def test_no_usable_neighbour_gives_zero(points):
    sigma = jax_gmm.adaptive_sigma(points)
    assert sigma.shape == (len(points),)
    np.testing.assert_array_equal(sigma, 0.0)
    if len(points):
        np.testing.assert_array_equal(jax.grad(lambda p: jax_gmm.adaptive_sigma(p).sum())(
            jnp.asarray(points)), 0.0)


def test_fewer_than_k_neighbours_take_the_farthest():
    points = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(jax_gmm.adaptive_sigma(points, k=4, scale=1.0), [4.0, 5.0, 5.0])


def test_values_and_dtype(rng):
    points = rng.uniform(0, 64, (500, 2))
    expected = 0.4 * np.linalg.norm(points[kth_nearest(points, 4)] - points, axis=-1)
    np.testing.assert_allclose(jax_gmm.adaptive_sigma(points), expected, rtol=1e-14)
    f32 = jax_gmm.adaptive_sigma(points.astype(np.float32), k=2, scale=0.7)
    assert f32.dtype == jnp.float32
    rounded = points.astype(np.float32).astype(np.float64)
    expected = 0.7 * np.linalg.norm(rounded[kth_nearest(rounded, 2)] - rounded, axis=-1)
    np.testing.assert_allclose(f32, expected, rtol=1e-6)


def test_gradient_against_finite_differences(rng):
    points = jnp.asarray(rng.uniform(0, 20, (40, 2)))
    check_grads(lambda p: jax_gmm.adaptive_sigma(p, k=3), (points,), order=1, modes=["rev"],
                eps=1e-6)


@pytest.mark.parametrize("dtype,gap", [(np.float32, 1e-20), (np.float32, 1e-30),
                                       (np.float64, 1e-160)])
def test_gradient_of_tiny_distances_is_the_unit_vector(dtype, gap):
    points = jnp.asarray([[0.0, 0.0], [gap, gap]], dtype)
    grad = jax.grad(lambda p: jax_gmm.adaptive_sigma(p, k=1, scale=1.0)[0])(points)
    np.testing.assert_allclose(grad, [[-0.5 ** 0.5] * 2, [0.5 ** 0.5] * 2], rtol=1e-6)


def test_jit_and_vmap(rng):
    batch = rng.uniform(0, 50, (3, 200, 2))
    looped = np.stack([jax_gmm.adaptive_sigma(p) for p in batch])
    np.testing.assert_array_equal(jax.vmap(jax_gmm.adaptive_sigma)(batch), looped)
    np.testing.assert_array_equal(jax.jit(jax_gmm.adaptive_sigma)(batch[0]), looped[0])


def test_sigma_auto(rng):
    points = rng.uniform(0, 32, (150, 2))
    values = rng.uniform(-1, 1, (150, 2))
    queries = rng.uniform(0, 32, (40, 2))
    for truncate, scale in [(3.0, 0.4 * 4 / 3), (4.0, 0.4), (5.0, 0.4)]:
        sigma = jax_gmm.adaptive_sigma(points, scale=scale)
        np.testing.assert_array_equal(
            jax_gmm.interpolate(points, values, "auto", (32, 32), truncate=truncate),
            jax_gmm.interpolate(points, values, sigma, (32, 32), truncate=truncate))
        np.testing.assert_array_equal(
            jax_gmm.interpolate_at(points, values, "auto", queries, truncate=truncate),
            jax_gmm.interpolate_at(points, values, sigma, queries, truncate=truncate))
    # The widths follow the points, so their gradient does too.
    loss = lambda p, s: jax_gmm.interpolate_at(p, values, s, queries).sum()  # noqa: E731
    auto = jax.grad(lambda p: loss(p, "auto"))(points)
    explicit = jax.grad(lambda p: loss(p, jax_gmm.adaptive_sigma(p, scale=0.4 * 4 / 3)))(points)
    np.testing.assert_allclose(auto, explicit, rtol=1e-12, atol=1e-14)


def test_sigma_auto_outside_jit_with_duplicates_and_nan(rng):
    """Points that get width 0 from adaptive_sigma are left out, eagerly as
    under jit (a static width 0 would otherwise be refused)."""
    points = np.concatenate([rng.uniform(0, 16, (20, 2)), np.full((6, 2), 3.0),
                             [[np.nan, 1.0]]])
    values = rng.uniform(0, 1, (27, 1))
    eager = jax_gmm.interpolate(points, values, "auto", (16, 16))
    jitted = jax.jit(lambda p, v: jax_gmm.interpolate(p, v, "auto", (16, 16)))(points, values)
    np.testing.assert_array_equal(eager, jitted)
    assert np.isfinite(eager).all()
    np.testing.assert_array_equal(
        jax_gmm.interpolate_at(points[:1], values[:1], "auto", points[:3]), 0.0)


@pytest.mark.parametrize("kwargs,match", [
    ({"k": 0}, "k must be at least 1"), ({"k": 65}, "k must be at most 64"),
    ({"k": 2.5}, "k must be a static integer"), ({"scale": 0.0}, "scale must be positive"),
    ({"scale": float("nan")}, "scale must be positive"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jax_gmm.adaptive_sigma(np.zeros((3, 2)), **kwargs)


def test_bad_points_and_sigma_strings():
    with pytest.raises(ValueError, match="points must have shape"):
        jax_gmm.adaptive_sigma(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="points must have a floating-point dtype"):
        jax_gmm.adaptive_sigma(np.zeros((3, 2), np.int32))
    with pytest.raises(ValueError, match='sigma must be a number, an array or "auto"'):
        jax_gmm.interpolate(np.zeros((3, 2)), np.zeros((3, 1)), "wide", (4, 4))
