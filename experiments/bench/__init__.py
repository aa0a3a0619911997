"""The benchmark run by experiments/benchmark.py (whose docstring says what it
measures and how), one module per part:

  cases:       `Case`, `Preset` and the presets;
  inputs:      deterministic inputs and the exact pair count of a case;
  methods:     jax_gmm and the comparators, compiled into runners;
  timing:      checking and timing one case in this process;
  probes:      peak memory and thread speed-ups, in fresh processes;
  floor:       the C++ throughput floor (experiments/floor/floor.cc);
  environment: what the numbers were measured on;
  report:      the Markdown report and the plot;
  run:         one run of a preset, writing the report files.
"""

import os

# Neither jax_gmm nor the comparators call BLAS, but numpy/scipy's OpenBLAS
# threads spin-wait after any BLAS use and would take cycles from both of the
# 2 cores being measured. Must be set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
