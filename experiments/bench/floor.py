"""The throughput floor: experiments/floor/floor.cc compiled with g++ for each
ISA and run on every core."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLOOR_SOURCE = Path(__file__).resolve().parents[1] / "floor" / "floor.cc"

# The library's flags (CMakeLists.txt) for each ISA it builds, and the best
# this CPU can do: the machine's floor is the last.
_FLOOR_COMMON = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd"]
FLOOR_FLAGS = {
    "baseline x86-64": _FLOOR_COMMON,
    "AVX2+FMA": [*_FLOOR_COMMON, "-mavx2", "-mfma"],
    "-march=native": [*_FLOOR_COMMON, "-march=native"],
}


def measure_floor(channels: int, threads: int, seconds: float = 0.5, runs: int = 3) -> dict:
    """Pairs per second of experiments/floor/floor.cc on `threads` threads,
    per set of compiler flags (the best of `runs` runs of `seconds` each: a
    floor is what the machine can do, and other work only slows it), or the
    reason it could not run."""
    compiler = shutil.which("g++")
    if compiler is None:
        return {"error": "g++ not found"}
    floors = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in FLOOR_FLAGS.items():
            binary = Path(tmp) / "floor"
            built = subprocess.run([compiler, "-std=c++17", *flags, "-pthread",
                                    str(FLOOR_SOURCE), "-o", str(binary)],
                                   capture_output=True, text=True)
            if built.returncode != 0:
                return {"error": f"g++ {' '.join(flags)} failed: {built.stderr.strip()[-300:]}"}
            command = [str(binary), str(channels), str(threads), str(seconds)]
            floors[name] = max(float(subprocess.run(command, check=True, capture_output=True,
                                                    text=True).stdout.split()[0])
                               for _ in range(runs))
    return {"channels": channels, "threads": threads, "pairs_per_s": floors}
