"""jax_gmm.fitting.fit_image: recovering an image made of known Gaussians, the
returned shapes, and the argument checks."""

import doctest
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_gmm
from jax_gmm import fitting
from jax_gmm.fitting import fit_image

HEIGHT, WIDTH = 40, 48
TRUNCATE = 4.0  # fit_image's default, to render its results with


def _psnr(reference, estimate) -> float:
    return float(-10 * np.log10(np.mean((np.asarray(reference, np.float64) - estimate) ** 2)))


def _render(points, values, sigma, scale: float = 1.0, truncate: float = TRUNCATE):
    """The Gaussians rendered at `scale` times the image's size."""
    shape = (round(HEIGHT * scale), round(WIDTH * scale))
    sigma = jnp.asarray(sigma) * (scale**2 if jnp.ndim(sigma) == 3 else scale)
    return np.asarray(jax_gmm.interpolate(jnp.asarray(points) * scale, values, sigma, shape,
                                          truncate=truncate))


@pytest.fixture(scope="module")
def truth():
    """Eight elongated Gaussians (widths 2 to 6 px, random angles), their
    colours and the (40, 48, 3) image they render."""
    rng = np.random.default_rng(1)
    points = rng.uniform((6, 6), (WIDTH - 6, HEIGHT - 6), (8, 2))
    angle = rng.uniform(0, np.pi, 8)
    widths = rng.uniform(2, 6, (8, 2))
    rotation = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1),
                         np.stack([np.sin(angle), np.cos(angle)], -1)], -2)
    sigma = rotation @ (widths[:, :, None] ** 2 * np.eye(2)) @ rotation.transpose(0, 2, 1)
    values = rng.uniform(0, 1, (8, 3))
    gaussians = tuple(jnp.asarray(a, jnp.float32) for a in (points, values, sigma))
    return gaussians, _render(*gaussians, truncate=6.0)


@pytest.fixture(scope="module")
def anisotropic_fit(truth):
    return fit_image(truth[1], 32, steps=300)


def test_fit_recovers_an_image_of_gaussians(truth, anisotropic_fit):
    gaussians, image = truth
    start = _psnr(image, _render(*fit_image(image, 32, steps=0)))
    fitted = _psnr(image, _render(*anisotropic_fit))
    assert start < 25 and fitted > 45  # measured: 18.8 and 49.3 dB
    # The shapes, not only the pixels: rendered twice as large, the fit still
    # matches the original Gaussians rendered twice as large.
    assert _psnr(_render(*gaussians, scale=2, truncate=6.0), _render(*anisotropic_fit, scale=2)) > 45


def test_anisotropic_fit_beats_isotropic(truth, anisotropic_fit):
    image = truth[1]
    isotropic = fit_image(image, 32, steps=300, anisotropic=False)
    isotropic_psnr, anisotropic_psnr = (_psnr(image, _render(*fit))
                                        for fit in (isotropic, anisotropic_fit))
    assert isotropic_psnr > 40 and anisotropic_psnr > isotropic_psnr + 2  # 44.3 and 49.3 dB


def test_shapes_dtypes_and_valid_covariances(truth, anisotropic_fit):
    points, values, sigma = anisotropic_fit
    assert points.shape == (32, 2) and values.shape == (32, 3) and sigma.shape == (32, 2, 2)
    assert all(a.dtype == jnp.float32 for a in anisotropic_fit)
    sigma = np.asarray(sigma, np.float64)
    np.testing.assert_array_equal(sigma, sigma.transpose(0, 2, 1))
    widths = np.sqrt(np.linalg.eigvalsh(sigma))
    assert np.all(widths >= 0.0999) and np.all(np.isfinite(np.asarray(points)))
    points, values, sigma = fit_image(truth[1], 32, steps=0, anisotropic=False)
    assert sigma.shape == (32,) and bool(jnp.all(sigma > 0))


