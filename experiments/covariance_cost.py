"""What a thin Gaussian costs: the CPU grid forward and value_and_grad for
Gaussians of one shape, tilted at several angles, beside round ones of the
ellipse's long axis (what a box from the largest axis would cost) and of its
area. Writes experiments/results/covariance_cost.md.

    python experiments/covariance_cost.py [--points 20000] [--size 512]
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import jax_gmm
from ab_builds import median_seconds

RESULTS = pathlib.Path(__file__).parent / "results"


def covariances(n: int, long: float, short: float, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s], [s, c]])
    cov = rotation @ np.diag([long**2, short**2]) @ rotation.T
    return np.broadcast_to(cov, (n, 2, 2)).astype(np.float32)


def median_ms(run, repeats: int = 9) -> float:
    return 1e3 * median_seconds(run, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--long", type=float, default=8.0, help="long axis sigma, pixels")
    parser.add_argument("--short", type=float, default=0.5, help="short axis sigma, pixels")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, shape = args.points, (args.size, args.size)
    points = jnp.asarray(rng.uniform(0, args.size, (n, 2)), jnp.float32)
    values = jnp.asarray(rng.uniform(size=(n, 3)), jnp.float32)
    target = jnp.asarray(rng.uniform(size=shape + (3,)), jnp.float32)
    forward = jax.jit(lambda s: jax_gmm.interpolate(points, values, s, shape))
    value_and_grad = jax.jit(jax.value_and_grad(
        lambda p, v, s: ((jax_gmm.interpolate(p, v, s, shape) - target) ** 2).sum(),
        argnums=(0, 1, 2)))
    rows = []
    cases = [(f"{args.long:g} x {args.short:g}, tilted {deg} degrees",
              covariances(n, args.long, args.short, np.deg2rad(deg))) for deg in (0, 10, 30, 45)]
    cases += [(f"round, sigma {args.long:g} (the long axis)", np.full(n, args.long, np.float32)),
              (f"round, sigma {np.sqrt(args.long * args.short):.2f} (the same area)",
               np.full(n, np.sqrt(args.long * args.short), np.float32))]
    for name, sigma in cases:
        sigma = jnp.asarray(sigma)
        rows.append((name, median_ms(lambda: forward(sigma)),
                     median_ms(lambda: value_and_grad(points, values, sigma))))
    base_f, base_g = rows[0][1], rows[0][2]
    lines = [f"# What a thin Gaussian costs ({n} points, {shape[0]}x{shape[1]}, C = 3, float32, "
             f"CPU, {jax.device_count()} device(s), median of 9 calls)", "",
             "| Gaussians | forward ms | vs axis-aligned | value_and_grad ms | vs axis-aligned |",
             "|---|---|---|---|---|"]
    for name, f, g in rows:
        lines.append(f"| {name} | {f:.1f} | {f / base_f:.2f} | {g:.1f} | {g / base_g:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "covariance_cost.md").write_text(text)


if __name__ == "__main__":
    main()
