"""jax_gmm and the comparators it is timed against, each compiled for a case
into a `Runner` that makes one call: (a) scatter, (b) reference, (c) griddata
and the loop of single-image calls, and the budgets that skip them."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jax_gmm

from .cases import Case
from .inputs import Inputs

COMPARATORS = ("scatter", "reference", "griddata", "loop", "fill")
LABELS = {"scatter": "(a) scatter", "reference": "(b) reference", "griddata": "(c) griddata",
          "loop": "loop", "fill": "(d) XLA fill"}


def scatter_interpolate(points: jax.Array, values: jax.Array, sigma: jax.Array, *,
                        shape: tuple[int, int], truncate: float, radius: int) -> jax.Array:
    """(H, W, C) image by windowed scatter-add: comparator (a).

    radius: static half-width r of the (2r+1)^2 window of pixels around
    floor(point); r = ceil(truncate * sigma) covers every pixel centre within
    the cutoff. Costs N (2r+1)^2 window entries of memory and work.
    """
    height, width = shape
    offsets = jnp.arange(-radius, radius + 1)
    corner = jnp.floor(points).astype(jnp.int32)
    col = corner[:, 0, None, None] + offsets[None, None, :]
    row = corner[:, 1, None, None] + offsets[None, :, None]
    dx = col + 0.5 - points[:, 0, None, None]
    dy = row + 0.5 - points[:, 1, None, None]
    d2 = dx * dx + dy * dy
    radius2 = (truncate * sigma) ** 2
    inside = (d2 <= radius2) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    weight = jnp.where(inside, jnp.exp(-d2 / (2 * sigma**2)) / (2 * jnp.pi * sigma**2), 0)
    pixel = jnp.where(inside, row * width + col, 0).ravel()
    channels = values.shape[-1]
    numerator = jnp.zeros((height * width, channels), values.dtype).at[pixel].add(
        (weight[..., None] * values[:, None, None, :]).reshape(-1, channels))
    density = jnp.zeros(height * width, values.dtype).at[pixel].add(weight.ravel())
    reached = density > 0
    out = numerator / jnp.where(reached, density, 1)[:, None]
    return jnp.where(reached[:, None], out, 0).reshape(height, width, channels)


def _fill(points: jax.Array, values: jax.Array, sigma: jax.Array, *,
          shape: tuple[int, int]) -> jax.Array:
    """Zeros of the output's shape and dtype, computed from the inputs so that
    XLA writes them on every call: comparator (d), the floor of a call that
    writes an image (the output-bound case, where no point reaches a pixel).
    jax_gmm's forward, asked for no density, writes the same bytes."""
    return jnp.broadcast_to(values[0, 0] * 0, (*shape, values.shape[-1]))


def _single_image_fn(method: str, case: Case) -> Callable:
    """f(points (N, 2), values (N, C), sigma ()) -> (H, W, C) for a JAX method."""
    shape = (case.height, case.width)
    if method == "fill":
        return partial(_fill, shape=shape)
    if method == "scatter":
        return partial(scatter_interpolate, shape=shape, truncate=case.truncate,
                       radius=case.window())
    module = jax_gmm.reference if method == "reference" else jax_gmm
    return partial(module.interpolate, shape=shape, truncate=case.truncate)


def _program(fn: Callable, case: Case) -> Callable:
    """The jitted call timed for `case`: f(points, values, sigma, cotangent)."""
    if case.batch > 1:
        fn = jax.vmap(fn, in_axes=(None if case.shared else 0, 0, None))
    if case.mode == "forward":
        return jax.jit(lambda p, v, s, cotangent: fn(p, v, s))
    loss = lambda p, v, s, cotangent: jnp.sum(fn(p, v, s) * cotangent)  # noqa: E731
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


@dataclass
class Runner:
    """One method ready to time: run() makes one call and waits for it;
    comparable(result) lays its result out as jax_gmm's, or is None when the
    method computes another function."""

    run: Callable[[], Any]
    compile_s: float
    comparable: Callable[[Any], Any] | None


def _jax_runner(method: str, case: Case, args: tuple[jax.Array, ...]) -> Runner:
    start = time.perf_counter()
    compiled = _program(_single_image_fn(method, case), case).lower(*args).compile()
    compile_s = time.perf_counter() - start
    # (d) writes zeros: jax_gmm's output only where no point reaches a pixel
    comparable = None if method == "fill" else lambda r: r
    return Runner(lambda: jax.block_until_ready(compiled(*args)), compile_s, comparable)


def _loop_runner(case: Case, args: tuple[jax.Array, ...]) -> Runner:
    """A Python loop of single-image jax_gmm calls over the batch."""
    points, values, sigma, cotangent = args
    single = dataclasses.replace(case, batch=1)
    start = time.perf_counter()
    compiled = _program(_single_image_fn("jax_gmm", single), single).lower(
        points if case.shared else points[0], values[0], sigma, cotangent[0]).compile()
    compile_s = time.perf_counter() - start
    # Split outside the timed call: a user looping over images holds them apart.
    per_image = [(points if case.shared else points[b], values[b], cotangent[b])
                 for b in range(case.batch)]

    def run() -> list:
        return jax.block_until_ready([compiled(p, v, sigma, c) for p, v, c in per_image])

    def comparable(results: list) -> Any:
        if case.mode == "forward":
            return jnp.stack(results)
        losses, grads = zip(*results)
        d_points, d_values, d_sigma = (jnp.stack(g) for g in zip(*grads))
        return (sum(losses), (d_points.sum(0) if case.shared else d_points, d_values,
                              d_sigma.sum(0)))

    return Runner(run, compile_s, comparable)


def _griddata_runner(case: Case, inputs: Inputs) -> Runner:
    """scipy's piecewise-linear interpolation on the Delaunay triangulation, CPU."""
    from scipy.interpolate import griddata

    queries = np.asarray(jax_gmm.reference.pixel_centres(case.height, case.width, jnp.float32))

    def run() -> np.ndarray:
        return griddata(inputs.points, inputs.values, queries, method="linear", fill_value=0)

    return Runner(run, 0.0, None)


def skip_reason(method: str, case: Case, budgets: dict[str, float]) -> str | None:
    """Why `method` is not run for `case`, or None when it is."""
    if method == "griddata" and (case.batch > 1 or case.mode != "forward"):
        return "forward of one image only"
    if method == "fill" and case.mode != "forward":
        return "forward only"
    if method == "loop" and case.batch == 1:
        return "batched cases only"
    cost = {
        "scatter": case.batch * case.points * (2 * case.window() + 1) ** 2,
        "reference": case.batch * case.points * case.height * case.width,
        "griddata": case.height * case.width,
        "loop": 0,
        "fill": 0,
    }[method]
    if cost > budgets.get(method, math.inf):
        return f"cost {cost:.2g} over budget {budgets[method]:.2g}"
    return None


def make_runner(method: str, case: Case, inputs: Inputs, args: tuple[jax.Array, ...]) -> Runner:
    """Compiles `method` ("jax_gmm" or a comparator) for `case`."""
    if method == "griddata":
        return _griddata_runner(case, inputs)
    if method == "loop":
        return _loop_runner(case, args)
    return _jax_runner(method, case, args)
