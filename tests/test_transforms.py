"""jit, vmap and grad compositions: vmap equals a loop, and is one FFI call."""

import doctest
import importlib
import itertools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_gmm

SHAPE = (12, 15)
B = 3


def batch(rng, n=30, c=2, m=25):
    """Per-example inputs with a leading batch axis of size B."""
    points = rng.uniform(-1, 16, (B, n, 2))
    values = rng.normal(size=(B, n, c))
    sigma = rng.uniform(0.8, 2.0, (B, n))
    queries = rng.uniform(-1, 16, (B, m, 2))
    return points, values, sigma, queries


def grid_f(p, v, s):
    return jax_gmm.interpolate(p, v, s, SHAPE, return_density=True)


def at_f(p, v, s, q):
    return jax_gmm.interpolate_at(p, v, s, q, return_density=True)


def loop(f, args, in_axes):
    """The vmap semantics, one example at a time."""
    results = [f(*[a if ax is None else a[i] for a, ax in zip(args, in_axes)]) for i in range(B)]
    return jax.tree.map(lambda *r: np.stack(r), *results)


def pick(args, in_axes):
    return [a if ax is not None else a[0] for a, ax in zip(args, in_axes)]


@pytest.mark.parametrize("in_axes", list(itertools.product([0, None], repeat=3))[:-1])
def test_grid_vmap_equals_loop(rng, in_axes):
    args = pick(batch(rng)[:3], in_axes)
    got = jax.jit(jax.vmap(grid_f, in_axes=in_axes))(*args)
    want = loop(grid_f, args, in_axes)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("in_axes", list(itertools.product([0, None], repeat=4))[:-1])
def test_queries_vmap_equals_loop(rng, in_axes):
    args = pick(batch(rng), in_axes)
    got = jax.vmap(at_f, in_axes=in_axes)(*args)
    want = loop(at_f, args, in_axes)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-15)


def test_scalar_sigma_batched(rng):
    points, values, _, _ = batch(rng)
    sigmas = np.array([0.9, 1.4, 2.2])
    got = jax.vmap(lambda s: grid_f(points[0], values[0], s)[0])(sigmas)
    for i, s in enumerate(sigmas):
        np.testing.assert_allclose(got[i], grid_f(points[0], values[0], s)[0], rtol=1e-13)


def test_nested_vmap(rng):
    points, values, sigma, _ = batch(rng)
    values2 = np.stack([values, values * 2 + 1])  # (2, B, n, c)
    # outer over values only, inner over points and values
    f = jax.vmap(jax.vmap(lambda p, v: grid_f(p, v, sigma[0])[0], in_axes=(0, 0)),
                 in_axes=(None, 0))
    got = f(points, values2)
    for k in range(2):
        for i in range(B):
            np.testing.assert_allclose(got[k, i], grid_f(points[i], values2[k, i], sigma[0])[0],
                                       rtol=1e-13, atol=1e-15)


def loss(p, v, s):
    out, density = grid_f(p, v, s)
    return (out**2).sum() + density.sum()


def test_grad_of_vmap_and_vmap_of_grad(rng):
    points, values, sigma, _ = batch(rng)
    # shared points, batched values: grad of the summed vmapped loss sums over the batch
    g_shared = jax.grad(lambda p: jax.vmap(loss, in_axes=(None, 0, None))(p, values,
                                                                           sigma[0]).sum())(
        points[0])
    want = sum(jax.grad(loss)(points[0], values[i], sigma[0]) for i in range(B))
    np.testing.assert_allclose(g_shared, want, rtol=1e-12)
    per_example = jax.vmap(jax.grad(loss, argnums=(0, 1, 2)))(points, values, sigma)
    for i in range(B):
        for g, w in zip(per_example, jax.grad(loss, argnums=(0, 1, 2))(points[i], values[i],
                                                                       sigma[i])):
            np.testing.assert_allclose(g[i], w, rtol=1e-12, atol=1e-15)


def custom_calls(f, *args):
    text = jax.jit(f).lower(*args).as_text()
    return {kind: text.count(f"jax_gmm_{kind}") for kind in
            ("grid_forward", "grid_out", "grid_backward", "scattered_forward", "scattered_out",
             "scattered_backward")}


@pytest.mark.skipif("cpu" not in jax_gmm._native.NATIVE_PLATFORMS, reason="no native CPU module")
def test_vmap_is_one_custom_call(rng):
    points, values, sigma, queries = batch(rng)
    calls = custom_calls(jax.vmap(lambda p, v: grid_f(p, v, sigma[0])[0], in_axes=(None, 0)),
                         points[0], values)
    assert calls["grid_forward"] == 1 and calls["grid_backward"] == 0
    grad_f = jax.vmap(jax.grad(lambda p, v: loss(p, v, sigma[0]), argnums=(0, 1)))
    calls = custom_calls(grad_f, points, values)
    assert calls["grid_forward"] == 1 and calls["grid_backward"] == 1
    calls = custom_calls(jax.vmap(jax.grad(lambda q: at_f(points[0], values[0], sigma[0],
                                                          q)[0].sum())), queries)
    assert calls["scattered_forward"] == 1 and calls["scattered_backward"] == 1


@pytest.mark.skipif("cpu" not in jax_gmm._native.NATIVE_PLATFORMS
                    or jax.default_backend() != "cpu",
                    reason="the out-alone targets are the CPU module's")
