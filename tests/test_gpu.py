"""The CUDA kernels on a GPU: against the brute force, the pure-JAX reference
and the CPU kernel, under jit and vmap, bitwise reproducible, and on degenerate
input. Skipped where JAX sees no GPU.

Inputs are placed with jax.device_put, so each call runs on the platform of
its inputs. Tests named *small* are quick enough for compute-sanitizer
(experiments/gpu_check.sh runs them under memcheck, racecheck and initcheck).
"""

import itertools

import jax
import numpy as np
import pytest

import jax_gmm
from brute_force import gmm, gmm_grid, kth_nearest, neighbour_layouts
from jax_gmm import _ffi, _native


def first_gpu():
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:  # no GPU backend in this jaxlib, or no device
        return None


GPU = first_gpu()
CPU = jax.devices("cpu")[0]
pytestmark = pytest.mark.skipif(GPU is None, reason="no GPU visible to JAX")

DTYPES = [np.float32, np.float64]


def tolerance(dtype, grads=False):
    if dtype == np.float32:
        return 1e-4 if grads else 2e-5
    return 1e-9 if grads else 1e-12


def assert_close(actual, expected, dtype, grads=False, factor=1.0):
    tol = factor * tolerance(dtype, grads)
    expected = np.asarray(expected)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=tol,
                               atol=tol * max(np.abs(expected).max(initial=0), 1e-300))


def put(device, *arrays):
    return [jax.device_put(a, device) for a in arrays]


def grid_on(device, points, values, sigma, shape, truncate=3.0):
    out, density = jax_gmm.interpolate(*put(device, points, values, sigma), shape,
                                       truncate=truncate, return_density=True)
    assert out.devices() == {device} and density.devices() == {device}
    return np.asarray(out), np.asarray(density)


def at_on(device, points, values, sigma, queries, truncate=3.0):
    out, density = jax_gmm.interpolate_at(*put(device, points, values, sigma, queries),
                                          truncate=truncate, return_density=True)
    assert out.devices() == {device}
    return np.asarray(out), np.asarray(density)


def scene(rng, n, c, shape, sigma_scale, dtype, m=0):
    """Points in, on the border of and around an (H, W) image, per-point sigma,
    and m queries over the same area (some on top of points)."""
    h, w = shape
    points = rng.uniform([-4, -4], [w + 4, h + 4], (n, 2))
    points[: n // 8] = np.round(points[: n // 8])  # on pixel borders
    values = rng.normal(size=(n, c))
    sigma = sigma_scale * rng.uniform(0.7, 1.3, n)
    queries = rng.uniform([-6, -6], [w + 6, h + 6], (m, 2))
    queries[: min(m, n) // 10] = points[: min(m, n) // 10]
    return [np.asarray(a, dtype) for a in (points, values, sigma, queries)]


def weighted_loss(out_shape, density_shape, dtype):
    """sum(out * a) + 10 sum(density * b) for fixed random a, b: both cotangents."""
    rng = np.random.default_rng(7)
    a = rng.normal(size=out_shape).astype(dtype)
    b = rng.normal(size=density_shape).astype(dtype)
    return lambda out, density: (out * a).sum() + 10 * (density * b).sum()


def f64(*arrays):
    return [np.asarray(a, np.float64) for a in arrays]


def grid_grads(module, device, points, values, sigma, shape, truncate=3.0):
    loss = weighted_loss((*shape, values.shape[1]), shape, values.dtype)

    def f(p, v, s):
        return loss(*module.interpolate(p, v, s, shape, truncate=truncate, return_density=True))

    grads = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(*put(device, points, values, sigma))
    return [np.asarray(g) for g in grads]


def at_grads(module, device, points, values, sigma, queries, truncate=3.0):
    m = queries.shape[0]
    loss = weighted_loss((m, values.shape[1]), (m,), values.dtype)

    def f(p, v, s, q):
        return loss(*module.interpolate_at(p, v, s, q, truncate=truncate, return_density=True))

    grads = jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))(*put(device, points, values, sigma,
                                                             queries))
    return [np.asarray(g) for g in grads]


