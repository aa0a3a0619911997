"""The pair-existence rules of cuda/layout.h against NumPy brute force.

The CPU and the CUDA binning both decide with these functions which (tile,
point), (cell, point) and (cell, query) pairs exist, so checking them here, on
the CPU, checks the GPU's binning too: every pair within the cutoff must be
listed, counts must not wrap at 2^32, and the cell grid must span only the
queries some point can reach (a far outlier query must not stretch it).
"""

import numpy as np
import pytest

_layout = pytest.importorskip("jax_gmm._layout")

DTYPES = [np.float32, np.float64]
INV_SIGMA_MAX = {np.float32: 1e18, np.float64: 1e151}


def as_scale(sigma):
    """The kernels' (N, 3) Cholesky factors (l11, l21, l22): round widths (N,)
    become diag(sigma, sigma); (N, 3) factors pass through."""
    sigma = np.asarray(sigma)
    if sigma.ndim == 2:
        return sigma
    return np.stack([sigma, np.zeros_like(sigma), sigma], -1)


def m2(d_x, d_y, sigma, dtype):
    """pair_m2 of gmm_math.h for widths (N,) or factors (N, 3), rounded op by
    op in `dtype` as the kernels do (NumPy never fuses a multiply-add)."""
    l11, l21, l22 = as_scale(sigma).astype(dtype).T
    inv_max = dtype(INV_SIGMA_MAX[dtype])
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        p11 = np.minimum(dtype(1) / l11, inv_max)
        p22 = np.minimum(dtype(1) / l22, inv_max)
        p21 = np.clip(-(l21 * p11) * p22, -inv_max, inv_max)
        e_x = d_x * p11
        e_y = d_x * p21 + d_y * p22
        return e_x * e_x + e_y * e_y


def valid(points, sigma, dtype):
    l11, l21, l22 = as_scale(sigma).T
    tiny = np.finfo(dtype).smallest_normal
    return (np.isfinite(points).all(1) & np.isfinite(as_scale(sigma)).all(1)
            & (l11 >= tiny) & (l22 >= tiny))


def extent(sigma):
    """Per point, the larger half-side of its ellipse's bounding box per unit truncate."""
    l11, l21, l22 = as_scale(sigma).astype(np.float64).T
    return np.maximum(np.abs(l11), np.hypot(l21, l22))


def boxes(flat):
    return np.asarray(flat, np.int64).reshape(-1, 4)  # x.lo, x.hi, y.lo, y.hi


def in_box(b, x, y):
    return (b[..., 0] <= x) & (x <= b[..., 1]) & (b[..., 2] <= y) & (y <= b[..., 3])


def box_count(b):
    return np.where((b[:, 0] > b[:, 1]) | (b[:, 2] > b[:, 3]), 0,
                    (b[:, 1] - b[:, 0] + 1) * (b[:, 3] - b[:, 2] + 1))


def scene(rng, n, shape, sigma_scale, dtype, margin=5.0):
    h, w = shape
    points = rng.uniform([-margin, -margin], [w + margin, h + margin], (n, 2))
    sigma = sigma_scale * rng.uniform(0.5, 1.5, n)
    return points.astype(dtype), sigma.astype(dtype)


# Tiles ---------------------------------------------------------------------


