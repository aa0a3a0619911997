"""Deterministic inputs of a case and its exact count of (point, pixel) pairs
inside the cutoff."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .cases import Case


@dataclass
class Inputs:
    """float32 arrays of one case: points ((B,) N, 2) in pixels (B only when
    not shared), values ((B,) N, C), sigma () in pixels, cotangent ((B,) H, W, C)
    of the output (value_and_grad) or an unused ((B,)) placeholder (forward,
    so that it does not count in the memory of the call)."""

    points: np.ndarray
    values: np.ndarray
    sigma: np.ndarray
    cotangent: np.ndarray

    def device(self) -> tuple[jax.Array, ...]:
        """The arrays on jax's default device, in call order."""
        return tuple(jnp.asarray(x) for x in (self.points, self.values, self.sigma,
                                              self.cotangent))


def _layout_points(case: Case, rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, N, 2) positions (x, y) in pixels."""
    size = np.array([case.width, case.height], np.float64)
    if case.layout in ("uniform", "outside"):
        shift = np.array([-2 * case.width, 0]) if case.layout == "outside" else 0
        return rng.uniform(0, size, (count, case.points, 2)) + shift
    nx = round(math.sqrt(case.points * case.width / case.height))
    ny = case.points // nx
    if nx * ny != case.points:
        raise ValueError(f"{case.points} points make no grid of aspect {case.width}:{case.height}")
    gx, gy = np.meshgrid((np.arange(nx) + 0.5) * case.width / nx,
                         (np.arange(ny) + 0.5) * case.height / ny)
    grid = np.stack([gx.ravel(), gy.ravel()], -1)
    return grid + rng.normal(0, 1, (count, case.points, 2))


def make_inputs(case: Case, seed: int = 0) -> Inputs:
    """Deterministic inputs for `case` (the same in every process)."""
    rng = np.random.default_rng(seed)
    batch_shape = () if case.batch == 1 else (case.batch,)
    points = _layout_points(case, rng, 1 if case.shared else case.batch)
    points = points[0] if case.shared or case.batch == 1 else points
    values = rng.normal(size=(*batch_shape, case.points, case.channels))
    cotangent = (np.zeros(batch_shape) if case.mode == "forward" else
                 rng.normal(size=(*batch_shape, case.height, case.width, case.channels)))
    f32 = partial(np.asarray, dtype=np.float32)
    return Inputs(f32(points), f32(values), f32(case.sigma), f32(cotangent))


def pairs_in_cutoff(case: Case, points: np.ndarray) -> int:
    """Exact number of (point, pixel) pairs with |pixel centre - point| <= truncate * sigma.

    Row by row of each point's window: the pixel centres j + 0.5 of row i
    within the cutoff form one interval, clipped to the image. float64, so a
    pair within rounding of the cutoff may count where float32 kernels do not.
    Shared points count once per image.
    """
    flat = points.reshape(-1, 2).astype(np.float64)
    x, y = flat[:, 0], flat[:, 1]
    radius = case.truncate * case.sigma
    total = 0
    for offset in range(-case.window(), case.window() + 1):
        row = np.floor(y) + offset
        half2 = radius * radius - (row + 0.5 - y) ** 2
        half = np.sqrt(np.maximum(half2, 0))
        lo = np.maximum(np.ceil(x - half - 0.5), 0)
        hi = np.minimum(np.floor(x + half - 0.5), case.width - 1)
        ok = (half2 >= 0) & (row >= 0) & (row < case.height)
        total += int(np.where(ok, np.maximum(hi - lo + 1, 0), 0).sum())
    return total * (case.batch if case.shared and case.batch > 1 else 1)