def check_grid(points, values, sigma, shape, grads=True):
    """GPU forward against the brute force; GPU gradients against autodiff of
    the pure-JAX reference in float64 on the CPU."""
    dtype = values.dtype
    out, density = grid_on(GPU, points, values, sigma, shape)
    assert out.dtype == dtype and out.shape == (*shape, values.shape[1])
    want, want_density = gmm_grid(points, values, sigma, shape)
    assert_close(out, want, dtype)
    assert_close(density, want_density, dtype)
    if grads:
        for got, want in zip(grid_grads(jax_gmm, GPU, points, values, sigma, shape),
                             grid_grads(jax_gmm.reference, CPU, *f64(points, values, sigma),
                                        shape)):
            assert got.dtype == dtype
            assert_close(got, want, dtype, grads=True)


def check_at(points, values, sigma, queries, grads=True):
    """check_grid at arbitrary queries; returns the GPU's (out, density)."""
    dtype = values.dtype
    out, density = at_on(GPU, points, values, sigma, queries)
    want, want_density = gmm(points, values, sigma, queries)
    assert_close(out, want, dtype)
    assert_close(density, want_density, dtype)
    if grads:
        for got, want in zip(at_grads(jax_gmm, GPU, points, values, sigma, queries),
                             at_grads(jax_gmm.reference, CPU,
                                      *f64(points, values, sigma, queries))):
            assert got.dtype == dtype
            assert_close(got, want, dtype, grads=True)
    return out, density


def test_cuda_module_is_built_and_used():
    info = jax_gmm.build_info()["cuda"]
    assert info is not None, "the _cuda module was not built or not loaded"
    assert len(info["targets"]) == 10 and "cuda" in _native.NATIVE_PLATFORMS
    p, v, s = put(GPU, np.zeros((3, 2)), np.ones((3, 1)), np.ones(3))
    text = jax.jit(lambda p, v, s: jax_gmm.interpolate(p, v, s, (4, 5))).lower(p, v, s).as_text()
    assert "jax_gmm_grid_forward_f64" in text