def check_tiles_cover_pairs(points, sigma, shape, side, truncate=3.0):
    """Every (pixel, point) pair within the cutoff lies in a tile of the point's
    box, and the pair count is the sum of the box areas (exact, in Python ints)."""
    dtype = points.dtype.type
    h, w = shape
    flat, pairs, tiles_x, tiles_y = _layout.tile_boxes(points, as_scale(sigma), truncate, h, w,
                                                       side)
    b = boxes(flat)
    assert tiles_x == -(-w // side) and tiles_y == -(-h // side)
    assert pairs == int(box_count(b).astype(object).sum())
    ok = valid(points, sigma, dtype)
    assert (box_count(b)[~ok] == 0).all()
    for i in np.flatnonzero(ok):
        x, y = points[i]
        # The pixels near the point (all of them when its box is wider than the
        # image): the brute force around each point.
        reach = min(float(truncate) * float(extent(sigma[i:i + 1])[0]) + 2, max(h, w) + 2.0)
        cols = np.arange(int(np.clip(np.floor(x - reach), 0, w)),
                         int(np.clip(np.ceil(x + reach) + 1, 0, w)))
        rows = np.arange(int(np.clip(np.floor(y - reach), 0, h)),
                         int(np.clip(np.ceil(y + reach) + 1, 0, h)))
        if len(cols) * len(rows) > 4_000_000:  # a box wider than the image: corners suffice
            cols, rows = cols[[0, -1]], rows[[0, -1]]
        d_x = (cols.astype(dtype) + dtype(0.5)) - x
        d_y = (rows.astype(dtype) + dtype(0.5)) - y
        inside = m2(d_x[None, :], d_y[:, None], sigma[i:i + 1], dtype) <= dtype(truncate) ** 2
        r, c = np.nonzero(inside)
        assert in_box(b[i], cols[c] // side, rows[r] // side).all(), (i, b[i])
        # Tight: per axis, the box spans the tiles of the pixels within the
        # cutoff along that axis alone, up to the few-ulp margin of the box radius.
        zero = np.zeros(1, dtype)
        near_x = cols[m2(d_x, zero, sigma[i:i + 1], dtype) <= dtype(truncate) ** 2]
        near_y = rows[m2(zero, d_y, sigma[i:i + 1], dtype) <= dtype(truncate) ** 2]
        aligned = as_scale(sigma)[i, 1] == 0  # a tilted ellipse is widest off its centre's row
        if aligned and len(near_x) and len(near_y) and len(cols) > 2:
            assert (near_x.min() - 1) // side <= b[i, 0] <= near_x.min() // side
            assert near_x.max() // side <= b[i, 1] <= (near_x.max() + 1) // side
            assert (near_y.min() - 1) // side <= b[i, 2] <= near_y.min() // side
            assert near_y.max() // side <= b[i, 3] <= (near_y.max() + 1) // side
    return b, pairs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 37), (41, 1), (37, 45), (1, 70_000), (70_000, 1)])
@pytest.mark.parametrize("side", [8, 16, 32, 128])
def test_tiles_cover_every_pair(rng, dtype, shape, side):
    for sigma_scale in [0.3, 2.0, 9.0]:
        points, sigma = scene(rng, 60, shape, sigma_scale, dtype)
        check_tiles_cover_pairs(points, sigma, shape, side)


def tilted(rng, n, size, dtype):
    """Cholesky factors of thin, strongly tilted Gaussians about `size` pixels long."""
    l11 = size * rng.uniform(0.3, 1.5, n)
    l21 = size * rng.uniform(-2.0, 2.0, n)
    l22 = size * rng.uniform(0.02, 0.5, n)
    return np.stack([l11, l21, l22], -1).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("side", [8, 128])
def test_tiles_cover_every_pair_of_tilted_gaussians(rng, dtype, side):
    for size in [0.4, 3.0, 12.0]:
        points, _ = scene(rng, 60, (37, 45), 1.0, dtype)
        check_tiles_cover_pairs(points, tilted(rng, 60, size, dtype), (37, 45), side)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiles_for_huge_and_tiny_sigma(dtype):
    points = np.array([[3.5, 2.5], [3.5, 2.5], [1e30, 2.0], [-1e30, -1e30], [20.0, 7.0]], dtype)
    for s in [1e-3, 1e-20, 1e-35, 1e6, 1e30, np.finfo(dtype).max]:
        sigma = np.full(5, s, dtype)
        b, _ = check_tiles_cover_pairs(points, sigma, (9, 30), 8)
        reach_all = [0, 1, 4] if s < 1e30 else slice(None)  # far points need sigma ~ 1e30
        if s >= 1e6:
            assert (b[reach_all] == [0, 3, 0, 1]).all()
        if s <= 1e-20:  # only a pixel centre exactly under the point
            assert (b[:2] == [0, 0, 0, 0]).all() and box_count(b[2:4]).sum() == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiles_invalid_points_and_no_points(dtype):
    points = np.array([[np.nan, 1.0], [np.inf, 2.0], [3.0, 4.0], [4.0, 4.0], [2.0, 2.0],
                       [5.0, -np.inf]], dtype)
    sigma = np.array([1.0, 1.0, np.nan, np.inf, -1.0, 1.0], dtype)
    flat, pairs, _, _ = _layout.tile_boxes(points, as_scale(sigma), 3.0, 8, 9, 8)
    assert pairs == 0 and (box_count(boxes(flat)) == 0).all()
    sigma[4] = 0.0
    assert _layout.tile_boxes(points, as_scale(sigma), 3.0, 8, 9, 8)[1] == 0
    flat, pairs, _, _ = _layout.tile_boxes(np.zeros((0, 2), dtype), np.zeros((0, 3), dtype), 3.0,
                                           8, 9, 8)
    assert flat == [] and pairs == 0
    # An empty image: no tile, no pair.
    for h, w in [(0, 5), (5, 0)]:
        assert _layout.tile_boxes(points[2:3], np.ones((1, 3), dtype), 3.0, h, w, 8)[1] == 0


