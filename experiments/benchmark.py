"""Speed, throughput and memory of jax_gmm against what a user would otherwise run.

    python experiments/benchmark.py --quick      # under 2 minutes on 2 CPU cores
    python experiments/benchmark.py --full       # every case of the grid (hours on 2 cores)
    python experiments/benchmark.py --gpu-quick  # the three GPU acceptance cases

It times whichever platform jax runs on (CPU or GPU; the report says which).
Each case renders an H x W x C image from N random points (or a jittered
grid of points) with `jax_gmm.interpolate`, forward only or forward+backward
(`jax.value_and_grad` of sum(out * cotangent) in points, values and sigma),
for one image or a vmap over a batch with shared or per-image points. In the
same process, alternating call by call with jax_gmm, it times:

  (a) scatter:   the pure-JAX formulation a user would write: for every point
                 a (2r+1)^2 window of pixels, r = ceil(truncate * sigma),
                 masked by the cutoff and the image bounds, `.at[].add` into
                 flat (H*W, C) and (H*W,) buffers, jit-compiled (and jax.grad
                 of it);
  (b) reference: `jax_gmm.reference`, the dense pure-JAX version (all pairs);
  (c) griddata:  `scipy.interpolate.griddata(method="linear")`, forward of
                 one image only (another interpolant, so it is not compared);
  loop:          a Python loop of single-image jax_gmm calls (batched cases).

Every JAX method is compiled ahead of time and called once (warm-up, not
timed); that first result must agree with jax_gmm's to within 1e-4 of its
largest magnitude, leaf by leaf, or the comparator is reported as a mismatch
and not timed. Then each method is called `repeats` times in turn, with an
untimed pause (SETTLE_S) after every call so that the work a program leaves
behind (freeing its temporaries) is not billed to the next one, and the
medians are reported; the CPU time spent in those pauses is reported too. A comparator whose cost would exceed the preset's
budget (window entries for (a), pairs for (b), pixels for (c)) is skipped and
says so.

"Pairs" are the (point, pixel) pairs inside the cutoff, counted exactly (in
float64) for every case; pairs/s is that count over the median time.

Peak memory is measured in a fresh subprocess per (case, method): its peak
resident set during one call (VmHWM, reset after import, inputs and
compilation) and its resident set before the call; on a GPU also the device
allocator's peak. The 1 vs all threads speed-up runs jax_gmm in
subprocesses with and without JAX_GMM_NUM_THREADS=1. The throughput floor
is experiments/floor/floor.cc, compiled here with g++ and run on all cores
(see that file).

Writes benchmark_<preset>_<platform>.{md,json,png} to --out (default
~/jax_gmm_results; the committed ones are in experiments/results).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

# Neither jax_gmm nor the comparators call BLAS, but numpy/scipy's OpenBLAS
# threads spin-wait after any BLAS use and would take cycles from both of the
# 2 cores being measured. Must be set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax
import jax.numpy as jnp
import numpy as np

import jax_gmm

# Outside the source tree, as experiments/common.py's RESULTS.
RESULTS_DIR = Path.home() / "jax_gmm_results"
FLOOR_SOURCE = Path(__file__).resolve().parent / "floor" / "floor.cc"

# A comparator agrees with jax_gmm when every leaf of its result is within
# this fraction of that leaf's largest magnitude (float32 sums of ~100 terms).
AGREEMENT_TOL = 1e-4

# Below about this many pairs, fixed per-call and per-pixel costs dominate;
# the slope is also fitted above it.
SLOPE_MIN_PAIRS = 1e6

# Pause after every timed call, outside the timing. The runtime frees a
# program's temporaries after its results are ready: for (a), hundreds of MB
# of them, about 10 ms of kernel time on this 2-core machine. Without the
# pause that work lands in the next call, whichever method it is. The CPU
# time each method leaves behind is measured during the pause and reported.
SETTLE_S = 0.05

COMPARATORS = ("scatter", "reference", "griddata", "loop")
LABELS = {"scatter": "(a) scatter", "reference": "(b) reference", "griddata": "(c) griddata",
          "loop": "loop"}


@dataclass(frozen=True)
class Case:
    """One timed configuration.

    height, width: output image, pixels (labels say W x H). points: N per
    image. sigma: pixels. layout: "uniform" (points uniform over the image)
    or "jittered_grid" (N points on a regular grid of the image's aspect,
    one per cell, plus N(0, 1 px) noise).
    batch: images per call (vmap when > 1); shared: one set of points for
    every image of the batch. mode: "forward" or "value_and_grad".
    comparators: the ones to try, subject to the preset's budgets.
    """

    height: int
    width: int
    points: int
    sigma: float
    mode: str = "forward"
    truncate: float = 3.0
    channels: int = 3
    batch: int = 1
    shared: bool = True
    layout: str = "uniform"
    comparators: tuple[str, ...] = ("scatter", "reference", "griddata")

    def label(self) -> str:
        """Short human-readable description for tables."""
        whose = "shared" if self.shared else "own"
        batch = "" if self.batch == 1 else f", batch {self.batch} {whose} pts"
        layout = "" if self.layout == "uniform" else ", jittered grid"
        return (f"{self.width}x{self.height}, N={self.points}{layout}, sigma={self.sigma:g}, "
                f"t={self.truncate:g}, C={self.channels}{batch}")

    def window(self) -> int:
        """Half-width r = ceil(truncate * sigma) of the scatter window, pixels."""
        return math.ceil(self.truncate * self.sigma)


@dataclass(frozen=True)
class Preset:
    """Cases and limits of one run.

    budgets: per comparator, the largest cost it is run at: window entries
    batch * N * (2r+1)^2 for scatter, pairs batch * N * H * W for reference,
    pixels H * W for griddata. memory: (case, method) pairs whose peak memory
    is probed. threads: cases timed with 1 and all threads.
    case_seconds: target time for the timed repeats of one case; repeats drop
    towards 3 when calls are slower.
    """

    name: str
    cases: tuple[Case, ...]
    repeats: int
    budgets: dict[str, float]
    memory: tuple[tuple[Case, str], ...] = ()
    threads: tuple[Case, ...] = ()
    case_seconds: float = 30.0


def _both_modes(case: Case) -> tuple[Case, ...]:
    return tuple(dataclasses.replace(case, mode=m) for m in ("forward", "value_and_grad"))


def _with_methods(cases: Sequence[Case], methods: Sequence[str]) -> tuple[tuple[Case, str], ...]:
    return tuple((case, method) for case in cases for method in methods)


# The acceptance case of the issue: 1024^2 output, 65,536 points, sigma 2.
HEADLINE = Case(1024, 1024, 65536, 2.0)
# Memory acceptance case: 4096^2 output from 1,048,576 points at sigma 2.
BIG = Case(4096, 4096, 1 << 20, 2.0, comparators=("scatter",))
SIGMAS = (0.5, 1.0, 2.0, 4.0, 8.0)
DENSITIES = (1 / 16, 1 / 4)  # points per pixel


def _sweep_case(size: int, density: float, sigma: float, **kw: Any) -> Case:
    """size^2 output, density points per pixel; griddata, which does not
    depend on sigma and is slow, only at sigma = 2."""
    comparators = ("scatter", "reference") + (("griddata",) if sigma == 2 else ())
    return Case(size, size, int(size * size * density), sigma, comparators=comparators, **kw)


def _grid_cases(sizes: Sequence[int], batches: Sequence[tuple[int, bool]]) -> tuple[Case, ...]:
    """Every size x density x sigma x batch x mode of the issue's grid."""
    return tuple(mode_case for size in sizes for density in DENSITIES for sigma in SIGMAS
                 for batch, shared in batches
                 for mode_case in _both_modes(_sweep_case(size, density, sigma, batch=batch,
                                                          shared=shared)))


