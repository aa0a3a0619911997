"""Gradients against finite differences (float64) and native against reference (float32)."""

import jax
import numpy as np
import pytest
from jax.test_util import check_grads

import jax_gmm

# A wide cutoff makes the weight at the cutoff (exp(-truncate^2 / 2) ~ 1e-14)
# negligible, so finite differences do not see the step there.
WIDE = 8.0


def inputs(rng, n=40, c=3, shape=(14, 17), dtype=np.float64):
    h, w = shape
    points = rng.uniform([-2, -2], [w + 2, h + 2], (n, 2))
    values = rng.normal(size=(n, c))
    sigma = rng.uniform(0.7, 2.5, n)
    return [np.asarray(a, dtype) for a in (points, values, sigma)]


def scalar_loss(f, rng):
    """sum of out * random weights + density * random weights: exercises both cotangents."""
    def loss(*args):
        out, density = f(*args)
        k_out = jax.random.normal(jax.random.key(1), out.shape, out.dtype)
        k_den = jax.random.normal(jax.random.key(2), density.shape, density.dtype)
        return (out * k_out).sum() + 10 * (density * k_den).sum()
    return loss


@pytest.mark.parametrize("per_point_sigma", [False, True])
def test_grid_gradients_match_finite_differences(rng, per_point_sigma):
    points, values, sigma = inputs(rng)
    sigma = sigma if per_point_sigma else np.float64(1.7)
    f = lambda p, v, s: jax_gmm.interpolate(p, v, s, (14, 17), truncate=WIDE,  # noqa: E731
                                            return_density=True)
    check_grads(scalar_loss(f, rng), (points, values, sigma), order=1, modes=["rev"])


@pytest.mark.parametrize("per_point_sigma", [False, True])
@pytest.mark.parametrize("m", [60, 5])  # 5 queries among 40 points: the sparse forward
def test_query_gradients_match_finite_differences(rng, per_point_sigma, m):
    points, values, sigma = inputs(rng)
    sigma = sigma if per_point_sigma else np.float64(1.7)
    queries = rng.uniform(-1, 18, (m, 2))
    f = lambda p, v, s, q: jax_gmm.interpolate_at(p, v, s, q, truncate=WIDE,  # noqa: E731
                                                  return_density=True)
    check_grads(scalar_loss(f, rng), (points, values, sigma, queries), order=1, modes=["rev"])


def test_gradients_at_few_queries_among_many_points(rng):
    """With 8 or more points per query the backward splats only the points
    whose centres lie near a query (cuda/cpu/kernels.h, NearQueries; here
    over a quarter of the centre grid's cells is marked): the gradients, the
    queries' too, are the reference's, and those of the many points out of
    every query's reach are exactly zero. The queries span under 190 pixels,
    so that the grid's cells are as narrow as it makes them (half the widest
    box half-side), and one lies just inside the cutoff of the widest point."""
    n = 4000
    points = rng.uniform(0, 300, (n, 2))
    sigma = rng.uniform(0.8, 1.9, n)
    values = rng.normal(size=(n, 2))
    inner = np.flatnonzero(np.all((points > 70) & (points < 210), axis=1))
    widest = inner[10]
    sigma[widest] = 2.0
    queries = np.concatenate([rng.uniform(60, 220, (30, 2)),  # alone
                              points[inner[:10]] + rng.normal(size=(10, 2)),  # on points
                              points[widest:widest + 1] + [3.0 * 2.0 * (1 - 1e-6), 0.0]])
    k_out = rng.normal(size=(len(queries), 2))
    loss = lambda module: lambda p, v, s, q: (  # noqa: E731
        module.interpolate_at(p, v, s, q) * k_out).sum()
    args = (points, values, sigma, queries)
    got = jax.grad(loss(jax_gmm), argnums=(0, 1, 2, 3))(*args)
    want = jax.grad(loss(jax_gmm.reference), argnums=(0, 1, 2, 3))(*args)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12 * np.abs(w).max())
    d2 = ((points[:, None, :] - queries[None]) ** 2).sum(-1)
    reached = (d2 <= (3 * sigma[:, None]) ** 2).any(1)
    assert reached[widest] and 0.2 > reached.mean() > 0.01
    for g in got[:3]:
        assert np.all(np.asarray(g)[~reached] == 0)
        assert np.abs(np.asarray(g)[reached]).max() > 0


