"""Bad input gets a ValueError naming the argument; degenerate input gets the
documented result, never a crash or NaN; results are bitwise reproducible."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_gmm
from brute_force import gmm, gmm_grid, gmm_vjp

P = np.array([[2.0, 3.0], [5.5, 1.0], [7.0, 6.0]])
V = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])


@pytest.mark.parametrize("call,match", [
    (lambda: jax_gmm.interpolate(P[:, :1], V, 1.0, (8, 8)), r"points must have shape \(K, 2\)"),
    (lambda: jax_gmm.interpolate(P[None], V, 1.0, (8, 8)), "points must have shape"),
    (lambda: jax_gmm.interpolate(P, V[:2], 1.0, (8, 8)), r"values must have shape \(N, C\) = \(3"),
    (lambda: jax_gmm.interpolate(P, V[:, 0], 1.0, (8, 8)), "values must have shape"),
    (lambda: jax_gmm.interpolate(P, V, np.ones(2), (8, 8)), r"sigma must be a scalar, \(N,\) widths, \(N, 2\) per-axis widths or \(N, 2, 2\) covariances with N = 3, got shape \(2,\)"),
    (lambda: jax_gmm.interpolate(P.astype(int), V, 1.0, (8, 8)), "points must have a floating-point dtype"),
    (lambda: jax_gmm.interpolate(P, V.astype(np.int32), 1.0, (8, 8)), "values must have a floating-point dtype"),
    (lambda: jax_gmm.interpolate(P, V, np.ones(3, int), (8, 8)), "sigma must have a floating-point dtype"),
    (lambda: jax_gmm.interpolate(P, V, 0.0, (8, 8)), "sigma must be positive"),
    (lambda: jax_gmm.interpolate(P, V, np.array([1.0, -1.0, 1.0]), (8, 8)), "sigma must be positive"),
    (lambda: jax_gmm.interpolate(P, V, 1.0, (8, 8), truncate=0), "truncate must be positive"),
    (lambda: jax_gmm.interpolate(P, V, 1.0, (8, 8), truncate=np.inf), "truncate must be positive"),
    (lambda: jax_gmm.interpolate(P, V, 1.0, (-1, 8)), "shape must have non-negative sizes"),
    (lambda: jax_gmm.interpolate(P, V, 1.0, (8,)), r"shape must be a static \(H, W\)"),
    (lambda: jax_gmm.interpolate(P, V, 1.0, (8.5, 8)), r"shape must be a static \(H, W\)"),
    (lambda: jax_gmm.interpolate_at(P, V, 1.0, np.ones((4, 3))), r"queries must have shape \(\.\.\., 2\)"),
    (lambda: jax_gmm.interpolate_at(P, V, 1.0, None), r"queries must be an \(\.\.\., 2\) array"),
    (lambda: jax_gmm.interpolate_at(P, V, 1.0, np.ones((4, 2), int)), "queries must have a floating"),
    (lambda: jax_gmm.interpolate(P.astype(int).tolist(), V, 1.0, (8, 8)), "points must have a floating"),
    (lambda: jax_gmm.interpolate(P, V, "1", (8, 8)), 'sigma must be a number, an array or "auto"'),
    (lambda: jax_gmm.interpolate(P, V, jnp.array(-1.0), (8, 8)), "sigma must be positive"),
    (lambda: jax_gmm.interpolate(P, V, 1.0, (8, 8), truncate="3"), "truncate must be a static"),
    (lambda: jax_gmm.interpolate(P, V, 1.0, (70000, 70000)), r"H \* W must be at most 2\*\*32"),
    (lambda: jax_gmm.reference.interpolate(P, V[:2], 1.0, (8, 8)), "values must have shape"),
    # issue 9, defect 4
    (lambda: jax_gmm.interpolate(P, V, 1.0, (True, 5)), r"shape must be a static \(H, W\)"),
    (lambda: jax_gmm.interpolate(P, V, 1.0, (2, np.True_)), r"shape must be a static \(H, W\)"),
    (lambda: jax_gmm.interpolate([[1.0, 2.0], [3.0]], V[:2], 1.0, (8, 8)),
     "points must be an array or a rectangular nested list"),
    (lambda: jax_gmm.interpolate_at(P, V, 1.0, [[1.0, 2.0], [3.0]]),
     "queries must be an array or a rectangular nested list"),
    (lambda: jax_gmm.interpolate(P, V, 10**400, (8, 8)), "sigma must fit in a float64"),
    (lambda: jax_gmm.interpolate(P, V, 1.0, (8, 8), truncate=10**400), "truncate must be a static"),
    (lambda: jax_gmm.interpolate(P, V, 1.0, (2**32, 1)), r"shape's H must be at most 2\*\*32 - 1"),
    (lambda: jax_gmm.reference.interpolate(P, V, 1.0, (0, 2**32)), r"shape's W must be at most"),
    (lambda: jax_gmm.interpolate(P, V, 1.0, (8, 8), return_density="no"),
     "return_density must be True or False, got 'no'"),
    (lambda: jax_gmm.reference.interpolate_at(P, V, 1.0, P, return_density="no"),
     "return_density must be True or False, got 'no'"),
    (lambda: jax_gmm.reference.interpolate(P, V, "auto", (8, 8)),
     "sigma must be a number or an array here, got 'auto'"),
    (lambda: jax_gmm.upsample(np.ones((4, 4, 1)), 2, sigma="auto"),
     "sigma must be a number or an array here, got 'auto'"),
    (lambda: jax_gmm.interpolate(P, V, None, (8, 8)), "sigma must be a number or an array here"),
])

def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_python_int_sigma_traces_as_it_runs():
    # Under jit or vmap a Python int arrives as a weakly typed int array; an
    # explicitly integer array still raises (above).
    eager = jax_gmm.interpolate(P, V, 2, (8, 8))
    np.testing.assert_array_equal(jax.jit(lambda s: jax_gmm.interpolate(P, V, s, (8, 8)))(2),
                                  eager)
    np.testing.assert_array_equal(jax_gmm.interpolate(P, V, jnp.asarray(2), (8, 8)), eager)
    at = jax.jit(lambda s: jax_gmm.interpolate_at(P, V, s, P))(2)
    np.testing.assert_array_equal(at, jax_gmm.interpolate_at(P, V, 2.0, P))
    with pytest.raises(ValueError, match="sigma must have a floating-point dtype"):
        jax_gmm.interpolate(P, V, jnp.int32(2), (8, 8))


def test_nested_lists_are_accepted():
    out = jax_gmm.interpolate(P.tolist(), V.tolist(), 1.0, (8, 9))
    np.testing.assert_allclose(out, jax_gmm.interpolate(P, V, 1.0, (8, 9)))


def test_bad_shape_raises_inside_jit():
    with pytest.raises(ValueError, match="values must have shape"):
        jax.jit(lambda p, v: jax_gmm.interpolate(p, v, 1.0, (4, 4)))(P, V[:2])


@pytest.mark.parametrize("call", [
    lambda d: jax_gmm.interpolate(P, V, 1.0, (4, 4), return_density=d),
    lambda d: jax_gmm.interpolate_at(P, V, 1.0, P, return_density=d),
    lambda d: jax_gmm.reconstruct(P, V, (4, 4), return_density=d),
])
def test_a_traced_return_density_is_named(call):  # it decides what is returned
    with pytest.raises(ValueError, match="return_density must be a static bool"):
        jax.jit(call)(True)


def finite_everywhere(*arrays):
    return all(np.isfinite(np.asarray(a)).all() for a in arrays)


def value_and_grads(f, *args):
    """Output and gradients of sum(out) + sum(density) in every argument."""
    out, density = f(*args)
    grads = jax.grad(lambda *a: sum(x.sum() for x in f(*a)), argnums=tuple(range(len(args))))(
        *args)
    return out, density, grads


def grid(p, v, s, shape=(8, 9)):
    return jax_gmm.interpolate(p, v, s, shape, return_density=True)


def test_no_points():
    out, density, grads = value_and_grads(grid, np.zeros((0, 2)), np.zeros((0, 2)), 1.0)
    assert out.shape == (8, 9, 2)
    np.testing.assert_array_equal(out, 0)
    np.testing.assert_array_equal(density, 0)
    assert grads[0].shape == (0, 2) and grads[2] == 0


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0)])
def test_empty_image(shape):
    out, density, grads = value_and_grads(lambda p, v, s: grid(p, v, s, shape), P, V, 1.0)
    assert out.shape == (*shape, 2) and density.shape == shape
    for g in grads:
        np.testing.assert_array_equal(g, 0)


def test_no_queries():
    out = jax_gmm.interpolate_at(P, V, 1.0, np.zeros((0, 2)))
    assert out.shape == (0, 2)


@pytest.mark.parametrize("at_centres", [False, True])
def test_no_channels_under_vmap_with_shared_points(at_centres):
    """Values (B, N, 0) with shared points: the images are rendered together,
    and the density is still every image's own."""
    points = np.array([[2.0, 3.0], [5.5, 1.0], [7.0, 6.0], [1.0, 1.0]])
    shape = (8, 9)
    centres = np.stack(np.meshgrid(np.arange(9) + 0.5, np.arange(8) + 0.5), -1).reshape(-1, 2)

    def render(v):
        if at_centres:
            return jax_gmm.interpolate_at(points, v, 1.5, centres, return_density=True)
        return jax_gmm.interpolate(points, v, 1.5, shape, return_density=True)

    out, density = jax.jit(jax.vmap(render))(np.zeros((3, 4, 0)))
    assert out.shape == (3, *(centres.shape[:1] if at_centres else shape), 0)
    expected = gmm_grid(points, np.zeros((4, 1)), 1.5, shape)[1]
    for image in np.asarray(density):
        np.testing.assert_allclose(image.reshape(shape), expected, rtol=1e-5, atol=1e-7)