# sigma scales that make the forward pick each tile side (8, 16, 32); C = 6 runs
# the channels in two chunks, the second partial.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sigma_scale", [0.4, 3.0, 15.0])
@pytest.mark.parametrize("c", [1, 3, 6])
def test_small_grid_matches_brute_force(rng, dtype, sigma_scale, c):
    points, values, sigma, _ = scene(rng, 300, c, (37, 45), sigma_scale, dtype)
    check_grid(points, values, sigma, (37, 45), grads=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sigma_scale", [0.4, 3.0, 15.0])
@pytest.mark.parametrize("c", [1, 3, 6])
def test_small_queries_match_brute_force(rng, dtype, sigma_scale, c):
    points, values, sigma, queries = scene(rng, 250, c, (30, 50), sigma_scale, dtype, m=400)
    queries[-3:] = [[np.nan, 1.0], [2.0, np.inf], [-np.inf, np.nan]]
    out, density = check_at(points, values, sigma, queries, grads=False)
    np.testing.assert_array_equal(out[-3:], 0)
    np.testing.assert_array_equal(density[-3:], 0)


def test_small_crowded_tiles_and_cells(rng):
    """Thousands of points per tile and cell: several shared-memory chunks per tile."""
    points, values, sigma, queries = scene(rng, 4000, 2, (24, 24), 3.0, np.float64, m=300)
    check_grid(points, values, sigma, (24, 24), grads=False)
    check_at(points, values, sigma, queries, grads=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sigma_scale,c", [(0.4, 1), (3.0, 6), (15.0, 3)])
def test_small_gradients_match_reference(rng, dtype, sigma_scale, c):
    points, values, sigma, queries = scene(rng, 120, c, (21, 26), sigma_scale, dtype, m=150)
    check_grid(points, values, sigma, (21, 26))
    check_at(points, values, sigma, queries)


def check_gpu_matches_cpu(points, values, sigma, shape, queries, dtype):
    """GPU against the CPU kernel: grid and queries, forward and gradients. Both
    differ from the exact result by up to the tolerance."""
    pairs = [(grid_on(GPU, points, values, sigma, shape),
              grid_on(CPU, points, values, sigma, shape), False),
             (at_on(GPU, points, values, sigma, queries),
              at_on(CPU, points, values, sigma, queries), False),
             (grid_grads(jax_gmm, GPU, points, values, sigma, shape),
              grid_grads(jax_gmm, CPU, points, values, sigma, shape), True),
             (at_grads(jax_gmm, GPU, points, values, sigma, queries),
              at_grads(jax_gmm, CPU, points, values, sigma, queries), True)]
    for gpu, cpu, grads in pairs:
        for got, want in zip(gpu, cpu):
            assert_close(got, want, dtype, grads=grads, factor=2)


@pytest.mark.skipif("cpu" not in _native.NATIVE_PLATFORMS, reason="no native CPU module")
@pytest.mark.parametrize("dtype", DTYPES)
def test_small_gpu_matches_cpu_kernel(rng, dtype):
    shape = (33, 40)
    points, values, sigma, queries = scene(rng, 200, 3, shape, 2.0, dtype, m=300)
    check_gpu_matches_cpu(points, values, sigma, shape, queries, dtype)


B = 3


def batched(rng, n=40, c=2, m=30, shape=(14, 17)):
    h, w = shape
    points = rng.uniform(-1, w + 1, (B, n, 2))
    values = rng.normal(size=(B, n, c))
    sigma = rng.uniform(0.8, 2.0, (B, n))
    queries = rng.uniform(-1, w + 1, (B, m, 2))
    return points, values, sigma, queries


def unbatch(args, in_axes):
    return [a if ax == 0 else a[0] for a, ax in zip(args, in_axes)]


def loop(f, args, in_axes):
    results = [f(*[a[i] if ax == 0 else a for a, ax in zip(args, in_axes)]) for i in range(B)]
    return [np.stack([np.asarray(r[k]) for r in results]) for k in range(len(results[0]))]


@pytest.mark.parametrize("in_axes", list(itertools.product([0, None], repeat=3))[:-1])
def test_small_grid_vmap_equals_loop(rng, in_axes):
    """A batched call computes every example exactly as an unbatched one."""
    args = put(GPU, *unbatch(batched(rng)[:3], in_axes))

    def f(p, v, s):
        out, density = jax_gmm.interpolate(p, v, s, (14, 17), return_density=True)
        grads = jax.grad(lambda p, v, s: (jax_gmm.interpolate(p, v, s, (14, 17)) ** 2).sum(),
                         argnums=(0, 1, 2))(p, v, s)
        return out, density, *grads

    got = jax.jit(jax.vmap(f, in_axes=in_axes))(*args)
    want = loop(jax.jit(f), args, in_axes)
    for g, w in zip(got[:2], want[:2]):
        np.testing.assert_array_equal(np.asarray(g), w)
    for g, w in zip(got[2:], want[2:]):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("in_axes", list(itertools.product([0, None], repeat=4))[:-1])
def test_small_queries_vmap_equals_loop(rng, in_axes):
    args = put(GPU, *unbatch(batched(rng), in_axes))

    def f(p, v, s, q):
        out, density = jax_gmm.interpolate_at(p, v, s, q, return_density=True)
        grads = jax.grad(lambda *a: (jax_gmm.interpolate_at(*a) ** 2).sum(),
                         argnums=(0, 1, 2, 3))(p, v, s, q)
        return out, density, *grads

    got = jax.vmap(f, in_axes=in_axes)(*args)
    want = loop(f, args, in_axes)
    for g, w in zip(got[:2], want[:2]):
        np.testing.assert_array_equal(np.asarray(g), w)
    for g, w in zip(got[2:], want[2:]):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-13, atol=1e-15)


def test_small_nested_vmap_two_batch_axes(rng):
    """Two batch axes, one of them broadcast for the points."""
    points, values, sigma, _ = batched(rng)
    values2 = np.stack([values, 2 * values + 1])  # (2, B, n, c)
    p, v, s = put(GPU, points, values2, sigma[0])
    f = jax.vmap(jax.vmap(lambda p, v: jax_gmm.interpolate(p, v, s, (14, 17)), in_axes=(0, 0)),
                 in_axes=(None, 0))
    got = np.asarray(f(p, v))
    for k in range(2):
        for i in range(B):
            want = jax_gmm.interpolate(p[i], v[k, i], s, (14, 17))
            np.testing.assert_array_equal(got[k, i], np.asarray(want))


def test_small_jit_matches_eager(rng):
    points, values, sigma, queries = put(GPU, *scene(rng, 80, 2, (16, 16), 1.5, np.float64,
                                                     m=50))
    eager = jax_gmm.interpolate_at(points, values, sigma, queries)
    jitted = jax.jit(jax_gmm.interpolate_at)(points, values, sigma, queries)
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))


