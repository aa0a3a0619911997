"""Splitting one large image over devices.

Batches need nothing from here: under `jax.jit`, `interpolate` and
`interpolate_at` (vmapped, or with leading batch axes) run each device's slice
of a batch sharded along its batch axis, and return results sharded the same
way. `interpolate_rows` covers the other case, one image too large or too slow
for one device: each device renders a band of rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, Mesh, PartitionSpec

from jax_gmm import _checks, _remat, adaptive
from jax_gmm._api import interpolate
from jax_gmm._checks import ArrayLike


def interpolate_rows(points: ArrayLike, values: ArrayLike, sigma: ArrayLike,
                     shape: tuple[int, int], *, mesh: Mesh, axis: str, truncate: float = 3.0,
                     eps: float = 0.0, return_density: bool = False,
                     remat_rows: int | None = None) -> jax.Array | tuple[jax.Array, jax.Array]:
    """`jax_gmm.interpolate` with the image's rows split over a mesh axis.

    Device k of the axis renders rows [k H / n, (k + 1) H / n) from every
    point (its kernels bin away the points that do not reach its band), so each
    device holds one band of the output and all of the points. Gradients with
    respect to points, values and sigma are summed over the devices, as for
    any replicated input of `jax.shard_map`.

    Differentiable in reverse mode, to second order, as `jax_gmm.interpolate`;
    under a mesh of Explicit axes (`jax.make_mesh`'s default) only with that
    mesh set (`jax.set_mesh`), as JAX's error says.

    Args:
      points, values, sigma, truncate, eps, return_density: as in `jax_gmm.interpolate`
        (``sigma="auto"`` is worked out once, from every point).
      shape: static (H, W); H must be a multiple of the axis size n.
      remat_rows: as in `jax_gmm.interpolate`, within each device's band.
      mesh: the device mesh.
      axis: the name of the mesh axis to split the rows over.

    Returns:
      As `jax_gmm.interpolate`: (H, W, C), and with ``return_density`` also Z,
      (H, W); both sharded along rows over ``axis``. Pixel offsets are formed
      within each band, so results match the unsplit call to rounding (about
      1e-6 relative in float32), not bit for bit.

    Example::

      mesh = jax.make_mesh((4,), ("rows",))
      image = jax_gmm.sharding.interpolate_rows(points, values, 1.5, (4096, 4096),
                                                mesh=mesh, axis="rows")
    """
    height, width = _checks.check_shape(shape)
    return_density = _checks.check_flag("return_density", return_density)
    if not isinstance(mesh, (Mesh, AbstractMesh)):
        raise ValueError(f"mesh must be a jax.sharding.Mesh or AbstractMesh, got "
                         f"{type(mesh).__name__}")
    if axis not in mesh.shape:
        raise ValueError(f"axis must name an axis of mesh {tuple(mesh.shape)}, got {axis!r}")
    bands = mesh.shape[axis]
    if height % bands:
        raise ValueError(f"shape's H = {height} must be a multiple of the {bands} devices "
                         f"along mesh axis {axis!r}")
    band = height // bands

    def render(points, values, sigma):
        top = jax.lax.axis_index(axis) * band
        return interpolate(_remat.shifted(points, top), values, sigma, (band, width),
                           truncate=truncate, eps=eps, return_density=return_density,
                           remat_rows=remat_rows)

    truncate = _checks.check_truncate(truncate)
    sigma = adaptive.resolve_sigma(sigma, points, truncate)  # "auto": from every point, once
    args, _, _ = _checks.check_inputs(points, values, sigma)
    rows = PartitionSpec(axis)
    # Without JAX's check of which values vary across the axis: with it, a
    # second derivative failed on the replicated inputs' cotangents (typed
    # as varying in the custom_vjp's backward). Every output is split over
    # the axis, so the check has nothing to verify, and the inputs' gradients
    # are still summed over the devices.
    return jax.shard_map(render, mesh=mesh, in_specs=(PartitionSpec(),) * 3, check_vma=False,
                         out_specs=(rows, rows) if return_density else rows)(
                             *map(jnp.asarray, args))