def test_points_far_outside():
    far = np.array([[-1e6, 3.0], [1e9, -1e9], [5.0, 1e30]])
    out, density, grads = value_and_grads(grid, far, V, 1.0)
    np.testing.assert_array_equal(out, 0)
    for g in grads:
        np.testing.assert_array_equal(g, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_sigma_is_the_plain_mean(dtype):
    """Cutoff far beyond the image: every point reaches every pixel, nearly equally."""
    out, density, grads = value_and_grads(grid, P.astype(dtype), V.astype(dtype),
                                          dtype(1e6))
    np.testing.assert_allclose(out, np.broadcast_to(V.mean(0), out.shape), rtol=1e-5)
    assert (np.asarray(density) > 0).all() and finite_everywhere(*grads)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sigma", [1e-3, 1e-20, 1e-35])
def test_tiny_sigma(dtype, sigma):
    """Only a point exactly at a pixel centre reaches it; its value comes out unchanged."""
    p = np.array([[2.5, 3.5], [5.2, 1.1]], dtype)
    v = np.array([[1.0, 2.0], [3.0, 4.0]], dtype)
    out, density, grads = value_and_grads(grid, p, v, dtype(sigma))
    assert finite_everywhere(out, density, *grads)
    np.testing.assert_allclose(out[3, 2], [1.0, 2.0], rtol=1e-6)
    assert (np.asarray(density) > 0).sum() == 1


def test_subnormal_sigma_is_finite():
    """XLA flushes subnormals to zero, so such a sigma acts as 0: the point drops out."""
    p = np.array([[2.5, 3.5]], np.float32)
    out, density, grads = value_and_grads(grid, p, np.ones((1, 2), np.float32),
                                          np.float32(1e-40))
    assert finite_everywhere(out, density, *grads)


@pytest.mark.parametrize("call", [
    lambda: jax_gmm.reconstruct(P, np.zeros((3, 0)), (8, 9)),
    lambda: jax_gmm.upsample(np.zeros((4, 3, 0)), 2),
    lambda: jax_gmm.fit_values(P, np.zeros((3, 0)), 1.0),
])
def test_no_channels_in_the_higher_level_functions(call):
    """C = 0 gives an empty last axis, as interpolate does (before, reconstruct
    failed on an empty max and upsample divided by 0)."""
    assert call().shape[-1] == 0


@pytest.mark.parametrize("option", ["truncate", "eps"])
@pytest.mark.parametrize("module", [jax_gmm, jax_gmm.reference])
def test_huge_static_options_warn_of_no_overflow(module, option):
    """truncate or eps beyond float32's range act as inf (every pair within
    the cutoff; out = 0), without NumPy's overflow warning from the cast."""
    args = (P.astype(np.float32), V.astype(np.float32), 1.0, (8, 9))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = module.interpolate(*args, **{option: 1e300})
    if option == "eps":
        np.testing.assert_array_equal(out, 0)
    else:
        np.testing.assert_allclose(out, module.interpolate(*args, truncate=1e30), rtol=1e-6)


@pytest.mark.parametrize("module", [jax_gmm, jax_gmm.reference])
def test_eps_that_rounds_to_zero_leaves_unreached_pixels_zero(module):
    """eps = 1e-50 is 0 in float32: where Z = 0 the smoothing's factor
    Z / (Z + eps) was 0 / 0, NaN, for pixels no point reaches."""
    args = (P.astype(np.float32), V.astype(np.float32), 0.5, (8, 9))
    out = module.interpolate(*args, eps=1e-50)
    _, reach = gmm_grid(P, V, 0.5, (8, 9))
    assert (reach == 0).any()
    np.testing.assert_array_equal(np.asarray(out)[reach == 0], 0)
    np.testing.assert_allclose(out, module.interpolate(*args), rtol=1e-6)
    grads = jax.grad(lambda p, v: jnp.sum(module.interpolate(p, v, 0.5, (8, 9), eps=1e-50)),
                     argnums=(0, 1))(*args[:2])
    assert finite_everywhere(*grads)


def test_huge_truncate_float32_does_not_overflow():
    out = jax_gmm.interpolate(P.astype(np.float32), V.astype(np.float32), 1.0, (8, 9),
                              truncate=100.0)
    assert finite_everywhere(out)


def test_non_finite_points_and_sigma_contribute_nothing():
    bad = np.array([[np.nan, 1.0], [np.inf, 2.0], [3.0, 4.0], [4.0, 4.0], [2.0, 2.0]])
    v = np.ones((5, 2))
    sigma = np.array([1.0, 1.0, np.nan, np.inf, 1.0])
    out, density, grads = value_and_grads(grid, bad, v, sigma)
    want, want_density = gmm_grid(bad[4:], v[4:], sigma[4:], (8, 9))
    np.testing.assert_allclose(out, want, rtol=1e-12)
    np.testing.assert_allclose(density, want_density, rtol=1e-12)
    assert finite_everywhere(*grads)
    for g in grads:
        np.testing.assert_array_equal(g[:4], 0)


def test_traced_non_positive_sigma_contributes_nothing():
    sigma = jnp.array([1.0, -1.0, 0.0])
    out, density = jax.jit(grid)(P, V, sigma)
    want, want_density = gmm_grid(P[:1], V[:1], 1.0, (8, 9))
    np.testing.assert_allclose(out, want, rtol=1e-12)
    np.testing.assert_allclose(density, want_density, rtol=1e-12)


def test_non_finite_queries_give_zero():
    q = np.array([[np.nan, 1.0], [2.0, np.inf], [2.0, 3.0]])
    f = lambda q: jax_gmm.interpolate_at(P, V, 1.0, q, return_density=True)  # noqa: E731
    out, density = f(q)
    np.testing.assert_array_equal(out[:2], 0)
    np.testing.assert_array_equal(density[:2], 0)
    np.testing.assert_allclose(out[2], V[0])
    g = jax.grad(lambda q: f(q)[0].sum() + f(q)[1].sum())(q)
    np.testing.assert_array_equal(g[:2], 0)
    assert finite_everywhere(g)


def test_unreached_pixels_have_zero_gradients():
    out, density, grads = value_and_grads(grid, P, V, 0.3)
    assert (np.asarray(density) == 0).sum() > 60 and finite_everywhere(out, *grads)
    g_out = jax.grad(lambda v: (grid(P, v, 0.3)[0] * 0 + 1).sum())(V)
    np.testing.assert_array_equal(g_out, 0)


@pytest.mark.parametrize("dtype", [np.float16, jnp.bfloat16])
def test_narrow_floats_compute_in_float32(dtype):
    out = jax_gmm.interpolate(P.astype(dtype), V.astype(dtype), 1.0, (8, 9))
    assert out.dtype == dtype
    np.testing.assert_allclose(np.asarray(out, np.float64), gmm_grid(P, V, 1.0, (8, 9))[0],
                               atol=2e-2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_deterministic(rng, dtype):
    points = rng.uniform(-3, 300, (20000, 2)).astype(dtype)
    values = rng.normal(size=(20000, 3)).astype(dtype)
    sigma = rng.uniform(0.5, 4, 20000).astype(dtype)
    queries = rng.uniform(0, 300, (5000, 2)).astype(dtype)

    def run():
        f = jax.jit(jax.value_and_grad(
            lambda p, v, s, q: (grid(p, v, s, (300, 280))[0] ** 2).sum()
            + (jax_gmm.interpolate_at(p, v, s, q) ** 2).sum(), argnums=(0, 1, 2, 3)))
        return jax.tree.leaves(f(points, values, sigma, queries))

    first, second = run(), run()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_queries_at_the_ends_of_float32():
    """Query spans that overflow float32 arithmetic: no crash, the reachable query still right."""
    q = np.array([[3e38, 3e38], [-3e38, -3e38], [0.2, 0.1]], np.float32)
    for _ in range(3):
        out = jax_gmm.interpolate_at(np.zeros((1, 2), np.float32), np.ones((1, 1), np.float32),
                                     1.0, q)
        np.testing.assert_array_equal(out, [[0.0], [0.0], [1.0]])


def test_queries_far_from_every_point_get_zero(rng):
    points = rng.uniform(0, 50, (200, 2))
    values = rng.normal(size=(200, 2))
    queries = np.concatenate([rng.uniform(0, 50, (100, 2)), [[1e7, 1e7], [-1e12, 3.0]]])
    out = jax_gmm.interpolate_at(points, values, 1.5, queries)
    expected, _ = gmm(points, values, 1.5, queries)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradients_where_z_is_tiny(dtype):
    """Far in a wide cutoff's tail Z is ~1e-37: g / Z overflows, but g . (c - out) / Z w does not."""
    p = np.zeros((1, 2), dtype)
    v = np.ones((1, 1), dtype)
    q = np.array([[12.9, 0.0]], dtype)
    grads = jax.grad(lambda p, v, s: 100 * jax_gmm.interpolate_at(p, v, s, q, truncate=13.0).sum(),
                     argnums=(0, 1, 2))(p, v, dtype(1.0))
    np.testing.assert_allclose(grads[0], 0, atol=1e-6)
    np.testing.assert_allclose(grads[1], [[100.0]], rtol=1e-6)
    np.testing.assert_allclose(grads[2], 0, atol=1e-6)


def test_wide_cutoff_image_gradients_are_finite(rng):
    points = rng.uniform(0, 64, (20, 2)).astype(np.float32)
    values = rng.uniform(0, 255, (20, 3)).astype(np.float32)
    target = rng.uniform(0, 255, (64, 64, 3)).astype(np.float32)
    loss = lambda p, v, s: ((jax_gmm.interpolate(p, v, s, (64, 64), truncate=20.0)  # noqa: E731
                             - target) ** 2).sum()
    assert finite_everywhere(*jax.grad(loss, argnums=(0, 1, 2))(points, values, np.float32(1.0)))


EXTREME = {  # (points, sigma, query): regimes where a naive formula overflows
    "wide sigma, far query": ([[0.0, 0.0]], 1e9, [[2.9e9, 0.0]]),
    "point at 1e30": ([[1e30, 0.0]], 1.0, [[1.0, 0.0]]),
    "tiny sigma": ([[0.0, 0.0]], 1e-20, [[0.0, 0.0]]),
    "sigma 1e15": ([[0.0, 0.0]], 1e15, [[3e15, 0.0]]),
    "sigma near float max": ([[0.0, 0.0]], 3e38, [[3e15, 0.0]]),
}


@pytest.mark.parametrize("case", sorted(EXTREME))
@pytest.mark.parametrize("impl", ["native", "reference"])
def test_extreme_inputs_give_finite_gradients(case, impl):
    module = jax_gmm if impl == "native" else jax_gmm.reference
    points, sigma, query = (np.asarray(a, np.float32) for a in EXTREME[case])
    values = np.ones((1, 1), np.float32)
    f = lambda p, v, s, q: sum(x.sum() for x in module.interpolate_at(  # noqa: E731
        p, v, s, q, return_density=True))
    assert finite_everywhere(f(points, values, sigma, query),
                             *jax.grad(f, argnums=(0, 1, 2, 3))(points, values, sigma, query))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_infinite_value_reaches_only_pixels_it_weighs(dtype):
    """inf times a zero weight is NaN: the kernels must not form it for pixels a
    point does not reach (outside its disc, or in the spare lanes of a row)."""
    values = V.astype(dtype).copy()
    values[0, 0] = np.inf
    out = np.asarray(jax_gmm.interpolate(P.astype(dtype), values, 1.0, (8, 40)))
    _, reach = gmm_grid(P[:1], V[:1], 1.0, (8, 40))
    reached = reach > 0
    assert np.isposinf(out[reached, 0]).all()
    assert finite_everywhere(out[reached, 1], out[~reached])
    want, _ = gmm_grid(P[1:], V[1:], 1.0, (8, 40))
    np.testing.assert_allclose(out[~reached], want[~reached], rtol=1e-5)


@pytest.mark.parametrize("scattered", [False, True])
def test_infinite_value_gives_the_references_infinite_position_gradient(scattered):
    """Point 1 shares the one pixel that an inf value (point 0) reaches. Its
    position gradient is +-inf, as in the reference, not NaN: for a round
    point the kernels used to form -0 (its P's off-diagonal) times an inf sum."""
    points = np.array([[5.5, 4.5], [7.0, 5.2]])
    values = np.array([[np.inf], [0.0]])
    sigma = np.array([0.2, 2.0])
    centres = np.array([[5.5, 4.5], [6.5, 4.5], [3.5, 2.5]])

    def position_grad(module):
        render = ((lambda p: module.interpolate_at(p, values, sigma, centres)) if scattered
                  else (lambda p: module.interpolate(p, values, sigma, (10, 12))))
        return np.asarray(jax.grad(lambda p: jnp.sum(render(p)))(points))

    got, want = position_grad(jax_gmm), position_grad(jax_gmm.reference)
    assert np.isinf(want[1]).all()
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_infinite_cotangent_reaches_only_points_that_weigh_its_pixel(dtype):
    """Pixel (row 3, column 2) is reached by point 0 alone, but lies in point
    1's bounding box: only point 0's gradients may be non-finite."""
    f = lambda p, v: jax_gmm.interpolate(p, v, 1.0, (8, 40))  # noqa: E731
    out, vjp = jax.vjp(f, P.astype(dtype), V.astype(dtype))
    cotangent = np.ones(out.shape, dtype)
    cotangent[3, 2] = np.inf
    d_points, d_values = vjp(cotangent)
    assert finite_everywhere(d_points[1:], d_values[1:])
    assert not finite_everywhere(d_values[0])


# Regressions of issue 9 (an adversarial run against a float64 brute force).
# Each runs on the native kernels and on the reference, which must agree.
IMPLS = {"native": jax_gmm, "reference": jax_gmm.reference}


def all_grads(module, points, values, sigma, queries, **kwargs):
    """(out, density) and the gradients of sum(out) + sum(density) in every argument."""
    f = lambda *a: module.interpolate_at(*a, return_density=True, **kwargs)  # noqa: E731
    return f(points, values, sigma, queries), jax.grad(
        lambda *a: sum(x.sum() for x in f(*a)), argnums=(0, 1, 2, 3))(points, values, sigma, queries)


def assert_matches_brute_force(result, grads, points, values, sigma, queries, rtol, **kwargs):
    out, density = result
    want_out, want_density = gmm(points, values, sigma, queries, **kwargs)
    np.testing.assert_allclose(out, want_out, rtol=rtol)
    np.testing.assert_allclose(density, want_density, rtol=rtol)
    want, scale = gmm_vjp(points, values, sigma, queries, np.ones(want_out.shape),
                          np.ones(want_density.shape), **kwargs)
    want = list(want)
    scale = list(scale)
    if np.ndim(sigma) == 0:  # a scalar sigma's gradient is the sum over the points
        want[2], scale[2] = want[2].sum(), scale[2].sum()
    # Results below the smallest normal number may flush to 0.
    floor = 2 * np.finfo(np.asarray(out).dtype).tiny
    for got, w, s in zip(grads, want, scale):
        np.testing.assert_allclose(got, w, rtol=0, atol=rtol * s.max(initial=0) + floor)


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_infinite_value_stays_out_of_queries_it_does_not_reach(impl):
    """Defect 1: the point with an inf value reaches neither query; the other
    point reaches only the first. 0 x inf must never be formed."""
    p = np.array([[-0.5, 0.5], [5.0, 1.5]], np.float32)
    v = np.array([[np.inf], [1.0]], np.float32)
    q = np.array([[2.5, 1.5], [2.3, 2.9]], np.float32)
    (out, density), grads = all_grads(IMPLS[impl], p, v, np.float32(1.0), q)
    np.testing.assert_array_equal(out, [[1.0], [0.0]])
    np.testing.assert_allclose(density, [np.exp(-3.125) / (2 * np.pi), 0.0], rtol=1e-6)
    d_points, d_values, d_sigma, d_queries = grads
    # out = c_1 wherever point 1 reaches, so only Z moves with it.
    np.testing.assert_allclose(d_points, [[0.0, 0.0], [-2.5 * density[0], 0.0]], rtol=1e-5)
    np.testing.assert_allclose(d_values, [[0.0], [1.0]])
    np.testing.assert_allclose(d_queries[1], 0)  # unreached
    np.testing.assert_allclose(d_sigma, (6.25 - 2) * density[0], rtol=1e-5)  # from Z alone
    np.testing.assert_allclose(d_queries[0], [2.5 * density[0], 0.0], rtol=1e-5)


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_infinite_value_reaches_every_query_it_weighs(impl):
    """...but with a positive weight it does propagate, and only there."""
    p = np.array([[-0.5, 0.5], [5.0, 1.5]])
    v = np.array([[np.inf], [1.0]])
    q = np.array([[0.0, 0.0], [2.5, 1.5], [4.0, 1.0]])
    out = IMPLS[impl].interpolate_at(p, v, 1.0, q)
    np.testing.assert_array_equal(out, [[np.inf], [1.0], [1.0]])


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("dtype,sigma", [(np.float32, 3e-11), (np.float32, 1e-18),
                                         (np.float64, 1e-80), (np.float64, 1e-149)])
def test_query_on_a_point_with_tiny_sigma(impl, dtype, sigma):
    """Defect 2: d w / d q = -w (q - mu) / sigma^2 is exactly 0 there, though
    w / sigma^2 overflows; the old formula made inf x 0 = NaN."""
    p = np.array([[1.25, 2.5], [1.25, 3.5]], dtype)  # the second one out of reach
    v = np.array([[3.0], [5.0]], dtype)
    (out, density), grads = all_grads(IMPLS[impl], p, v, dtype(sigma), p[:1])
    np.testing.assert_allclose(out, [[3.0]], rtol=1e-6)
    for g in grads[0], grads[3]:
        np.testing.assert_array_equal(g, 0)
    np.testing.assert_allclose(grads[1], [[1.0], [0.0]], rtol=1e-6)
    assert_matches_brute_force((out, density), grads, p, v, dtype(sigma), p[:1], rtol=1e-5)


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("sigma", [1e20, 1e30, 3e38])
def test_huge_float32_sigma_where_the_squared_distance_overflows(impl, sigma):
    """Defect 3: |q - mu|^2 = 9e38 overflows float32, but (q - mu) / sigma does
    not: the point reaches the query with the clamped normaliser 1e-30."""
    p = np.array([[-1.5e19, 2.0], [1.5e19, 0.0]], np.float32)
    v = np.array([[2.0], [4.0]], np.float32)
    q = np.array([[1.0, 1.0], [1.5e19, 0.5]], np.float32)
    result, grads = all_grads(IMPLS[impl], p, v, np.float32(sigma), q)
    np.testing.assert_allclose(result[0][0], [3.0], rtol=1e-6)  # equidistant
    assert (np.asarray(result[1]) > 0).all()
    assert_matches_brute_force(result, grads, p, v, np.float32(sigma), q, rtol=1e-5)


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_huge_float32_sigma_on_the_grid(impl):
    """Defect 3 on the grid, which dropped the point: it reaches every pixel."""
    p = np.array([[3e19, 0.0]], np.float32)
    out, density = IMPLS[impl].interpolate(p, np.full((1, 1), 2.0, np.float32), np.float32(1e20),
                                           (3, 4), return_density=True)
    np.testing.assert_array_equal(out, 2.0)
    np.testing.assert_allclose(density, 1e-30 * np.exp(-0.5 * 0.09), rtol=1e-5)


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("constant", [False, True])
def test_subnormal_sigma_under_jit_contributes_nothing(impl, constant):
    """Defect 5: sigma below the smallest normal number is invalid, whether XLA
    flushes it (a traced argument) or folds it as a constant (which does not)."""
    p = np.array([[2.5, 1.5], [0.5, 0.5]], np.float32)
    v = np.array([[7.0], [1.0]], np.float32)
    s = np.array([1e-40, 1.0], np.float32)
    if constant:
        f = jax.jit(lambda p: IMPLS[impl].interpolate(p, v, s, (3, 4), return_density=True))
        out, density = f(p)
    else:
        f = jax.jit(lambda p, s: IMPLS[impl].interpolate(p, v, s, (3, 4), return_density=True))
        out, density = f(p, s)
    want, want_density = gmm_grid(p[1:], v[1:], s[1:], (3, 4))
    np.testing.assert_allclose(out, want, rtol=1e-6)
    np.testing.assert_allclose(density, want_density, rtol=1e-6)


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_far_points_when_the_float32_cutoff_radius_squared_overflows(impl):
    """Defect 5: (truncate sigma)^2 = inf let far points pass inf <= inf."""
    p = np.array([[0.0, 0.0], [3e38, 0.0], [-3e38, 3e38]], np.float32)
    v = np.array([[1.0], [2.0], [3.0]], np.float32)
    q = np.array([[0.0, 5e18]], np.float32)
    result, grads = all_grads(IMPLS[impl], p, v, np.float32(2e19), q)
    np.testing.assert_array_equal(result[0], [[1.0]])
    assert_matches_brute_force(result, grads, p, v, np.float32(2e19), q, rtol=1e-5)



def test_huge_float64_sigma_keeps_its_gaussian_factor_on_the_grid():
    """sigma = 1e154 in float64: -1 / (2 sigma^2) is subnormal, which XLA's
    threads flush to 0; the CPU grid's stepped exponentials then gave every
    pixel a factor of 1 (found by the long hypothesis profile)."""
    points = np.array([[0.0, -1e151]])
    _, density = jax_gmm.interpolate(points, np.ones((1, 1)), 1e154, (1, 8), return_density=True)
    d_y = 0.5 + 1e151
    want = 1e-300 * np.exp(-0.5 * ((np.arange(8) + 0.5) ** 2 + d_y**2) / 1e308)  # norm clamped
    np.testing.assert_allclose(np.asarray(density)[0], want, rtol=1e-12)


@pytest.mark.parametrize("module", [jax_gmm, jax_gmm.reference])
def test_nan_value_reaches_gradients_through_a_capped_inverse_width(module):
    """sigma = 1e-19 (float32, 1 / sigma capped) and a NaN value at the query:
    the position gradients that the clamp zeroes are still NaN (0 * NaN), as
    everywhere else a NaN goes in (found by the long hypothesis profile)."""
    point = np.zeros((1, 2), np.float32)
    values = np.array([[np.nan]], np.float32)
    grads = jax.jit(jax.grad(lambda p, q: module.interpolate_at(p, values, np.float32(1e-19), q)
                             .sum(), argnums=(0, 1)))(point, point)
    for g in grads:
        assert np.isnan(np.asarray(g)).all()
