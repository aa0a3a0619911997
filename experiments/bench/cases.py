"""What the benchmark times: `Case` (one configuration), `Preset` (the cases
and limits of one run) and the presets of the command line, `PRESETS`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Case:
    """One timed configuration.

    height, width: output image, pixels (labels say W x H). points: N per
    image. sigma: pixels. layout: "uniform" (points uniform over the image)
    or "jittered_grid" (N points on a regular grid of the image's aspect,
    one per cell, plus N(0, 1 px) noise) or "outside" (points uniform over
    an image-sized area whose right edge lies one image width left of the
    image: no pixel is reached, so the call only writes its zero output).
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
        layout = {"uniform": "", "jittered_grid": ", jittered grid",
                  "outside": " outside the image"}[self.layout]
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
    pause_s: untimed pause after every timed call (timing.py says why); 0
    times the calls back to back, each paying for what the last left behind.
    """

    name: str
    cases: tuple[Case, ...]
    repeats: int
    budgets: dict[str, float]
    memory: tuple[tuple[Case, str], ...] = ()
    threads: tuple[Case, ...] = ()
    case_seconds: float = 30.0
    pause_s: float = 0.05


def case_from_dict(d: dict) -> Case:
    """The `Case` that `dataclasses.asdict` made `d` from."""
    return Case(**{**d, "comparators": tuple(d["comparators"])})


def _both_modes(case: Case) -> tuple[Case, ...]:
    return tuple(dataclasses.replace(case, mode=m) for m in ("forward", "value_and_grad"))


def _with_methods(cases: Sequence[Case], methods: Sequence[str]) -> tuple[tuple[Case, str], ...]:
    return tuple((case, method) for case in cases for method in methods)


# The acceptance case of the issue: 1024^2 output, 65,536 points, sigma 2.
HEADLINE = Case(1024, 1024, 65536, 2.0)
# Memory acceptance case: 4096^2 output from 1,048,576 points at sigma 2.
BIG = Case(4096, 4096, 1 << 20, 2.0, comparators=("scatter",))
# Output-bound case: 4096^2 output that no point reaches, against XLA writing
# an output of the same size (the "fill" comparator).
OUTPUT_BOUND = Case(4096, 4096, 1024, 2.0, layout="outside", comparators=("fill",))
# Batch case: vmap over 64 images of 256^2 with shared points, against a
# Python loop of single-image calls, and against XLA writing the vmap's output
# (50 MB, a fresh allocation on every call: the vmap's floor).
BATCH = Case(256, 256, 4096, 2.0, batch=64, comparators=("loop", "fill"))
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
            *batched, *scaling, OUTPUT_BOUND, BATCH)


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
