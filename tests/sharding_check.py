"""Run by test_sharding.py in a subprocess with N fake CPU devices (XLA_FLAGS
must be set before JAX starts, so it cannot run in the test process). Prints
one JSON object of measurements; the test asserts on them."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

import jax_gmm
import jax_gmm.sharding

jax.config.update("jax_enable_x64", True)
DEVICES = int(sys.argv[1])
H, W, N, C = 12, 16, 40, 3
BATCH = 2 * DEVICES
rng = np.random.default_rng(DEVICES)
points = rng.uniform(-2, 14, (N, 2))
values = rng.uniform(-1, 1, (BATCH, N, C))
sigma = rng.uniform(0.8, 2.5, N)
queries = rng.uniform(0, 12, (BATCH, 30, 2))
results = {}


def max_error(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)), initial=0))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def specs(tree):
    return [str(tuple(x.sharding.spec)) for x in jax.tree.leaves(tree)]


def compiled_run(fn, *args):
    """fn under jit, compiled once: its results and the collectives in its program."""
    compiled = jax.jit(fn).lower(*args).compile()
    text = compiled.as_text()
    return compiled(*args), {"all_gather": "all-gather" in text, "all_reduce": "all-reduce" in text}


def grid_batch(p, v, remat_rows=None):
    return jax.vmap(lambda vv: jax_gmm.interpolate(p, vv, sigma, (H, W), return_density=True,
                                                   remat_rows=remat_rows))(v)


def grid_loss(p, v, remat_rows=None):
    out, density = grid_batch(p, v, remat_rows)
    return jnp.sum(out ** 2) + jnp.sum(jnp.sin(density))


def scattered_batch(v, q):
    return jax.vmap(lambda vv, qq: jax_gmm.interpolate_at(points, vv, sigma, qq))(v, q)


def scattered_loss(p, v, q):
    out = jax.vmap(lambda vv, qq: jax_gmm.interpolate_at(p, vv, sigma, qq))(v, q)
    return jnp.sum(out ** 3)


for mode in ("Auto", "Explicit"):
    mesh = jax.make_mesh((DEVICES,), ("batch",), axis_types=(getattr(AxisType, mode),))
    with jax.set_mesh(mesh):
        put = lambda x: jax.device_put(x, NamedSharding(mesh, PartitionSpec("batch")))  # noqa: E731
        v, q = put(values), put(queries)
        grid_grad = jax.grad(grid_loss, argnums=(0, 1))
        scattered_grad = jax.grad(scattered_loss, argnums=(0, 1, 2))
        cases = {
            "grid": (grid_batch, (points, v), (points, values)),
            "grid_grad": (grid_grad, (points, v), (points, values)),
            # Bands under Auto axes; under Explicit ones remat_rows must stay None.
            "grid_bands_grad": (jax.grad(lambda p, v: grid_loss(
                p, v, remat_rows=5 if mode == "Auto" else None), (0, 1)),
                (points, v), (points, values)),
            "scattered": (scattered_batch, (v, q), (values, queries)),
            "scattered_grad": (scattered_grad, (points, v, q), (points, values, queries)),
        }
        for name, (fn, sharded_args, plain_args) in cases.items():
            sharded, found = compiled_run(fn, *sharded_args)
            results[f"{mode}/{name}"] = {"error": max_error(sharded, fn(*plain_args)),
                                         "specs": specs(sharded), **found}

mesh = jax.make_mesh((DEVICES,), ("batch",), axis_types=(AxisType.Auto,))
inside = jax.shard_map(lambda p, v: grid_batch(p, v), mesh=mesh,
                       in_specs=(PartitionSpec(), PartitionSpec("batch")),
                       out_specs=PartitionSpec("batch"))
inside_loss = lambda p, v: jnp.sum(inside(p, v)[0] ** 2) + jnp.sum(jnp.sin(inside(p, v)[1]))  # noqa: E731
# Second order (reverse over reverse) with shard_map's type checks on: the
# pure-JAX backward's cotangents must be typed, and summed, as the native ones.
inside_at = jax.shard_map(
    lambda p, q: jax.vmap(lambda q: jax_gmm.interpolate_at(p, values[0], sigma, q))(q),
    mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec("batch")), out_specs=PartitionSpec("batch"))
plain_at = jax.vmap(lambda p, q: jax_gmm.interpolate_at(p, values[0], sigma, q), (None, 0))
at_loss = lambda f: lambda p, q: jnp.sum(f(p, q) ** 3)  # noqa: E731
hessian = lambda f, k: jax.jit(jax.jacrev(jax.grad(f, k), k))  # noqa: E731
results["shard_map"] = {
    "error": max_error(jax.jit(inside)(points, values), grid_batch(points, values)),
    "grad_error": max_error(jax.jit(jax.grad(inside_loss, argnums=(0, 1)))(points, values),
                            jax.grad(grid_loss, argnums=(0, 1))(points, values)),
    "second_error": max(
        max_error(hessian(inside_loss, 0)(points, values), hessian(grid_loss, 0)(points, values)),
        max_error(hessian(at_loss(inside_at), 0)(points, queries),
                  hessian(at_loss(plain_at), 0)(points, queries)),
        max_error(hessian(at_loss(inside_at), 1)(points, queries),
                  hessian(at_loss(plain_at), 1)(points, queries))),
}

direction = rng.normal(size=points.shape)
rows_mesh = jax.make_mesh((DEVICES,), ("rows",), axis_types=(AxisType.Auto,))
rows = lambda p, v, s: jax_gmm.sharding.interpolate_rows(  # noqa: E731
    p, v, s, (H, W), mesh=rows_mesh, axis="rows", return_density=True)
rows_loss = lambda f: lambda p, v, s: jnp.sum(f(p, v, s)[0] ** 2) + jnp.sum(f(p, v, s)[1])  # noqa: E731
plain = lambda p, v, s: jax_gmm.interpolate(p, v, s, (H, W), return_density=True)  # noqa: E731
split = jax.jit(rows)(points, values[0], sigma)
results["rows"] = {
    "error": max_error(split, plain(points, values[0], sigma)),
    "grad_error": max_error(jax.jit(jax.grad(rows_loss(rows), argnums=(0, 1, 2)))(points, values[0], sigma),
                            jax.grad(rows_loss(plain), argnums=(0, 1, 2))(points, values[0], sigma)),
    "specs": specs(split),
    # second order, in a scale of every width and along a direction of the
    # points (which each band shifts by its top row)
    "second_error": max(max_error(
        jax.jit(jax.grad(jax.grad(lambda t: rows_loss(rows)(*moved(t)))))(0.0),
        jax.grad(jax.grad(lambda t: rows_loss(plain)(*moved(t))))(0.0))
        for moved in (lambda t: (points, values[0], sigma * (1 + t)),
                      lambda t: (points + t * direction, values[0], sigma))),
}
# Without the density: out alone, each band's call the density-free one.
rows_out = lambda p, v, s: jax_gmm.sharding.interpolate_rows(  # noqa: E731
    p, v, s, (H, W), mesh=rows_mesh, axis="rows")
split_out = jax.jit(rows_out)(points, values[0], sigma)
results["rows_out"] = {
    "error": max_error(split_out, plain(points, values[0], sigma)[0]),
    "grad_error": max_error(
        jax.jit(jax.grad(lambda *a: jnp.sum(rows_out(*a) ** 2), argnums=(0, 1, 2)))(
            points, values[0], sigma),
        jax.grad(lambda *a: jnp.sum(plain(*a)[0] ** 2), argnums=(0, 1, 2))(
            points, values[0], sigma)),
    "specs": specs(split_out),
}
# sigma="auto": worked out once, from every point, as the unsplit call does.
rows_auto = lambda p, v: jax_gmm.sharding.interpolate_rows(  # noqa: E731
    p, v, "auto", (H, W), mesh=rows_mesh, axis="rows")
results["rows_auto"] = {"error": max_error(jax.jit(rows_auto)(points, values[0]),
                                           jax_gmm.interpolate(points, values[0], "auto", (H, W)))}
# Each device's band differentiated in bands of 2 rows (the last overlapping
# where the device's band has an odd number of rows).
rows_remat = lambda p, v, s: jax_gmm.sharding.interpolate_rows(  # noqa: E731
    p, v, s, (H, W), mesh=rows_mesh, axis="rows", return_density=True, remat_rows=2)
results["rows_remat"] = {
    "grad_error": max_error(
        jax.jit(jax.grad(rows_loss(rows_remat), argnums=(0, 1, 2)))(points, values[0], sigma),
        jax.grad(rows_loss(plain), argnums=(0, 1, 2))(points, values[0], sigma)),
}
# Under Explicit axes: a batch of widths (scalar, per point, per axis) and of
# points with sigma="auto", and example axes (queries, channels, points, and
# fit_values' points and samples) sharded, which the calls gather (results and gradients are compared with
# the unsharded call; each must also type-check, the failure these guard).
explicit = jax.make_mesh((DEVICES,), ("batch",), axis_types=(AxisType.Explicit,))
sized = lambda k: rng.uniform(0.8, 2.5, (BATCH,) + k)  # noqa: E731
many_queries = rng.uniform(0, 12, (6 * DEVICES, 2))
wide_values = rng.uniform(-1, 1, (N, 2 * DEVICES))
grid_in_sigma = lambda s: jax.vmap(  # noqa: E731
    lambda ss: jax_gmm.interpolate(points, values[0], ss, (H, W)))(s)
explicit_cases = {
    "sigma_batch": (grid_in_sigma, (sized(()),), ("batch",)),
    "sigma_points_batch": (grid_in_sigma, (sized((N,)),), ("batch",)),
    "sigma_axes_batch": (grid_in_sigma, (sized((N, 2)),), ("batch",)),
    "sigma_batch_grad": (jax.grad(lambda s: jnp.sum(grid_in_sigma(s) ** 2)), (sized(()),),
                         ("batch",)),
    "scattered_sigma_batch": (jax.vmap(lambda s: jax_gmm.interpolate_at(points, values[0], s,
                                                                          queries[0])),
                              (sized(()),), ("batch",)),
    "auto_points_batch": (jax.vmap(lambda p: jax_gmm.interpolate(p, values[0], "auto", (H, W))),
                          (rng.uniform(-2, 14, (BATCH, N, 2)),), ("batch",)),
    "auto_points_split_grad": (jax.grad(lambda p, v: jnp.sum(
        jax_gmm.interpolate(p, v, "auto", (H, W)) ** 2), (0, 1)),
        (rng.uniform(-2, 14, (8 * DEVICES, 2)), rng.uniform(-1, 1, (8 * DEVICES, C))),
        ("batch", "batch")),
    "queries_split_grad": (jax.grad(lambda p, q: jnp.sum(
        jax_gmm.interpolate_at(p, values[0], sigma, q) ** 2), (0, 1)),
        (points, many_queries), (None, "batch")),
    "channels_split_grad": (jax.grad(lambda p, v: jnp.sum(
        jax_gmm.interpolate(p, v, sigma, (H, W)) ** 2), (0, 1)),
        (points, wide_values), (None, (None, "batch"))),
    "points_split_grad": (jax.grad(lambda p, v: jnp.sum(
        jax_gmm.interpolate(p, v, 1.5, (H, W)) ** 2), (0, 1)),
        (rng.uniform(-2, 14, (8 * DEVICES, 2)), rng.uniform(-1, 1, (8 * DEVICES, C))),
        ("batch", "batch")),
    "fit_values_split": (lambda p, v: jax_gmm.fit_values(p, v, 1.5),
                         (rng.uniform(-2, 14, (8 * DEVICES, 2)),
                          rng.uniform(-1, 1, (8 * DEVICES, C))), ("batch", None)),
    "fit_values_split_grad": (jax.grad(lambda p, v: jnp.sum(
        jax_gmm.fit_values(p, v, 1.5) ** 2), (0, 1)),
        (rng.uniform(-2, 14, (8 * DEVICES, 2)), rng.uniform(-1, 1, (8 * DEVICES, C))),
        ("batch", "batch")),
}
with jax.set_mesh(explicit):
    for name, (fn, args, split) in explicit_cases.items():
        placed = [a if spec is None else jax.device_put(a, NamedSharding(
            explicit, PartitionSpec(*spec) if isinstance(spec, tuple) else PartitionSpec(spec)))
            for a, spec in zip(args, split)]
        results[f"explicit/{name}"] = {"error": max_error(jax.jit(fn)(*placed), fn(*args))}

with jax.set_mesh(jax.make_mesh((DEVICES,), ("batch",), axis_types=(AxisType.Explicit,))):
    try:
        grid_loss(points, values, remat_rows=5)
        results["explicit_bands_error"] = None
    except ValueError as e:
        results["explicit_bands_error"] = str(e)
print(json.dumps(results))