def test_gradients_at_few_queries_under_vmap_and_far_queries(rng):
    """The backward at few queries gathers the points near one (handlers.cc,
    backward_bins): under a vmap over values with shared points and queries
    each example's gradients are those of its own call, bit for bit; a
    non-finite point among them gets zero gradients; and queries out of every
    point's reach give zeros, not NaN, whether or not a point's box holds
    them."""
    n = 3000
    points = rng.uniform(0, 200, (n, 2))
    points[7] = [np.nan, 50.0]
    sigma = rng.uniform(0.8, 1.9, n)
    sigma[8] = np.inf
    values = rng.normal(size=(3, n, 2))
    queries = rng.uniform(20, 180, (40, 2))
    queries[0] = points[8]  # on the point of infinite sigma
    k_out = rng.normal(size=(40, 2))
    grad = jax.grad(lambda p, v, s, q: (jax_gmm.interpolate_at(p, v, s, q) * k_out).sum(),
                    argnums=(0, 1, 2, 3))
    batched = jax.vmap(grad, in_axes=(None, 0, None, None))(points, values, sigma, queries)
    for b in range(3):
        for g_batched, g_alone in zip(batched, grad(points, values[b], sigma, queries)):
            np.testing.assert_array_equal(g_batched[b], g_alone)
    kept = np.ones(n, bool)
    kept[[7, 8]] = False
    want = jax.grad(lambda p, v, s, q: (jax_gmm.reference.interpolate_at(p, v, s, q)
                                        * k_out).sum(), argnums=(0, 1, 2, 3))(
        points[kept], values[1][kept], sigma[kept], queries)
    got = grad(points, values[1], sigma, queries)
    for g, w in zip(got[:3], want[:3]):
        np.testing.assert_array_equal(np.asarray(g)[~kept], 0)
        np.testing.assert_allclose(np.asarray(g)[kept], w, rtol=1e-9,
                                   atol=1e-12 * np.abs(w).max())
    np.testing.assert_allclose(got[3], want[3], rtol=1e-9, atol=1e-12 * np.abs(want[3]).max())
    # Queries off every point's box: no query is listed, nothing gathered;
    # queries between two bands of points: listed, and no point near one.
    apart = points.copy()
    apart[:, 0] = np.where(points[:, 0] < 100, points[:, 0] / 10, 180 + points[:, 0] / 10)
    for p, q in ((points, queries + 1e4), (apart, rng.uniform([90, 20], [110, 180], (40, 2)))):
        for g in grad(p, values[1], sigma, q):
            assert np.all(np.isfinite(g))
            np.testing.assert_array_equal(g, 0)


@pytest.mark.parametrize("c", [1, 2, 3, 4, 5])
def test_gradients_at_dense_queries_for_each_channel_count(rng, c):
    """Spans of many queries take one vector loop per span with C known at
    compile time for 1 to 4 channels, and separate loops for more
    (scattered_backward.cc, span_sums); tilted covariances and an infinite
    value among the points. Against the float64 reference."""
    n = 300
    points = rng.uniform(0, 40, (n, 2))
    values = rng.normal(size=(n, c))
    values[3, 0] = np.inf  # reaches some queries: their gradients are NaN in both
    a = rng.uniform(0.8, 2.5, (n, 2, 2))
    cov = a @ np.swapaxes(a, 1, 2) / 2
    queries = rng.uniform(-2, 42, (3000, 2))  # about two queries per pixel
    keep = np.all(np.isfinite(np.asarray(jax_gmm.interpolate_at(points, values, cov,
                                                                queries))), axis=1)
    k_out = np.where(keep[:, None], rng.normal(size=(3000, c)), 0.0)
    grads = [jax.grad(lambda p, v, s, q: (module.interpolate_at(p, v, s, q) * k_out).sum(),
                      argnums=(0, 1, 2, 3))(points, values, cov, queries)
             for module in (jax_gmm, jax_gmm.reference)]
    assert 0 < keep.mean() < 1
    for got, want in zip(*grads):
        got, want = np.asarray(got), np.asarray(want)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=1e-9,
                                   atol=1e-12 * np.abs(want[ok]).max())


