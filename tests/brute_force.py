"""Float64 NumPy brute force over all (point, query) pairs: the tests' oracle."""

import numpy as np


def pixel_centres(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[:height, :width]
    return np.stack([x.ravel() + 0.5, y.ravel() + 0.5], -1).astype(np.float64)


def gmm(points, values, sigma, queries, truncate=3.0):
    """(out (M, C), density (M,)); invalid points and queries contribute nothing."""
    points, values, queries = (np.asarray(a, np.float64) for a in (points, values, queries))
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), points.shape[:1])
    ok = np.isfinite(points).all(-1) & np.isfinite(sigma) & (sigma > 0)
    points, values, sigma = points[ok], values[ok], sigma[ok]
    out = np.zeros((len(queries), values.shape[1]))
    density = np.zeros(len(queries))
    q_ok = np.isfinite(queries).all(-1)
    d2 = ((queries[q_ok, None, :] - points[None]) ** 2).sum(-1)
    w = np.exp(-d2 / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    w[d2 > (truncate * sigma) ** 2] = 0
    z = w.sum(-1)
    density[q_ok] = z
    out[q_ok] = np.divide(w @ values, z[:, None], out=np.zeros_like(out[q_ok]),
                          where=z[:, None] > 0)
    return out, density


def gmm_grid(points, values, sigma, shape, truncate=3.0):
    """(out (H, W, C), density (H, W)) at the pixel centres."""
    h, w = shape
    out, density = gmm(points, values, sigma, pixel_centres(h, w), truncate)
    return out.reshape(h, w, -1), density.reshape(h, w)