def _quick_cases() -> tuple[Case, ...]:
    sweep = tuple(_sweep_case(256, d, s) for d in DENSITIES for s in SIGMAS)
    batched = tuple(Case(256, 256, 4096, 2.0, batch=16, shared=shared, mode="value_and_grad",
                         comparators=("scatter",)) for shared in (True, False))
    # jax_gmm alone, to spread the pair counts of the scaling plot.
    scaling = (*_both_modes(Case(512, 512, 65536, 2.0, comparators=())),
               *_both_modes(Case(2048, 2048, 1 << 18, 2.0, comparators=())),
               *(Case(256, 256, 16384, s, mode="value_and_grad", comparators=())
                 for s in (0.5, 8.0)))
    return (*_both_modes(HEADLINE), *sweep,
            Case(256, 256, 4096, 2.0, mode="value_and_grad", comparators=("scatter",)),
            *batched, *scaling)


PRESETS = {
    "quick": Preset(
        "quick", _quick_cases(), repeats=5,
        budgets={"scatter": 1.2e7, "reference": 3e8, "griddata": 512 * 512},
        # (a)'s gradient at 4096^2 takes ~25 s and ~10 GiB: full preset only.
        memory=(*_with_methods(_both_modes(BIG), ("jax_gmm",)), (BIG, "scatter")),
        threads=_both_modes(HEADLINE), case_seconds=6.0),
    "full": Preset(
        "full",
        _grid_cases((256, 512, 1024, 2048), ((1, True),))
        + _grid_cases((256, 512), ((16, True), (16, False))),
        repeats=7,
        budgets={"scatter": 2e8, "reference": 5e9, "griddata": 2048 * 2048},
        memory=_with_methods((*_both_modes(HEADLINE), *_both_modes(BIG)), ("jax_gmm", "scatter")),
        threads=_both_modes(HEADLINE) + _both_modes(Case(2048, 2048, 1 << 20, 4.0))),
    "gpu-quick": Preset(
        "gpu-quick",
        (*_both_modes(dataclasses.replace(HEADLINE, comparators=("scatter",))),
         Case(1700, 2550, 173400, 2.0, mode="value_and_grad", truncate=5.0,
              layout="jittered_grid", comparators=("scatter",)),
         *_both_modes(Case(256, 256, 4096, 2.0, batch=64, comparators=("loop", "scatter")))),
        repeats=10,
        budgets={"scatter": 2e8, "reference": 0, "griddata": 0},
        memory=_with_methods(_both_modes(HEADLINE), ("jax_gmm", "scatter"))),
}