def test_tile_pairs_count_past_2_to_the_32():
    """10^4 points covering a 70000 x 61000 image in 8-pixel tiles: 6.7e11 pairs,
    counted exactly (a 32-bit count wraps)."""
    points = np.full((10_000, 2), [100.0, 100.0])
    sigma = np.full(10_000, 1e6)
    flat, pairs, tiles_x, tiles_y = _layout.tile_boxes(points, as_scale(sigma), 3.0, 61_000, 70_000,
                                                       8)
    assert (tiles_x, tiles_y) == (8750, 7625)
    assert pairs == 10_000 * 8750 * 7625 > 2**32


# Cells ---------------------------------------------------------------------


def check_cells(points, sigma, queries, truncate=3.0):
    """check_cells_of with the CPU's cell width and the GPU's; the CPU's result."""
    check_cells_of(points, sigma, queries, truncate, _layout.CELL_RADII_GPU)
    return check_cells_of(points, sigma, queries, truncate, _layout.CELL_RADII_CPU)


def check_cells_of(points, sigma, queries, truncate, radii):
    """Every in-cutoff (query, point) pair is found: the query has a cell and the
    point's cell box contains it; keys match the layout; the cell count is capped."""
    dtype = points.dtype.type
    d = _layout.cell_binning(points, as_scale(sigma), truncate, queries, radii)
    keys = np.asarray(d["query_keys"], np.int64)
    b = boxes(d["point_boxes"])
    cells_x, cells_y = d["cells"]
    m = len(queries)
    assert cells_x * cells_y <= _layout.max_cells(m)
    assert d["pairs"] == int(box_count(b).astype(object).sum())
    if cells_x * cells_y == 0:
        assert (keys == -1).all() and d["pairs"] == 0
        return d, keys, b
    assert ((keys >= -1) & (keys < cells_x * cells_y)).all()
    # Keys follow the layout: origin + k * cell <= q < origin + (k + 1) * cell,
    # in double, up to the clamp into the last cell.
    ox, oy = d["origin"]
    cell = d["cell"]
    has = keys >= 0
    kx, ky = keys[has] % cells_x, keys[has] // cells_x
    qd = queries[has].astype(np.float64)
    for k, o, q, count in [(kx, ox, qd[:, 0], cells_x), (ky, oy, qd[:, 1], cells_y)]:
        if np.isfinite(cell):
            tol = 1e-12 * (np.abs(q) + abs(o) + (k + 1) * cell)
            assert (o + k * cell <= q + tol).all()
            assert ((q < o + (k + 1) * cell + tol) | (k == count - 1)).all()
    # Coverage, by brute force over all pairs.
    ok = valid(points, sigma, dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        d_x = queries[:, None, 0] - points[None, :, 0]
        d_y = queries[:, None, 1] - points[None, :, 1]
        pair = (m2(d_x, d_y, sigma, dtype) <= dtype(truncate) ** 2) & ok[None, :]
    q_idx, p_idx = np.nonzero(pair)
    assert (keys[q_idx] >= 0).all()
    assert in_box(b[p_idx], keys[q_idx] % cells_x, keys[q_idx] // cells_x).all()
    assert (box_count(b)[~ok] == 0).all()
    return d, keys, b


def test_cell_range_is_the_clamped_floor():
    """cell_range and cell_index truncate rather than take a floor (ranges.h):
    they must give the cells floor((v - origin) / size) clamped to [0, count -
    1], also where a truncation and a floor part: at and an ulp around every
    cell edge, at -0, at the last cell and past it, and for non-finite values."""
    origin, size = -1.5, 0.75
    edges = origin + size * np.arange(-2, 10)
    values = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf),
                             edges + 0.5 * size,  # inside each cell, the last one's included
                             [-0.0, 0.0, 1e-300, -1e300, 1e300, -np.inf, np.inf, np.nan]])

    def floor_cells(lo, hi, count):
        with np.errstate(invalid="ignore"):
            first, last = np.floor((lo - origin) / size), np.floor((hi - origin) / size)
        if not (last >= 0 and first <= count - 1):
            return 1, 0
        return int(max(first, 0)), int(min(last, count - 1))

    for count in [1, 2, 7]:
        for lo in values:
            alone = floor_cells(lo, lo, count)
            want_index = alone[0] if alone != (1, 0) else -1
            for hi in values:
                got = _layout.cells_between(float(lo), float(hi), origin, size, count)
                assert got == (*floor_cells(lo, hi, count), want_index), (lo, hi, count)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cells_cover_every_pair_of_tilted_gaussians(rng, dtype):
    for size in [0.4, 3.0, 12.0]:
        points, _ = scene(rng, 200, (30, 50), 1.0, dtype)
        queries = rng.uniform(-8, 58, (1000, 2)).astype(dtype)
        check_cells(points, tilted(rng, 200, size, dtype), queries)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", [(0, 10), (10, 0), (1, 1), (200, 300), (50, 2000)])
