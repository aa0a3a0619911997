"""What a thin Gaussian costs: the CPU grid forward and value_and_grad for
Gaussians of one shape, tilted at several angles, beside round ones of the
ellipse's long axis (what a box from the largest axis would cost) and of its
area. Writes experiments/results/covariance_cost.md (float32) or
covariance_cost_float64.md.

    python experiments/covariance_cost.py [--points 20000] [--size 512] [--rounds 3]
                                          [--dtype float32|float64]

Each round times every case (median of 9 calls) one after another; the table
gives the range over the rounds, of the times and of each round's ratio to
the axis-aligned case, since this shared machine's noise spreads them.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import jax_gmm
from ab_builds import median_seconds
from bench.environment import environment
from query_speed import span

RESULTS = pathlib.Path(__file__).parent / "results"


def covariances(n: int, long: float, short: float, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s], [s, c]])
    cov = rotation @ np.diag([long**2, short**2]) @ rotation.T
    return np.broadcast_to(cov, (n, 2, 2))


def median_ms(run, repeats: int = 9) -> float:
    return 1e3 * median_seconds(run, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--long", type=float, default=8.0, help="long axis sigma, pixels")
    parser.add_argument("--short", type=float, default=0.5, help="short axis sigma, pixels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = parser.parse_args()
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    n, shape = args.points, (args.size, args.size)
    points = jnp.asarray(rng.uniform(0, args.size, (n, 2)), dtype)
    values = jnp.asarray(rng.uniform(size=(n, 3)), dtype)
    target = jnp.asarray(rng.uniform(size=shape + (3,)), dtype)
    forward = jax.jit(lambda s: jax_gmm.interpolate(points, values, s, shape))
    value_and_grad = jax.jit(jax.value_and_grad(
        lambda p, v, s: ((jax_gmm.interpolate(p, v, s, shape) - target) ** 2).sum(),
        argnums=(0, 1, 2)))
    rows = []
    cases = [(f"{args.long:g} x {args.short:g}, tilted {deg} degrees",
              covariances(n, args.long, args.short, np.deg2rad(deg))) for deg in (0, 10, 30, 45)]
    cases += [(f"round, sigma {args.long:g} (the long axis)", np.full(n, args.long)),
              (f"round, sigma {np.sqrt(args.long * args.short):.2f} (the same area)",
               np.full(n, np.sqrt(args.long * args.short)))]
    sigmas = [jnp.asarray(sigma, dtype) for _, sigma in cases]
    # times[r][k] = (forward ms, value_and_grad ms) of case k in round r
    times = [[(median_ms(lambda: forward(sigma)),
               median_ms(lambda: value_and_grad(points, values, sigma))) for sigma in sigmas]
             for _ in range(args.rounds)]

    env = environment()
    dtype_flag = "" if args.dtype == "float32" else f" --dtype {args.dtype}"
    lines = [f"# What a thin Gaussian costs ({n} points, {shape[0]}x{shape[1]}, C = 3, {dtype}, "
             f"CPU, {jax.device_count()} device(s))", "",
             f"{datetime.date.today()}, {env['cpu']}, {env['cores']} cores, jax {env['jax']}, CPU"
             f" kernel {env['jax_gmm_cpu_kernel']}; `python experiments/covariance_cost.py"
             f" --rounds {args.rounds}{dtype_flag}`: each cell is the range over the rounds of"
             " the median of 9 calls, or of each round's ratio to the axis-aligned case.", "",
             "| Gaussians | forward ms | vs axis-aligned | value_and_grad ms | vs axis-aligned |",
             "|---|---|---|---|---|"]
    for k, (name, _) in enumerate(cases):
        f = [t[k][0] for t in times]
        g = [t[k][1] for t in times]
        f_ratio = [t[k][0] / t[0][0] for t in times]
        g_ratio = [t[k][1] / t[0][1] for t in times]
        lines.append(f"| {name} | {span(f, 1, 1)} | {span(f_ratio, 1, 2)} | {span(g, 1, 1)} | "
                     f"{span(g_ratio, 1, 2)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    name = "covariance_cost.md" if args.dtype == "float32" else "covariance_cost_float64.md"
    (RESULTS / name).write_text(text)


if __name__ == "__main__":
    main()
