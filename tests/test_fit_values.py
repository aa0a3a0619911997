"""jax_gmm.interpolating.fit_values: the mixture with the solved values
reproduces the samples and interpolates smooth data better than the plain
mean, recovers known values, has implicit gradients that match finite
differences, batches under vmap, and checks its arguments."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jax_gmm
from jax_gmm import interpolating
from jax_gmm.interpolating import fit_values

# The float64 tests solve scenes of one size with the same settings, so that
# they share compiled solves (each takes about 0.5 s to compile). tol is
# tight because finite differences see the solver's error / eps; these
# solves take 200-230 steps.
SETTINGS = dict(tol=1e-13, iters=400)


def fit(points, samples, sigma):
    return fit_values(points, samples, sigma, **SETTINGS)


def mixture(points, values, sigma):
    return jax_gmm.interpolate_at(points, values, sigma, points)


def smooth(q):
    """(M, 2) smooth functions of the positions q (M, 2)."""
    x, y = q[:, 0], q[:, 1]
    return np.stack([np.sin(x / 7) + np.cos(y / 5), np.sin(y / 6) * np.cos(x / 9)], -1)


def scene(rng):
    """400 points in a 40 x 40 square (grid cells 2 wide, each point up to 0.6
    from its cell's centre per axis), per-point widths 0.7-0.9 x the grid's
    spacing, so that A is not symmetric."""
    grid = np.stack(np.meshgrid(np.arange(20), np.arange(20)), -1).reshape(-1, 2) + 0.5
    points = (grid + rng.uniform(-0.3, 0.3, grid.shape)) * 2.0
    return points, rng.uniform(1.4, 1.8, len(points))


def test_reproduces_smooth_samples_and_interpolates_better_than_the_mean(rng):
    points, sigma = scene(rng)
    samples = smooth(points)
    values = fit(points, samples, sigma)
    residual = mixture(points, values, sigma) - samples
    assert np.linalg.norm(residual) <= SETTINGS["tol"] * np.linalg.norm(samples)
    queries = rng.uniform(4, 36, (400, 2))  # away from the edges, which both fit poorly
    rms = lambda v: np.sqrt(np.mean((jax_gmm.interpolate_at(points, v, sigma, queries)  # noqa: E731
                                     - smooth(queries)) ** 2))
    assert rms(values) < rms(samples) / 4  # measured 7-9x over 6 seeds


def test_recovers_known_values(rng):
    points, sigma = scene(rng)
    truth = rng.normal(size=(len(points), 2))
    values = fit(points, mixture(points, truth, sigma), sigma)
    np.testing.assert_allclose(values, truth, atol=1e-8 * np.abs(truth).max())


def covariances(rng, n):
    """(n, 2, 2) rotated ellipses with axes 1.4-1.8."""
    angle, widths = rng.uniform(0, np.pi, n), rng.uniform(1.4, 1.8, (n, 2))
    rotation = np.stack([np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)],
                        -1).reshape(n, 2, 2)
    return rotation @ (widths[..., None] ** 2 * np.eye(2)) @ rotation.transpose(0, 2, 1)


@pytest.mark.parametrize("form", ["widths", "covariances"])
def test_gradients_match_finite_differences(rng, form):
    points, sigma = scene(rng)
    if form == "covariances":
        sigma = covariances(rng, len(points))
    samples = rng.normal(size=(len(points), 2))
    check_grads(fit, (points, samples, sigma), order=1, modes=["rev"], eps=1e-5, atol=1e-6,
                rtol=1e-6)


def test_jit_of_vmap_matches_an_eager_loop(rng):
    """Samples batched with shared points (inner vmap), in a batch of scenes
    (outer vmap: points and sigma batched too)."""
    scenes = [scene(rng) for _ in range(2)]
    points, sigma = (np.stack(x) for x in zip(*scenes))
    samples = rng.normal(size=(2, 2, *points.shape[1:]))
    samples[0, 1] = 0  # done at once, while the others iterate
    per_scene = jax.vmap(fit, in_axes=(None, 0, None))
    mapped = jax.jit(jax.vmap(per_scene))(points, samples, sigma)
    loop = np.stack([np.stack([fit(p, s, sg) for s in batch])
                     for p, batch, sg in zip(points, samples, sigma)])
    np.testing.assert_allclose(mapped, loop, atol=1e-10 * np.abs(loop).max())
    assert np.all(mapped[0, 1] == 0)


def test_float32_converges(rng):
    points, sigma = (x.astype(np.float32) for x in scene(rng))
    samples = smooth(points).astype(np.float32)
    values = fit_values(points, samples, sigma)
    assert values.dtype == np.float32
    residual = mixture(points, values, sigma) - samples
    assert np.linalg.norm(residual) <= 1e-4 * np.linalg.norm(samples)


def test_zero_samples_give_zero_values_and_finite_gradients(rng):
    points, sigma = scene(rng)
    weights = rng.normal(size=(len(points), 2))
    samples = np.zeros_like(weights)
    loss = lambda p, s, sg: jnp.sum(weights * fit(p, s, sg))  # noqa: E731
    value, grads = jax.value_and_grad(loss, argnums=(0, 1, 2))(points, samples, sigma)
    assert value == 0 and np.all(fit(points, samples, sigma) == 0)
    assert all(np.isfinite(g).all() for g in grads)
    np.testing.assert_array_equal(grads[0], 0)  # the values, 0, do not depend on them
    np.testing.assert_array_equal(grads[2], 0)
    transposed = mixture(points, np.eye(len(points)), sigma).T  # d samples = A^-T weights
    np.testing.assert_allclose(transposed @ grads[1], weights, atol=1e-10)


def test_a_nan_sample_ends_the_solve_with_nan_values(rng):
    points, sigma = scene(rng)
    samples = smooth(points)
    samples[7, 1] = np.nan
    assert np.isnan(fit(points, samples, sigma)).all()


def test_docstring_example_runs():
    result = doctest.testmod(interpolating, extraglobs={"jax": jax, "jnp": jnp,
                                                        "jax_gmm": jax_gmm})
    assert result.attempted and not result.failed


GOOD = dict(points=np.zeros((3, 2)), samples=np.ones((3, 1)), sigma=1.0)


@pytest.mark.parametrize("change,match", [
    (dict(points=np.zeros((3, 3))), r"points must have shape \(K, 2\)"),
    (dict(points=np.zeros((3, 2), int)), "points must have a floating-point dtype"),
    (dict(samples=np.ones((4, 1))), r"samples must have shape \(N, C\) = \(3, C\)"),
    (dict(samples=np.ones(3)), r"samples must have shape \(N, C\)"),
    (dict(samples=np.ones((3, 1), int)), "samples must have a floating-point dtype"),
    (dict(samples=[[1.0], [2.0, 3.0], [4.0]]), "samples must be an array"),
    (dict(sigma=np.ones(4)), "sigma must be a scalar"),
    (dict(sigma=-1.0), "sigma"),
    (dict(truncate=0.0), "truncate must be positive"),
    (dict(iters=0), "iters must be at least 1"),
    (dict(iters=2.5), "iters must be a static integer"),
    (dict(tol=0.0), "tol must be positive and finite"),
    (dict(tol=np.inf), "tol must be positive and finite"),
    (dict(tol=np.nan), "tol must be positive and finite"),
    (dict(tol="1e-4"), "tol must be a static positive number"),
])
def test_bad_arguments_raise(change, match):
    with pytest.raises(ValueError, match=match):
        fit_values(**{**GOOD, **change})


def test_singular_operator_gives_finite_values():
    """Two points on top of each other with different samples: A is singular
    and GMRES breaks down; the values stay finite (no exact solution exists)."""
    values = fit_values(np.zeros((2, 2)), np.array([[0.0], [1.0]]), 1.0)
    assert np.isfinite(values).all()
    points = np.array([[1.0, 1.0], [4.0, 2.0], [2.0, 5.0], [6.0, 6.0], [3.0, 3.0]])
    sigma = jnp.array([1.5, 1.5, 1.5, 1.5, 0.0])  # traced: the last point is left out
    assert np.isfinite(jax.jit(fit_values)(points, np.ones((5, 1)), sigma)).all()


@pytest.mark.parametrize("defect", ["nan_position", "nan_sigma", "negative_sigma"])
def test_points_that_contribute_nothing_are_left_out(rng, defect):
    """A point the kernels skip gets the value 0 and zero gradients, and the
    others solve the system without it (before, its row asked the others to
    reproduce its sample, and the values reached 1e10)."""
    points, sigma = scene(rng)
    samples = smooth(points)
    bad = 37
    if defect == "nan_position":
        points[bad] = [np.nan, points[bad, 1]]
    else:
        sigma[bad] = np.nan if defect == "nan_sigma" else -1.0
    keep = np.arange(len(points)) != bad
    expected = fit(points[keep], samples[keep], sigma[keep])
    weights = rng.normal(size=samples.shape)
    loss = lambda p, s, sg: jnp.sum(weights * fit(p, s, sg))  # noqa: E731
    # jit: sigma is traced, so a negative width is not refused at trace time.
    values, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(points, samples, sigma)
    fitted = jax.jit(fit)(points, samples, sigma)
    np.testing.assert_array_equal(fitted[bad], 0)
    np.testing.assert_allclose(fitted[keep], expected, atol=1e-10 * np.abs(expected).max())
    expected_grads = jax.grad(lambda p, s, sg: jnp.sum(weights[keep] * fit(p, s, sg)),
                              argnums=(0, 1, 2))(points[keep], samples[keep], sigma[keep])
    for got, want in zip(grads, expected_grads):
        np.testing.assert_array_equal(got[bad], 0)
        np.testing.assert_allclose(got[keep], want, atol=1e-8 * np.abs(want).max())
