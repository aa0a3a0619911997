"""Row bands for differentiating a large image without image-sized residuals.

Differentiated as a whole, `interpolate` keeps the forward's out and density,
(H, W, C + 1) values, until the backward has run: 2 GiB for an 8192 x 8192
RGB image in float64, on top of the image and its cotangent. `banded` keeps
only the inputs instead. Its forward renders the image a band of rows at a
time, and its backward renders each band again and takes that band's
vector-Jacobian product straight away, so the residuals of one band exist at
a time, at the cost of a second forward. Bands run in a fixed order, so
results stay deterministic. A band's pixel offsets are formed within the band
(its points shifted up by its top row), so its values match the whole image's
to rounding, not bit for bit.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import export, lax

from jax_gmm import _checks, _partition

#: Whole-image residuals (out and density) up to this many bytes are kept.
RESIDUAL_BYTES = 1 << 30
#: Above it, bands hold about this many bytes of residuals each...
BAND_BYTES = 1 << 26
#: ...unless that makes more than this many (band, point) binnings per pass:
#: every band bins all N points, about 40 ns each where they miss the band
#: (1M points cost a 64-row band of an 8192-wide image 44 ms, on the 2-core
#: Xeon), so many bands of many points would cost more than they save.
BAND_BINNINGS = 1 << 22

#: render(top, rows, points, values, scale) -> pytree of arrays whose leading
#: axis is image rows [top, top + rows); top may be traced, rows is static.
Render = Callable[..., Any]


def auto_rows(height: int, width: int, channels: int, itemsize: int, points: int) -> int:
    """Rows per band: the whole image while out and density fit
    RESIDUAL_BYTES, else bands of BAND_BYTES, but at most
    max(2, BAND_BINNINGS / points) of them."""
    row = max(1, width * (channels + 1) * itemsize)
    if height * row <= RESIDUAL_BYTES:
        return height
    bands = max(2, BAND_BINNINGS // max(1, _checks.count_bound(points)))
    return max(1, BAND_BYTES // row, -(-height // bands))


def choose_rows(rows: int | None, height: int, width: int, channels: int, itemsize: int,
                points: int) -> int:
    """The caller's rows per band, or auto_rows for None; a value >= height
    means the whole image. Under a mesh with Explicit axes there are no bands:
    batching the bands' loop there fails inside JAX (a reshard in the loop
    body loses the mesh; jax 0.10), so a caller's bands raise instead."""
    if jax.sharding.get_abstract_mesh().explicit_axes:
        if rows is not None and rows < height:
            raise ValueError(f"remat_rows = {rows} < H = {height} is not supported under a "
                             "mesh with Explicit axes; leave remat_rows as None there")
        return height
    if rows is None and export.is_symbolic_dim(channels):
        raise ValueError(f"values must have a known number of channels, got {channels}: it "
                         "sizes the bands that bound a differentiated image's memory (or pass "
                         "remat_rows, rows per band)")
    return auto_rows(height, width, channels, itemsize, points) if rows is None else rows


def shifted(points, top):
    """Points in the coordinates of a band whose first row is image row `top`
    (as given for the whole image: top the Python int 0)."""
    if isinstance(top, int) and top == 0:
        return points
    return points - jnp.stack([0, top]).astype(points.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def banded(render: Render, height: int, rows: int, args: tuple):
    """render's whole image (rows [0, height)) from the inputs `args`; its
    derivative recomputes the image in bands of `rows` rows (module docstring)."""
    return render(0, height, *args)


def _band_tops(height: int, rows: int):
    """(number of bands, top row of band k): every band has `rows` rows, the
    last one moved up to end at the image's bottom, so that one loop body,
    run in order, serves them all (a separate call for a shorter last band
    could be scheduled beside the other loop, and its memory with it)."""
    count = -(-height // rows)
    return count, lambda k: jnp.minimum(k * rows, height - rows)


def _banded_fwd(render, height, rows, args):
    count, top_of = _band_tops(height, rows)
    leaves, tree = jax.tree.flatten(jax.eval_shape(lambda *a: render(0, height, *a), *args))
    image = jax.tree.unflatten(tree, _partition.varying_like(
        tuple(jnp.zeros(s.shape, s.dtype) for s in leaves), args))

    def put(k, image):  # the last band rewrites rows the one before wrote
        top = top_of(k)
        return jax.tree.map(lambda whole, band: lax.dynamic_update_slice_in_dim(
            whole, band, top, 0), image, render(top, rows, *args))

    return lax.fori_loop(0, count, put, image), args


def _banded_bwd(render, height, rows, args, cotangent):
    count, top_of = _band_tops(height, rows)

    def add(k, total):
        top = top_of(k)
        # Rows an earlier band covered get no cotangent here.
        fresh = top + jnp.arange(rows) >= k * rows
        band_cotangent = jax.tree.map(lambda c: jnp.where(
            fresh.reshape((rows,) + (1,) * (c.ndim - 1)),
            lax.dynamic_slice_in_dim(c, top, rows, 0), 0), cotangent)
        _, vjp = jax.vjp(lambda *a: render(top, rows, *a), *args)
        return jax.tree.map(jnp.add, total, vjp(band_cotangent))

    total = tuple(map(_partition.zeros_like, args))  # typed as args, as the cotangents are
    return (lax.fori_loop(0, count, add, total),)


banded.defvjp(_banded_fwd, _banded_bwd)