def test_the_start_samples_the_image(truth):
    """Positions inside the image, colours the image's own, and more of them
    where the image changes than where it is flat."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    image[:, WIDTH // 2:] = [0.2, 0.4, 0.6]
    points, values, sigma = map(np.asarray, fit_image(image, 40, steps=0))
    assert np.all((points >= 0) & (points <= [WIDTH, HEIGHT]))
    right = points[:, 0] > WIDTH / 2 + 1  # bilinear look-ups within the coloured half
    assert right.any() and np.allclose(values[right], [0.2, 0.4, 0.6], atol=1e-6)
    assert np.all((values >= 0) & (values <= 0.6 + 1e-6))
    near_edge = np.abs(points[:, 0] - WIDTH / 2) < 2
    assert near_edge.mean() > 0.5  # 4 of 48 columns, 8 %, with uniform sampling
    # Denser where sampled more: the Gaussians at the edge start narrower.
    assert np.median(sigma[near_edge, 0, 0]) < np.median(sigma[~near_edge, 0, 0]) / 4


def test_grey_image_gives_one_channel(truth):
    grey = truth[1].mean(axis=-1)
    points, values, sigma = fit_image(grey, 32, steps=150)  # chunks of 100 and 50 steps
    assert values.shape == (32, 1)
    assert _psnr(grey[..., None], _render(points, values, sigma)) > 35


def test_key_decides_the_start():
    image = np.random.default_rng(0).uniform(size=(HEIGHT, WIDTH, 3)).astype(np.float32)
    first, again, other = (fit_image(image, 32, steps=0, key=jax.random.PRNGKey(seed))[0]
                           for seed in (3, 3, 4))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    np.testing.assert_array_equal(fit_image(image, 32, steps=0, key=3)[0], first)  # a seed


def test_callback_after_each_chunk_and_progress_bar(truth, anisotropic_fit, capsys):
    calls = []
    last = fit_image(truth[1], 32, steps=300, progress=True,
                     callback=lambda step, *gaussians: calls.append((step, gaussians)))
    assert [step for step, _ in calls] == [100, 200, 300]
    for got, expected in zip(calls[-1][1], last):
        np.testing.assert_array_equal(got, expected)
    if importlib.util.find_spec("tqdm") is not None:  # the bar is tqdm's, an optional package
        assert "300/300" in capsys.readouterr().err


def test_docstring_example_runs(anisotropic_fit):  # after the fit of the same size: no recompiling
    result = doctest.testmod(fitting, extraglobs={"jax": jax, "jnp": jnp, "jax_gmm": jax_gmm})
    assert result.attempted and not result.failed


@pytest.mark.parametrize("kwargs, message", [
    (dict(image=np.zeros(5, np.float32)), r"image must have shape \(H, W, C\) or \(H, W\)"),
    (dict(image=np.zeros((2, 3, 4, 1), np.float32)), "image must have shape"),
    (dict(image=np.zeros((0, 4, 3), np.float32)), "no empty axis"),
    (dict(image=np.zeros((4, 4, 3), np.uint8)), "image must have a floating-point dtype"),
    (dict(image=np.full((4, 4), np.nan, np.float32)), "image must be finite"),
    (dict(n=0), "n must be at least 1, got 0"),
    (dict(n=2.5), "n must be a static integer"),
    (dict(n=True), "n must be a static integer"),
    (dict(steps=-1), "steps must be at least 0, got -1"),
    (dict(steps=10.0), "steps must be a static integer"),
    (dict(truncate=0.0), "truncate must be positive and finite"),
    (dict(truncate=float("inf")), "truncate must be positive and finite"),
    # Before, NaN covariances (float32 squares overflowed) or a JAX TypeError.
    (dict(image=np.full((4, 4, 3), 1e20, np.float32)), "image values must be at most 1e.15"),
    (dict(image=np.full((4, 4), 1e50)), "image values must be at most"),
    (dict(key="a"), "key must be a jax.random key or an integer seed, got 'a'"),
    (dict(key=1.5), "key must be a jax.random key or an integer seed"),
    (dict(anisotropic="no"), "anisotropic must be True or False"),
    (dict(progress="no"), "progress must be True or False"),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, message):
    arguments = dict(image=np.zeros((4, 4, 3), np.float32), n=2, steps=0) | kwargs
    with pytest.raises(ValueError, match=message):
        fit_image(arguments.pop("image"), arguments.pop("n"), **arguments)


def test_traced_image_is_named():  # fit_image compiles its own steps
    with pytest.raises(ValueError, match="image must be a concrete array"):
        jax.jit(lambda image: fit_image(image, 2, steps=0))(np.zeros((4, 4, 3), np.float32))