@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_deterministic(rng, dtype):
    """No floating-point atomics: same inputs, same bits, forward and backward."""
    points, values, sigma, queries = scene(rng, 20000, 3, (300, 280), 2.0, dtype, m=20000)
    args = put(GPU, points, values, sigma, queries)

    def loss(p, v, s, q):
        return ((jax_gmm.interpolate(p, v, s, (300, 280)) ** 2).sum()
                + (jax_gmm.interpolate_at(p, v, s, q) ** 2).sum())

    def run():
        f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))
        return [np.asarray(x) for x in jax.tree.leaves(f(*args))]

    for a, b in zip(run(), run()):
        np.testing.assert_array_equal(a, b)


def test_small_every_gpu_runs_on_its_own_stream(rng):
    """Each GPU's call works on the device of XLA's stream, not device 0 (a
    single-GPU machine runs this on its one GPU)."""
    points, values, sigma, queries = scene(rng, 80, 2, (17, 19), 1.5, np.float64, m=60)
    want = grid_on(GPU, points, values, sigma, (17, 19))
    want_at = at_on(GPU, points, values, sigma, queries)
    for device in jax.devices("gpu"):
        for got, expected in zip(grid_on(device, points, values, sigma, (17, 19)), want):
            np.testing.assert_array_equal(got, expected)
        for got, expected in zip(at_on(device, points, values, sigma, queries), want_at):
            np.testing.assert_array_equal(got, expected)
        grads = at_grads(jax_gmm, device, points, values, sigma, queries)
        assert all(np.isfinite(g).all() for g in grads)


# Degenerate input: the documented results, never a crash or NaN.


def value_and_grads(f, *args):
    args = put(GPU, *args)
    out, density = f(*args)
    grads = jax.grad(lambda *a: sum(x.sum() for x in f(*a)),
                     argnums=tuple(range(len(args))))(*args)
    return np.asarray(out), np.asarray(density), [np.asarray(g) for g in grads]


def grid_f(shape):
    return lambda p, v, s: jax_gmm.interpolate(p, v, s, shape, return_density=True)


def at_f(p, v, s, q):
    return jax_gmm.interpolate_at(p, v, s, q, return_density=True)


P = np.array([[2.0, 3.0], [5.5, 1.0], [7.0, 6.0]])
V = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
Q = np.array([[2.5, 3.5], [6.0, 2.0], [40.0, 40.0]])


