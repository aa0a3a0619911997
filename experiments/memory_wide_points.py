"""Peak memory of one large render with wide points, forward and value_and_grad.

The case of issue 11's memory target: an 8192 x 8192 RGB image in float64
from 100,000 points uniform over it with sigma uniform in [900, 1100], so that
each cutoff box covers about half the image. Each measurement runs in a fresh
process (peak RSS from /proc/self/status, VmHWM, reset after compiling and
making the inputs) and prints one JSON line; without --mode the script runs
the lines of RUNS in turn and writes experiments/results/memory_wide_points.md.

    python experiments/memory_wide_points.py        # about two hours on 2 cores
    python experiments/memory_wide_points.py --mode value_and_grad --points 2000
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

import jax_gmm  # noqa: E402
from jax_gmm import _remat  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench.environment import environment  # noqa: E402
from bench.probes import _reset_peak, _resident_mib  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "memory_wide_points.md"
# (mode, remat_rows, points): remat_rows None is the default, which bands
# this image, and a value >= H keeps the whole image's residuals, as every call
# did before bands existed; points None is --points. A few points compare the
# two cheaply (the whole image's backward at 100,000 points takes an hour).
RUNS = (("forward", None, None), ("value_and_grad", None, None),
        ("value_and_grad", None, 2000), ("value_and_grad", 1 << 30, 2000))


def measure(mode: str, size: int, points: int, remat_rows: int | None) -> dict:
    # Made on the device: a cotangent made with jnp.asarray from a NumPy array
    # was copied once more when the call ran (1.5 GiB more at the peak).
    keys = jax.random.split(jax.random.key(0), 4)
    p = jax.random.uniform(keys[0], (points, 2), jnp.float64, 0, size)
    v = jax.random.uniform(keys[1], (points, 3), jnp.float64)
    s = jax.random.uniform(keys[2], (points,), jnp.float64, 900, 1100)
    def render(p, v, s):
        return jax_gmm.interpolate(p, v, s, (size, size), remat_rows=remat_rows)

    if mode == "forward":
        args = (p, v, s)
        f = jax.jit(render)
    else:
        cotangent = jax.random.uniform(keys[3], (size, size, 3), jnp.float64, -1, 1)
        args = (p, v, s, cotangent)
        f = jax.jit(jax.value_and_grad(lambda p, v, s, c: jnp.vdot(render(p, v, s), c),
                                       (0, 1, 2)))
    jax.block_until_ready(args)  # made before the peak is reset, not during the call
    compiled = f.lower(*args).compile()
    before = _resident_mib()["VmRSS"]
    _reset_peak()
    start = time.perf_counter()
    result = jax.block_until_ready(compiled(*args))
    seconds = time.perf_counter() - start
    peak = _resident_mib()["VmHWM"]  # before the finiteness check allocates
    finite = all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(result))
    return {"size": size, "points": points, "mode": mode, "remat_rows": remat_rows,
            "seconds": seconds, "before_mib": before, "peak_mib": peak, "finite": finite}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--mode", choices=("forward", "value_and_grad"))
    parser.add_argument("--remat-rows", type=int)
    a = parser.parse_args()
    if a.mode:
        print(json.dumps(measure(a.mode, a.size, a.points, a.remat_rows)), flush=True)
        return
    rows = []
    for mode, remat_rows, points in RUNS:
        command = [sys.executable, __file__, "--size", str(a.size), "--points",
                   str(points or a.points), "--mode", mode]
        command += ["--remat-rows", str(remat_rows)] if remat_rows else []
        line = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(line.splitlines()[-1]))
        print(rows[-1], flush=True)
    write_results(rows)


def residuals(row: dict) -> str:
    """How the measured call kept what its backward needs."""
    if row["mode"] == "forward":
        return "none (not differentiated)"
    size = row["size"]
    rows = row["remat_rows"] or _remat.auto_rows(size, size, 3, 8, row["points"])
    return "whole image" if rows >= size else f"bands of {rows} rows"


def write_results(rows: list[dict]) -> None:
    """The markdown table of measure's results."""
    env = environment()
    machine = (f"{env['cpu']}, {env['cores']} cores, jax {env['jax']}, CPU kernel"
               f" {env['jax_gmm_cpu_kernel']}")
    table = "\n".join(
        f"| {r['size']}² | {r['points']:,} | {r['mode']} | {residuals(r)} | {r['seconds']:.0f} s"
        f" | {r['peak_mib']:.0f} MiB | {r['before_mib']:.0f} MiB | {r['finite']} |" for r in rows)
    RESULTS.write_text(
        "# Memory with wide points: sigma 900-1100, float64, C = 3 (CPU)\n\n"
        f"{datetime.date.today()}, {machine}; `python experiments/memory_wide_points.py`"
        " (its docstring has the case). One fresh process per line; the peak is the"
        " process's resident set (VmHWM) over the one call, and \"before\" is after"
        " compiling and making the inputs (value_and_grad differentiates vdot(out,"
        " cotangent) and holds its cotangent, 1.5 GiB at 8192², there already). \"bands\""
        " is the default `remat_rows` for an image whose out and density would take over 1"
        " GiB: no image-sized residuals, the image rendered twice; \"whole image\" passes"
        " remat_rows >= H and keeps them, as every call did before bands existed.\n\n"
        "| image | points | call | residuals | time | peak RSS | before the call | finite |\n"
        f"|---|---|---|---|---|---|---|---|\n{table}\n")


if __name__ == "__main__":
    main()
