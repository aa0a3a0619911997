"""A/B timing of two builds of jax_gmm on the same cases, to show that a change
costs no speed: the installed package (B) against another checkout with its
native modules built in place (A), for example the commit before the change:

    git worktree add /tmp/base <commit>
    cmake -S /tmp/base -B /tmp/base-build -G Ninja -DJAX_GMM_CUDA=OFF && cmake --build /tmp/base-build
    cp /tmp/base-build/*.so /tmp/base/jax_gmm/
    python experiments/ab_builds.py --base /tmp/base --rounds 5

Each round runs A then B, each in a fresh process (strict alternation of
whole processes, so neither build warms the other's caches); every process
times each case back to back (median of `--repeats` calls after a warm-up).
The table gives, per case, the median over rounds of B / A and the range of
that ratio over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

SIZE, POINTS, CHANNELS, QUERIES = 512, 26_214, 3, 262_144


def cases():
    """name -> zero-argument function returning a JAX result (float32, round sigma)."""
    import jax
    import jax.numpy as jnp

    import jax_gmm
    rng = np.random.default_rng(0)
    shape = (SIZE, SIZE)
    p = jnp.asarray(rng.uniform(0, SIZE, (POINTS, 2)), jnp.float32)
    v = jnp.asarray(rng.uniform(size=(POINTS, CHANNELS)), jnp.float32)
    s = jnp.asarray(rng.uniform(1.0, 3.0, POINTS), jnp.float32)
    q = jnp.asarray(rng.uniform(0, SIZE, (QUERIES, 2)), jnp.float32)
    target = jnp.asarray(rng.uniform(size=shape + (CHANNELS,)), jnp.float32)
    grid = jax.jit(lambda p, v, s: jax_gmm.interpolate(p, v, s, shape))
    grid_grad = jax.jit(jax.value_and_grad(
        lambda p, v, s: ((jax_gmm.interpolate(p, v, s, shape) - target) ** 2).sum(),
        argnums=(0, 1, 2)))
    at = jax.jit(jax_gmm.interpolate_at)
    at_grad = jax.jit(jax.value_and_grad(
        lambda p, v, s, q: (jax_gmm.interpolate_at(p, v, s, q) ** 2).sum(), argnums=(0, 1, 2, 3)))
    return {"grid forward": lambda: grid(p, v, s),
            "grid value_and_grad": lambda: grid_grad(p, v, s),
            "queries forward": lambda: at(p, v, s, q),
            "queries value_and_grad": lambda: at_grad(p, v, s, q)}


def median_seconds(run, repeats: int) -> float:
    """Median wall time of `run()` (a JAX computation) over `repeats` calls after a warm-up."""
    import jax
    jax.block_until_ready(run())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def time_cases(repeats: int) -> dict[str, float]:
    return {name: median_seconds(run, repeats) for name, run in cases().items()}


def worker(base: str | None, repeats: int) -> None:
    if base:  # import the other checkout, not the installed package
        sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        sys.path = [base] + [p for p in sys.path
                             if not os.path.isfile(os.path.join(p or ".", "jax_gmm", "__init__.py"))]
    import jax_gmm
    times = time_cases(repeats)
    print(json.dumps({"module": jax_gmm.__file__, "times": times}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="checkout A, with its .so files in jax_gmm/")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--worker", choices=["a", "b"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.base if args.worker == "a" else None, args.repeats)
        return
    runs = {"a": [], "b": []}
    for _ in range(args.rounds):
        for side in "ab":
            out = subprocess.run([sys.executable, __file__, "--base", args.base, "--worker", side,
                                  "--repeats", str(args.repeats)], capture_output=True, text=True,
                                 check=True, cwd="/")
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"A: {runs['a'][0]['module']}\nB: {runs['b'][0]['module']}")
    print(f"{args.rounds} rounds, A then B in fresh processes; median of {args.repeats} calls each\n")
    print("| case | A ms (median) | B ms (median) | B / A median | B / A range |")
    print("|---|---|---|---|---|")
    for name in runs["a"][0]["times"]:
        a = np.array([r["times"][name] for r in runs["a"]]) * 1e3
        b = np.array([r["times"][name] for r in runs["b"]]) * 1e3
        ratio = b / a
        print(f"| {name} | {np.median(a):.1f} | {np.median(b):.1f} | {np.median(ratio):.2f} "
              f"| {ratio.min():.2f}-{ratio.max():.2f} |")


if __name__ == "__main__":
    main()
