"""Property-based tests (hypothesis): random shapes, positions (inside, on the
border, on half-pixel lattices, far outside), sigma over every decade, truncate,
dtypes, and NaN and inf in every argument. The native kernels and the reference
are each held to the float64 brute force, forward and gradients, and must make
exactly the same cutoff decisions (the same queries reached).

Profiles (tests/conftest.py): "ci" by default; HYPOTHESIS_PROFILE=long for the
long run. --hypothesis-show-statistics reports the examples run.
"""

from functools import partial

import jax
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import jax_gmm
from brute_force import INV_MAX, NORM_CLAMPS, gmm, gmm_vjp, pairs, pixel_centres

IMPLS = {"native": jax_gmm, "reference": jax_gmm.reference}
# Sizes are drawn from few values, so that most examples reuse a compilation.
COUNTS = [0, 1, 2, 5, 9]
CHANNELS = [1, 3]
SIDES = [0, 1, 4, 7]
# Beyond 13 (float32) or 37 (float64), exp(-truncate^2 / 2) underflows, and
# whether a subnormal weight counts would depend on the hardware's flushing.
TRUNCATES = {np.float32: [0.5, 1.0, 2.0, 3.0, 4.5, 13.0], np.float64: [0.5, 3.0, 7.0, 37.0]}
NON_FINITE = [np.nan, np.inf, -np.inf]


def numbers(dtype, lo, hi):
    """Floats in [lo, hi] in dtype, without subnormals: XLA (and so the
    reference) reads those as 0, which the brute force does not model."""
    dtype = np.dtype(dtype).type
    tiny = np.finfo(dtype).tiny
    return st.floats(lo, hi).map(dtype).map(lambda x: dtype(0) if abs(x) < tiny else x)


def coordinates(dtype, extent):
    """Inside the image and on its border, on a half-pixel lattice, far outside
    (up to the dtype's largest numbers) or not finite."""
    top = np.log10(np.finfo(dtype).max) - 0.01
    far = st.tuples(st.floats(2, top), st.sampled_from([-1, 1])).map(lambda e: e[1] * 10 ** e[0])
    return st.one_of(
        numbers(dtype, -2, extent + 2),
        st.integers(-2, 2 * extent + 4).map(lambda k: k / 2),
        st.sampled_from([0.0, float(extent)]),
        far,
        st.sampled_from(NON_FINITE),
    ).map(dtype)


def sigmas(dtype):
    """Every decade the dtype holds, the bounds of its normal range, a
    subnormal, non-positive and non-finite values."""
    info = np.finfo(dtype)
    decades = st.floats(np.log10(info.tiny), np.log10(info.max) - 0.01).map(lambda e: 10.0 ** e)
    special = [info.tiny, info.tiny / 4, 0.0, -1.0, 0.5, 1.0, 1.5, *NON_FINITE]
    return st.one_of(decades, st.floats(0.2, 8.0), st.sampled_from(special)).map(dtype)


def entries(dtype):
    """Values and cotangents: ordinary numbers, sometimes NaN or inf."""
    return st.one_of(numbers(dtype, -100, 100), st.sampled_from(NON_FINITE).map(dtype))


def arrays(draw, shape, elements):
    return np.array([draw(elements) for _ in range(int(np.prod(shape)))],
                    dtype=object).reshape(shape)


