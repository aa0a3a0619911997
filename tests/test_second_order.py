"""Second order in reverse mode (grad of grad, jacrev of jacrev), checked in
float64 against the reference's autodiff and against central differences of
the native gradient; forward mode fails with the error the docs name
(jax_gmm.reference, plain JAX, is the documented way round it)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_gmm
from jax_gmm import reference

SHAPE = (7, 9)


def inputs(rng, n=6, c=2, m=5):
    return (rng.uniform(0, 9, (n, 2)), rng.normal(size=(n, c)), rng.uniform(1.2, 2.0, n),
            rng.uniform(0, 9, (m, 2)))


def grid_loss(module, with_density):
    """A scalar of the image (and of the density) that is not quadratic;
    without the density, of the default call's image (_autodiff.grid_out)."""
    def loss(points, values, sigma):
        if not with_density:
            return jnp.sum(jnp.sin(module.interpolate(points, values, sigma, SHAPE)))
        out, density = module.interpolate(points, values, sigma, SHAPE, return_density=True)
        return jnp.sum(jnp.sin(out)) + jnp.sum(jnp.sqrt(density + 1))
    return loss


def at_loss(module, with_density=True):
    def loss(points, values, sigma, queries):
        if not with_density:  # the default call (_autodiff.scattered_out)
            return jnp.sum(jnp.cos(module.interpolate_at(points, values, sigma, queries)))
        out, density = module.interpolate_at(points, values, sigma, queries,
                                             return_density=True)
        return jnp.sum(jnp.cos(out)) + jnp.sum(density ** 2)
    return loss


def central_differences(gradient, args, argnum, h=1e-5):
    """d gradient / d args[argnum], one input coordinate at a time."""
    x = np.asarray(args[argnum])
    columns = []
    for i in range(x.size):
        step = np.zeros(x.size)
        step[i] = h
        plus = [*args[:argnum], x + step.reshape(x.shape), *args[argnum + 1:]]
        minus = [*args[:argnum], x - step.reshape(x.shape), *args[argnum + 1:]]
        columns.append(jax.tree.map(lambda a, b: (a - b) / (2 * h), gradient(*plus),
                                    gradient(*minus)))
    return jax.tree.map(lambda *c: np.stack(c, axis=-1).reshape(*c[0].shape, *x.shape),
                        *columns)


def assert_close(got, want, rtol):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        scale = max(np.max(np.abs(w)), 1e-12)
        np.testing.assert_allclose(np.asarray(g) / scale, np.asarray(w) / scale, atol=rtol)


def test_grid_hessian_jacrev_of_jacrev(rng):
    points, values, sigma, _ = inputs(rng)
    args = (points, values, sigma)
    hessian = jax.jit(jax.jacrev(jax.jacrev(grid_loss(jax_gmm, True), (0, 1, 2)),
                                 (0, 1, 2)))
    got = hessian(*args)
    want = jax.jit(jax.jacrev(jax.jacrev(grid_loss(reference, True), (0, 1, 2)),
                              (0, 1, 2)))(*args)
    assert_close(got, want, 1e-10)
    native_gradient = jax.jit(jax.grad(grid_loss(jax_gmm, True), (0, 1, 2)))
    for argnum in range(3):
        differences = central_differences(native_gradient, args, argnum)
        assert_close([row[argnum] for row in got], differences, 1e-6)


def test_grid_grad_of_grad_image_only(rng):
    """The density's cotangent is a symbolic zero here."""
    points, values, sigma, _ = inputs(rng)
    direction = rng.normal(size=points.shape)

    def outer(module):
        inner = jax.grad(grid_loss(module, False))
        return jax.jit(jax.grad(lambda p, v, s: jnp.sum(inner(p, v, s) * direction), (0, 1, 2)))
    assert_close(outer(jax_gmm)(points, values, sigma), outer(reference)(points, values, sigma),
                 1e-10)


@pytest.mark.parametrize("with_density", [True, False])
def test_scattered_hessian_in_every_argument(rng, with_density):
    args = inputs(rng)
    argnums = (0, 1, 2, 3)
    native, plain = at_loss(jax_gmm, with_density), at_loss(reference, with_density)
    got = jax.jit(jax.jacrev(jax.jacrev(native, argnums), argnums))(*args)
    want = jax.jit(jax.jacrev(jax.jacrev(plain, argnums), argnums))(*args)
    assert_close(got, want, 1e-10)
    native_gradient = jax.jit(jax.grad(native, argnums))
    differences = central_differences(native_gradient, args, 3)
    assert_close([row[3] for row in got], differences, 1e-6)


def test_second_order_under_vmap(rng):
    points, values, sigma, _ = inputs(rng)
    batch = np.stack([values, -2 * values])

    def per_example(module):
        return jax.jit(jax.vmap(lambda v: jax.jacrev(jax.grad(
            lambda s: grid_loss(module, True)(points, v, s)))(sigma)))
    assert_close(per_example(jax_gmm)(batch), per_example(reference)(batch), 1e-10)


@pytest.mark.parametrize("transform", [
    lambda f, x: jax.jvp(f, (x,), (x,)),
    lambda f, x: jax.jacfwd(f)(x),
    lambda f, x: jax.linearize(f, x)[1](x),
    lambda f, x: jax.hessian(f)(x),
])
def test_forward_mode_raises_the_documented_error(rng, transform):
    points, values, sigma, _ = inputs(rng)

    def f(s):
        return jnp.sum(jax_gmm.interpolate(points, values, s, SHAPE))
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        transform(f, sigma)
