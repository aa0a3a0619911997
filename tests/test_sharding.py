"""Batch sharding and row sharding across 1 to 4 fake CPU devices.

Each device count runs tests/sharding_check.py in a fresh process (the device
count is fixed when JAX starts) and checks what it measured: results and
gradients equal the single-device call, batch outputs are sharded along the
batch, the compiled programs gather nothing (points shared by the batch get
their gradient summed across devices, an all-reduce), and the same holds
inside jax.shard_map, under a mesh with Explicit axes, and for
jax_gmm.sharding.interpolate_rows.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import jax_gmm.sharding

CHECK = pathlib.Path(__file__).with_name("sharding_check.py")


DEVICE_COUNTS = [1, 2, 3, 4]


@pytest.fixture(scope="module")
def runs():
    """One subprocess per device count, all started at once (they are mostly
    JAX start-up and compilation, which overlap well)."""
    started = {}
    for devices in DEVICE_COUNTS:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                   JAX_PLATFORMS="cpu")
        started[devices] = subprocess.Popen([sys.executable, str(CHECK), str(devices)],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            text=True, env=env)
    return {devices: run.communicate(timeout=600) + (run.returncode,)
            for devices, run in started.items()}


@pytest.fixture(params=DEVICE_COUNTS)
def measured(request, runs):
    devices = request.param
    stdout, stderr, returncode = runs[devices]
    assert returncode == 0, stderr[-3000:]
    return devices, json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["Auto", "Explicit"])
@pytest.mark.parametrize("case", ["grid", "grid_grad", "grid_bands_grad", "scattered",
                                  "scattered_grad"])
def test_batch_sharding_matches_one_device_and_gathers_nothing(measured, mode, case):
    devices, results = measured
    result = results[f"{mode}/{case}"]
    assert result["error"] < 1e-12  # float64; gradients summed in another order
    assert not result["all_gather"]
    # Only the gradient of the shared points needs a cross-device sum.
    assert result["all_reduce"] == (case.endswith("grad") and devices > 1)
    batch_outputs = {"grid": [0, 1], "grid_grad": [1], "grid_bands_grad": [1], "scattered": [0],
                     "scattered_grad": [1, 2]}[case]
    if devices > 1:
        for k in batch_outputs:
            assert result["specs"][k].startswith("('batch'"), result["specs"]
    if case.endswith("grad"):  # the shared points' gradient is replicated
        assert "batch" not in result["specs"][0]


def test_inside_shard_map(measured):
    _, results = measured
    assert results["shard_map"]["error"] < 1e-12
    assert results["shard_map"]["grad_error"] < 1e-12
    assert results["shard_map"]["second_error"] < 1e-10


def test_rows_split_over_devices(measured):
    devices, results = measured
    rows = results["rows"]
    assert rows["error"] < 1e-12 and rows["grad_error"] < 1e-12 and rows["second_error"] < 1e-10
    if devices > 1:
        assert rows["specs"] == ["('rows',)", "('rows',)"]
    rows_out = results["rows_out"]  # return_density False: out alone
    assert rows_out["error"] < 1e-12 and rows_out["grad_error"] < 1e-12
    if devices > 1:
        assert rows_out["specs"] == ["('rows',)"]
    assert results["rows_remat"]["grad_error"] < 1e-12
    assert results["rows_auto"]["error"] < 1e-12


def test_rows_need_a_mesh():
    with pytest.raises(ValueError, match="mesh must be a jax.sharding.Mesh or AbstractMesh, got NoneType"):
        jax_gmm.sharding.interpolate_rows(np.ones((3, 2)), np.ones((3, 1)), 1.0, (4, 4),
                                          mesh=None, axis="rows")


def test_bands_refused_under_explicit_axes(measured):
    _, results = measured
    assert "remat_rows" in results["explicit_bands_error"]


@pytest.mark.parametrize("case", [
    "sigma_batch", "sigma_points_batch", "sigma_axes_batch", "sigma_batch_grad",
    "scattered_sigma_batch", "auto_points_batch", "auto_points_split_grad", "queries_split_grad",
    "channels_split_grad", "points_split_grad", "fit_values_split", "fit_values_split_grad"])
def test_explicit_axes_take_batched_widths_and_split_example_axes(measured, case):
    """Batches of sigma (and of points, with sigma="auto") sharded over an
    Explicit mesh axis, and per-example axes sharded there (gathered for the
    kernels): results and gradients as without the mesh."""
    _, results = measured
    assert results[f"explicit/{case}"]["error"] < 1e-12
