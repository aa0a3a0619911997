"""jax_gmm.upsample: consistent with its input (box-downsampling the result
gives the input back), batchable, differentiable, and checked arguments."""

import jax
import numpy as np
import pytest
from jax.test_util import check_grads

import jax_gmm


def box_downsample(image, factor):
    h, w, c = image.shape
    return np.asarray(image).reshape(h // factor, factor, w // factor, factor, c).mean((1, 3))


def smooth_image(rng, height, width, channels=3):
    """A band-limited image: a few low-frequency cosines."""
    y, x = np.mgrid[:height, :width] / max(height, width)
    image = np.zeros((height, width, channels))
    for c in range(channels):
        for _ in range(3):
            fy, fx, phase = rng.uniform(0, 3, 3)
            image[..., c] += np.cos(2 * np.pi * (fy * y + fx * x) + phase)
    return image


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_downsampling_the_result_gives_the_input(rng, factor):
    low = smooth_image(rng, 12, 10)  # values of size about 3
    result = jax_gmm.upsample(low, factor, iters=100)
    assert result.shape == (12 * factor, 10 * factor, 3)
    np.testing.assert_allclose(box_downsample(result, factor), low, atol=1e-3)


def test_each_step_brings_it_closer(rng):
    low = rng.uniform(size=(9, 11, 2))
    errors = [np.abs(box_downsample(jax_gmm.upsample(low, 3, iters=k), 3) - low).max()
              for k in (0, 2, 8, 32)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


def test_a_constant_image_stays_constant():
    result = jax_gmm.upsample(np.full((6, 7, 1), 0.25), 4)
    np.testing.assert_allclose(result, 0.25, rtol=1e-12)


def test_vmap_matches_a_loop(rng):
    batch = rng.uniform(size=(3, 5, 6, 2))
    mapped = jax.vmap(lambda im: jax_gmm.upsample(im, 2, iters=4))(batch)
    for image, result in zip(batch, mapped):
        np.testing.assert_allclose(result, jax_gmm.upsample(image, 2, iters=4), rtol=1e-12)


def test_gradients_match_finite_differences(rng):
    low = rng.uniform(size=(4, 5, 1))
    f = jax.jit(lambda im, s: jax_gmm.upsample(im, 2, sigma=s, iters=3))
    check_grads(f, (low, 1.3), order=1, modes=["rev"], eps=1e-6)


def test_density_is_that_of_the_gaussians(rng):
    low = rng.uniform(size=(5, 6, 2))
    centres = np.stack(np.meshgrid(np.arange(6), np.arange(5)), -1).reshape(-1, 2) * 3 + 1.5
    image, density = jax_gmm.upsample(low, 3, sigma=0.4, iters=2, truncate=2.0,
                                      return_density=True)
    expected = jax_gmm.reference.interpolate(centres, np.ones((30, 1)), 0.4, (15, 18),
                                             truncate=2.0, return_density=True)[1]
    assert 0 < np.sum(expected == 0) < expected.size  # some pixels unreached, at 0
    np.testing.assert_allclose(density, expected, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(image, jax_gmm.upsample(low, 3, sigma=0.4, iters=2,
                                                          truncate=2.0))
    mapped = jax.vmap(lambda im: jax_gmm.upsample(im, 3, sigma=0.4, iters=2, truncate=2.0,
                                                  return_density=True))(low[None])
    np.testing.assert_allclose(mapped[1][0], density, rtol=1e-12)


def test_bfloat16_centres_are_exact():
    # Built in bfloat16, the centres j + 0.5 were rounded from column 128 on.
    image = np.full((1, 200, 1), 0.5)
    result, density = jax_gmm.upsample(image.astype(jax.numpy.bfloat16), 2, iters=2,
                                       return_density=True)
    assert result.dtype == density.dtype == jax.numpy.bfloat16
    exact = jax_gmm.upsample(image.astype(np.float32), 2, iters=2, return_density=True)
    np.testing.assert_allclose(np.asarray(density, np.float32), exact[1], rtol=8e-3)
    np.testing.assert_allclose(np.asarray(result, np.float32), exact[0], rtol=8e-3)


def test_sigma_as_a_python_int():  # it once reached interpolate, in the jit, as an integer array
    image = np.linspace(0, 1, 48).reshape(4, 4, 3)
    np.testing.assert_array_equal(jax_gmm.upsample(image, 2, sigma=2),
                                  jax_gmm.upsample(image, 2, sigma=2.0))


@pytest.mark.parametrize("kwargs,match", [
    (dict(image=np.ones((4, 4)), factor=2), r"image must have shape \(H, W, C\)"),
    (dict(image=np.ones((4, 4, 1), int), factor=2), "image must have a floating-point dtype"),
    (dict(image=np.ones((4, 4, 1)), factor=0), "factor must be at least 1"),
    (dict(image=np.ones((4, 4, 1)), factor=2.5), "factor must be a static integer"),
    (dict(image=np.ones((4, 4, 1)), factor=2, iters=-1), "iters must be at least 0"),
    (dict(image=np.ones((4, 4, 1)), factor=2, truncate=0), "truncate must be positive"),
    (dict(image=np.ones((4, 4, 1)), factor=2, return_density="no"),
     "return_density must be True or False"),
    # rendered inside a jit, where interpolate could not check it: once a blank image
    (dict(image=np.ones((4, 4, 1)), factor=2, sigma=0.0), "sigma must be positive"),
    (dict(image=np.ones((4, 4, 1)), factor=2, sigma=-np.ones(16)), "sigma must be positive"),
    (dict(image=np.ones((4, 4, 1)), factor=2, sigma=np.ones(5)), "N = 16, got shape"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jax_gmm.upsample(**kwargs)
