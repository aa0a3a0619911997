"""Time per channel of the grid forward: 256 x 256, 4,096 points, sigma 2, C from 1 to 1024.

Prints, per C, the median of 7 calls (the calls interleaved over C) and the
time per channel. experiments/results/channel_groups_ab.md has an A/B of two
builds made with it (swap the native module between processes).

Usage: python experiments/channel_cost.py
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_gmm

POINTS, SIZE, SIGMA, REPEATS = 4096, 256, 2.0, 7
CHANNELS = (1, 3, 8, 16, 48, 96, 192, 384, 1024)


def main() -> None:
    rng = np.random.default_rng(0)
    points = jnp.asarray(rng.uniform(0, SIZE, (POINTS, 2)), jnp.float32)
    render = jax.jit(lambda v: jax_gmm.interpolate(points, v, SIGMA, (SIZE, SIZE)))
    values = {c: jnp.asarray(rng.uniform(0, 1, (POINTS, c)), jnp.float32) for c in CHANNELS}
    for v in values.values():
        render(v).block_until_ready()  # compiles every shape first
    seconds = {c: [] for c in CHANNELS}
    for _ in range(REPEATS):
        for c, v in values.items():
            start = time.perf_counter()
            render(v).block_until_ready()
            seconds[c].append(time.perf_counter() - start)
    for c, times in seconds.items():
        ms = np.median(times) * 1e3
        print(f"C = {c:4d}: {ms:8.2f} ms, {ms / c * 1e3:7.1f} us per channel "
              f"(range {min(times) * 1e3:.2f}-{max(times) * 1e3:.2f} ms)")


if __name__ == "__main__":
    main()
