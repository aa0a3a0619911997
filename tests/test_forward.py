"""Forward values of the native kernels (and the reference) against the brute force."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_gmm
from brute_force import gmm, gmm_grid, pixel_centres
from jax_gmm import _layout


def random_inputs(rng, n, c, shape, per_point_sigma, dtype=np.float32):
    """Points inside, on the border of and outside an image of `shape` = (H, W).

    The right sixth of the image is left for no point to reach.
    """
    h, w = shape
    points = rng.uniform([-6, -6], [0.5 * w, h + 6], (n, 2))
    points[: n // 8] = np.round(points[: n // 8])  # exactly on pixel borders
    points[n // 8: n // 4, 0] = 0.0  # on the image edge
    values = rng.normal(size=(n, c))
    sigma = rng.uniform(0.6, 3.0, n) if per_point_sigma else rng.uniform(0.6, 3.0)
    return [np.asarray(a, dtype) for a in (points, values, sigma)]


def assert_close(actual, expected, dtype):
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * np.abs(expected).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("per_point_sigma", [False, True])
@pytest.mark.parametrize("c,truncate", [(1, 3.0), (3, 2.0), (4, 5.0)])
@pytest.mark.parametrize("impl", ["native", "reference"])
def test_grid_matches_brute_force(rng, dtype, per_point_sigma, c, truncate, impl):
    shape = (37, 45)
    points, values, sigma = random_inputs(rng, 300, c, shape, per_point_sigma, dtype)
    module = jax_gmm if impl == "native" else jax_gmm.reference
    out, density = module.interpolate(points, values, sigma, shape, truncate=truncate,
                                      return_density=True)
    assert out.shape == (*shape, c) and out.dtype == dtype
    expected, expected_density = gmm_grid(points, values, sigma, shape, truncate)
    assert_close(out, expected, dtype)
    assert_close(density, expected_density, dtype)
    assert (expected_density == 0).any() and (expected_density > 0).any()  # both cases covered


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_many_channels_in_groups(rng, dtype):
    """C = 70: the grid forward takes the channels in groups (64, 6), each a
    pass over the tile's points. Each channel must come out as if rendered
    alone, bit for bit, and a non-finite value stays in its own channel."""
    shape = (37, 45)
    points, values, sigma = random_inputs(rng, 300, 70, shape, True, dtype)
    inside = np.flatnonzero((points > 5).all(-1) & (points[:, 1] < shape[0] - 5))
    values[inside[0], 40] = np.inf
    values[inside[1], 69] = np.nan
    out, density = jax_gmm.interpolate(points, values, sigma, shape, return_density=True)
    expected, expected_density = gmm_grid(points, values, sigma, shape, 3.0)
    finite = [c for c in range(70) if c not in (40, 69)]
    assert_close(out[..., finite], expected[..., finite], dtype)
    assert_close(density, expected_density, dtype)
    for c in (40, 69):  # inf and NaN exactly where their points weigh
        np.testing.assert_array_equal(np.isfinite(out[..., c]), np.isfinite(expected[..., c]))
    assert np.isinf(out[..., 40]).any() and np.isnan(out[..., 69]).any()
    for lo, hi in [(0, 3), (30, 34), (40, 41), (64, 70)]:
        alone = jax_gmm.interpolate(points, values[:, lo:hi], sigma, shape)
        np.testing.assert_array_equal(out[..., lo:hi], alone)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("per_point_sigma", [False, True])
@pytest.mark.parametrize("c,truncate", [(1, 3.0), (3, 4.0)])
@pytest.mark.parametrize("impl", ["native", "reference"])
def test_queries_match_brute_force(rng, dtype, per_point_sigma, c, truncate, impl):
    points, values, sigma = random_inputs(rng, 250, c, (30, 50), per_point_sigma, dtype)
    queries = rng.uniform(-10, 60, (400, 2)).astype(dtype)
    queries[:20] = points[:20]  # on top of a point
    module = jax_gmm if impl == "native" else jax_gmm.reference
    out, density = module.interpolate_at(points, values, sigma, queries, truncate=truncate,
                                         return_density=True)
    assert out.shape == (400, c) and density.shape == (400,)
    expected, expected_density = gmm(points, values, sigma, queries, truncate)
    assert_close(out, expected, dtype)
    assert_close(density, expected_density, dtype)


def test_queries_of_any_leading_shape(rng):
    """Queries (..., 2) give out (..., C) and density (...): the values of the
    same queries listed as (M, 2), bit for bit, under jit and vmap too, and
    their gradients; the reference takes the same shapes."""
    points, values, sigma = random_inputs(rng, 200, 3, (30, 40), True)
    grid = rng.uniform(-2, 42, (5, 7, 2)).astype(np.float32)
    flat, flat_density = jax_gmm.interpolate_at(points, values, sigma, grid.reshape(-1, 2),
                                                return_density=True)
    out, density = jax_gmm.interpolate_at(points, values, sigma, grid, return_density=True)
    assert out.shape == (5, 7, 3) and density.shape == (5, 7)
    assert np.asarray(flat_density).max() > 0
    np.testing.assert_array_equal(out, np.asarray(flat).reshape(5, 7, 3))
    np.testing.assert_array_equal(density, np.asarray(flat_density).reshape(5, 7))
    np.testing.assert_array_equal(jax_gmm.interpolate_at(points, values, sigma, grid[2, 3]),
                                  flat[2 * 7 + 3])  # one query (2,): out (C,)
    jitted = jax.jit(lambda q: jax_gmm.interpolate_at(points, values, sigma, q))
    np.testing.assert_array_equal(jitted(grid), out)
    batched = jax.vmap(lambda q: jax_gmm.interpolate_at(points, values, sigma, q))(
        np.stack([grid, grid[::-1]]))
    np.testing.assert_array_equal(batched[1], np.asarray(out)[::-1])
    assert jax_gmm.interpolate_at(points, values, sigma, np.zeros((0, 4, 2))).shape == (0, 4, 3)
    ref, ref_density = jax_gmm.reference.interpolate_at(points, values, sigma, grid,
                                                        return_density=True)
    assert ref.shape == (5, 7, 3) and ref_density.shape == (5, 7)
    assert_close(out, ref, np.float32)
    assert_close(density, ref_density, np.float32)
    weights = rng.normal(size=(5, 7, 3)).astype(np.float32)
    loss = lambda q: (jax_gmm.interpolate_at(points, values, sigma, q) * weights).sum()  # noqa: E731
    flat_grad = jax.grad(lambda q: loss(q.reshape(5, 7, 2)))(grid.reshape(-1, 2))
    np.testing.assert_array_equal(jax.grad(loss)(grid).reshape(-1, 2), flat_grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case,widest", [("large cells", 2), ("dense queries", 3),
                                         ("one wide point", 6)])
def test_queries_however_the_points_are_listed(rng, dtype, case, widest):
    """The CPU lists each cell's points through a fixed window of 2 x 2 cells
    when every point's box fits in one, else box by box (binning.cc): each
    way must give the brute force's values. `widest` (the widest box, in
    cells) pins which way each case takes; every case has more than one query
    per 8 points, so none takes the sparse path (test_sparse_queries_*)."""
    n, m, spread, sigma = {"large cells": (2000, 400, 1000.0, 4.0)}.get(case, (400, 3000, 30.0, 1.5))
    points = rng.uniform(0, spread, (n, 2)).astype(dtype)
    sigma = np.full(n, sigma, dtype)
    if case == "one wide point":
        sigma[7] = 20.0
    queries = rng.uniform(-3, spread + 3, (m, 2)).astype(dtype)
    queries[:5] = points[:5]  # reached, whatever the draw
    values = rng.normal(size=(n, 2)).astype(dtype)
    scale = np.stack([sigma, np.zeros_like(sigma), sigma], -1)
    boxes = np.asarray(_layout.cell_binning(points, scale, 3.0, queries, _layout.CELL_RADII_CPU)
                       ["point_boxes"]).reshape(-1, 4)
    assert (np.maximum(boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]) + 1).max() == widest
    out, density = jax_gmm.interpolate_at(points, values, sigma, queries, return_density=True)
    expected, expected_density = gmm(points, values, sigma, queries, 3.0)
    assert_close(out, expected, dtype)
    assert_close(density, expected_density, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("per_point_sigma", [False, True])
@pytest.mark.parametrize("c,truncate", [(1, 3.0), (3, 2.0)])
def test_sparse_queries_match_brute_force(rng, dtype, per_point_sigma, c, truncate):
    """With 8 or more points per query (kernels.h, sparse_queries) the points
    visit the queries' cells in chunks of points whose sums are added in
    chunk order (sparse_queries_forward.cc): 9,000 points make three chunks.
    The queries include a cluster (cell rows of more than one 64-query block
    of the vector loops), queries on points, outside every cutoff and not
    finite. Some points are unusable (NaN centre, NaN sigma) and, per point,
    one is wider than the image; with C = 3 a value is inf and one NaN, which
    must reach exactly the queries their points weigh."""
    n, m = 9000, 600
    assert n >= 8 * m and m * (c + 1) * 8 <= 256 << 10  # the sparse path, both dtypes
    points, values, sigma = random_inputs(rng, n, c, (300, 400), per_point_sigma, dtype)
    points[-1] = [np.nan, 5.0]
    if per_point_sigma:
        sigma[-2], sigma[-3] = np.nan, 500.0
    queries = rng.uniform([-10, -10], [210, 310], (m, 2))
    queries[:20] = points[:20]
    queries[20:220] = rng.uniform(100, 103, (200, 2))
    queries[220:224] = [[np.nan, 5.0], [np.inf, 3.0], [-np.inf, np.nan], [1e30, 1e30]]
    queries = queries.astype(dtype)
    if c == 3:
        near = np.argsort(np.abs(points - [100, 101]).sum(-1))
        values[near[0], 1], values[near[1], 2] = np.inf, np.nan
    out, density = jax_gmm.interpolate_at(points, values, sigma, queries, truncate=truncate,
                                          return_density=True)
    expected, expected_density = gmm(points, values, sigma, queries, truncate)
    finite = np.isfinite(expected)
    assert_close(np.asarray(out)[finite], expected[finite], dtype)
    np.testing.assert_array_equal(np.isfinite(out), finite)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    assert_close(density, expected_density, dtype)
    assert (expected_density[220:224] == 0).all() and (out[220:224] == 0).all()
    # Without the density (on the CPU, a kernel call that writes none): the same bits.
    np.testing.assert_array_equal(
        jax_gmm.interpolate_at(points, values, sigma, queries, truncate=truncate), out)
    assert (expected_density > 0).sum() > 400
    assert c == 1 or (np.isinf(out[:, 1]).sum() > 10 and np.isnan(out[:, 2]).sum() > 10)


def test_sparse_queries_under_vmap(rng):
    """A vmap over values with shared points and queries renders each image
    as alone, bit for bit."""
    points, values, sigma = random_inputs(rng, 5000, 3, (100, 100), True)
    values = rng.normal(size=(4, 5000, 3)).astype(np.float32)
    queries = rng.uniform(0, 100, (300, 2)).astype(np.float32)
    out = jax.vmap(lambda v: jax_gmm.interpolate_at(points, v, sigma, queries))(values)
    for b in range(4):
        np.testing.assert_array_equal(out[b], jax_gmm.interpolate_at(points, values[b], sigma,
                                                                    queries))
    expected, _ = gmm(points, values[2], sigma, queries, 3.0)
    assert_close(out[2], expected, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("per_point_sigma", [False, True])
def test_sparse_queries_skip_far_points(rng, dtype, per_point_sigma):
    """Few queries among many points: the sparse forward drops the points
    whose centres lie far from every query, through a grid around the
    queries (layout.h, centre_grid) of which about a sixth of the cells is
    marked here. Queries alone, in a cluster, on points and just inside the
    cutoff of the widest point must keep every point whose box holds them."""
    n = 20000
    points = rng.uniform(-10, 410, (n, 2))
    sigma = rng.uniform(0.5, 2.0, n) if per_point_sigma else np.full(n, 1.5)
    sigma[3] = 3.0
    queries = np.concatenate([rng.uniform(0, 400, (60, 2)), rng.uniform(200, 204, (16, 2)),
                              points[:3], points[3:4] + [9.0 * (1 - 1e-5), 0.0]])
    values = rng.normal(size=(n, 2))
    points, values, sigma, queries = (np.asarray(a, dtype)
                                      for a in (points, values, sigma, queries))
    out, density = jax_gmm.interpolate_at(points, values, sigma, queries, return_density=True)
    expected, expected_density = gmm(points, values, sigma, queries, 3.0)
    assert_close(out, expected, dtype)
    assert_close(density, expected_density, dtype)
    assert expected_density[-1] > 0 and (expected_density > 0).mean() > 0.9
    # With 2,400 more queries spread over the points nearly every cell is
    # marked and the grid is dropped (kernels.h, kCentreMarkedMax): every
    # point is walked, and each query's sums, taken in point order, keep
    # their bits.
    crowd = np.concatenate([queries, rng.uniform(0, 400, (2400, 2)).astype(dtype)])
    np.testing.assert_array_equal(
        jax_gmm.interpolate_at(points, values, sigma, crowd)[: len(queries)], out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [1.5, (1.6, 0.7)], ids=["round", "axes"])
def test_sparse_queries_at_the_edge_of_reach(rng, dtype, width):
    """With one width for all, the sparse path bounds the points' reach by
    their centres and the box of the centre farthest out (cuda/cpu/
    point_records.cc, shared_reach). Queries just inside the cutoff of the
    outermost points, beyond every other centre, must still be reached; a
    NaN centre must not count."""
    n = 4000
    points = rng.uniform(300, 700, (n, 2))
    points[5] = np.nan
    widths = np.broadcast_to(width, (2,))
    edges = []
    for axis in (0, 1):
        for pick, sign in ((np.nanargmin, -1), (np.nanargmax, 1)):
            q = points[pick(points[:, axis])].copy()
            q[axis] += sign * 3 * widths[axis] * (1 - 1e-4)
            edges.append(q)
    queries = np.concatenate([edges, rng.uniform(300, 700, (60, 2))])
    values = rng.normal(size=(n, 2))
    sigma = width if np.ndim(width) == 0 else np.broadcast_to(width, (n, 2))
    points, values, sigma, queries = (np.asarray(a, dtype)
                                      for a in (points, values, sigma, queries))
    out, density = jax_gmm.interpolate_at(points, values, sigma, queries, return_density=True)
    expected, expected_density = jax_gmm.reference.interpolate_at(
        points, values, sigma, queries, return_density=True)
    assert_close(out, expected, dtype)
    assert_close(density, expected_density, dtype)
    assert (np.asarray(expected_density[:4]) > 0).all()


def _centre_queries(rng, order, h, w):
    """Indices of the pixels (row-major) that the queries of `order` are the centres of."""
    pixels = np.arange(h * w)
    grid = pixels.reshape(h, w)
    others = rng.permutation(pixels[:-1])
    return {
        "in order": pixels,
        "shuffled": rng.permutation(pixels),
        "repeated": rng.integers(0, h * w, h * w),
        # The centres of the top-left 10 x 60 pixels: the image they make is 10 x 60.
        "crop": rng.permutation(grid[:10, :60].ravel()),
        # In steps of one pixel, but the second row one short: not pixel k at k.
        "ragged rows": np.concatenate([grid[0], grid[1, :-1], grid[2:].ravel()]),
        # In order but across the scan's first chunk boundary (4,096 queries).
        "swapped at 4096": np.concatenate([pixels[:4095], [4096, 4095], pixels[4097:]]),
        # Exactly kCentreImagePixelsPerQuery (4) pixels per query, the last
        # pixel among them so that the image is h x w.
        "a quarter": np.concatenate([[h * w - 1], others[: h * w // 4 - 1]]),
    }[order]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["in order", "shuffled", "repeated", "crop", "ragged rows",
                                   "swapped at 4096", "a quarter"])
def test_queries_at_pixel_centres(rng, dtype, order):
    """Queries that are all pixel centres of an image at the origin, as many
    as a quarter of its pixels, take the grid kernel on the CPU (kernels.h,
    CentreImage), whatever their order: the brute force's values, and on the
    CPU interpolate's, bit for bit."""
    h, w = 64, 160  # two tiles across, three chunks of the scan
    points, values, sigma = random_inputs(rng, 400, 3, (h, w), True, dtype)
    points[:, 0] *= 2  # reaching the whole width
    image, image_density = jax_gmm.interpolate(points, values, sigma, (h, w),
                                               return_density=True)
    index = _centre_queries(rng, order, h, w)
    queries = pixel_centres(h, w)[index].astype(dtype)
    out, density = jax_gmm.interpolate_at(points, values, sigma, queries, return_density=True)
    expected, expected_density = gmm(points, values, sigma, queries, 3.0)
    assert_close(out, expected, dtype)
    assert_close(density, expected_density, dtype)
    if jax.default_backend() == "cpu":
        np.testing.assert_array_equal(out, np.asarray(image).reshape(-1, 3)[index])
        np.testing.assert_array_equal(density, np.asarray(image_density).ravel()[index])
        np.testing.assert_array_equal(jax_gmm.interpolate_at(points, values, sigma, queries), out)