def test_small_no_points():
    out, density, grads = value_and_grads(grid_f((8, 9)), np.zeros((0, 2)), np.zeros((0, 2)),
                                          np.zeros(0))
    assert out.shape == (8, 9, 2) and grads[0].shape == (0, 2)
    np.testing.assert_array_equal(out, 0)
    np.testing.assert_array_equal(density, 0)
    out, density, grads = value_and_grads(at_f, np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0),
                                          Q)
    np.testing.assert_array_equal(out, 0)
    np.testing.assert_array_equal(grads[3], 0)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0)])
def test_small_empty_image(shape):
    out, density, grads = value_and_grads(grid_f(shape), P, V, np.ones(3))
    assert out.shape == (*shape, 2) and density.shape == shape
    for g in grads:
        np.testing.assert_array_equal(g, 0)


def test_small_no_queries():
    out, density, grads = value_and_grads(at_f, P, V, np.ones(3), np.zeros((0, 2)))
    assert out.shape == (0, 2) and density.shape == (0,)
    for g in grads:
        np.testing.assert_array_equal(g, 0)


def test_small_no_channels(rng):
    points, _, sigma, queries = scene(rng, 50, 1, (10, 12), 1.5, np.float64, m=40)
    values = np.zeros((50, 0))
    out, density = grid_on(GPU, points, values, sigma, (10, 12))
    assert out.shape == (10, 12, 0)
    assert_close(density, gmm_grid(points, np.zeros((50, 1)), sigma, (10, 12))[1], np.float64)
    out, density = at_on(GPU, points, values, sigma, queries)
    assert out.shape == (40, 0)
    assert_close(density, gmm(points, np.zeros((50, 1)), sigma, queries)[1], np.float64)


