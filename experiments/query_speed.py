"""Speed of `interpolate_at` (arbitrary queries) on the CPU, against the
targets of issue 11: the pixel-centre queries in any order against
`interpolate` computing the same numbers, random queries against the dense
pure-JAX formulation (`jax_gmm.reference.interpolate_at`, all pairs in
blocks), a small call, and the growth with N at few queries; and, with no
target, value_and_grad at random and at few queries against the forward.
Writes experiments/results/query_speed.md, or the file --out names.

    python experiments/query_speed.py [--rounds 3] [--out PATH]

Each round times every case once (median of several calls after a warm-up)
on fresh random inputs; the rounds run one after another, so their spread
shows this shared machine's noise and the inputs' draw. Case and comparator
are timed back to back in the same round. KeOps, which the issue also names,
is timed at the random queries where pykeops is installed (`pip install
pykeops`; keops_comparator.py), after a check that it agrees with jax_gmm.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_gmm

try:
    import keops_comparator
except ImportError:  # pykeops is not installed
    keops_comparator = None

RESULTS = pathlib.Path(__file__).parent / "results"
SIZE, POINTS, SIGMA = 1024, 65536, 2.0
# The dense reference takes minutes at 1,048,576 queries: it is timed on the
# first DENSE_QUERIES of them and its time scaled by M / DENSE_QUERIES (it
# walks the queries in blocks, so its cost is linear in M).
DENSE_QUERIES = 8192


def seconds(fn, *args, repeats: int = 5) -> float:
    """Median wall time of fn(*args) over `repeats` calls after a warm-up."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def inputs(rng: np.random.Generator, n: int) -> tuple[jax.Array, jax.Array]:
    points = rng.uniform(0, SIZE, (n, 2)).astype(np.float32)
    values = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    return jnp.asarray(points), jnp.asarray(values)


def one_round(rng: np.random.Generator) -> dict[str, float]:
    points, values = inputs(rng, POINTS)
    grid = jax.jit(lambda p, v: jax_gmm.interpolate(p, v, SIGMA, (SIZE, SIZE)))
    at = jax.jit(lambda p, v, q: jax_gmm.interpolate_at(p, v, SIGMA, q))
    dense = jax.jit(lambda p, v, q: jax_gmm.reference.interpolate_at(p, v, SIGMA, q))
    y, x = np.mgrid[:SIZE, :SIZE]
    centres = np.stack([x.ravel() + 0.5, y.ravel() + 0.5], -1).astype(np.float32)
    shuffled = jnp.asarray(rng.permutation(centres))
    random = jnp.asarray(rng.uniform(0, SIZE, (SIZE * SIZE, 2)).astype(np.float32))
    small = jnp.asarray(rng.uniform(0, SIZE, (1024, 2)).astype(np.float32))
    # value_and_grad in points and values, the fitting case (no target)
    loss = jax.jit(jax.value_and_grad(
        lambda p, v, q: jnp.sum(jax_gmm.interpolate_at(p, v, SIGMA, q) ** 2), argnums=(0, 1)))
    t = {"interpolate": seconds(grid, points, values),
         "at centres": seconds(at, points, values, jnp.asarray(centres)),
         "at shuffled centres": seconds(at, points, values, shuffled),
         "at random": seconds(at, points, values, random),
         "dense reference, random (scaled)": seconds(
             dense, points, values, random[:DENSE_QUERIES], repeats=1)
         * (SIZE * SIZE / DENSE_QUERIES),
         "at 1,024 queries": seconds(at, points, values, small, repeats=20),
         "value_and_grad at random": seconds(loss, points, values, random),
         "value_and_grad at 1,024 queries": seconds(loss, points, values, small, repeats=20)}
    if keops_comparator is not None:
        args = (np.asarray(points), np.asarray(values), SIGMA, np.asarray(random))
        error = np.abs(keops_comparator.interpolate_at(*args)
                       - np.asarray(at(points, values, random))).max()
        if not error <= 1e-4:
            raise AssertionError(f"KeOps disagrees with jax_gmm by {error:.3g}")
        t["KeOps, random"] = seconds(keops_comparator.interpolate_at, *args, repeats=1)
    few = jnp.asarray(rng.uniform(0, SIZE, (4096, 2)).astype(np.float32))
    for n in (10**6, 5 * 10**6):
        p, v = inputs(rng, n)
        t[f"interpolate, N = {n:,}"] = seconds(grid, p, v, repeats=3)
        t[f"at 4,096 queries, N = {n:,}"] = seconds(at, p, v, few, repeats=3)
    return t


