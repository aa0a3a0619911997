"""Anisotropic Gaussians: sigma as (N, 2) per-axis widths or (N, 2, 2)
covariances, against a float64 brute force, finite differences and the
reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import jax_gmm
from brute_force import covariance_gmm, pixel_centres
from jax_gmm import reference

SHAPE = (23, 31)
WIDE = 8.0  # the weight at the cutoff is negligible: finite differences do not see the step


def rotated(rng, n, lo=0.5, hi=4.0, minor=None):
    """Covariances R diag(a^2, b^2) R^T with random angles, a in [lo, hi] and
    b in `minor` (default the same range)."""
    a, b = rng.uniform(lo, hi, n), rng.uniform(*(minor or (lo, hi)), n)
    angle = rng.uniform(0, np.pi, n)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    return rot @ (np.stack([a**2, b**2], -1)[:, :, None] * np.swapaxes(rot, 1, 2))


def diagonal(widths):
    """(N, 2, 2) covariances diag(sx^2, sy^2) from per-axis widths (N, 2)."""
    return widths[:, :, None] ** 2 * np.eye(2)


def scene(rng, n=50, c=3, margin=6.0):
    h, w = SHAPE
    points = rng.uniform([-margin, -margin], [w + margin, h + margin], (n, 2))
    return points, rng.normal(size=(n, c))


def covariance_kinds(rng, n):
    """Rotated, axis-aligned, and thin tilted (3-10 pixels by 0.2-0.5)."""
    return {"rotated": rotated(rng, n),
            "aligned": diagonal(rng.uniform(0.5, 4.0, (n, 2))),
            "thin": rotated(rng, n, 3.0, 10.0, minor=(0.2, 0.5))}


def assert_matches_brute_force(out, density, want_out, want_density, ambiguous, dtype):
    tol = 2e-5 if dtype == np.float32 else 1e-12
    ok = ~ambiguous
    assert ok.mean() > 0.9
    scale = max(1.0, np.abs(want_density).max())
    np.testing.assert_allclose(density[ok], want_density[ok], rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(out[ok], want_out[ok], rtol=tol, atol=tol * 10)
    assert ((density > 0) == (want_density > 0))[ok].all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["rotated", "aligned", "thin"])
def test_grid_matches_brute_force(rng, dtype, kind):
    points, values = scene(rng)
    cov = covariance_kinds(rng, len(points))[kind]
    args = [np.asarray(a, dtype) for a in (points, values, cov)]
    out, density = jax_gmm.interpolate(*args, SHAPE, return_density=True)
    want_out, want_density, ambiguous = covariance_gmm(*args, pixel_centres(*SHAPE), dtype=dtype)
    assert_matches_brute_force(np.asarray(out).reshape(-1, 3), np.asarray(density).ravel(),
                               want_out, want_density, ambiguous, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["rotated", "aligned", "thin"])
@pytest.mark.parametrize("n,m", [(50, 700), (2000, 150)])  # the second: sparse (kernels.h)
def test_queries_match_brute_force(rng, dtype, kind, n, m):
    points, values = scene(rng, n)
    cov = covariance_kinds(rng, len(points))[kind]
    queries = rng.uniform(-10, 40, (m, 2))
    args = [np.asarray(a, dtype) for a in (points, values, cov, queries)]
    out, density = jax_gmm.interpolate_at(*args, return_density=True)
    want = covariance_gmm(*args, dtype=dtype)
    assert_matches_brute_force(np.asarray(out), np.asarray(density), *want, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cutoff_boundary_decided_as_the_reference_does(rng, dtype):
    """Queries on (and an ulp around) each ellipse's cutoff: native and
    reference agree on which pairs exist, so density is zero at the same queries."""
    n = 12
    points = rng.uniform(5, 25, (n, 2))
    cov = rotated(rng, n, 0.5, 3.0)
    angle = rng.uniform(0, 2 * np.pi, (n, 16))
    circle = 3.0 * np.stack([np.cos(angle), np.sin(angle)], -1)  # e on the cutoff
    chol = np.linalg.cholesky(cov)
    queries = (points[:, None] + np.einsum("nij,nkj->nki", chol, circle)).reshape(-1, 2)
    queries = np.concatenate([queries, np.nextafter(queries, 0), np.nextafter(queries, 99)])
    args = [np.asarray(a, dtype) for a in (points, np.ones((n, 1)), cov, queries)]
    _, density = jax_gmm.interpolate_at(*args, return_density=True)
    _, want = reference.interpolate_at(*args, return_density=True)
    np.testing.assert_array_equal(np.asarray(density) > 0, np.asarray(want) > 0)
    assert 0 < (np.asarray(density) > 0).mean() < 1  # the boundary really is crossed


def test_round_per_axis_and_covariance_forms_agree(rng):
    points, values = scene(rng)
    sigma = rng.uniform(0.7, 3.0, len(points))
    round_ = jax_gmm.interpolate(points, values, sigma, SHAPE)
    axes = jax_gmm.interpolate(points, values, np.stack([sigma, sigma], -1), SHAPE)
    cov = jax_gmm.interpolate(points, values, diagonal(np.stack([sigma, sigma], -1)), SHAPE)
    np.testing.assert_array_equal(round_, axes)
    np.testing.assert_allclose(cov, round_, rtol=1e-5, atol=1e-5)
    widths = rng.uniform(0.5, 3.0, (len(points), 2))
    np.testing.assert_allclose(jax_gmm.interpolate(points, values, widths, SHAPE),
                               jax_gmm.interpolate(points, values, diagonal(widths), SHAPE),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["axes", "covariance"])
def test_gradients_match_finite_differences(rng, form):
    points, values = scene(rng, n=25, c=2)
    sigma = rng.uniform(0.7, 2.5, (25, 2)) if form == "axes" else rotated(rng, 25, 0.7, 2.5)
    queries = rng.uniform(-2, 33, (80, 2))
    weights = rng.normal(size=SHAPE + (2,)), rng.normal(size=SHAPE)

    def grid_loss(p, v, s):
        out, density = jax_gmm.interpolate(p, v, s, SHAPE, truncate=WIDE, return_density=True)
        return (out * weights[0]).sum() + 10 * (density * weights[1]).sum()

    def query_loss(p, v, s, q):
        out, density = jax_gmm.interpolate_at(p, v, s, q, truncate=WIDE, return_density=True)
        return out[:, 0].sum() - out[:, 1].sum() + 10 * density.sum()

    check_grads(grid_loss, (points, values, sigma), order=1, modes=["rev"])
    check_grads(query_loss, (points, values, sigma, queries), order=1, modes=["rev"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradients_match_the_reference(rng, dtype):
    shape = (15, 20)
    points = rng.uniform(-4, 24, (20, 2))
    values = rng.normal(size=(20, 2))
    cov = rotated(rng, 20, 0.3, 5.0)
    queries = rng.uniform(-5, 25, (150, 2))
    args = [jnp.asarray(a, dtype) for a in (points, values, cov, queries)]
    weights = jnp.asarray(rng.normal(size=shape + (2,)), dtype)

    def loss(module):
        def f(p, v, s, q):
            return ((module.interpolate(p, v, s, shape) * weights).sum()
                    + module.interpolate_at(p, v, s, q).sum())
        return jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))(*args)

    tol = 2e-4 if dtype == np.float32 else 1e-11
    for got, want in zip(loss(jax_gmm), loss(reference)):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def test_covariance_gradient_is_symmetric(rng):
    points, values = scene(rng, n=10, c=1)
    cov = rotated(rng, 10)
    grad = jax.grad(lambda s: jax_gmm.interpolate(points, values, s, SHAPE).sum())(cov)
    np.testing.assert_allclose(grad[:, 0, 1], grad[:, 1, 0], rtol=1e-12)
    assert np.abs(grad).max() > 0


@pytest.mark.parametrize("bad", [
    [[1.0, 2.0], [2.0, 1.0]],        # indefinite
    [[-1.0, 0.0], [0.0, 1.0]],       # negative variance
    [[1.0, 1.0], [1.0, 1.0]],        # singular
    [[1.0, 1 - 1e-15], [1 - 1e-15, 1.0]],  # singular to rounding in float64
    [[np.nan, 0.0], [0.0, 1.0]],
    [[np.inf, 0.0], [0.0, 1.0]],
])
def test_unusable_covariance_contributes_nothing_and_gets_zero_gradients(rng, bad):
    points, values = scene(rng, n=6, c=2, margin=0)
    cov = rotated(rng, 6)
    good = jax_gmm.interpolate(points[1:], values[1:], cov[1:], SHAPE)

    def render(p, v, s):
        return jax_gmm.interpolate(p, v, s, SHAPE)

    # Traced, the point is dropped; static, a finite bad matrix raises.
    cov = jnp.asarray(cov).at[0].set(jnp.asarray(bad))
    np.testing.assert_allclose(jax.jit(render)(points, values, cov), good, rtol=1e-12)
    grads = jax.jit(jax.grad(lambda *a: render(*a).sum(), argnums=(0, 1, 2)))(points, values, cov)
    for g in grads:
        assert np.isfinite(g).all() and (np.asarray(g[0]) == 0).all()
    assert np.abs(grads[2][1:]).max() > 0
    if np.isfinite(bad).all():
        with pytest.raises(ValueError, match=r"sigma must hold symmetric positive-definite.*sigma\[0\]"):
            render(points, values, np.asarray(cov))


def test_nearly_singular_float64_covariance_is_usable():
    """Singular is relative to the kernel dtype: 1 - rho^2 = 1e-9 is fine in float64."""
    cov = np.array([[[1.0, 1 - 5e-10], [1 - 5e-10, 1.0]]])
    out = jax_gmm.interpolate(np.array([[5.0, 5.0]]), np.ones((1, 1)), cov, (10, 10))
    assert np.asarray(out)[5, 5, 0] == 1.0
    with pytest.raises(ValueError, match="sigma must hold"):
        jax_gmm.interpolate(np.array([[5.0, 5.0]], np.float32), np.ones((1, 1), np.float32),
                            cov.astype(np.float32), (10, 10))


def test_eps_with_covariances(rng):
    points, values = scene(rng)
    cov = rotated(rng, len(points))
    out = jax_gmm.interpolate(points, values, cov, SHAPE, eps=1e-3)
    want, _, ambiguous = covariance_gmm(points, values, cov, pixel_centres(*SHAPE),
                                        dtype=np.float64, eps=1e-3)
    np.testing.assert_allclose(np.asarray(out).reshape(-1, 3)[~ambiguous], want[~ambiguous],
                               rtol=1e-10, atol=1e-12)


def test_vmap_over_covariances_with_shared_points(rng):
    points, values = scene(rng, n=20)
    covs = np.stack([rotated(rng, 20) for _ in range(3)])
    batched = jax.jit(jax.vmap(lambda s: jax_gmm.interpolate(points, values, s, SHAPE)))(covs)
    for k in range(3):
        np.testing.assert_allclose(batched[k], jax_gmm.interpolate(points, values, covs[k], SHAPE),
                                   rtol=1e-12, atol=1e-12)
    queries = rng.uniform(0, 30, (50, 2))
    grads = jax.vmap(jax.grad(lambda s: jax_gmm.interpolate_at(points, values, s, queries).sum()))(covs)
    assert grads.shape == covs.shape and np.isfinite(grads).all()


def test_bad_sigma_shapes_raise():
    p, v = np.zeros((3, 2)), np.ones((3, 1))
    for sigma in [np.ones((3, 3)), np.ones((3, 2, 3)), np.ones((2, 2, 2)), np.ones((3, 1))]:
        with pytest.raises(ValueError, match=r"sigma must be a scalar, \(N,\) widths"):
            jax_gmm.interpolate(p, v, sigma, (4, 4))


def test_thin_ellipse_tip_rows_are_not_skipped(rng):
    """The top and bottom rows of long, thin, tilted ellipses (1 - rho^2 down to
    1e-13, float64): the CPU kernel's per-row spans must keep every pixel the
    pair test accepts (their discriminant once cancelled to below zero there)."""
    n, t = 300, 4.0
    l11 = rng.uniform(1e3, 2e4, n)
    l21 = l11 * rng.uniform(0.5, 1.5, n) * rng.choice([-1, 1], n)
    l22 = rng.uniform(0.005, 0.05, n)
    chol = np.zeros((n, 2, 2))
    chol[:, 0, 0], chol[:, 1, 0], chol[:, 1, 1] = l11, l21, l22
    cov = chol @ np.swapaxes(chol, 1, 2)
    # Centres that put the top or bottom tip of each ellipse inside a 64 x 64 image.
    tip = rng.choice([-1, 1], n)[:, None] * t * cov[:, :, 1] / np.sqrt(cov[:, 1, 1])[:, None]
    points = rng.uniform(4, 60, (n, 2)) - tip
    args = (points, np.ones((n, 1)), cov, (64, 64))
    _, density = jax_gmm.interpolate(*args, truncate=t, return_density=True)
    _, want = reference.interpolate(*args, truncate=t, return_density=True)
    assert (np.asarray(want) > 0).sum() > 20
    np.testing.assert_array_equal(np.asarray(density) > 0, np.asarray(want) > 0)
    np.testing.assert_allclose(density, want, rtol=1e-9, atol=0)


@pytest.mark.parametrize("module", [jax_gmm, reference])
def test_normaliser_gradient_with_a_capped_inverse_width(module):
    """Per-axis widths (1e-20, 1e19) in float32: 1 / sigma_x is capped at 1e18,
    the normaliser 1 / (2 pi sigma_x sigma_y) is not, and at the centre
    d Z / d sigma_x = -Z / sigma_x."""
    point = np.array([[4.5, 4.5]], np.float32)
    sigma = np.array([[1e-20, 1e19]], np.float32)

    def density(s):
        return module.interpolate_at(point, np.ones((1, 1), np.float32), s, point,
                                     return_density=True)[1][0]

    z = float(jax.jit(density)(sigma))
    grad = np.asarray(jax.jit(jax.grad(density))(sigma))
    np.testing.assert_allclose(grad[0, 0], -z / 1e-20, rtol=1e-5)
    np.testing.assert_allclose(grad[0, 1], -z / 1e19, rtol=1e-5)


def _grid_and_queries(module):
    """Grid and query densities, query outputs, and the gradient of their sum
    in every input, under jit (compiled once per module and dtype)."""
    def loss(p, v, s, q):
        out, density = module.interpolate(p, v, s, (7, 9), return_density=True)
        out_q, density_q = module.interpolate_at(p, v, s, q, return_density=True)
        total = out.sum() + out_q.sum() + density.sum() + density_q.sum()
        return total, {"grid density": density, "query density": density_q, "query out": out_q}
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))


GRID_AND_QUERIES = {name: _grid_and_queries(module)
                    for name, module in [("native", jax_gmm), ("reference", reference)]}


@settings(deadline=None)
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]))
def test_native_and_reference_agree_on_random_covariances(data, dtype):
    """Widths over five decades, shears up to 50, positions inside and far
    outside: the native kernels decide exactly the pairs the reference does,
    agree on the values, and give finite gradients."""
    n, m = 5, 16
    floats = lambda lo, hi, size: np.asarray(  # noqa: E731
        data.draw(st.lists(st.floats(lo, hi), min_size=size, max_size=size)), np.float64)
    l11, l22 = 10 ** floats(-2, 3, n), 10 ** floats(-2, 3, n)
    l21 = floats(-50, 50, n) * l11
    chol = np.zeros((n, 2, 2))
    chol[:, 0, 0], chol[:, 1, 0], chol[:, 1, 1] = l11, l21, l22
    cov = chol @ np.swapaxes(chol, 1, 2)
    points = floats(-10, 20, 2 * n).reshape(n, 2)
    points[0] *= 10 ** data.draw(st.integers(0, 6))  # one point possibly far away
    queries = floats(-10, 20, 2 * m).reshape(m, 2)
    values = floats(-2, 2, n).reshape(n, 1)
    values[np.abs(values) < 1e-6] = 0  # the kernels round w c: tinier values may vanish (README)
    args = [np.asarray(a, dtype) for a in (points, values, cov, queries)]
    assume(np.isfinite(args[2]).all())
    (_, native), native_grads = GRID_AND_QUERIES["native"](*args)
    (_, want), _ = GRID_AND_QUERIES["reference"](*args)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for name, got in native.items():
        got, expected = np.asarray(got), np.asarray(want[name])
        if "density" in name:  # zero exactly where no pair exists
            np.testing.assert_array_equal(got > 0, expected > 0)
        np.testing.assert_allclose(got, expected, rtol=tol,
                                   atol=tol * np.abs(expected).max(initial=0))
    for g in native_grads:
        assert np.isfinite(np.asarray(g)).all()


@pytest.mark.parametrize("module", [jax_gmm, reference])
def test_float64_normaliser_gradient_near_the_caps(module):
    """float64: sigma = 5e-151 is above the cap on 1 / sigma (1e151) and the
    normaliser's clamp, so d Z / d sigma = -2 Z / sigma at the centre; with
    l11 = 5e-152 only p11 is capped, and d Z / d l11 = -Z / l11 still."""
    point = np.array([[4.5, 4.5]])

    def density(s):
        return module.interpolate_at(point, np.ones((1, 1)), s, point, return_density=True)[1][0]

    for sigma, want in [(np.float64(5e-151), lambda z: -2 * z / 5e-151),
                        (np.array([[5e-152, 1e3]]), lambda z: np.array([[-z / 5e-152, -z / 1e3]]))]:
        z = float(jax.jit(density)(sigma))
        np.testing.assert_allclose(jax.jit(jax.grad(density))(sigma), want(z), rtol=1e-12)