# ----------------------------------------------------------------------------- inputs


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
    if case.layout == "uniform":
        return rng.uniform(0, size, (count, case.points, 2))
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


# ----------------------------------------------------------------------------- methods


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


def _single_image_fn(method: str, case: Case) -> Callable:
    """f(points (N, 2), values (N, C), sigma ()) -> (H, W, C) for a JAX method."""
    shape = (case.height, case.width)
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
    return Runner(lambda: jax.block_until_ready(compiled(*args)), compile_s, lambda r: r)


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
    if method == "loop" and case.batch == 1:
        return "batched cases only"
    cost = {
        "scatter": case.batch * case.points * (2 * case.window() + 1) ** 2,
        "reference": case.batch * case.points * case.height * case.width,
        "griddata": case.height * case.width,
        "loop": 0,
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


# ----------------------------------------------------------------------------- timing


def relative_error(result: Any, expected: Any) -> float:
    """max over leaves of max|result - expected| / max|expected|."""
    errors = []
    for got, want in zip(jax.tree.leaves(result), jax.tree.leaves(expected), strict=True):
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        errors.append(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
    return float(max(errors))


def _repeats(preset: Preset, warm_seconds: float) -> int:
    """Timed calls per method: preset.repeats, fewer (not under 3) when one
    round of calls (warm_seconds, measured at warm-up) is slow."""
    return int(np.clip(preset.case_seconds // max(warm_seconds, 1e-9), 3, preset.repeats))


def _process_cpu_s() -> float:
    """User + system CPU seconds of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_case(case: Case, preset: Preset) -> dict:
    """Checks and times jax_gmm and the case's comparators, alternating calls.

    Returns a dict with the case, its pair count and, per method, either
    median_s (seconds per call), times_s, compile_s, rel_error and tail_cpu_s
    (median CPU seconds the process spent in the SETTLE_S pause after a
    call), or skipped.
    """
    inputs = make_inputs(case)
    args = inputs.device()
    methods: dict[str, dict] = {}
    runners: dict[str, Runner] = {}
    outputs: dict[str, Any] = {}
    warm = 0.0
    for method in ("jax_gmm", *case.comparators):
        reason = None if method == "jax_gmm" else skip_reason(method, case, preset.budgets)
        if reason:
            methods[method] = {"skipped": reason}
            continue
        runner = make_runner(method, case, inputs, args)
        start = time.perf_counter()
        outputs[method] = runner.run()
        warm += time.perf_counter() - start
        methods[method] = {"compile_s": runner.compile_s}
        if method != "jax_gmm" and runner.comparable is not None:
            error = relative_error(runner.comparable(outputs[method]), outputs["jax_gmm"])
            methods[method]["rel_error"] = error
            if not error <= AGREEMENT_TOL:
                methods[method]["skipped"] = f"mismatch: relative error {error:.2g}"
                continue
        runners[method] = runner
    times: dict[str, list[float]] = {m: [] for m in runners}
    tails: dict[str, list[float]] = {m: [] for m in runners}
    for _ in range(_repeats(preset, warm)):
        for method, runner in runners.items():
            start = time.perf_counter()
            runner.run()
            times[method].append(time.perf_counter() - start)
            before = _process_cpu_s()
            time.sleep(SETTLE_S)
            tails[method].append(_process_cpu_s() - before)
    for method, samples in times.items():
        methods[method].update(median_s=float(np.median(samples)), times_s=samples,
                               tail_cpu_s=float(np.median(tails[method])))
    return {"case": dataclasses.asdict(case), "label": case.label(),
            "pairs": pairs_in_cutoff(case, inputs.points), "methods": methods}


# ----------------------------------------------------------------------------- subprocess probes


def _resident_mib() -> dict[str, float]:
    """This process's resident set now (VmRSS) and its peak since the last
    `_reset_peak()` (VmHWM), MiB. Linux only. (ru_maxrss would not do: Linux
    carries it over from the parent through fork and exec.)"""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


def _reset_peak() -> None:
    """Resets VmHWM to the current resident set (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def probe(cases: Sequence[Case], method: str, repeats: int) -> list[dict]:
    """Runs in a fresh process: per case, one warm-up call then `repeats` timed
    calls of `method`. Reports resident memory in MiB: the process's resident
    set just before the first call (after import, inputs and compilation) and
    its peak over the calls, and the device allocator's peak where the
    platform has one."""
    reports = []
    for case in cases:
        inputs = make_inputs(case)
        args = inputs.device()
        runner = make_runner(method, case, inputs, args)
        _reset_peak()
        before = _resident_mib()["VmRSS"]
        runner.run()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            runner.run()
            samples.append(time.perf_counter() - start)
        stats = jax.devices()[0].memory_stats() or {}
        reports.append({
            "median_s": float(np.median(samples)) if samples else None,
            "rss_before_mib": before,
            "rss_peak_mib": _resident_mib()["VmHWM"],
            "device_peak_mib": stats.get("peak_bytes_in_use", 0) / 2**20 or None,
        })
    return reports


def run_probe(cases: Sequence[Case], method: str, repeats: int,
              threads: str | None = None) -> list[dict]:
    """`probe` in a subprocess of this script, so that nothing cached in this
    process (buffers, compiled programs) counts. threads: JAX_GMM_NUM_THREADS
    for it (None: unset, every thread)."""
    request = {"cases": [dataclasses.asdict(c) for c in cases], "method": method,
               "repeats": repeats}
    env = {k: v for k, v in os.environ.items() if k != "JAX_GMM_NUM_THREADS"}
    if threads is not None:
        env["JAX_GMM_NUM_THREADS"] = threads
    # This process may hold most of a GPU's memory already (jax preallocates
    # 75% of it); the probe takes only what it uses, which its peak counts.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    done = subprocess.run([sys.executable, __file__, "--probe", json.dumps(request)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last_line = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return [{"error": last_line} for _ in cases]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _case_from_dict(d: dict) -> Case:
    return Case(**{**d, "comparators": tuple(d["comparators"])})


def measure_memory(preset: Preset) -> list[dict]:
    """Peak memory of one call, per (case, method) of the preset."""
    return [{"case": dataclasses.asdict(case), "label": case.label(), "method": method,
             **run_probe([case], method, repeats=0)[0]} for case, method in preset.memory]


def measure_threads(preset: Preset) -> list[dict]:
    """jax_gmm times with JAX_GMM_NUM_THREADS=1 and with every thread."""
    if not preset.threads:
        return []
    one = run_probe(preset.threads, "jax_gmm", preset.repeats, threads="1")
    every = run_probe(preset.threads, "jax_gmm", preset.repeats)
    rows = []
    for case, single, full in zip(preset.threads, one, every, strict=True):
        speedup = (single["median_s"] / full["median_s"]
                   if single.get("median_s") and full.get("median_s") else None)
        rows.append({"case": dataclasses.asdict(case), "label": case.label(),
                     "one_thread_s": single.get("median_s"), "all_threads_s": full.get("median_s"),
                     "speedup": speedup})
    return rows


# ----------------------------------------------------------------------------- floor


# The library's flags (CMakeLists.txt) for each ISA it builds, and the best
# this CPU can do: the machine's floor is the last.
_FLOOR_COMMON = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd"]
FLOOR_FLAGS = {
    "baseline x86-64": _FLOOR_COMMON,
    "AVX2+FMA": [*_FLOOR_COMMON, "-mavx2", "-mfma"],
    "-march=native": [*_FLOOR_COMMON, "-march=native"],
}


def measure_floor(channels: int, threads: int, seconds: float = 0.5, runs: int = 3) -> dict:
    """Pairs per second of experiments/floor/floor.cc on `threads` threads,
    per set of compiler flags (the best of `runs` runs of `seconds` each: a
    floor is what the machine can do, and other work only slows it), or the
    reason it could not run."""
    compiler = shutil.which("g++")
    if compiler is None:
        return {"error": "g++ not found"}
    floors = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in FLOOR_FLAGS.items():
            binary = Path(tmp) / "floor"
            built = subprocess.run([compiler, "-std=c++17", *flags, "-pthread",
                                    str(FLOOR_SOURCE), "-o", str(binary)],
                                   capture_output=True, text=True)
            if built.returncode != 0:
                return {"error": f"g++ {' '.join(flags)} failed: {built.stderr.strip()[-300:]}"}
            command = [str(binary), str(channels), str(threads), str(seconds)]
            floors[name] = max(float(subprocess.run(command, check=True, capture_output=True,
                                                    text=True).stdout.split()[0])
                               for _ in range(runs))
    return {"channels": channels, "threads": threads, "pairs_per_s": floors}


# ----------------------------------------------------------------------------- environment


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """What the numbers were measured on."""
    import jaxlib

    device = jax.devices()[0]
    info = jax_gmm.build_info()
    backend = jax.default_backend()
    return {
        "platform": backend,
        "device": device.device_kind,
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "jax_gmm_native": {p: (v or {}).get("compile_flags") for p, v in info.items()
                           if p != "jaxlib"},
        # build_info names CUDA "cuda" where jax's backend is "gpu".
        "native_here": info.get({"gpu": "cuda"}.get(backend, backend)) is not None,
        "JAX_GMM_NUM_THREADS": os.environ.get("JAX_GMM_NUM_THREADS"),
        # Other work on the machine skews timings: the 1-minute load average.
        "load_average": os.getloadavg()[0],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# ----------------------------------------------------------------------------- report


def _median(row: dict, method: str) -> float | None:
    return row["methods"].get(method, {}).get("median_s")


def _fmt_time(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.4g}"


def _fmt_ratio(row: dict, method: str) -> str:
    entry = row["methods"].get(method)
    if entry is None:
        return "-"
    if "skipped" in entry:
        return f"skipped ({entry['skipped']})"
    return f"{entry['median_s'] / _median(row, 'jax_gmm'):.3g}x"


def fitted_slope(rows: Sequence[dict], mode: str, min_pairs: float = 0) -> float | None:
    """Least-squares slope of log(time) against log(pairs) for jax_gmm, over
    the cases of `mode` with at least `min_pairs` pairs; None unless their
    pair counts span at least a factor of 10."""
    pts = [(r["pairs"], _median(r, "jax_gmm")) for r in rows
           if r["case"]["mode"] == mode and r["pairs"] >= min_pairs]
    x, y = np.log10(np.array(pts, np.float64).reshape(-1, 2)).T
    if len(pts) < 2 or x.max() - x.min() < 1:
        return None
    return float(np.polyfit(x, y, 1)[0])


def cost_model(rows: Sequence[dict], mode: str) -> dict[str, float] | None:
    """Least-squares fit of jax_gmm's time as a sum of per-item costs,
    t = a * points + b * pairs + c * pixels (each summed over the batch), in
    nanoseconds per item: why time is not a function of pairs alone. None
    with fewer than 4 cases."""
    picked = [r for r in rows if r["case"]["mode"] == mode]
    if len(picked) < 4:
        return None
    counts = np.array([[r["case"]["batch"] * r["case"]["points"], r["pairs"],
                        r["case"]["batch"] * r["case"]["height"] * r["case"]["width"]]
                       for r in picked], np.float64)
    times = np.array([_median(r, "jax_gmm") for r in picked])
    # Relative residuals, so that the small cases count as much as the large.
    coef = np.linalg.lstsq(counts / times[:, None], np.ones(len(picked)), rcond=None)[0]
    return dict(zip(("ns_per_point", "ns_per_pair", "ns_per_pixel"), (coef * 1e9).tolist()))


def _fmt_slope(slope: float | None) -> str:
    return "n/a (pairs span < 10x)" if slope is None else f"{slope:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def timing_table(rows: Sequence[dict]) -> str:
    """Markdown: one line per case, jax_gmm then each comparator's time and ratio
    (only the comparators that some case tried)."""
    tried = [m for m in COMPARATORS if any(m in r["methods"] for r in rows)]
    header = ["case", "mode", "pairs", "jax_gmm s", "pairs/s"]
    for method in tried:
        header += [f"{LABELS[method]} s", f"{LABELS[method]} / jax_gmm"]
    lines = []
    for row in rows:
        t = _median(row, "jax_gmm")
        cells = [row["label"], row["case"]["mode"], f"{row['pairs']:.3g}", _fmt_time(t),
                 f"{row['pairs'] / t:.3g}"]
        for method in tried:
            cells += [_fmt_time(_median(row, method)), _fmt_ratio(row, method)]
        lines.append(cells)
    return _table(header, lines)


def _memory_cells(r: dict) -> list[str]:
    if "error" in r:
        return [f"failed: {r['error']}", "", "", ""]
    device = "-" if r["device_peak_mib"] is None else f"{r['device_peak_mib']:.0f}"
    return [f"{r['rss_peak_mib']:.0f}", f"{r['rss_before_mib']:.0f}",
            f"{r['rss_peak_mib'] - r['rss_before_mib']:.0f}", device]


def memory_table(rows: Sequence[dict]) -> str:
    """Markdown: peak memory per (case, method)."""
    header = ["case", "mode", "method", "peak RSS MiB", "RSS before call MiB", "added MiB",
              "device peak MiB"]
    return _table(header, [[r["label"], r["case"]["mode"], r["method"], *_memory_cells(r)]
                           for r in rows])


def threads_table(rows: Sequence[dict], cores: int) -> str:
    """Markdown: jax_gmm with one thread and with all of them."""
    header = ["case", "mode", "1 thread s", f"{cores} threads s", "speed-up"]
    return _table(header, [[r["label"], r["case"]["mode"], _fmt_time(r["one_thread_s"]),
                            _fmt_time(r["all_threads_s"]),
                            "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"]
                           for r in rows])


def _same_config(case: dict, reference: Case) -> bool:
    """`case` (as a dict) is `reference` in either mode, with any comparators."""
    other = dataclasses.replace(_case_from_dict(case), mode=reference.mode,
                                comparators=reference.comparators)
    return other == reference


def _speed_targets(rows: Sequence[dict], floor: dict) -> list[str]:
    lines = []
    for row in rows:
        if _same_config(row["case"], HEADLINE):
            tails = ", ".join(f"{LABELS.get(m, m)} {v['tail_cpu_s'] * 1e3:.1f} ms"
                              for m, v in row["methods"].items() if "tail_cpu_s" in v)
            lines.append(f"- {row['label']}, {row['case']['mode']}: jax_gmm "
                         f"{_fmt_time(_median(row, 'jax_gmm'))} s, (a) "
                         f"{_fmt_time(_median(row, 'scatter'))} s: (a) / jax_gmm = "
                         f"{_fmt_ratio(row, 'scatter')} (target >= 20x); CPU time left behind "
                         f"after a call (in the {SETTLE_S * 1e3:.0f} ms pause): {tails}")
    forward = [r for r in rows if r["case"]["mode"] == "forward"]
    if floor.get("pairs_per_s") and forward:
        best = max(forward, key=lambda r: r["pairs"] / _median(r, "jax_gmm"))
        headline = [r for r in forward if _same_config(r["case"], HEADLINE)]
        picked = [("best", best)] + [("headline", r) for r in headline if r is not best]
        for what, row in picked:
            rate = row["pairs"] / _median(row, "jax_gmm")
            shares = ", ".join(f"{rate / v:.3f} of the {k} floor"
                               for k, v in floor["pairs_per_s"].items())
            lines.append(f"- {what} forward throughput {rate:.3g} pairs/s ({row['label']}): "
                         f"{shares} (target >= 1/3)")
    return lines


def _memory_targets(memory: Sequence[dict]) -> list[str]:
    lines = []
    for r in memory:
        if _same_config(r["case"], BIG) and "error" not in r:
            target = " (target < 2048 MiB)" if r["method"] == "jax_gmm" else ""
            lines.append(f"- {r['label']}, {r['case']['mode']}: {r['method']} peak RSS "
                         f"{r['rss_peak_mib']:.0f} MiB{target}")
    return lines


def targets(results: dict) -> list[str]:
    """The issue's acceptance numbers, from this run's measurements."""
    cores = results["environment"]["cores"]
    return [*_speed_targets(results["rows"], results["floor"]),
            *_memory_targets(results["memory"]),
            *(f"- 1 -> {cores} threads: {r['speedup']:.2f}x ({r['label']}, {r['case']['mode']})"
              for r in results["threads"] if r["speedup"])]


def markdown(results: dict) -> str:
    """The whole report."""
    env = results["environment"]
    floor = results["floor"]
    floor_text = ("not measured" if not floor else floor["error"] if "error" in floor else
                  ", ".join(f"{k}: {v:.3g} pairs/s" for k, v in floor["pairs_per_s"].items())
                  + f" (C={floor['channels']}, {floor['threads']} threads)")
    costs = "; ".join(f"{mode}: " + ", ".join(f"{v:.3g} {k.replace('_', ' ')}"
                                             for k, v in fit.items())
                      for mode, fit in results["cost_model"].items() if fit)
    slopes = "; ".join(f"{mode}: {_fmt_slope(fits['all'])} over all cases, "
                       f"{_fmt_slope(fits['large'])} over those with >= {SLOPE_MIN_PAIRS:g} pairs"
                       for mode, fits in results["slopes"].items())
    return "\n".join([
        f"# jax_gmm benchmark: {results['preset']} preset on {env['platform']}",
        "",
        f"{env['device']} / CPU {env['cpu']}, {env['cores']} cores; python {env['python']}, "
        f"jax {env['jax']}, jaxlib {env['jaxlib']}; jax_gmm native kernels: "
        + ", ".join(f"{p}: {f or 'none'}" for p, f in env["jax_gmm_native"].items())
        + f"; {env['date']}; whole run {results['elapsed_s']:.0f} s; load average "
        f"{env['load_average']:.1f} at the start, {results['load_average_end']:.1f} at the end.",
        *([] if env["native_here"] else
          ["", f"**No native jax_gmm kernel on {env['platform']}: jax_gmm ran its pure-JAX "
           "reference.**"]),
        "",
        "Median seconds per call after one warm-up call; comparators alternate with jax_gmm, "
        f"with an untimed {SETTLE_S * 1e3:.0f} ms pause after every call (see the targets for "
        "the CPU work each method leaves behind during it), "
        f"and agree with it to {AGREEMENT_TOL:g} relative before they are timed (griddata is "
        "another interpolant and is not compared). pairs: exact count of (point, pixel) pairs "
        "inside the cutoff, summed over the batch; pairs/s is jax_gmm's. value_and_grad "
        "differentiates sum(out * cotangent) in points, values and sigma. Ratios are the "
        "comparator's time over jax_gmm's.",
        "",
        "## Timings",
        "",
        timing_table(results["rows"]),
        "",
        "## Peak memory (fresh process per line)",
        "",
        memory_table(results["memory"]) if results["memory"] else "not measured",
        "",
        "## Threads (jax_gmm, JAX_GMM_NUM_THREADS=1 vs all)",
        "",
        threads_table(results["threads"], env["cores"]) if results["threads"] else "not measured",
        "",
        f"## Throughput floor (experiments/floor/floor.cc)\n\n{floor_text}",
        "",
        "## Scaling",
        "",
        (f"Plot not drawn: {results['plot_missing']}." if results["plot_missing"] else
         f"![time against pairs]({results['plot']})") + " Fitted log-log slopes of jax_gmm time "
        f"against pairs: {slopes}. Least-squares split of jax_gmm's time into costs per "
        f"point, per pair and per output pixel (relative residuals): {costs or 'too few cases'}.",
        "",
        "## Targets",
        "",
        *targets(results),
        "",
    ])


def plot(rows: Sequence[dict], path: Path) -> str | None:
    """Draws log-log time against pairs inside the cutoff, jax_gmm and (a),
    with a slope-1 guide, into `path`; returns why not where it cannot."""
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed"

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for mode, marker in (("forward", "o"), ("value_and_grad", "s")):
        for method, fill in (("jax_gmm", None), ("scatter", "none")):
            pts = [(r["pairs"], _median(r, method)) for r in rows
                   if r["case"]["mode"] == mode and _median(r, method)]
            if pts:
                x, y = zip(*pts)
                ax.loglog(x, y, marker, fillstyle=fill or "full", label=f"{method}, {mode}")
    timed = [(r["pairs"], _median(r, "jax_gmm")) for r in rows]
    x = np.array([p for p, _ in timed], np.float64)
    anchor = np.exp(np.mean(np.log([t / p for p, t in timed])))
    guide = np.array([x.min(), x.max()])
    ax.loglog(guide, anchor * guide, "k--", lw=1, label="slope 1")
    ax.set_xlabel("(point, pixel) pairs inside the cutoff")
    ax.set_ylabel("seconds per call (median)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


# ----------------------------------------------------------------------------- main


def run(preset: Preset, out_dir: Path) -> dict:
    """Runs the preset, writes the report files and returns the results."""
    start = time.perf_counter()
    env = environment()
    if not env["native_here"]:
        print(f"warning: no native jax_gmm kernel on {env['platform']}; "
              "jax_gmm runs its pure-JAX reference", file=sys.stderr)
    rows = []
    for case in preset.cases:
        rows.append(time_case(case, preset))
        print(f"{case.label()} {case.mode}: " + ", ".join(
            f"{m} {_fmt_time(v.get('median_s'))}" for m, v in rows[-1]["methods"].items()),
            flush=True)
    on_cpu = env["platform"] == "cpu"
    stem = f"benchmark_{preset.name}_{env['platform']}"
    results = {
        "preset": preset.name, "environment": env, "rows": rows,
        "memory": measure_memory(preset),
        "threads": measure_threads(preset) if on_cpu else [],
        "floor": measure_floor(HEADLINE.channels, env["cores"]) if on_cpu else {},
        "cost_model": {m: cost_model(rows, m) for m in ("forward", "value_and_grad")},
        "slopes": {m: {"all": fitted_slope(rows, m),
                       "large": fitted_slope(rows, m, SLOPE_MIN_PAIRS)}
                   for m in ("forward", "value_and_grad")},
        "plot": f"{stem}.png",
    }
    results["elapsed_s"] = time.perf_counter() - start
    results["load_average_end"] = os.getloadavg()[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=1))
    results["plot_missing"] = plot(rows, out_dir / results["plot"])
    (out_dir / f"{stem}.md").write_text(markdown(results))
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    for name in PRESETS:
        which.add_argument(f"--{name}", dest="preset", action="store_const", const=name)
    which.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help=f"output folder (default: {RESULTS_DIR})")
    args = parser.parse_args(argv)
    if args.probe:
        request = json.loads(args.probe)
        cases = [_case_from_dict(c) for c in request["cases"]]
        print(json.dumps(probe(cases, request["method"], request["repeats"])))
        return
    results = run(PRESETS[args.preset], args.out)
    print(markdown(results))


if __name__ == "__main__":
    main()
