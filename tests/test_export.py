"""jax.export of the native calls: refused by default, round trip with the targets allowed."""

import jax
from jax import export
import numpy as np
import pytest

import jax_gmm

ALLOW = [export.DisabledSafetyCheck.custom_call(name) for name in jax_gmm.FFI_TARGETS]


def test_targets_cover_the_built_modules():
    for platform in ("cpu", "cuda"):
        info = jax_gmm.build_info()[platform]
        if info:
            assert set(info["targets"]) <= set(jax_gmm.FFI_TARGETS)
    if jax_gmm.build_info()["cpu"]:  # the CPU module has every operation
        assert set(jax_gmm.build_info()["cpu"]["targets"]) == set(jax_gmm.FFI_TARGETS)


def test_export_refuses_custom_calls_unless_allowed(rng):
    points, values = rng.uniform(0, 8, (5, 2)), rng.normal(size=(5, 2))
    f = jax.jit(lambda p, v: jax_gmm.interpolate(p, v, 1.5, (6, 7)))
    with pytest.raises(ValueError, match="custom call"):
        export.export(f)(points, values)


@pytest.mark.parametrize("order", [0, 1])
def test_round_trip_grid_and_gradient(rng, order):
    points, values = rng.uniform(0, 8, (5, 2)), rng.normal(size=(5, 2))

    def f(p, v):
        return jax_gmm.interpolate(p, v, 1.5, (6, 7))
    if order:
        f = jax.grad(lambda p, v, f=f: (f(p, v) ** 2).sum(), argnums=(0, 1))
    exported = export.export(jax.jit(f), disabled_checks=ALLOW)(points, values)
    restored = export.deserialize(exported.serialize())
    for got, want in zip(jax.tree.leaves(restored.call(points, values)),
                         jax.tree.leaves(f(points, values))):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("return_density", [True, False])
def test_round_trip_queries(rng, return_density):
    points, values = rng.uniform(0, 8, (5, 2)), rng.normal(size=(5, 3))
    queries = rng.uniform(0, 8, (4, 2))

    def f(p, v, q):
        return jax_gmm.interpolate_at(p, v, 1.2, q, return_density=return_density)
    exported = export.export(jax.jit(f), disabled_checks=ALLOW)(points, values, queries)
    restored = export.deserialize(exported.serialize())
    for got, want in zip(jax.tree.leaves(restored.call(points, values, queries)),
                         jax.tree.leaves(f(points, values, queries))):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