def test_small_invalid_points_contribute_nothing():
    """Non-finite centres and sigma, and sigma <= 0: the kernel drops them. Under
    jit, as a concrete sigma <= 0 would be refused before any kernel runs."""
    bad = np.array([[np.nan, 1.0], [np.inf, 2.0], [3.0, 4.0], [4.0, 4.0], [2.0, 2.0], [5.0, 5.0],
                    [6.0, 1.0]])
    v = np.arange(14.0).reshape(7, 2)
    sigma = np.array([1.0, 1.0, np.nan, np.inf, 1.0, -1.0, 0.0])
    for f, args, want in [
        (grid_f((8, 9)), (bad, v, sigma), gmm_grid(bad[4:5], v[4:5], sigma[4:5], (8, 9))),
        (at_f, (bad, v, sigma, Q), gmm(bad[4:5], v[4:5], sigma[4:5], Q)),
    ]:
        out, density, grads = value_and_grads(jax.jit(f), *args)
        assert_close(out, want[0], np.float64)
        assert_close(density, want[1], np.float64)
        assert all(np.isfinite(g).all() for g in grads)
        for g in grads[:3]:
            np.testing.assert_array_equal(np.delete(g, 4, axis=0), 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_every_point_invalid_or_unreaching(dtype):
    """No valid point, or none within reach of any query: zeros, never a stale
    binning or a NaN (the GPU's cell grid spans only reachable queries)."""
    sigma = np.array([np.nan, -1.0, 0.0], dtype)
    for f, args in [(grid_f((8, 9)), ()), (at_f, (Q.astype(dtype),))]:
        out, density, grads = value_and_grads(jax.jit(f), P.astype(dtype), V.astype(dtype),
                                              sigma, *args)
        np.testing.assert_array_equal(out, 0)
        np.testing.assert_array_equal(density, 0)
        for g in grads:
            np.testing.assert_array_equal(g, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_far_outlier_query(dtype):
    """A query at +-1e30 (and, in float32, near the largest float) neither
    stretches the cells nor disturbs the other queries."""
    big = 3e38 if dtype == np.float32 else 1e300
    q = np.array([[2.5, 3.5], [6.0, 2.0], [1e30, -1e30], [big, -big], [-big, big]], dtype)
    out, density = at_on(GPU, P.astype(dtype), V.astype(dtype), np.ones(3, dtype), q)
    want, want_density = gmm(P, V, np.ones(3), q[:2].astype(np.float64))
    assert_close(out[:2], want, dtype)
    assert_close(density[:2], want_density, dtype)
    np.testing.assert_array_equal(out[2:], 0)
    np.testing.assert_array_equal(density[2:], 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_infinite_boxes_give_the_mean(dtype):
    """Every valid point's box radius is infinite (sigma = the largest float):
    each finite query gets the plain mean, as on the CPU."""
    sigma = np.full(3, np.finfo(dtype).max, dtype)
    q = np.array([[2.5, 3.5], [1e30, -1e30], [np.nan, 0.0]], dtype)
    for device in [GPU, CPU]:
        out, density = at_on(device, P.astype(dtype), V.astype(dtype), sigma, q)
        np.testing.assert_allclose(out[:2], np.broadcast_to(V.mean(0), (2, 2)), rtol=1e-5)
        assert (density[:2] > 0).all() and density[2] == 0 and (out[2] == 0).all()


def test_small_non_finite_queries_give_zero():
    q = np.array([[np.nan, 1.0], [2.0, np.inf], [2.0, 3.0], [np.inf, -np.inf]])
    out, density, grads = value_and_grads(at_f, P, V, np.ones(3), q)
    np.testing.assert_array_equal(out[[0, 1, 3]], 0)
    np.testing.assert_array_equal(density[[0, 1, 3]], 0)
    np.testing.assert_allclose(out[2], V[0])
    np.testing.assert_array_equal(grads[3][[0, 1, 3]], 0)
    assert np.isfinite(grads[3]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_huge_sigma_is_the_plain_mean(dtype):
    for f, args in [(grid_f((8, 9)), ()), (at_f, (Q.astype(dtype),))]:
        out, density, grads = value_and_grads(f, P.astype(dtype), V.astype(dtype),
                                              np.full(3, 1e6, dtype), *args)
        np.testing.assert_allclose(out, np.broadcast_to(V.mean(0), out.shape), rtol=1e-5)
        assert (density > 0).all() and all(np.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sigma", [1e-3, 1e-20, 1e-35])
def test_small_tiny_sigma(dtype, sigma):
    """Only a point exactly at a pixel centre (or query) reaches it."""
    p = np.array([[2.5, 3.5], [5.2, 1.1]], dtype)
    v = np.array([[1.0, 2.0], [3.0, 4.0]], dtype)
    s = np.full(2, sigma, dtype)
    out, density, grads = value_and_grads(grid_f((8, 9)), p, v, s)
    assert np.isfinite(out).all() and all(np.isfinite(g).all() for g in grads)
    np.testing.assert_allclose(out[3, 2], [1.0, 2.0], rtol=1e-6)
    assert (density > 0).sum() == 1
    out, density, grads = value_and_grads(at_f, p, v, s, p)
    np.testing.assert_allclose(out, v, rtol=1e-6)
    assert all(np.isfinite(g).all() for g in grads)


def test_small_points_far_outside():
    far = np.array([[-1e6, 3.0], [1e9, -1e9], [5.0, 1e30]])
    for f, args in [(grid_f((8, 9)), ()), (at_f, (Q,))]:
        out, density, grads = value_and_grads(f, far, V, np.ones(3), *args)
        np.testing.assert_array_equal(out, 0)
        for g in grads:
            np.testing.assert_array_equal(g, 0)


def test_small_mixed_widths(rng):
    """One point covering the whole image among narrow ones: it is in every tile."""
    points, values, sigma, queries = scene(rng, 200, 2, (40, 48), 0.8, np.float64, m=200)
    sigma[7] = 200.0
    check_grid(points, values, sigma, (40, 48))
    check_at(points, values, sigma, queries)


def test_small_queries_spread_far(rng):
    """Queries far wider than the cutoff: the cell grid hits its size cap."""
    points, values, sigma, _ = scene(rng, 100, 2, (20, 20), 1.0, np.float64)
    queries = np.concatenate([rng.uniform(-1e6, 1e6, (300, 2)), rng.uniform(0, 20, (100, 2))])
    check_at(points, values, sigma, queries)


def test_small_identical_queries(rng):
    """Every query in one spot: a grid of a single cell."""
    points, values, sigma, _ = scene(rng, 60, 2, (10, 10), 2.0, np.float64)
    check_at(points, values, sigma, np.full((50, 2), 4.25))


@pytest.mark.skipif("cpu" not in _native.NATIVE_PLATFORMS, reason="no native CPU module")
@pytest.mark.parametrize("dtype", DTYPES)
def test_small_covariances_match_cpu_kernel_and_brute_force(rng, dtype):
    """Rotated, thin tilted and axis-aligned Gaussians ((N, 2, 2) and (N, 2) sigma)."""
    from test_covariance import rotated

    from brute_force import covariance_gmm, pixel_centres
    shape = (33, 40)
    points, values, _, queries = scene(rng, 150, 3, shape, 2.0, dtype, m=300)
    cov = np.concatenate([rotated(rng, 50), rotated(rng, 50, 3.0, 10.0, minor=(0.2, 0.5)),
                          rotated(rng, 50, 0.5, 3.0) * np.eye(2)]).astype(dtype)
    for sigma in [cov, np.sqrt(cov[:, [0, 1], [0, 1]])]:
        check_gpu_matches_cpu(points, values, sigma, shape, queries, dtype)
    out, density = grid_on(GPU, points, values, cov, shape)
    want, want_density, ambiguous = covariance_gmm(points, values, cov, pixel_centres(*shape),
                                                   dtype=dtype)
    assert_close(out.reshape(-1, 3)[~ambiguous], want[~ambiguous], dtype, factor=5)
    assert_close(density.ravel()[~ambiguous], want_density[~ambiguous], dtype, factor=5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 4, 9])
def test_small_kth_nearest_matches_brute_force_and_cpu(rng, dtype, k):
    """The GPU's search (kd_tree.h's tree, built on the host and searched on
    the device) on the layouts of test_adaptive_sigma: ties, duplicates,
    non-finite and far points. The brute force's index, as the CPU's."""
    search = jax.jit(lambda p: _ffi.kth_nearest(p, k))
    for name, points in neighbour_layouts(rng).items():
        with np.errstate(over="ignore"):
            points = points.astype(dtype)
        expected = kth_nearest(points, k)
        for device in (GPU, CPU):
            got = search(jax.device_put(points, device))
            assert got.devices() == {device}
            np.testing.assert_array_equal(np.asarray(got), expected, err_msg=f"{name}, {device}")


def test_small_kth_nearest_batched_and_empty(rng):
    """vmap over point sets (one tree per set, scratch reused), an empty set
    and a set with no finite point; adaptive_sigma on the GPU equals the CPU's."""
    points = rng.uniform(0, 40, (3, 200, 2))
    points[1, ::5] = np.nan
    batched = np.asarray(jax.vmap(lambda p: _ffi.kth_nearest(p, 4))(jax.device_put(points, GPU)))
    for b in range(3):
        np.testing.assert_array_equal(batched[b], kth_nearest(points[b], 4))
    assert np.asarray(_ffi.kth_nearest(jax.device_put(np.zeros((0, 2)), GPU), 4)).shape == (0,)
    nothing = np.full((5, 2), np.nan)
    np.testing.assert_array_equal(_ffi.kth_nearest(jax.device_put(nothing, GPU), 2), np.arange(5))
    sigma = [np.asarray(jax_gmm.adaptive_sigma(jax.device_put(points[0], d))) for d in (GPU, CPU)]
    np.testing.assert_allclose(sigma[0], sigma[1], rtol=1e-12)
