"""jax_gmm.reconstruct: reproduces planes, beats the plain weighted mean on a
smooth surface and on an edge, is differentiable, batches, and checks its
arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_gmm

SIZE = (24, 28)


def scattered(rng, n=260):
    return rng.uniform(0, 1, (n, 2)) * np.array([SIZE[1], SIZE[0]])


def pixel_centres():
    rows, cols = np.mgrid[0:SIZE[0], 0:SIZE[1]] + 0.5
    return cols, rows


def test_reproduces_constants_and_nearly_planes(rng):
    points = scattered(rng)
    np.testing.assert_allclose(jax_gmm.reconstruct(points, np.full((260, 1), 0.7), SIZE), 0.7,
                               rtol=1e-12)
    plane = lambda x, y: 0.3 + 0.02 * x - 0.05 * y  # noqa: E731
    out = np.asarray(jax_gmm.reconstruct(points, plane(*points.T)[:, None], SIZE))[..., 0]
    # The ridge (RIDGE) shrinks slopes a little: measured RMS 0.0064 over a
    # range of 1.69, against 0.022 for the plain mean.
    cols, rows = pixel_centres()
    assert np.sqrt(np.mean((out - plane(cols, rows)) ** 2)) < 0.01


@pytest.mark.parametrize("surface", ["smooth", "edge"])
def test_more_accurate_than_the_plain_mean(rng, surface):
    points = scattered(rng)
    truth = {"smooth": lambda x, y: np.sin(x / 4) * np.cos(y / 5),
             "edge": lambda x, y: (y - 0.6 * x > 2.0).astype(float)}[surface]
    samples = truth(*points.T)[:, None]
    cols, rows = pixel_centres()
    error = lambda image: np.sqrt(np.mean((image[..., 0] - truth(cols, rows)) ** 2))  # noqa: E731
    plain = error(np.asarray(jax_gmm.interpolate(points, samples, "auto", SIZE, truncate=4.0)))
    sharper = error(np.asarray(jax_gmm.reconstruct(points, samples, SIZE)))
    # RMS error measured: smooth 0.026 against 0.065, edge 0.145 against 0.165
    assert sharper < {"smooth": 0.5, "edge": 0.95}[surface] * plain


def test_gradient_in_samples_against_a_central_difference(rng):
    points = scattered(rng, 60)
    samples = jnp.asarray(rng.uniform(0, 1, (60, 1)))
    weights = jnp.asarray(rng.normal(size=SIZE + (1,)))
    # One pass of one correction: the same building blocks, less to compile.
    loss = jax.jit(lambda p, s: (jax_gmm.reconstruct(p, s, SIZE, passes=1, iters=1)
                                 * weights).sum())
    direction = jnp.asarray(rng.normal(size=samples.shape))
    d_points, d_samples = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(points), samples)
    step = 1e-6
    central = (loss(points, samples + step * direction)
               - loss(points, samples - step * direction)) / (2 * step)
    np.testing.assert_allclose((d_samples * direction).sum(), central, rtol=1e-6)
    assert np.isfinite(d_points).all() and np.abs(d_points).max() > 0


def test_vmap_and_jit_match_a_loop(rng):
    points = scattered(rng, 120)
    batch = rng.uniform(0, 1, (2, 120, 3)).astype(np.float32)
    run = lambda s: jax_gmm.reconstruct(points.astype(np.float32), s, SIZE)  # noqa: E731
    looped = np.stack([run(s) for s in batch])
    assert looped.dtype == np.float32 and np.isfinite(looped).all()
    np.testing.assert_allclose(jax.jit(jax.vmap(run))(batch), looped, rtol=1e-5, atol=1e-6)


def test_no_points_and_uncovered_pixels_give_zero():
    np.testing.assert_array_equal(jax_gmm.reconstruct(np.zeros((0, 2)), np.zeros((0, 2)), SIZE),
                                  0.0)
    points = np.array([[2.0, 2.0], [3.0, 2.5], [2.5, 3.5]])
    out = jax_gmm.reconstruct(points, np.ones((3, 1)), SIZE)
    assert np.isfinite(out).all() and out[-1, -1, 0] == 0 and out[2, 2, 0] > 0


def test_scanlines_and_collinear_samples_have_finite_gradients():
    # Every 6th row: each pixel's samples are collinear, their moment matrix singular.
    rows, cols = np.meshgrid(np.arange(0, SIZE[0], 6) + 0.5, np.arange(SIZE[1]) + 0.5)
    points = np.stack([cols.ravel(), rows.ravel()], -1)
    samples = np.sin(points[:, :1] / 3)
    grad = jax.grad(lambda s: jax_gmm.reconstruct(points, s, SIZE).sum())(samples)
    assert np.isfinite(grad).all() and np.abs(grad).max() > 0


def test_independent_of_the_samples_units_and_nan_stays_local(rng):
    points = scattered(rng)
    samples = np.sin(points[:, :1] / 4) * np.cos(points[:, 1:] / 5)
    out = np.asarray(jax_gmm.reconstruct(points, samples, SIZE))
    for scale in (1e-9, 1e12):
        np.testing.assert_allclose(jax_gmm.reconstruct(points, samples * scale, SIZE) / scale,
                                   out, rtol=1e-9, atol=1e-12)
    samples[np.argmin(np.abs(points - [4, 4]).sum(-1))] = np.nan  # near a corner
    spoilt = np.isnan(np.asarray(jax_gmm.reconstruct(points, samples, SIZE))[..., 0])
    assert spoilt[:6, :6].any() and not spoilt[12:, 14:].any()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_position_is_inert_with_zero_gradients(rng, bad):
    # As in interpolate: the point adds nothing and gets zero gradients, and
    # no other point's gradient turns NaN (its moments were once 0 * NaN).
    points = scattered(rng)
    points[0, 0] = bad
    samples = np.sin(points[:, 1:] / 4)
    loss = lambda p, s: jnp.sum(jax_gmm.reconstruct(p, s, SIZE) ** 2)  # noqa: E731
    assert np.isfinite(np.asarray(jax_gmm.reconstruct(points, samples, SIZE))).all()
    d_points, d_samples = (np.asarray(g) for g in jax.grad(loss, argnums=(0, 1))(points, samples))
    assert (d_points[0] == 0).all() and (d_samples[0] == 0).all()
    assert np.isfinite(d_points).all() and np.isfinite(d_samples).all()
    assert np.abs(d_points[1:]).max() > 0 and np.abs(d_samples[1:]).max() > 0


@pytest.mark.parametrize("far", ["one_point", "all_spread"])
def test_points_far_outside_the_image_have_finite_gradients(rng, far):
    """float32: a point at x = 1e20 (or points spread over 1e15 pixels) once
    overflowed the fit's squared positions and its width squared, and every
    gradient became NaN while the output looked normal."""
    points = scattered(rng).astype(np.float32)
    samples = np.sin(points[:, 1:] / 4).astype(np.float32)
    if far == "one_point":
        points[0] = [1e20, 4.0]
    else:
        points = (rng.random(points.shape) * 1e15).astype(np.float32)
    loss = lambda p, s: jnp.sum(jax_gmm.reconstruct(p, s, SIZE) ** 2)  # noqa: E731
    assert np.isfinite(np.asarray(jax_gmm.reconstruct(points, samples, SIZE))).all()
    grads = jax.grad(loss, argnums=(0, 1))(points, samples)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)
    if far == "one_point":
        assert np.abs(np.asarray(grads[1][1:])).max() > 0


@pytest.mark.parametrize("shape", [(1, 14), (12, 1), (1, 1), (0, 5)])
def test_thin_and_empty_images(rng, shape):
    points = rng.uniform(0, 1, (40, 2)) * [max(shape[1], 1), max(shape[0], 1)]
    out, density = jax_gmm.reconstruct(points, np.ones((40, 2)), shape, return_density=True)
    assert out.shape == (*shape, 2) and density.shape == shape
    np.testing.assert_allclose(out, 1.0, rtol=1e-12)


@pytest.mark.parametrize("args,kwargs,match", [
    ((np.zeros((3, 3)), np.zeros((3, 1)), SIZE), {}, "points must have shape"),
    ((np.zeros((3, 2)), np.zeros((4, 1)), SIZE), {}, "samples must have shape"),
    ((np.zeros((3, 2)), np.zeros((3, 1), int), SIZE), {}, "samples must have a floating"),
    ((np.zeros((3, 2)), np.zeros((3, 1)), (4,)), {}, "shape must be"),
    ((np.zeros((3, 2)), np.zeros((3, 1)), SIZE), {"passes": 0}, "passes must be at least 1"),
    ((np.zeros((3, 2)), np.zeros((3, 1)), SIZE), {"iters": -1}, "iters must be at least 0"),
])
def test_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        jax_gmm.reconstruct(*args, **kwargs)
