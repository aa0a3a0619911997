"""The GMM mean at arbitrary queries with KeOps (pykeops, on the CPU here),
as issue 11's comparator for `interpolate_at`: its block-sparse reduction,
the form KeOps documents for kernels that vanish beyond a radius.

Queries and points are sorted into square cells two cutoff radii wide; a
query's cell then meets the points of its own cell and its eight neighbours
only (every pair within the cutoff lies there), and `step` drops the pairs
past the cutoff inside those blocks. Every point has the same width, so the
Gaussian's normaliser cancels in the mean. The sorting, the block table and
the return to the queries' order are all timed with the reduction.
"""

from __future__ import annotations

import numpy as np
import pykeops
from pykeops.numpy import LazyTensor
from pykeops.numpy.cluster import from_matrix

VERSION = pykeops.__version__


def interpolate_at(points: np.ndarray, values: np.ndarray, sigma: float, queries: np.ndarray,
                   truncate: float = 3.0) -> np.ndarray:
    """(M, C) Gaussian-weighted mean of values (N, C) at queries (M, 2), round
    points of width sigma, 0 where no point is within truncate * sigma."""
    radius = truncate * sigma
    cell = 2 * radius
    origin = np.minimum(points.min(0), queries.min(0))
    shape = np.floor((np.maximum(points.max(0), queries.max(0)) - origin) / cell).astype(int) + 1
    cells = int(shape[0] * shape[1])

    def cell_of(x: np.ndarray) -> np.ndarray:
        k = np.floor((x - origin) / cell).astype(np.int64)
        return k[:, 0] * shape[1] + k[:, 1]

    def ranges(cell_index: np.ndarray) -> np.ndarray:  # [start, end) of every cell, sorted
        counts = np.bincount(cell_index, minlength=cells)
        ends = np.cumsum(counts)
        return np.stack([ends - counts, ends], 1).astype(np.int32)

    query_cells, point_cells = cell_of(queries), cell_of(points)
    query_order = np.argsort(query_cells, kind="stable")
    point_order = np.argsort(point_cells, kind="stable")
    cx, cy = np.divmod(np.arange(cells), shape[1])
    neighbours = (np.abs(cx[:, None] - cx[None, :]) <= 1) & (np.abs(cy[:, None] - cy[None, :]) <= 1)
    blocks = from_matrix(ranges(query_cells), ranges(point_cells), neighbours)

    # Each point's values, then a 1 whose sum is the normaliser Z.
    weighted = np.concatenate([values, np.ones((len(points), 1), values.dtype)], 1)[point_order]
    q = LazyTensor(np.ascontiguousarray(queries[query_order])[:, None, :])
    p = LazyTensor(np.ascontiguousarray(points[point_order])[None, :, :])
    d2 = ((q - p) ** 2).sum(-1)
    dtype = points.dtype.type
    kernel = (-d2 / dtype(2 * sigma * sigma)).exp() * (dtype(radius * radius) - d2).step()
    kernel.ranges = blocks
    sums = np.empty((len(queries), weighted.shape[1]), weighted.dtype)
    sums[query_order] = (kernel * LazyTensor(weighted[None, :, :])).sum(1)
    z = sums[:, -1:]
    return np.where(z > 0, sums[:, :-1] / np.where(z > 0, z, 1), 0)