def span(values: list[float], scale: float = 1e3, digits: int = 1) -> str:
    lo, hi = min(values) * scale, max(values) * scale
    return f"{lo:.{digits}f}" if f"{lo:.{digits}f}" == f"{hi:.{digits}f}" else \
        f"{lo:.{digits}f}–{hi:.{digits}f}"


def report(rounds: list[dict[str, float]]) -> str:
    def ratio(a: str, b: str) -> list[float]:
        return [r[a] / r[b] for r in rounds]

    def met(values: list[float], holds) -> str:
        return f"{sum(map(holds, values))} of {len(values)} rounds"

    centres = ratio("at centres", "interpolate")
    shuffled = ratio("at shuffled centres", "interpolate")
    dense = ratio("dense reference, random (scaled)", "at random")
    small = [r["at 1,024 queries"] for r in rounds]
    if "KeOps, random" in rounds[0]:
        keops = ratio("KeOps, random", "at random")
        keops_line = (f"- 1,048,576 random queries: KeOps {keops_comparator.VERSION} "
                      "(block-sparse, on the CPU) takes "
                      f"{span(keops, 1, 0)}x as long, {met(keops, lambda r: r >= 3)} "
                      "(target: at least 3x)")
    else:
        keops_line = "- KeOps: pykeops is not installed, not measured (target: at least 3x)"
    kernel = (jax_gmm.build_info()["cpu"] or {}).get("kernel", "none")  # the build in use

    lines = [
        "# interpolate_at: arbitrary queries (CPU)",
        "",
        f"`python experiments/query_speed.py --rounds {len(rounds)}`, "
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"jax {jax.__version__}, CPU kernels {kernel}. "
        f"{SIZE} x {SIZE} pixels' worth of queries, "
        f"N = {POINTS:,} random points, sigma {SIGMA:g}, C = 3, float32, every "
        f"thread. Each cell is the range over {len(rounds)} rounds of the median "
        "of several calls.",
        "",
        "| case | ms |",
        "|---|---|",
        *(f"| {name} | {span([r[name] for r in rounds], digits=0 if r0 > 10 else 1)} |"
          for name, r0 in rounds[0].items()),
        "",
        "## Against the targets",
        "",
        f"- pixel centres, in order: {span(centres, 1, 2)}x `interpolate`'s time, within "
        f"target in {met(centres, lambda r: r <= 1.5)}; shuffled: {span(shuffled, 1, 2)}x, "
        f"{met(shuffled, lambda r: r <= 1.5)} (target: within 1.5x)",
        f"- 1,048,576 random queries: the dense reference takes {span(dense, 1, 0)}x as long, "
        f"{met(dense, lambda r: r >= 10)} (timed on {DENSE_QUERIES:,} of the queries and "
        "scaled; target: at least 10x)",
        keops_line,
        f"- 1,024 queries: {span(small, 1e3, 2)} ms, {met(small, lambda t: t < 1e-3)} "
        "(target: under 1 ms)",
        *(f"- 4,096 queries, N = {n:,}: {span(few, 1, 2)}x the grid forward on the same "
          f"points, {met(few, lambda r: r <= 2)} (target: within 2x)"
          for n in (10**6, 5 * 10**6)
          for few in [ratio(f"at 4,096 queries, N = {n:,}", f"interpolate, N = {n:,}")]),
        "",
        "## The backward (no target)",
        "",
        "- value_and_grad in points and values, as its forward's multiple: "
        f"{span(ratio('value_and_grad at random', 'at random'), 1, 1)}x at 1,048,576 random "
        f"queries, {span(ratio('value_and_grad at 1,024 queries', 'at 1,024 queries'), 1, 1)}x "
        "at 1,024",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "query_speed.md",
                        help="where the report goes (default: %(default)s)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    rng = np.random.default_rng(0)
    rounds = []
    for k in range(args.rounds):
        rounds.append(one_round(rng))
        print(f"round {k + 1}: " + ", ".join(f"{n} {t * 1e3:.2f} ms"
                                              for n, t in rounds[-1].items()), flush=True)
    text = report(rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
