"""Float64 NumPy brute force over all (point, query) pairs: the tests' oracle.

It follows the kernels' rules (README Conventions): which pairs exist is
decided in the kernel dtype, operation for operation as cuda/gmm_math.h does
it, so that cutoffs agree exactly; the weights, outputs and gradients are then
computed in float64 from the pairs that exist.
"""

import numpy as np

INV_MAX = {np.dtype(np.float32): 1e18, np.dtype(np.float64): 1e151}
NORM_CLAMPS = {np.dtype(np.float32): (1e-30, 1e30), np.dtype(np.float64): (1e-300, 1e300)}


def pixel_centres(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[:height, :width]
    return np.stack([x.ravel() + 0.5, y.ravel() + 0.5], -1).astype(np.float64)


def kernel_dtype(*arrays) -> np.dtype:
    """float64 if any argument is float64, else float32 (narrower floats too)."""
    dtypes = [np.asarray(a).dtype for a in arrays]
    return np.dtype(np.float64 if np.dtype(np.float64) in dtypes else np.float32)


def _flush(x: np.ndarray, tiny) -> np.ndarray:
    """Subnormal results as the kernels see them: zero."""
    return np.where(np.abs(x) < tiny, 0 * x, x)


def pairs(points, sigma, queries, truncate=3.0, dtype=None):
    """The pair terms of every (query, point) pair, in float64:
    w (M, N) (0 for pairs that do not exist or whose weight underflows), gx and
    gy (d w / d mu per unit w), gs (d w / d sigma per unit w), w_exact, the
    weight before that underflow test (to tell borderline cases), and the sum
    of the sizes of gs's two terms."""
    dtype = np.dtype(dtype or kernel_dtype(points, sigma, queries))
    k = dtype.type
    tiny = np.finfo(dtype).tiny
    points, queries = np.asarray(points, dtype), np.asarray(queries, dtype)
    sigma = np.broadcast_to(np.asarray(sigma, dtype), points.shape[:1])
    with np.errstate(all="ignore"):
        valid = np.isfinite(points).all(-1) & np.isfinite(sigma) & (sigma >= tiny)
        query_ok = np.isfinite(queries).all(-1)
        s = np.where(valid, sigma, k(1))
        # The cutoff decision, in the kernel dtype.
        inv = _flush(k(1) / s, tiny)
        inv_clamped = inv > k(INV_MAX[dtype])
        inv = np.minimum(inv, k(INV_MAX[dtype]))
        ex = _flush((queries[:, None, 0] - points[None, :, 0]) * inv, tiny)
        ey = _flush((queries[:, None, 1] - points[None, :, 1]) * inv, tiny)
        m2 = _flush(ex * ex, tiny) + _flush(ey * ey, tiny)
        inside = query_ok[:, None] & valid[None, :] & (m2 <= k(truncate) * k(truncate))
        # The weights and their derivatives, in float64.
        s, inv = s.astype(np.float64), inv.astype(np.float64)
        ex64 = (queries[:, None, 0].astype(np.float64) - points[None, :, 0]) * inv
        ey64 = (queries[:, None, 1].astype(np.float64) - points[None, :, 1]) * inv
        m2_64 = np.where(inside, ex64**2 + ey64**2, 0)
        norm_min, norm_max = NORM_CLAMPS[dtype]
        norm = 1 / (2 * np.pi * s**2)
        norm_clamped = (norm <= norm_min) | (norm >= norm_max)
        norm = np.clip(norm, norm_min, norm_max)
        w_exact = np.where(inside, norm * np.exp(-0.5 * m2_64), 0)
        w = np.where(w_exact >= tiny, w_exact, 0)
        # Only where the pair weighs: elsewhere ex may be NaN (a NaN query).
        moves = (w > 0) & ~inv_clamped
        gx = np.where(moves, ex64 * inv, 0)
        gy = np.where(moves, ey64 * inv, 0)
        spread, scale = np.where(moves, m2_64, 0), np.where(norm_clamped, 0, 2)
        gs = np.where(w > 0, (spread - scale) * inv, 0)
        # A kernel may sum the two terms over the queries apart and subtract last.
        gs_size = np.where(w > 0, (spread + scale) * inv, 0)
    return w, gx, gy, gs, w_exact, gs_size


def _values(values, dtype):
    return np.asarray(values, dtype).astype(np.float64)


def gmm(points, values, sigma, queries, truncate=3.0, dtype=None, eps=0.0):
    """(out (M, C), density (M,)); invalid points and queries contribute nothing.
    With eps, out = sum_i c_i w_i / (Z + eps)."""
    dtype = dtype or kernel_dtype(points, values, sigma, queries)
    w = pairs(points, sigma, queries, truncate, dtype)[0]
    values = _values(values, dtype)
    density = w.sum(-1)
    with np.errstate(all="ignore"):
        # Relative to each query's largest weight, so that w * c cannot
        # underflow; only pairs with a weight carry their value (inf or NaN
        # too), even one whose relative weight underflows to 0.
        weighs = w[:, :, None] > 0
        w = w / np.maximum(w.max(-1, keepdims=True, initial=0), np.finfo(np.float64).tiny)
        num = np.where(weighs, w[:, :, None] * values[None], 0).sum(1)
        out = np.where(density[:, None] > 0, num / w.sum(-1, keepdims=True), 0)
        out = out * np.where(density > 0, density / (density + eps), 0)[:, None]
    return out, density


def gmm_grid(points, values, sigma, shape, truncate=3.0, dtype=None, eps=0.0):
    """(out (H, W, C), density (H, W)) at the pixel centres."""
    h, w = shape
    dtype = dtype or kernel_dtype(points, values, sigma)
    out, density = gmm(points, values, sigma, pixel_centres(h, w), truncate, dtype, eps)
    return out.reshape(h, w, -1), density.reshape(h, w)


def gmm_vjp(points, values, sigma, queries, d_out, d_density, truncate=3.0, dtype=None):
    """Gradients of sum(d_out * out) + sum(d_density * density) in points (N, 2),
    values (N, C), sigma (N,) and queries (M, 2), and beside each a bound on
    the magnitude of the terms it adds up, the scale of its rounding error
    (out's error moves c - out, whatever the cancellation in it, and scales
    with sum w |c| / Z, not |out|: where the values' signs cancel, out can be
    hundreds of times smaller than its error's scale). Pairs with no weight,
    and queries with Z = 0, add nothing."""
    dtype = dtype or kernel_dtype(points, values, sigma, queries)
    w, gx, gy, gs, _, gs_size = pairs(points, sigma, queries, truncate, dtype)
    values = _values(values, dtype)
    out, density = gmm(points, values, sigma, queries, truncate, dtype)
    mean_abs = gmm(points, np.abs(values), sigma, queries, truncate, dtype)[0]
    d_out = np.asarray(d_out, np.float64).reshape(out.shape)
    d_density = np.asarray(d_density, np.float64).reshape(density.shape)
    weighed = w > 0
    with np.errstate(all="ignore"):
        inv_z = np.where(density > 0, 1 / density, 0)[:, None]
        ratio = w * inv_z  # w / Z, in [0, 1]
        # w dL/dw = w (g . (c - out) / Z + h), per pair, only where w > 0.
        g_dot_c = (d_out[:, None, :] * values[None]).sum(-1)
        g_dot_out = (d_out * out).sum(-1, keepdims=True)
        u = np.where(weighed, ratio * (g_dot_c - g_dot_out) + w * d_density[:, None], 0)
        u_bound = np.where(weighed, ratio * (np.abs(d_out) @ np.abs(values).T
                                             + (np.abs(d_out) * mean_abs).sum(-1, keepdims=True))
                           + w * np.abs(d_density[:, None]), 0)
        point_terms = np.stack([u * gx, u * gy], -1)
        point_bound = np.stack([u_bound * np.abs(gx), u_bound * np.abs(gy)], -1)
        value_terms = np.where(weighed[:, :, None], ratio[:, :, None] * d_out[:, None, :], 0)
        grads = (point_terms.sum(0), value_terms.sum(0), (u * gs).sum(0),
                 -point_terms.sum(1))
        bounds = (point_bound.sum(0), np.abs(value_terms).sum(0),
                  (u_bound * gs_size).sum(0), point_bound.sum(1))
    return grads, bounds


def cholesky(cov, dtype):
    """(l11, l21, l22) of covariances (N, 2, 2) in `dtype`, formed as
    jax_gmm._covariance does (NaN for a matrix it rejects)."""
    k = np.dtype(dtype).type
    cov = np.asarray(cov, dtype)
    s11, s21, s22 = cov[:, 0, 0], (cov[:, 0, 1] + cov[:, 1, 0]) / k(2), cov[:, 1, 1]
    with np.errstate(all="ignore"):
        ok = (np.isfinite(cov).all((1, 2)) & (s11 > 0) & (s22 > 0)
              & (s22 - (s21 / s11) * s21 > k(64) * np.finfo(dtype).eps * s22))
        l11 = np.sqrt(s11)
        l21 = s21 / l11
        l22 = np.sqrt(s22 - l21 * l21)
    return [np.where(ok, v, np.nan).astype(dtype) for v in (l11, l21, l22)]


def covariance_gmm(points, values, cov, queries, truncate=3.0, dtype=np.float32, eps=0.0):
    """(out (M, C), density (M,), ambiguous (M,)) for Gaussians with covariances
    (N, 2, 2). The cutoff is decided in `dtype` as the kernels do it; the
    weights and out are float64 from the exact covariance. `ambiguous` marks
    queries with a pair within 1e-4 of the cutoff, where an ulp in the
    factorisation may flip the decision."""
    k = np.dtype(dtype).type
    tiny = np.finfo(dtype).tiny
    l11, l21, l22 = cholesky(cov, dtype)
    points, queries = np.asarray(points, dtype), np.asarray(queries, dtype)
    with np.errstate(all="ignore"):
        valid = np.isfinite(points).all(-1) & np.isfinite(l11) & (l11 >= tiny) & (l22 >= tiny)
        p11, p22 = k(1) / l11, k(1) / l22
        p21 = -(l21 * p11) * p22
        dx = queries[:, None, 0] - points[None, :, 0]
        dy = queries[:, None, 1] - points[None, :, 1]
        ex, ey = dx * p11, dx * p21 + dy * p22
        m2 = ex * ex + ey * ey
        t2 = k(truncate) * k(truncate)
        inside = valid[None, :] & np.isfinite(queries).all(-1)[:, None] & (m2 <= t2)
        ambiguous = (valid[None, :] & (np.abs(m2.astype(np.float64) / t2 - 1) < 1e-4)).any(-1)
        cov64 = np.asarray(cov, dtype).astype(np.float64)
        cov64 = (cov64 + cov64.transpose(0, 2, 1)) / 2
        inv = np.linalg.inv(np.where(valid[:, None, None], cov64, np.eye(2)))
        det = np.linalg.det(np.where(valid[:, None, None], cov64, np.eye(2)))
        d = np.stack([dx, dy], -1).astype(np.float64)
        q = np.einsum("mni,nij,mnj->mn", d, inv, d)
        w = np.where(inside, np.exp(-0.5 * q) / (2 * np.pi * np.sqrt(det)), 0)
        values = np.asarray(values, dtype).astype(np.float64)
        density = w.sum(-1)
        out = np.where(density[:, None] > 0, (w @ values) / (density + eps)[:, None], 0)
    return out, density, ambiguous


def kth_nearest(points, k):
    """k-th nearest other finite point by (squared distance, index); the
    farthest if fewer; itself if none or not finite. float64 NumPy, O(N^2)."""
    points = np.asarray(points, np.float64)
    n = len(points)
    valid = np.isfinite(points).all(-1)
    with np.errstate(invalid="ignore", over="ignore"):
        d2 = ((points[:, None] - points[None]) ** 2).sum(-1)
    excluded = ~valid[None] | np.eye(n, dtype=bool)
    index = np.broadcast_to(np.arange(n), (n, n))
    order = np.lexsort((index, d2, excluded), axis=1)  # an excluded point never ties with inf
    found = np.minimum((~excluded).sum(-1), k)
    pick = order[np.arange(n), np.maximum(found - 1, 0)]
    return np.where(valid & (found > 0), pick, np.arange(n))


def neighbour_layouts(rng):
    """Point sets that stress the grid: spread, lattice ties, duplicates,
    non-finite entries, far outliers, a tight cluster, a line."""
    spread = rng.uniform(0, 300, (400, 2))
    lattice = rng.integers(0, 12, (300, 2)).astype(np.float64)  # many exact ties and duplicates
    # Ties between offsets (a, b) and (b, a) that are not exact in binary: a
    # fused multiply-add would rank them apart.
    tenths = 0.1 * rng.integers(0, 30, (300, 2))
    holes = rng.uniform(-5, 5, (120, 2))
    holes[::7, 0] = np.nan
    holes[3::11, 1] = np.inf
    outliers = np.concatenate([rng.uniform(0, 50, (200, 2)), [[1e9, -1e9], [-3e30, 2.0]]])
    cluster = np.concatenate([rng.normal(0, 1e-6, (150, 2)), rng.uniform(-1e3, 1e3, (50, 2))])
    line = np.stack([rng.uniform(0, 100, 150), np.full(150, 7.0)], -1)
    diagonal = np.repeat(rng.uniform(0, 100, (150, 1)), 2, -1)
    # Squared distances that overflow to inf must still rank above the
    # excluded (non-finite) points, and ones that underflow keep index order.
    huge = np.array([[np.nan, 0.0], [-1.7e308, 0.0], [1.7e308, 0.0], [0.0, 1.7e308]])
    tiny = rng.uniform(0, 1, (60, 2)) * 1e-170
    coincident = np.concatenate([np.full((80, 2), 3.25), rng.uniform(0, 9, (20, 2))])
    return {"spread": spread, "lattice": lattice, "tenths": tenths, "holes": holes,
            "outliers": outliers,
            "cluster": cluster, "line": line, "diagonal": diagonal, "huge": huge, "tiny": tiny,
            "coincident": coincident}