def test_cells_cover_every_pair(rng, dtype, n, m):
    for sigma_scale in [0.3, 3.0, 40.0]:
        points, sigma = scene(rng, n, (30, 50), sigma_scale, dtype)
        queries = rng.uniform(-8, 60, (m, 2)).astype(dtype)
        queries[: min(m, n)] = points[: min(m, n)]
        check_cells(points, sigma, queries)


@pytest.mark.parametrize("dtype", DTYPES)
def test_far_outlier_query_does_not_stretch_the_cells(rng, dtype):
    points, sigma = scene(rng, 300, (40, 40), 1.0, dtype)
    queries = rng.uniform(0, 40, (500, 2)).astype(dtype)
    base, base_keys, base_boxes = check_cells(points, sigma, queries)
    for outlier in [1e30, -1e30, 3e38, -3e38]:
        with_outlier = np.concatenate([queries, np.array([[outlier, outlier]], dtype)])
        d, keys, b = check_cells(points, sigma, with_outlier)
        assert keys[-1] == -1  # out of every point's reach: in no cell
        assert (d["cells"], d["cell"], d["origin"]) == (base["cells"], base["cell"],
                                                        base["origin"])
        np.testing.assert_array_equal(keys[:-1], base_keys)
        np.testing.assert_array_equal(b, base_boxes)
    assert base["cell"] == pytest.approx(_layout.CELL_RADII_CPU * base["mean_radius"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_cells_when_every_box_is_infinite(dtype):
    """Points whose box radius is infinite reach every finite query: one cell
    grid over them all, every query keyed (the output is then the mean)."""
    points = np.array([[1.0, 2.0], [5.0, 5.0], [np.nan, 0.0]], dtype)
    sigma = np.array([np.finfo(dtype).max, np.finfo(dtype).max, 1.0], dtype)
    queries = np.array([[0.0, 0.0], [3e38, -3e38], [-1e30, 7.0], [np.inf, 0.0]], dtype)
    d, keys, b = check_cells(points, sigma, queries)
    assert d["mean_radius"] == -1.0  # no finite radius
    assert (keys[:3] >= 0).all() and keys[3] == -1
    assert (box_count(b)[:2] == d["cells"][0] * d["cells"][1]).all() and box_count(b)[2] == 0


def test_span_beyond_double_range_is_one_cell():
    """float64 queries at +-1e308 reached by one point: the span overflows,
    the layout is one cell, and every query and the point are in it."""
    points = np.array([[0.0, 0.0]])
    queries = np.array([[-1e308, 0.0], [1e308, 0.0], [0.0, 0.0]])
    d, keys, b = check_cells(points, np.array([3e307]), queries, truncate=4.0)
    assert d["cells"] == (1, 1) and (keys == 0).all() and box_count(b)[0] == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_float32_extremes_do_not_overflow_the_layout(rng, dtype):
    """Queries and points near +-3e38 with a huge sigma: the span exceeds float's
    range, which the double layout absorbs."""
    big = 3.0e38
    points = np.array([[-big, -big], [big, big], [0.0, 0.0]], dtype)
    sigma = np.array([1e37, 1e37, 1e37], dtype)
    queries = np.concatenate([rng.uniform(-big, big, (100, 2)), [[-big, big], [big, -big]]])
    d, keys, b = check_cells(points, sigma, queries.astype(dtype))
    assert np.isfinite(d["cell"]) and (keys >= 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sigma", [1e-3, 1e-20, 1e-35, 1e6, 1e30])
def test_cells_huge_and_tiny_sigma(rng, dtype, sigma):
    points, _ = scene(rng, 40, (20, 20), 1.0, dtype)
    queries = np.concatenate([rng.uniform(-5, 25, (60, 2)), points[:10]]).astype(dtype)
    check_cells(points, np.full(40, sigma, dtype), queries)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cells_every_point_invalid(rng, dtype):
    points = np.array([[np.nan, 1.0], [np.inf, 2.0], [3.0, 4.0], [4.0, 4.0], [2.0, 2.0]], dtype)
    sigma = np.array([1.0, 1.0, np.nan, -1.0, 0.0], dtype)
    d, keys, b = check_cells(points, sigma, rng.uniform(0, 8, (20, 2)).astype(dtype))
    assert d["cells"] == (0, 0) and (keys == -1).all() and d["pairs"] == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_cells_are_capped_for_spread_queries(rng, dtype):
    """Queries spread far wider than the radius, all reached by one wide point."""
    points = np.concatenate([rng.uniform(0, 1e4, (500, 2)), [[5e3, 5e3]]]).astype(dtype)
    sigma = np.concatenate([np.full(500, 0.1), [1e4]]).astype(dtype)
    queries = rng.uniform(0, 1e4, (700, 2)).astype(dtype)
    d, _, _ = check_cells(points, sigma, queries)
    assert d["cells"][0] * d["cells"][1] <= _layout.max_cells(700) == 1400


# Centre grid (the sparse forward's filter) ---------------------------------


def check_centre_grid(points, sigma, queries, limit, k=2, truncate=3.0):
    """Every in-cutoff (query, point) pair has the point's centre within k
    cells of the query's along each axis on centre_grid, where there is a
    grid; it has at most `limit` cells. Returns (cells_x, cells_y)."""
    dtype = points.dtype.type
    d = _layout.cell_binning(points, as_scale(sigma), truncate, queries, _layout.CELL_RADII_CPU)
    keys = np.asarray(d["query_keys"], np.int64)
    listed = queries[keys >= 0].astype(np.float64)
    ok = valid(points, sigma, dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        widest = float((dtype(truncate) * extent(as_scale(sigma)[ok]).astype(dtype)).max(
            initial=0.0))  # inf where the box overflows the dtype, as the kernels' does
    # The largest box half-side, with the box's margin (gmm_math.h, place_gaussian).
    assert widest <= d["widest"] <= widest * 1.001 + 1e-3 * np.abs(points[ok]).max(initial=0)
    box = [listed[:, 0].min(), listed[:, 0].max(), listed[:, 1].min(), listed[:, 1].max()] \
        if len(listed) else [np.inf, -np.inf, np.inf, -np.inf]
    grid, cells = _layout.centre_grid_cells(*box, d["widest"], k, limit,
                                            np.concatenate([listed, points.astype(np.float64)]))
    cells_x, cells_y = grid[3], grid[4]
    if cells_x * cells_y == 0:
        return cells_x, cells_y
    assert cells_x * cells_y <= limit
    cells = np.asarray(cells, np.int64)
    q_cells, p_cells = cells[: len(listed)], cells[len(listed):]
    assert (q_cells >= 0).all()
    with np.errstate(invalid="ignore", over="ignore"):
        d_x = listed[:, None, 0].astype(dtype) - points[None, :, 0]
        d_y = listed[:, None, 1].astype(dtype) - points[None, :, 1]
        pair = (m2(d_x, d_y, sigma, dtype) <= dtype(truncate) ** 2) & ok[None, :]
    q_idx, p_idx = np.nonzero(pair)
    assert len(q_idx) > 0
    q, p = q_cells[q_idx], p_cells[p_idx]
    assert (p >= 0).all()
    assert (np.abs(p % cells_x - q % cells_x) <= k).all()
    assert (np.abs(p // cells_x - q // cells_x) <= k).all()
    return cells_x, cells_y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("limit", [196, 4096, 10**6])
def test_centre_grid_keeps_every_pair(rng, dtype, k, limit):
    """Round points of several widths, one far wider than the rest, tilted
    points, and a query cluster, at grid sizes from the cap's (196 cells: at
    k = 5, one inside the spare ones) to cells of 1 / k of the widest box."""
    for sigma_scale, m in [(0.3, 40), (3.0, 300), (40.0, 20)]:
        points, sigma = scene(rng, 2000, (60, 90), sigma_scale, dtype)
        points[::101] = np.nan
        queries = rng.uniform(-8, 98, (m, 2)).astype(dtype)
        queries[:5] = points[1:6]
        cells = check_centre_grid(points, sigma, queries, limit, k)
        assert cells[0] * cells[1] > 0
        sigma[7] = 25.0 * sigma_scale
        check_centre_grid(points, sigma, queries, limit, k)
    points, _ = scene(rng, 500, (40, 40), 1.0, dtype)
    queries = np.concatenate([rng.uniform(10, 12, (50, 2)), rng.uniform(0, 40, (10, 2))])
    check_centre_grid(points, tilted(rng, 500, 2.0, dtype), queries.astype(dtype), limit, k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_centre_grid_is_absent_where_it_cannot_hold(dtype):
    """No grid without listed queries, with an infinite box, or where a cell
    is too small beside the coordinates for its cells to spare (in
    float32 the box's margin, 64 eps of the centre, keeps the cell wide
    enough, and the grid must keep the pair); a grid for a single query."""
    far = dtype(1e20)
    points = np.array([[1.0, 2.0], [far, far]], dtype)
    cells = check_centre_grid(points, np.ones(2, dtype), np.array([[far, far]], dtype), 4096)
    assert cells == ((0, 0) if dtype == np.float64 else (7, 7))
    assert check_centre_grid(points[:1], np.ones(1, dtype), np.array([[1e6, 1e6]], dtype),
                             4096) == (0, 0)
    huge = np.array([1.0, np.finfo(dtype).max], dtype)
    assert check_centre_grid(points[:1].repeat(2, 0), huge, points[:1], 4096) == (0, 0)
    assert check_centre_grid(points[:1], np.ones(1, dtype), points[:1], 4096) == (7, 7)


# Lists ---------------------------------------------------------------------


@pytest.mark.parametrize("cells", [0, 1, 7, 1000])
def test_list_starts_match_searchsorted(rng, cells):
    for entries in [0, 1, 50, 3000]:
        # Keys up to `cells` (the GPU's key for a query in no cell) and, to
        # check 64-bit keys, beyond 2^32.
        keys = np.sort(rng.integers(0, cells + 1, entries))
        want = np.searchsorted(keys, np.arange(cells + 1), "left")
        np.testing.assert_array_equal(_layout.list_starts(keys.tolist(), cells), want)
    big = [2**33, 2**33, 2**40]
    assert _layout.list_starts(big, 3) == [0, 0, 0, 0]


def test_max_cells():
    assert [_layout.max_cells(m) for m in [0, 1, 512, 513, 2**31]] == [1024, 1024, 1024, 1026,
                                                                      2**32]


def test_span_beyond_double_range_end_to_end():
    """The kernels on the one-cell layout above: every query is reached."""
    import jax_gmm

    queries = np.array([[-1e308, 0.0], [1e308, 0.0], [0.0, 0.0]])
    out, density = jax_gmm.interpolate_at(np.zeros((1, 2)), np.ones((1, 1)), np.array([3e307]),
                                          queries, truncate=4.0, return_density=True)
    np.testing.assert_array_equal(out, 1.0)
    assert (np.asarray(density) > 0).all()


def test_scale_must_be_n_by_3():
    points = np.zeros((4, 2), np.float32)
    for scale in [np.ones(4, np.float32), np.ones((4, 2), np.float32), np.ones((3, 3), np.float32)]:
        with pytest.raises(ValueError, match=r"scale \(N, 3\)"):
            _layout.tile_boxes(points, scale, 3.0, 8, 8, 8)