@pytest.mark.parametrize("c", [1, 5, 17])  # 17: two passes of the grid kernel
def test_queries_at_pixel_centres_any_channels(rng, c):
    h, w = 20, 45
    points, values, sigma = random_inputs(rng, 150, c, (h, w), False, np.float32)
    image = jax_gmm.interpolate(points, values, sigma, (h, w))
    index = rng.permutation(h * w)
    queries = pixel_centres(h, w).astype(np.float32)[index]
    out = jax_gmm.interpolate_at(points, values, sigma, queries)
    assert_close(out, gmm(points, values, sigma, queries, 3.0)[0], np.float32)
    if jax.default_backend() == "cpu":
        np.testing.assert_array_equal(out, np.asarray(image).reshape(-1, c)[index])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["one ulp off", "one left of the image", "one not finite",
                                  "too few"])
def test_queries_almost_at_pixel_centres(rng, dtype, case):
    """Queries that are not all centres of a densely covered image at the
    origin take the scattered kernel: still the brute force's values."""
    h, w = 20, 32
    points, values, sigma = random_inputs(rng, 200, 2, (h, w), False, dtype)
    queries = pixel_centres(h, w).astype(dtype)
    if case == "one ulp off":
        queries[77, 1] = np.nextafter(queries[77, 1], dtype(0))
    elif case == "one left of the image":
        queries[5, 0] = -0.5
    elif case == "one not finite":
        queries[300] = np.nan
    else:  # one short of a quarter, the last pixel among them
        queries = queries[np.concatenate([[h * w - 1], rng.permutation(h * w - 1)[: h * w // 4 - 2]])]
    out, density = jax_gmm.interpolate_at(points, values, sigma, queries, return_density=True)
    finite = np.isfinite(queries).all(1)
    expected, expected_density = gmm(points, values, sigma, queries[finite], 3.0)
    assert_close(np.asarray(out)[finite], expected, dtype)
    assert_close(np.asarray(density)[finite], expected_density, dtype)


def test_queries_at_pixel_centres_under_vmap(rng):
    """vmap over values at shared centre queries (one grid pass renders them
    all), in order and shuffled, and over queries, centres for some examples
    and not for others."""
    h, w = 12, 40
    points, _, sigma = random_inputs(rng, 150, 2, (h, w), True, np.float64)
    values = rng.normal(size=(3, 150, 2))
    centres = pixel_centres(h, w)
    images = jax.vmap(lambda v: jax_gmm.interpolate(points, v, sigma, (h, w)))(values)
    for index in np.arange(h * w), rng.permutation(h * w):
        at = jax.vmap(lambda v: jax_gmm.interpolate_at(points, v, sigma, centres[index]))(values)
        np.testing.assert_array_equal(at, np.asarray(images).reshape(3, -1, 2)[:, index])
    queries = np.stack([centres, centres[rng.permutation(h * w)],
                        rng.uniform(0, w, (h * w, 2)), centres + 0.25])
    out = jax.vmap(lambda q: jax_gmm.interpolate_at(points, values[0], sigma, q))(queries)
    for q, o in zip(queries, out):
        assert_close(o, gmm(points, values[0], sigma, q, 3.0)[0], np.float64)


def test_gradients_at_pixel_centres(rng):
    """The backward at centre queries reads the out and density that the
    image path wrote: the same gradients as interpolate's."""
    h, w = 16, 24
    points, values, sigma = random_inputs(rng, 120, 2, (h, w), True, np.float64)
    index = rng.permutation(h * w)
    cotangent = rng.normal(size=(h * w, 2))
    image_cotangent = np.empty_like(cotangent)
    image_cotangent[index] = cotangent

    def at(p, v, s):
        return jnp.sum(jax_gmm.interpolate_at(p, v, s, pixel_centres(h, w)[index]) * cotangent)

    def grid(p, v, s):
        out = jax_gmm.interpolate(p, v, s, (h, w)).reshape(-1, 2)
        return jnp.sum(out * image_cotangent)

    for a, b in zip(jax.grad(at, (0, 1, 2))(points, values, sigma),
                    jax.grad(grid, (0, 1, 2))(points, values, sigma)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_conventions_single_point():
    """x is the column, y the row; the pixel (i, j) has its centre at (j + 0.5, i + 0.5)."""
    out, density = jax_gmm.interpolate(np.array([[3.5, 1.5]]), np.array([[2.0]]), 1.0, (4, 6),
                                       truncate=1.0, return_density=True)
    reached = np.argwhere(np.asarray(density) > 0)
    assert {tuple(p) for p in reached} == {(1, 3), (0, 3), (2, 3), (1, 2), (1, 4)}
    np.testing.assert_allclose(density[1, 3], 1 / (2 * np.pi))
    np.testing.assert_allclose(density[0, 3], np.exp(-0.5) / (2 * np.pi))
    np.testing.assert_array_equal(out[density > 0], 2.0)


def test_per_point_normaliser_matters():
    """N includes 1/(2 pi sigma^2): a narrow point outweighs a wide one at equal distance."""
    points = np.array([[4.5, 4.5], [6.5, 4.5]])
    values = np.array([[0.0], [1.0]])
    out = jax_gmm.interpolate_at(points, values, np.array([1.0, 3.0]), np.array([[5.5, 4.5]]),
                                 truncate=5.0)
    w0, w1 = np.exp(-0.5) / (2 * np.pi), np.exp(-1 / 18) / (18 * np.pi)
    np.testing.assert_allclose(out[0, 0], w1 / (w0 + w1), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [1.7, [[3.0, 0.8], [0.8, 1.5]]], ids=["round", "tilted"])
def test_shared_width_records(rng, dtype, width):
    """A block of 64 points with the same width makes its records from one
    shape (cuda/cpu/point_records.h, make_records). One far point per block
    with another width sends every block through the per-point records
    instead. The far points reach no pixel and no query, so the results
    must keep their bits, gradients included."""
    n, shape = 640, (40, 50)
    points = rng.uniform(-4, 54, (n, 2))
    points[::64] = [1e4, -1e4]
    values = rng.normal(size=(n, 3))
    shared = np.broadcast_to(np.asarray(width), (n, *np.shape(width))).copy()
    mixed = shared.copy()
    mixed[::64] *= 1.5
    near = np.ones(n, bool)
    near[::64] = False
    points, values, shared, mixed = (np.asarray(a, dtype) for a in (points, values, shared, mixed))
    render = lambda p, v, s: jax_gmm.interpolate(p, v, s, shape)
    cotangent = np.asarray(rng.normal(size=(*shape, 3)), dtype)
    out_shared, vjp_shared = jax.vjp(render, points, values, shared)
    out_mixed, vjp_mixed = jax.vjp(render, points, values, mixed)
    np.testing.assert_array_equal(out_shared, out_mixed)
    assert (np.asarray(out_shared) != 0).mean() > 0.9
    for a, b in zip(vjp_shared(cotangent), vjp_mixed(cotangent)):
        np.testing.assert_array_equal(np.asarray(a)[near], np.asarray(b)[near])
    # Few queries (the sparse path, which records every point for their reach)
    # and many (the general path).
    for m in (64, 2000):
        queries = np.asarray(rng.uniform(0, 50, (m, 2)), dtype)
        np.testing.assert_array_equal(jax_gmm.interpolate_at(points, values, shared, queries),
                                      jax_gmm.interpolate_at(points, values, mixed, queries))
