"""The forward and backward operations as XLA FFI calls, one per platform.

Each operation runs the native kernel on platforms that have one
(`_native.NATIVE_PLATFORMS`) and the pure-JAX reference elsewhere, chosen at
lowering time by `lax.platform_dependent`. Under vmap the FFI calls take every
batch axis at once: unbatched operands get size-1 axes that the kernels
broadcast, so nothing is copied per example; under jit the batch axes may be
sharded across devices (`_partition`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jax_gmm import _native, _partition, reference
from jax_gmm._native import NATIVE_PLATFORMS

Array = jax.Array

#: Every XLA custom-call target the package's calls may lower to (`_call`
#: names them); jax.export needs each allowed with
#: jax.export.DisabledSafetyCheck.custom_call(name).
FFI_TARGETS: tuple[str, ...] = tuple(
    f"jax_gmm_{op}_{suffix}" for op in ("grid_forward", "grid_out", "grid_backward",
                                        "scattered_forward", "scattered_out",
                                        "scattered_backward", "kth_nearest")
    for suffix in ("f32", "f64"))


def _suffix(dtype: np.dtype) -> str:
    return {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}[np.dtype(dtype)]


def _dispatch(native, fallback, *args, **overrides):
    """native on each native platform unless `overrides` names another function
    for it, fallback elsewhere."""
    _native.warn_if_gpu_without_module()
    branches = {platform: overrides.get(platform, native) for platform in NATIVE_PLATFORMS}
    return lax.platform_dependent(
        *args, default=lambda *a: _partition.varying_like(fallback(*a), a), **branches)


def _call(name: str, results, truncate: float, *args, **attributes):
    target = f"jax_gmm_{name}_{_suffix(args[0].dtype)}"
    return _partition.ffi_call(target, results, truncate=np.float64(truncate),
                               **attributes)(*args)


def _like(shape, x: Array) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, x.dtype)


def _reference_grid(points, values, scale, height, width, truncate):
    queries = reference.pixel_centres(height, width, points.dtype)
    out, density = reference.evaluate(points, values, scale, queries, truncate)
    return out.reshape(height, width, values.shape[-1]), density.reshape(height, width)


def reference_grid_backward(points, values, scale, d_out, d_density, height: int, width: int,
                            truncate: float):
    """Cotangents (points, values, scale) of the reference grid forward, in pure
    JAX (so differentiable again); d_density None means zero."""
    if d_density is None:
        d_density = jnp.zeros((height, width), d_out.dtype)
    # Inside shard_map: every operand varying alike, so that the cotangents
    # are this device's share, summed once by the caller (_partition.summed_like).
    args = _partition.varying_like((points, values, scale, d_out, d_density),
                                   (points, values, scale, d_out, d_density))
    _, vjp = jax.vjp(lambda p, v, s: _reference_grid(p, v, s, height, width, truncate), *args[:3])
    return vjp(args[3:])


def reference_scattered_backward(points, values, scale, queries, d_out, d_density,
                                 truncate: float):
    """Cotangents (points, values, scale, queries) of the reference scattered
    forward, in pure JAX."""
    args = (points, values, scale, queries, d_out, d_density)
    args = _partition.varying_like(args, args)  # as in reference_grid_backward
    _, vjp = jax.vjp(lambda *a: reference.evaluate(*a, truncate), *args[:4])
    return vjp(args[4:])


def _forward(op: str, results, fallback, truncate: float, density: bool, *args):
    """The forward `op` ("grid" or "scattered"): (out, density), or out alone
    unless `density`, for which the CPU kernel (target {op}_out) neither
    allocates nor writes a density; other platforms drop theirs."""
    def native(*operands):
        return _call(f"{op}_forward", results, truncate, *operands)

    if density:
        return _dispatch(native, fallback, *args)
    return _dispatch(lambda *a: native(*a)[:1], lambda *a: fallback(*a)[:1], *args,
                     cpu=lambda *a: _call(f"{op}_out", results[:1], truncate, *a))[0]


def grid_forward(points, values, scale, height: int, width: int, truncate: float,
                 density: bool = True):
    """(out (H, W, C), density (H, W)) at the pixel centres; out alone unless `density`."""
    c = values.shape[-1]
    results = (_like((height, width, c), values), _like((height, width), values))

    def fallback(points, values, scale):
        return _reference_grid(points, values, scale, height, width, truncate)

    return _forward("grid", results, fallback, truncate, density, points, values, scale)


def grid_backward(points, values, scale, out, density, d_out, d_density, truncate: float):
    """Cotangents (points, values, scale) of grid_forward; d_density None means zero."""
    height, width = density.shape
    results = (_like(points.shape, points), _like(values.shape, values), _like(scale.shape, scale))
    zero = d_density is None

    def complete(args):  # d_density as zeros where the caller passed none
        return (*args, jnp.zeros_like(args[4])) if zero else args

    def native(*args):
        return _call("grid_backward", results, truncate, *complete(args))

    def cpu(*args):
        # The CPU kernel reads an empty d_density as zero: nothing is materialised.
        return _call("grid_backward", results, truncate,
                     *(args + (jnp.zeros((0,), out.dtype),) if zero else args))

    def fallback(points, values, scale, out, density, d_out, d_density=None):
        return reference_grid_backward(points, values, scale, d_out, d_density, height, width,
                                       truncate)

    args = (points, values, scale, out, density, d_out) + (() if zero else (d_density,))
    return _partition.summed_like(_dispatch(native, fallback, *args, cpu=cpu),
                                  (points, values, scale))


def scattered_forward(points, values, scale, queries, truncate: float, density: bool = True):
    """(out (M, C), density (M,)) at arbitrary queries (M, 2); out alone unless `density`."""
    m, c = queries.shape[0], values.shape[-1]
    results = (_like((m, c), values), _like((m,), values))

    def fallback(points, values, scale, queries):
        return reference.evaluate(points, values, scale, queries, truncate)

    return _forward("scattered", results, fallback, truncate, density, points, values, scale,
                    queries)


def scattered_backward(points, values, scale, queries, out, density, d_out, d_density,
                       truncate: float, point_grads: bool = True, query_grads: bool = True):
    """Cotangents (points, values, scale, queries) of scattered_forward. Those
    of (points, values, scale) unless point_grads, and of queries unless
    query_grads, are for the caller to discard: the native kernels skip them
    and return zeros, the fallback computes them all."""
    results = tuple(_like(x.shape, x) for x in (points, values, scale, queries))

    def native(*args):
        return _call("scattered_backward", results, truncate, *args,
                     point_grads=np.bool_(point_grads), query_grads=np.bool_(query_grads))

    def fallback(points, values, scale, queries, out, density, d_out, d_density):
        return reference_scattered_backward(points, values, scale, queries, d_out, d_density,
                                            truncate)

    cotangents = _dispatch(native, fallback, points, values, scale, queries, out, density, d_out,
                           d_density)
    return _partition.summed_like(cotangents, (points, values, scale, queries))


def kth_nearest(points, k: int):
    """(N,) int32 index of each point's k-th nearest other point
    (reference.kth_nearest has the rules): a k-d tree search in the native
    modules (cuda/kd_tree.h; the CUDA module builds the tree on the host),
    the reference's brute force elsewhere."""
    results = (jax.ShapeDtypeStruct(points.shape[:-1], jnp.int32),)

    def native(points):
        target = f"jax_gmm_kth_nearest_{_suffix(points.dtype)}"
        return _partition.ffi_call(target, results, k=np.int64(k))(points)

    def fallback(points):
        return (reference.kth_nearest(points, k),)

    return _dispatch(native, fallback, points)[0]
