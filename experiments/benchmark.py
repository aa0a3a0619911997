"""Speed, throughput and memory of jax_gmm against what a user would otherwise run.

    python experiments/benchmark.py --quick      # under 2 minutes on 2 CPU cores
    python experiments/benchmark.py --full       # every case of the grid (hours on 2 cores)
    python experiments/benchmark.py --quick --no-pause  # calls back to back, no pause
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
  (d) fill:      an XLA program that writes zeros of the output's shape
                 (not compared): the floor of a call that writes its output,
                 against the output-bound case (no point reaches a pixel)
                 and the vmap of the batch case;
  loop:          a Python loop of single-image jax_gmm calls (batched cases).

Every JAX method is compiled ahead of time and called once (warm-up, not
timed); that first result must agree with jax_gmm's to within 1e-4 of its
largest magnitude, leaf by leaf, or the comparator is reported as a mismatch
and not timed. Then each method is called `repeats` times in turn, with an
untimed 50 ms pause after every call so that the work a program leaves
behind (freeing its temporaries) is not billed to the next one, and the
medians are reported; the CPU time spent in those pauses is reported too.
--no-pause times the calls back to back instead (strict alternation, each
call paying for what the last left behind). A comparator whose cost would
exceed the preset's budget (window entries for (a), pairs for (b), pixels
for (c)) is skipped and says so.

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
The code is in experiments/bench/, one module per part; this file is the
command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from bench.cases import PRESETS, case_from_dict
from bench.probes import probe
from bench.report import markdown
from bench.run import run

# Outside the source tree, as experiments/common.py's RESULTS.
RESULTS_DIR = Path.home() / "jax_gmm_results"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    for name in PRESETS:
        which.add_argument(f"--{name}", dest="preset", action="store_const", const=name)
    which.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help=f"output folder (default: {RESULTS_DIR})")
    parser.add_argument("--no-pause", action="store_true",
                        help="time the calls back to back, without the pause after each "
                             "(writes benchmark_<preset>-nopause_<platform>.*)")
    args = parser.parse_args(argv)
    if args.probe:
        request = json.loads(args.probe)
        cases = [case_from_dict(c) for c in request["cases"]]
        print(json.dumps(probe(cases, request["method"], request["repeats"])))
        return
    preset = PRESETS[args.preset]
    if args.no_pause:
        preset = dataclasses.replace(preset, name=f"{preset.name}-nopause", pause_s=0.0)
    results = run(preset, args.out)
    print(markdown(results))


if __name__ == "__main__":
    main()
