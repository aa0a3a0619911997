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


def _symbolic(spec, *shapes):
    """ShapeDtypeStructs of float64 with the symbolic dimensions of `spec`
    ("n, m") standing for the strings in `shapes`."""
    dims = dict(zip(spec.replace(" ", "").split(","), export.symbolic_shape(spec)))
    return [jax.ShapeDtypeStruct(tuple(dims.get(d, d) for d in shape), np.float64)
            for shape in shapes]


def _same_as_jit(f, exported, *args):
    restored = export.deserialize(exported.serialize())
    for got, want in zip(jax.tree.leaves(restored.call(*args)), jax.tree.leaves(jax.jit(f)(*args))):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sigma", ["per point", "auto"])
def test_symbolic_number_of_points(rng, sigma):
    """One artefact for every N: interpolate and its gradient, with widths per
    point or "auto" (the neighbour search), called at several N."""
    def f(p, v, s):
        s = s if sigma == "per point" else "auto"
        image = jax_gmm.interpolate(p, v, s, (9, 8))
        return image, jax.grad(lambda p, v, s: (jax_gmm.interpolate(p, v, s, (9, 8)) ** 2).sum(),
                               argnums=(0, 1) if sigma == "auto" else (0, 1, 2))(p, v, s)
    exported = export.export(jax.jit(f), disabled_checks=ALLOW)(
        *_symbolic("n", ("n", 2), ("n", 3), ("n",)))
    for n in (1, 3, 40):
        _same_as_jit(f, exported, rng.uniform(0, 9, (n, 2)), rng.normal(size=(n, 3)),
                     rng.uniform(0.8, 2, n))


def test_symbolic_points_and_queries(rng):
    """interpolate_at with N and M symbolic, through the native kernels, the
    reference (whose blocks are then sized for 2**16 points) and fit_values."""
    def f(p, v, q):
        return (jax_gmm.interpolate_at(p, v, 1.3, q, return_density=True),
                jax_gmm.reference.interpolate_at(p, v, 1.3, q),
                jax_gmm.fit_values(p, v, 1.3, tol=1e-8))
    exported = export.export(jax.jit(f), disabled_checks=ALLOW)(
        *_symbolic("n, m", ("n", 2), ("n", 2), ("m", 2)))
    for n, m in ((2, 70_000), (30, 5), (300, 1)):
        _same_as_jit(f, exported, rng.uniform(0, 9, (n, 2)), rng.normal(size=(n, 2)),
                     rng.uniform(0, 9, (m, 2)))


def test_symbolic_neighbour_search_in_the_reference(rng):
    # fewer points than k: top_k still takes k columns
    exported = export.export(jax.jit(lambda p: jax_gmm.reference.kth_nearest(p, 4)))(
        *_symbolic("n", ("n", 2)))
    for n in (1, 3, 70):
        points = jax.numpy.asarray(rng.uniform(0, 9, (n, 2)))
        np.testing.assert_array_equal(exported.call(points),
                                      jax_gmm.reference.kth_nearest(points, 4))


@pytest.mark.parametrize("batched", ["values", "queries", "sigma", "points and values"])
def test_symbolic_vmap_batch(rng, batched):
    """A symbolic batch size b with some operands unbatched (broadcast)."""
    points, values = rng.uniform(0, 8, (4, 2)), rng.normal(size=(4, 3))
    queries, sigma = rng.uniform(0, 8, (5, 2)), 1.4

    def f(x, y=None):
        if batched == "values":
            return jax.vmap(lambda v: jax_gmm.interpolate(points, v, sigma, (9, 8)))(x)
        if batched == "queries":
            return jax.vmap(lambda q: jax_gmm.interpolate_at(points, values, sigma, q))(x)
        if batched == "sigma":
            return jax.vmap(lambda s: jax_gmm.interpolate(points, values, s, (9, 8)))(x)
        return jax.vmap(lambda p, v: jax_gmm.interpolate(p, v, sigma, (9, 8)))(x, y)
    shapes = {"values": [("b", 4, 3)], "queries": [("b", 5, 2)], "sigma": [("b",)],
              "points and values": [("b", 4, 2), ("b", 4, 3)]}[batched]
    exported = export.export(jax.jit(f), disabled_checks=ALLOW)(*_symbolic("b", *shapes))
    for b in (1, 3):
        batch = {"values": [rng.normal(size=(b, 4, 3))], "queries": [rng.uniform(0, 8, (b, 5, 2))],
                 "sigma": [rng.uniform(0.8, 2, b)],
                 "points and values": [rng.uniform(0, 8, (b, 4, 2)), rng.normal(size=(b, 4, 3))]}
        _same_as_jit(f, exported, *batch[batched])


def test_symbolic_points_on_an_image_rendered_in_bands():
    # Large enough that a differentiated render is banded (_remat.auto_rows),
    # which sizes its bands from N: exported, not run.
    f = jax.jit(jax.grad(lambda p, v: jax_gmm.interpolate(p, v, 1.4, (8192, 8193)).sum()))
    exported = export.export(f, disabled_checks=ALLOW)(*_symbolic("n", ("n", 2), ("n", 3)))
    assert str(exported.out_avals[0].shape) == "(n, 2)"


def test_reconstruct_needs_a_known_number_of_points():
    f = jax.jit(lambda p, v: jax_gmm.reconstruct(p, v, (8, 8)))
    with pytest.raises(ValueError, match="points must have a known number of rows"):
        export.export(f, disabled_checks=ALLOW)(*_symbolic("n", ("n", 2), ("n", 1)))


@pytest.mark.parametrize("call,match", [
    (lambda v: jax_gmm.interpolate(np.ones((4, 2)), v, 1.0, (5, 5)),
     "values must have a known number of channels"),
    (lambda v: jax_gmm.upsample(v.reshape(2, 2, -1), 2), "image must have a known shape"),
    (lambda v: jax_gmm.reconstruct(np.ones((4, 2)), v, (5, 5)),
     "samples must have a known number of channels"),
])
def test_images_need_a_known_number_of_channels(call, match):
    with pytest.raises(ValueError, match=match):
        export.export(jax.jit(call), disabled_checks=ALLOW)(*_symbolic("c", (4, "c")))
