"""remat_rows: differentiating the image in bands of rows (jax_gmm._remat)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jax_gmm
from jax_gmm import _remat

H, W = 23, 19


def inputs(rng, n=50, c=3):
    points = rng.uniform([-3, -3], [W + 3, H + 3], (n, 2))
    return points, rng.normal(size=(n, c)), rng.uniform(0.7, 4.0, n)


def loss(rows, height=H, **kwargs):
    """A scalar of every output `interpolate` returns, with random weights."""
    def f(points, values, sigma):
        result = jax_gmm.interpolate(points, values, sigma, (height, W), remat_rows=rows,
                                     **kwargs)
        out, density = result if isinstance(result, tuple) else (result, None)
        total = jnp.sum(out * jax.random.normal(jax.random.key(1), out.shape, out.dtype))
        if density is not None:
            total += 10 * jnp.sum(density * jax.random.normal(jax.random.key(2), density.shape))
        return total
    return f


def max_difference(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                               jax.tree.leaves(b)))


@pytest.mark.parametrize("kwargs", [{}, {"eps": 1e-3}, {"return_density": True}])
# H = 23 is prime: but for 1 row, the last band overlaps the one before; 24
# rows in bands of 6 do not.
@pytest.mark.parametrize("height, rows", [(H, 1), (H, 4), (H, 7), (H, H - 1), (24, 6)])
def test_bands_match_the_whole_image(rng, kwargs, height, rows):
    args = inputs(rng)
    whole = jax.value_and_grad(loss(height, height, **kwargs), (0, 1, 2))(*args)
    banded = jax.value_and_grad(loss(rows, height, **kwargs), (0, 1, 2))(*args)
    scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(whole))
    # Shifted points round differently, so agreement is to rounding only.
    assert max_difference(whole, banded) < 1e-12 * scale


def test_banded_gradients_match_finite_differences(rng):
    # A wide cutoff, so that finite differences do not see the step at it.
    check_grads(loss(5, truncate=8.0, return_density=True), inputs(rng, n=20), order=1,
                modes=["rev"])


def test_second_order_through_bands(rng):
    args = inputs(rng, n=20)

    def hvp(rows):
        return jax.grad(lambda p: jnp.sum(jax.grad(loss(rows), 0)(p, *args[1:]) ** 2))(args[0])

    assert max_difference(hvp(H), hvp(6)) < 1e-10 * float(jnp.max(jnp.abs(hvp(H))))


def test_jit_vmap_and_determinism(rng):
    points, values, sigma = inputs(rng)
    batch = np.stack([points, points + 0.7])
    grad = jax.jit(jax.vmap(jax.grad(loss(4)), (0, None, None)))
    first, second = grad(batch, values, sigma), grad(batch, values, sigma)
    assert np.array_equal(first, second)  # bands add in a fixed order
    expected = jax.vmap(jax.grad(loss(H)), (0, None, None))(batch, values, sigma)
    assert max_difference(first, expected) < 1e-12 * float(jnp.max(jnp.abs(expected)))


def test_undifferentiated_call_is_the_whole_image(rng):
    args = inputs(rng)
    out = jax_gmm.interpolate(*args, (H, W), remat_rows=3)
    assert np.array_equal(out, jax_gmm.interpolate(*args, (H, W)))


def test_banded_backward_keeps_no_image_sized_residuals():
    """XLA's plan for value_and_grad: whole, out and density live on into the
    backward; in bands only out does (XLA may keep it until the loss has used
    it), beside a few band-sized buffers."""
    size, c = 512, 3
    args = (jnp.zeros((64, 2)), jnp.zeros((64, c)), jnp.ones(64), jnp.zeros((size, size, c)))
    image = size * size * c * 8

    def temp_bytes(rows):
        f = lambda p, v, s, t: jnp.vdot(  # noqa: E731
            jax_gmm.interpolate(p, v, s, (size, size), remat_rows=rows), t)
        return jax.jit(jax.value_and_grad(f, (0, 1, 2))).lower(*args).compile() \
            .memory_analysis().temp_size_in_bytes

    assert temp_bytes(size) >= image * (c + 1) / c
    for rows in (16, 64):
        assert temp_bytes(rows) - image < 4 * rows * size * (c + 1) * 8


def test_auto_rows():
    assert _remat.auto_rows(4096, 4096, 3, 4, 10**6) == 4096  # 256 MiB of residuals: whole
    assert _remat.auto_rows(8192, 8192, 3, 8, 10**5) == 256  # 2 GiB: bands of 64 MiB
    assert _remat.auto_rows(8192, 8192, 3, 8, 10**6) == 2048  # 4 bands of a million points
    assert _remat.auto_rows(8192, 8192, 3, 8, 10**8) == 4096  # and never fewer than 2
    assert _remat.auto_rows(10, 2**40, 1, 8, 1) == 1


@pytest.mark.parametrize("rows", [0, -2, 2.5, True, "4"])
def test_bad_remat_rows(rng, rows):
    with pytest.raises(ValueError, match="remat_rows"):
        jax_gmm.interpolate(*inputs(rng), (H, W), remat_rows=rows)
