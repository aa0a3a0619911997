"""What the numbers were measured on: platform, device, CPU, versions, the
jax_gmm build and where its calls go, and the load of the machine."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import jax
import numpy as np

import jax_gmm


def cpu_model() -> str:
    """The CPU's model name, or the machine's architecture where Linux does not say."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """What the numbers were measured on."""
    import jaxlib

    device = jax.devices()[0]
    info = jax_gmm.build_info()
    # One entry per platform module, a dict or None where it is not built;
    # the others ("jaxlib", "backend", "calls") are strings.
    modules = {p: v for p, v in info.items() if v is None or isinstance(v, dict)}
    return {
        "platform": info["backend"],
        "device": device.device_kind,
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "jax_gmm_native": {p: (v or {}).get("compile_flags") for p, v in modules.items()},
        # The kernel build the CPU module chose for this CPU (None: not built).
        "jax_gmm_cpu_kernel": (modules.get("cpu") or {}).get("kernel"),
        # Where jax_gmm's calls on this platform go: "native" or "reference".
        "jax_gmm_calls": info["calls"],
        "native_here": info["calls"] == "native",
        "JAX_GMM_NUM_THREADS": os.environ.get("JAX_GMM_NUM_THREADS"),
        # Other work on the machine skews timings: the 1-minute load average.
        "load_average": os.getloadavg()[0],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
