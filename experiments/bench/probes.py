"""Measurements that need a fresh process: peak memory of one call, and
jax_gmm with one thread against all. `run_probe` re-runs the entry point,
experiments/benchmark.py, with --probe, which calls `probe` there."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from .cases import Case, Preset
from .inputs import make_inputs
from .methods import make_runner

# The entry point; its --probe argument runs `probe`.
SCRIPT = Path(__file__).resolve().parents[1] / "benchmark.py"


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
    done = subprocess.run([sys.executable, str(SCRIPT), "--probe", json.dumps(request)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last_line = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return [{"error": last_line} for _ in cases]
    return json.loads(done.stdout.strip().splitlines()[-1])


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