@pytest.mark.parametrize("kind", ["grid", "scattered"])
def test_out_without_density_is_one_call_and_the_same_bits(rng, kind):
    """Undifferentiated and without return_density or eps, interpolate and
    interpolate_at call {grid,scattered}_out, which write no density; under
    grad they take the full forward's residuals. Outputs and gradients are
    bit for bit those with the density (the gradients take the same kernels
    both ways: this checks the rules' wiring)."""
    points, values, sigma, queries = batch(rng)
    if kind == "grid":
        out = lambda p, v, s, **kw: jax_gmm.interpolate(p, v, s, SHAPE, **kw)  # noqa: E731
        with_density = grid_f
    else:
        out = lambda p, v, s, **kw: jax_gmm.interpolate_at(p, v, s, queries[0], **kw)  # noqa: E731
        with_density = lambda p, v, s: at_f(p, v, s, queries[0])  # noqa: E731
    args = points[0], values[0], sigma[0]
    calls = custom_calls(jax.vmap(out, in_axes=(None, 0, None)), points[0], values, sigma[0])
    assert calls[f"{kind}_out"] == 1 and calls[f"{kind}_forward"] == 0
    calls = custom_calls(jax.grad(lambda *a: out(*a).sum()), *args)
    assert calls[f"{kind}_out"] == 0 and calls[f"{kind}_forward"] == 1
    assert custom_calls(lambda *a: out(*a, eps=0.1), *args)[f"{kind}_out"] == 0
    np.testing.assert_array_equal(jax.vmap(out)(points, values, sigma),
                                  jax.vmap(with_density)(points, values, sigma)[0])
    squared = lambda f: lambda *a: jnp.sum(f(*a) ** 2)  # noqa: E731
    for a, b in zip(jax.grad(squared(out), argnums=(0, 1, 2))(*args),
                    jax.grad(squared(lambda *a: with_density(*a)[0]), argnums=(0, 1, 2))(*args)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif("cpu" not in jax_gmm._native.NATIVE_PLATFORMS, reason="no native CPU module")
def test_unbatched_operands_are_not_broadcast(rng):
    """With shared points the FFI call gets (1, N, 2), not (B, N, 2)."""
    points, values, sigma, _ = batch(rng)
    text = jax.jit(jax.vmap(lambda v: grid_f(points[0], v, sigma[0])[0])).lower(values).as_text()
    call = next(line for line in text.splitlines() if "jax_gmm_grid_forward" in line)
    assert f"tensor<1x{points.shape[1]}x2xf64>" in call
    assert f"tensor<{B}x{points.shape[1]}x2xf64>" in call  # the batched values


def test_jit_matches_eager(rng):
    points, values, sigma, _ = batch(rng)
    eager = grid_f(points[0], values[0], sigma[0])
    jitted = jax.jit(grid_f)(points[0], values[0], sigma[0])
    for a, b in zip(eager, jitted):
        np.testing.assert_array_equal(a, b)


def test_float32_under_vmap(rng):
    points, values, sigma, _ = (a.astype(np.float32) for a in batch(rng))
    out = jax.vmap(lambda p, v, s: grid_f(p, v, s)[0])(points, values, sigma)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out[1], grid_f(points[1], values[1], sigma[1])[0], rtol=1e-6)


@pytest.mark.parametrize("where", ["grid", "queries"])
def test_jacrev_matches_reference(rng, where):
    """jax.jacrev maps the backward over the cotangent alone: the forward's
    results and the inputs reach the kernel unbatched and are broadcast."""
    points = rng.uniform(0, 10, (25, 2))
    values = rng.normal(size=(25, 2))
    queries = rng.uniform(0, 10, (6, 2))

    def f(module):
        if where == "grid":
            return lambda p, v: module.interpolate(p, v, 1.5, (4, 5))
        return lambda p, v: module.interpolate_at(p, v, 1.5, queries)

    native = jax.jacrev(f(jax_gmm), argnums=(0, 1))(points, values)
    reference = jax.jacrev(f(jax_gmm.reference), argnums=(0, 1))(points, values)
    for a, b in zip(native, reference):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * np.abs(b).max())


@pytest.mark.parametrize("module", ["jax_gmm", "jax_gmm._api", "jax_gmm._native",
                                    "jax_gmm.adaptive", "jax_gmm.reconstruction"])
def test_docstring_examples_run(module):
    globs = {"jax": jax, "jnp": jnp, "jax_gmm": jax_gmm}
    result = doctest.testmod(importlib.import_module(module), extraglobs=globs)
    assert result.attempted and not result.failed


def test_gpu_without_cuda_module_warns_once(rng, monkeypatch):
    from jax_gmm import _native
    monkeypatch.setattr(_native, "NATIVE_PLATFORMS", ("cpu",))
    monkeypatch.setattr(_native, "_gpu_visible", lambda: True)
    monkeypatch.setattr(_native, "_warned_gpu", False)
    points, values = rng.uniform(0, 5, (4, 2)), rng.normal(size=(4, 1))
    with pytest.warns(UserWarning, match="no CUDA module.*JAX_GMM_CUDA=ON"):
        jax_gmm.interpolate(points, values, 1.0, (5, 7))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jax_gmm.interpolate(points, values, 1.0, (5, 8))
