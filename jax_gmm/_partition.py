"""FFI calls that XLA's partitioner splits along their batch axes.

An ``ffi_call`` is opaque to the partitioner: given operands sharded along a
vmapped batch axis, jit would gather them onto every device and run the whole
batch there. Here each call is a `jax.experimental.custom_partitioning`
function whose Shardy rule lets only the batch axes (the leading axes that
vmap adds) be sharded, and whose partition runs the same call on each
device's slice of the batch. Per-example axes (points, pixels, channels) stay
whole on every device. Operands that were not batched along an axis have size
1 there (as with ``vmap_method="expand_dims"``) and stay replicated; the
kernels broadcast them. Their cotangents come out batched and are summed by
JAX after the call, which the partitioner turns into a cross-device sum.

custom_partitioning has no vmap rule, so each call is made batchable with
`jax.custom_batching.custom_vmap`: its rule puts the new batch axis in front
of every operand (size 1 where unbatched) and makes the call again, so nested
vmaps stack their axes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import export
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

BatchSizes = tuple[tuple[int, ...], ...]  # per operand, its batch axes' sizes


def ffi_call(target: str, results: Sequence[jax.ShapeDtypeStruct], **attributes):
    """Like ``jax.ffi.ffi_call(target, results, vmap_method="expand_dims")``,
    but partitioned along batch axes under jit (see the module docstring).

    Args:
      target: the registered FFI target.
      results: the results' shapes and dtypes for one example.
      attributes: the call's static attributes.

    Returns:
      A function of the operands, each given for one example (it may be
      vmapped), that returns the results.
    """
    result_ranks = tuple(len(r.shape) for r in results)

    def run(example_ranks, *args):
        """The FFI call on operands with equal numbers of leading batch axes."""
        batch = _broadcast_batch(_batch_sizes(args, example_ranks))
        shapes = tuple(jax.ShapeDtypeStruct(batch + r.shape, r.dtype) for r in results)
        return jax.ffi.ffi_call(target, shapes)(*args, **attributes)

    @functools.lru_cache(maxsize=None)
    def partitioned(example_ranks: tuple[int, ...], sizes: BatchSizes):
        lower = functools.partial(run, example_ranks)
        call = custom_partitioning(lower)
        full = _broadcast_batch(sizes)

        def infer(mesh, arg_shapes, result_shape):
            out = NamedSharding(mesh, PartitionSpec(*_batch_mesh_axes(sizes, arg_shapes)))
            return (out,) * len(results)

        def partition(mesh, arg_shapes, result_shape):
            axes = _batch_mesh_axes(sizes, arg_shapes)
            args = tuple(NamedSharding(mesh, PartitionSpec(
                *(ax if s[k] == full[k] else None for k, ax in enumerate(axes)))) for s in sizes)
            out = NamedSharding(mesh, PartitionSpec(*axes))
            return mesh, lower, (out,) * len(results), args

        call.def_partition(partition, infer_sharding_from_operands=infer,
                           sharding_rule=_sharding_rule(sizes, example_ranks, result_ranks))
        return call

    def batched(example_ranks, *args):
        sizes = _batch_sizes(args, example_ranks)
        if not sizes or not sizes[0]:
            outs = run(example_ranks, *args)
        else:
            outs = _typed_like_batch(tuple(partitioned(example_ranks, sizes)(*args)), args, sizes)
        return varying_like(outs, args)

    @functools.lru_cache(maxsize=None)
    def batched_call(example_ranks):
        """`batched` for these example ranks, made batchable: the vmap rule
        puts the new axis in front (size 1 where unbatched) and calls again,
        so an outer vmap stacks one more leading axis."""

        @jax.custom_batching.custom_vmap
        def inner(*args):
            return batched(example_ranks, *args)

        @inner.def_vmap
        def _inner_rule(axis_size, in_batched, *args):
            del axis_size
            out = inner(*(a if b else a[None] for a, b in zip(args, in_batched)))
            return out, (True,) * len(out)

        return inner

    def call(*args):
        # Outside vmap every axis of an operand is an example axis.
        return batched_call(tuple(a.ndim for a in args))(*args)

    return call


def _typed_like_batch(outs, args, sizes: BatchSizes):
    """Under a mesh with Explicit axes, array types carry their sharding, and
    custom_partitioning's results come out typed as replicated: give them the
    batch sharding of the operands (which they already have, so no data moves)."""
    if not jax.sharding.get_abstract_mesh().explicit_axes:
        return outs
    spec = PartitionSpec(*_batch_mesh_axes(sizes, [jax.typeof(a) for a in args]))
    return tuple(jax.sharding.reshard(o, spec) for o in outs)


def whole_examples(args) -> tuple:
    """Under a mesh with Explicit axes, each operand with an example axis
    (points, pixels, queries, channels) sharded, resharded to hold that axis
    whole, as the partitioner does under Auto axes. Types carry shardings
    there, and the native call's results are typed whole along example axes:
    the reference's, for sharded operands, would not be, and both branches of
    the platform-dependent call must agree. Batch axes that vmap added are
    not in these types and keep their sharding. Called on the arguments of
    the custom_vjp functions, so that their gradients come back typed as the
    arguments (reshard's transpose), on the points sigma="auto" reads, and
    on fit_values' inputs."""
    if not jax.sharding.get_abstract_mesh().explicit_axes:
        return tuple(args)
    return tuple(jax.sharding.reshard(a, PartitionSpec()) if any(_spec(jax.typeof(a), a.ndim))
                 else a for a in args)


def _batch_mesh_axes(sizes: BatchSizes, shaped) -> list:
    """Per batch axis, the mesh axes it is sharded over, taken from an operand
    that spans it (`shaped`: per operand, anything with a .sharding)."""
    axes = []
    for k in range(len(sizes[0]) if sizes else 0):
        spanning = [_spec(a, len(s))[k] for s, a in zip(sizes, shaped) if not _broadcast(s[k])]
        axes.append(next((ax for ax in spanning if ax is not None), None))
    return axes


def _varying(x) -> set:
    """The mesh axes over which x varies inside shard_map (none outside)."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)  # jax >= 0.10; before, aval.vma
    return set(manual.varying if manual is not None else getattr(aval, "vma", ()))


def _cast_varying(x, axes: tuple):
    """x typed as varying over mesh axes `axes` too (lax.pvary before jax 0.8.3)."""
    if hasattr(jax.lax, "pcast"):
        return jax.lax.pcast(x, axes, to="varying")
    return jax.lax.pvary(x, axes)


def varying_like(outs, args) -> tuple:
    """Inside shard_map, types every result as varying over each mesh axis
    that some operand varies over. The FFI call's own results are typed as
    invariant, and the reference's as JAX infers them per result; both
    branches of a platform-dependent call must agree."""
    axes = set().union(*map(_varying, args)) if args else set()
    typed = []
    for o in outs:
        missing = tuple(sorted(axes - _varying(o)))
        typed.append(_cast_varying(o, missing) if missing else o)
    return tuple(typed)


def zeros_like(x):
    """Zeros of x's shape and dtype that, inside shard_map, vary as x does."""
    return varying_like((jnp.zeros(x.shape, x.dtype),), (x,))[0]


def summed_like(cotangents, primals) -> tuple:
    """Inside shard_map, a cotangent that varies over mesh axes its primal is
    invariant over (points shared by every device, say) holds one device's
    share of the gradient: the sum over those axes is the gradient."""
    summed = []
    for ct, primal in zip(cotangents, primals):
        extra = tuple(sorted(_varying(ct) - _varying(primal)))
        summed.append(jax.lax.psum(ct, extra) if extra else ct)
    return tuple(summed)


def _batch_sizes(args, example_ranks) -> BatchSizes:
    return tuple(tuple(a.shape[:a.ndim - r]) for a, r in zip(args, example_ranks))


def _broadcast(size) -> bool:
    """Whether a batch axis of this size is broadcast: the constant 1. A
    symbolic size (jax.export) is taken to span the axis; it cannot be
    ordered against 1 at trace time."""
    return not export.is_symbolic_dim(size) and size == 1


def _broadcast_batch(sizes: BatchSizes) -> tuple[int, ...]:
    """The batch axes' sizes: each operand's is 1 or the full size."""
    if not sizes:
        return ()
    return tuple(next((s[k] for s in sizes if not _broadcast(s[k])), 1)
                 for k in range(len(sizes[0])))


def _spec(shape_with_sharding, batch_rank: int) -> tuple:
    """The mesh axes of an operand's batch axes (None where replicated)."""
    spec = tuple(getattr(shape_with_sharding.sharding, "spec", None) or ())
    return (spec + (None,) * batch_rank)[:batch_rank]


def _sharding_rule(sizes: BatchSizes, example_ranks, result_ranks) -> str:
    """Shardy rule: batch axis k is factor b<k> wherever it has the full size
    (a size-1, broadcast axis gets a factor of its own); every per-example axis
    is a factor of its own, so nothing ties it to another operand's."""
    full = _broadcast_batch(sizes)

    def batch(s, owner):
        return [f"b{k}" if s[k] == full[k] else f"{owner}u{k}" for k in range(len(full))]

    operands = [" ".join(batch(s, f"o{i}") + [f"o{i}e{j}" for j in range(r)])
                for i, (s, r) in enumerate(zip(sizes, example_ranks))]
    outs = [" ".join(batch(full, f"r{i}") + [f"r{i}e{j}" for j in range(r)])
            for i, r in enumerate(result_ranks)]
    return ", ".join(operands) + " -> " + ", ".join(outs)