@st.composite
def problems(draw, grid: bool):
    """(points, values, sigma, queries or (H, W), truncate); values non-finite
    in about a quarter of the examples."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n, c = draw(st.sampled_from(COUNTS)), draw(st.sampled_from(CHANNELS))
    shape = (draw(st.sampled_from(SIDES)), draw(st.sampled_from(SIDES)))
    extent = max(shape)
    points = arrays(draw, (n, 2), coordinates(dtype, extent)).astype(dtype)
    finite_values = draw(st.integers(0, 3)) > 0
    values = arrays(draw, (n, c), numbers(dtype, -100, 100) if finite_values
                    else entries(dtype)).astype(dtype)
    if draw(st.booleans()):
        sigma = dtype(draw(sigmas(dtype)))
    else:
        sigma = arrays(draw, (n,), sigmas(dtype)).astype(dtype)
    truncate = draw(st.sampled_from(TRUNCATES[dtype]))
    if grid:
        where = shape
    else:
        where = arrays(draw, (draw(st.sampled_from(COUNTS)), 2),
                       coordinates(dtype, extent)).astype(dtype)
    return points, values, sigma, where, truncate


def cotangents(draw, out_shape, density_shape, dtype):
    g = arrays(draw, out_shape, numbers(dtype, -2, 2)).astype(dtype)
    h = arrays(draw, density_shape, numbers(dtype, -2, 2)).astype(dtype)
    return g, h


@partial(jax.jit, static_argnames=("impl", "truncate", "shape"))
def _run(points, values, sigma, queries, d_out, d_density, *, impl, truncate, shape=None):
    """(out, density) and the VJP of (d_out, d_density), under jit so that
    sigma is traced (a static sigma <= 0 raises)."""
    module = IMPLS[impl]
    if shape is None:
        f = lambda p, v, s, q: module.interpolate_at(p, v, s, q, truncate=truncate,  # noqa: E731
                                                     return_density=True)
        primal, vjp = jax.vjp(f, points, values, sigma, queries)
    else:
        f = lambda p, v, s: module.interpolate(p, v, s, shape, truncate=truncate,  # noqa: E731
                                               return_density=True)
        primal, vjp = jax.vjp(f, points, values, sigma)
    return primal, vjp((d_out, d_density))


def unambiguous(points, values, sigma, queries, truncate):
    """False where rounding alone may decide a result: a weight, or a weight
    times a value, at the underflow threshold (the native kernels round w * c
    to the dtype, the reference scales w first), a factor P^T e of a
    weighed pair below 4 * tiny (both form it before u multiplies it, and
    XLA's threads flush it to 0 where it is subnormal: with sigma 1e19 in
    float32, d_queries came out 0 where the brute force has 4.8e-38), or
    sigma at the edge of a clamp (where the sigma gradient drops a term).
    Cutoffs are never ambiguous: the brute force takes them in the kernel
    dtype, as the kernels do."""
    dtype = np.dtype(points.dtype)
    tiny = np.finfo(dtype).tiny
    _, gx, gy, _, w_exact, _ = pairs(points, sigma, queries, truncate, dtype)
    factors = np.abs(np.stack([gx, gy]))
    if ((factors > 0) & (factors < 4 * tiny)).any():
        return False
    with np.errstate(all="ignore"):  # w * |c| itself may underflow float64: divide instead
        below = 4 * tiny / np.abs(values.astype(np.float64))
        small_products = (w_exact[:, :, None] > 0) & (w_exact[:, :, None] < below[None])
    if ((w_exact > tiny / 4) & (w_exact < 4 * tiny)).any() or small_products.any():
        return False
    norm_min, norm_max = NORM_CLAMPS[dtype]
    with np.errstate(all="ignore"):
        norm = 1 / (2 * np.pi * np.asarray(sigma, np.float64) ** 2)
        near = [np.abs(norm / bound - 1) < 1e-3 for bound in (norm_min, norm_max)]
        near.append(np.abs(1 / np.asarray(sigma, np.float64) / INV_MAX[dtype] - 1) < 1e-3)
    return not np.any(near)


def cotangents_unambiguous(points, values, sigma, queries, truncate, d_out, d_density):
    """False where a cotangent times a weight's share w / Z (w, for the
    density's), a value, or both, is below the normal range for a weighed
    pair: the kernels and the reference form those products in different
    orders, and XLA's threads flush what is subnormal (a d_out of 1.2e-38
    cost the reference a d_points of 4.7e-38)."""
    dtype = np.dtype(points.dtype)
    tiny = np.finfo(dtype).tiny
    w = pairs(points, sigma, queries, truncate, dtype)[0]  # (M, N)
    z = w.sum(-1, keepdims=True)
    with np.errstate(all="ignore"):
        ratio = (w / np.where(z > 0, z, 1))[:, :, None]
        g = np.abs(np.asarray(d_out, np.float64)).reshape(len(queries), 1, values.shape[1])
        h = np.abs(np.asarray(d_density, np.float64)).reshape(len(queries), 1, 1)
        c = np.abs(np.asarray(values, np.float64))[None]
        products = (g * ratio, g * c, g * ratio * c, h * w[:, :, None])
    weighed = (w > 0)[:, :, None]
    return not any(((p > 0) & (p < 4 * tiny) & weighed).any() for p in products)


def rtol(dtype, truncate):
    """Relative error of a weight: exp(-m2 / 2) magnifies m2's few roundings by m2."""
    return np.finfo(dtype).eps * (16 + 4 * truncate**2)


