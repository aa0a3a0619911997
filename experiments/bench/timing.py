"""Timing of one case in this process: every method checked against jax_gmm,
then called in turn with an untimed pause after each call."""

from __future__ import annotations

import dataclasses
import resource
import time
from typing import Any

import jax
import numpy as np

from .cases import Case, Preset
from .inputs import make_inputs, pairs_in_cutoff
from .methods import Runner, make_runner, skip_reason

# A comparator agrees with jax_gmm when every leaf of its result is within
# this fraction of that leaf's largest magnitude (float32 sums of ~100 terms).
AGREEMENT_TOL = 1e-4


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
    (median CPU seconds the process spent in the pause after a call), or
    skipped.

    The pause (preset.pause_s) comes after every timed call, outside the
    timing. The runtime frees a program's temporaries after its results are
    ready: for (a), hundreds of MB of them, about 10 ms of kernel time on a
    2-core machine. Without the pause that work lands in the next call,
    whichever method it is.
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
            time.sleep(preset.pause_s)
            tails[method].append(_process_cpu_s() - before)
    for method, samples in times.items():
        methods[method].update(median_s=float(np.median(samples)), times_s=samples,
                               tail_cpu_s=float(np.median(tails[method])))
    return {"case": dataclasses.asdict(case), "label": case.label(),
            "pairs": pairs_in_cutoff(case, inputs.points), "methods": methods}
