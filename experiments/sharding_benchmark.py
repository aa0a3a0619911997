"""Batch-sharded rendering on 1, 2 and 4 devices: time per call and memory per device.

A batch of images that share their points is rendered under jit with the batch
axis sharded over a mesh of D fake CPU devices (one process per D, since the
device count is fixed when JAX starts). It reports the median wall time of the
forward and of value_and_grad, and XLA's per-device memory (arguments, outputs
and temporaries of the compiled program). Fake CPU devices share this machine's
cores, so the times show the partitioning's overhead, not a speed-up; the
memory column shows each device holding 1/D of the batch.

    python experiments/sharding_benchmark.py          # writes sharding_benchmark.md to --out
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time

from bench.environment import cpu_model

DEFAULT_OUT = pathlib.Path.home() / "jax_gmm_results"


def measure(devices: int, batch: int, size: int, points: int, repeats: int) -> dict:
    """Runs in a child process started with `devices` fake CPU devices."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    import jax_gmm

    rng = np.random.default_rng(0)
    p = jnp.asarray(rng.uniform(0, size, (points, 2)), jnp.float32)
    v = rng.uniform(0, 1, (batch, points, 3)).astype(np.float32)
    mesh = jax.make_mesh((devices,), ("batch",))
    jax.set_mesh(mesh)  # the mesh's axes are Explicit: JAX wants it set
    v = jax.device_put(v, NamedSharding(mesh, PartitionSpec("batch")))

    def render(p, v):
        return jax.vmap(lambda vv: jax_gmm.interpolate(p, vv, 2.0, (size, size)))(v)

    def loss(p, v):
        return jnp.mean(render(p, v) ** 2)

    result = {"devices": devices}
    for name, fn in (("forward", render), ("value_and_grad", jax.value_and_grad(loss, (0, 1)))):
        jitted = jax.jit(fn)
        memory = jitted.lower(p, v).compile().memory_analysis()
        jax.block_until_ready(jitted(p, v))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(jitted(p, v))
            times.append(time.perf_counter() - start)
        result[name] = {
            "ms": 1e3 * float(np.median(times)),
            "spread_ms": [1e3 * min(times), 1e3 * max(times)],
            "MiB_per_device": (memory.argument_size_in_bytes + memory.output_size_in_bytes
                               + memory.temp_size_in_bytes) / 2**20,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--points", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.batch, args.size, args.points, args.repeats)))
        return
    rows = []
    for devices in (1, 2, 4):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                   JAX_PLATFORMS="cpu")
        child = subprocess.run([sys.executable, __file__, "--child", str(devices),
                                "--batch", str(args.batch), "--size", str(args.size),
                                "--points", str(args.points), "--repeats", str(args.repeats)],
                               capture_output=True, text=True, env=env, check=True)
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    lines = [f"Batch of {args.batch} images {args.size}x{args.size}, C = 3, sharing "
             f"{args.points} points (sigma 2); batch axis sharded over D fake CPU devices on "
             f"{os.cpu_count()} cores; median of {args.repeats} calls (min-max). "
             f"{datetime.date.today()}, {cpu_model()}.", "",
             "| D | forward ms | forward MiB/device | value_and_grad ms | value_and_grad MiB/device |",
             "|---|---|---|---|---|"]
    for r in rows:
        f, g = r["forward"], r["value_and_grad"]
        lines.append(f"| {r['devices']} | {f['ms']:.1f} ({f['spread_ms'][0]:.1f}-{f['spread_ms'][1]:.1f}) "
                     f"| {f['MiB_per_device']:.1f} | {g['ms']:.1f} ({g['spread_ms'][0]:.1f}-"
                     f"{g['spread_ms'][1]:.1f}) | {g['MiB_per_device']:.1f} |")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sharding_benchmark.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