def assert_close(name, got, want, bound, tol, floor):
    """Same non-finite entries; finite ones within tol * bound + floor."""
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    bad = ~np.isfinite(want)
    np.testing.assert_array_equal(~np.isfinite(got), bad, err_msg=f"{name}: non-finite entries")
    allowed = tol * np.broadcast_to(bound, want.shape)[~bad] + floor
    error = np.abs(got[~bad] - want[~bad])
    assert (error <= allowed).all(), f"{name}: got {got[~bad]}, want {want[~bad]}, allowed {allowed}"


def check(impl, points, values, sigma, queries, truncate, d_out, d_density, shape=None):
    dtype = points.dtype
    result, grads = _run(points, values, sigma, queries, d_out, d_density, impl=impl,
                         truncate=truncate, shape=shape)
    out = np.asarray(result[0]).reshape(len(queries), values.shape[1])
    density = np.asarray(result[1]).reshape(len(queries))
    want_out, want_density = gmm(points, values, sigma, queries, truncate, dtype)
    tol, floor = rtol(dtype, truncate), 4 * np.finfo(dtype).tiny
    # The exact cutoff decision: the same queries reached, by the same points.
    np.testing.assert_array_equal(density > 0, want_density > 0, err_msg=f"{impl}: reached")
    assert_close(f"{impl} density", density, want_density, want_density, tol, floor)
    mean_abs = gmm(points, np.abs(values), sigma, queries, truncate, dtype)[0]
    assert_close(f"{impl} out", out, want_out, mean_abs, tol, floor)
    want, bound = gmm_vjp(points, values, sigma, queries, d_out.reshape(want_out.shape),
                          d_density.reshape(want_density.shape), truncate, dtype)
    want, bound = list(want), list(bound)
    if np.ndim(sigma) == 0:  # a scalar sigma's gradient is the sum over the points
        want[2], bound[2] = want[2].sum(), bound[2].sum()
    names = ["d_points", "d_values", "d_sigma", "d_queries"]
    for name, got, w, b in zip(names, grads, want, bound):
        assert_close(f"{impl} {name}", got, w, b, 4 * tol, floor)


@given(data=st.data(), problem=problems(grid=False))
@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_queries_match_brute_force(impl, data, problem):
    points, values, sigma, queries, truncate = problem
    assume(unambiguous(points, values, sigma, queries, truncate))
    d_out, d_density = cotangents(data.draw, (len(queries), values.shape[1]), (len(queries),),
                                  points.dtype)
    assume(cotangents_unambiguous(points, values, sigma, queries, truncate, d_out, d_density))
    check(impl, points, values, sigma, queries, truncate, d_out, d_density)


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_gradients_where_out_cancels(impl):
    """Found by the long profile. At query 2, out is -0.031 while the values
    it averages reach 70, so out's rounding error is hundreds of times |out|:
    the bound on the gradients must scale it by sum w |c| / Z (gmm_vjp), or
    the native d_points of point 3 fails it by a tenth."""
    points = np.array([[0, -100], [0, np.nan], [0, 7], [0, 0], [0, -100], [-100, 0], [5.5, 0],
                       [0, 0], [3.875, 4.5]])
    values = np.array([[0], [0], [-34], [0.03125], [0], [0], [-44], [3], [70]], np.float64)
    queries = np.zeros((9, 2))
    queries[2, 0] = 0.5
    d_out = np.zeros((9, 1))
    d_out[2] = 1
    check(impl, points, values, np.float64(6), queries, 3.0, d_out, np.zeros(9))


@given(data=st.data(), problem=problems(grid=True))
@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_grid_matches_brute_force(impl, data, problem):
    points, values, sigma, shape, truncate = problem
    queries = pixel_centres(*shape).astype(points.dtype)
    assume(unambiguous(points, values, sigma, queries, truncate))
    d_out, d_density = cotangents(data.draw, (*shape, values.shape[1]), shape, points.dtype)
    assume(cotangents_unambiguous(points, values, sigma, queries, truncate, d_out, d_density))
    check(impl, points, values, sigma, queries, truncate, d_out, d_density, shape=shape)
