"""One run of a preset: times its cases, measures memory, threads and the
floor, and writes benchmark_<preset>_<platform>.{json,png,md}."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from .cases import HEADLINE, Preset
from .environment import environment
from .floor import measure_floor
from .probes import measure_memory, measure_threads
from .report import SLOPE_MIN_PAIRS, cost_model, fitted_slope, fmt_time, markdown, plot
from .timing import time_case


def run(preset: Preset, out_dir: Path) -> dict:
    """Runs the preset, writes the report files and returns the results."""
    start = time.perf_counter()
    env = environment()
    if not env["native_here"]:
        print(f"warning: no native jax_gmm kernel on {env['platform']}; "
              "jax_gmm runs its pure-JAX reference", file=sys.stderr)
    rows = []
    for case in preset.cases:
        rows.append(time_case(case, preset))
        print(f"{case.label()} {case.mode}: " + ", ".join(
            f"{m} {fmt_time(v.get('median_s'))}" for m, v in rows[-1]["methods"].items()),
            flush=True)
    on_cpu = env["platform"] == "cpu"
    stem = f"benchmark_{preset.name}_{env['platform']}"
    results = {
        "preset": preset.name, "pause_s": preset.pause_s, "environment": env, "rows": rows,
        "memory": measure_memory(preset),
        "threads": measure_threads(preset) if on_cpu else [],
        "floor": measure_floor(HEADLINE.channels, env["cores"]) if on_cpu else {},
        "cost_model": {m: cost_model(rows, m) for m in ("forward", "value_and_grad")},
        "slopes": {m: {"all": fitted_slope(rows, m),
                       "large": fitted_slope(rows, m, SLOPE_MIN_PAIRS)}
                   for m in ("forward", "value_and_grad")},
        "plot": f"{stem}.png",
    }
    results["elapsed_s"] = time.perf_counter() - start
    results["load_average_end"] = os.getloadavg()[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=1))
    results["plot_missing"] = plot(rows, out_dir / results["plot"])
    (out_dir / f"{stem}.md").write_text(markdown(results))
    return results