def test_position_gradient_formula(rng):
    """d out(q) / d mu_i = (c_i - out(q)) w_iq / Z(q) * (q - mu_i) / sigma_i^2."""
    points, values, sigma = inputs(rng, n=5, c=1)
    q = np.array([[8.0, 7.0]])
    points = q + rng.normal(size=(5, 2))  # all within reach of q
    grad = jax.grad(lambda p: jax_gmm.interpolate_at(p, values, sigma, q, truncate=WIDE)[0, 0])(
        points)
    d = q - points
    w = np.exp(-(d**2).sum(-1) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    out = (w * values[:, 0]).sum() / w.sum()
    expected = ((values[:, 0] - out) * w / w.sum())[:, None] * d / sigma[:, None] ** 2
    np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("truncate", [2.0, 3.0])
def test_native_gradients_match_reference_float32(rng, truncate):
    points, values, sigma = inputs(rng, n=200, shape=(40, 50), dtype=np.float32)
    queries = rng.uniform(-2, 52, (300, 2)).astype(np.float32)
    for module_f in [
        lambda m: lambda p, v, s: m.interpolate(p, v, s, (40, 50), truncate=truncate,
                                                return_density=True),
        lambda m: lambda p, v, s: m.interpolate_at(p, v, s, queries, truncate=truncate,
                                                   return_density=True),
    ]:
        native, reference = (jax.jit(jax.grad(scalar_loss(module_f(m), rng), argnums=(0, 1, 2)))
                             for m in (jax_gmm, jax_gmm.reference))
        for a, b in zip(native(points, values, sigma), reference(points, values, sigma)):
            assert a.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_query_gradient_matches_reference_float32(rng):
    points, values, sigma = inputs(rng, n=200, shape=(40, 50), dtype=np.float32)
    queries = rng.uniform(-2, 52, (300, 2)).astype(np.float32)
    grads = [jax.jit(jax.grad(lambda q: (m.interpolate_at(points, values, sigma, q) ** 2).sum()))(
        queries) for m in (jax_gmm, jax_gmm.reference)]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-4 * np.abs(grads[1]).max())


@pytest.mark.parametrize("argnums", [(0,), (1,), (2,), (3,), (0, 3), (1, 2)])
def test_scattered_gradient_of_some_inputs_is_that_of_all(rng, argnums):
    """The backward skips the cotangents of undifferentiated inputs (queries, or
    points, values and scale): the rest are bitwise those of a call that
    differentiates everything."""
    points, values, sigma = inputs(rng, n=200, shape=(40, 50), dtype=np.float32)
    queries = rng.uniform(-2, 52, (300, 2)).astype(np.float32)
    args = (points, values, sigma, queries)
    loss = scalar_loss(lambda p, v, s, q: jax_gmm.interpolate_at(p, v, s, q, return_density=True),
                       rng)
    every = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(*args)
    some = jax.jit(jax.grad(loss, argnums=argnums))(*args)
    for k, grad in zip(argnums, some):
        assert np.abs(every[k]).max() > 0
        np.testing.assert_array_equal(grad, every[k])


@pytest.mark.parametrize("output", ["out", "density"])
def test_scattered_gradient_of_one_output_matches_reference(rng, output):
    points, values, sigma = inputs(rng, n=60, shape=(20, 30))
    queries = rng.uniform(-2, 32, (100, 2))
    index = 0 if output == "out" else 1

    def loss(module):
        def f(p, v, s, q):
            result = module.interpolate_at(p, v, s, q, return_density=True)[index]
            weights = jax.random.normal(jax.random.key(3), result.shape, result.dtype)
            return (result * weights).sum()
        return jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))

    for a, b in zip(loss(jax_gmm)(points, values, sigma, queries),
                    loss(jax_gmm.reference)(points, values, sigma, queries)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * np.abs(b).max())


@pytest.mark.parametrize("output", ["out", "density"])
def test_grid_gradient_of_one_output_matches_reference(rng, output):
    """A loss on one output leaves the other's cotangent a symbolic zero, which
    the grid backward takes without materialising it."""
    points, values, sigma = inputs(rng, n=60, shape=(20, 30))
    index = 0 if output == "out" else 1

    def loss(module):
        def f(p, v, s):
            result = module.interpolate(p, v, s, (20, 30), return_density=True)[index]
            weights = jax.random.normal(jax.random.key(3), result.shape, result.dtype)
            return (result * weights).sum()
        return jax.jit(jax.grad(f, argnums=(0, 1, 2)))

    for a, b in zip(loss(jax_gmm)(points, values, sigma),
                    loss(jax_gmm.reference)(points, values, sigma)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * np.abs(b).max())
