"""The native modules: what build_info reports, the portable CPU build, and the
fallback to the reference where no native kernel is registered."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import pytest

import jax_gmm
from brute_force import covariance_gmm, gmm_grid, pixel_centres
from jax_gmm import _ffi

needs_cpu_module = pytest.mark.skipif(not jax_gmm.build_info()["cpu"],
                                      reason="native CPU module not built")


@needs_cpu_module
def test_build_info_reports_the_cpu_module():
    info = jax_gmm.build_info()
    cpu = info["cpu"]
    major, minor = cpu["ffi_api_version"]
    assert major == 0 and minor >= 1
    assert "jax_gmm_grid_forward_f32" in cpu["targets"] and len(cpu["targets"]) == 14
    assert "-O3" in cpu["compile_flags"] and cpu["jaxlib_version"]
    assert info["jaxlib"] == jaxlib.__version__


SCRIPT = """
import numpy as np, jax
jax.config.update("jax_enable_x64", True)
import jax_gmm
rng = np.random.default_rng(0)
p = rng.uniform(-3, 70, (500, 2)); v = rng.normal(size=(500, 3)); s = rng.uniform(0.5, 3, 500)
q = rng.uniform(-3, 70, (400, 2))
parts = {{}}
for dtype in (np.float64, np.float32):
    p, v, s, q = (x.astype(dtype) for x in (p, v, s, q))
    grid = lambda p, v, s: (jax_gmm.interpolate(p, v, s, (64, 70)) ** 2).sum()
    at = lambda p, v, s, q: (jax_gmm.interpolate_at(p, v, s, q) ** 2).sum()
    name = np.dtype(dtype).name
    parts[name + " grid"] = jax_gmm.interpolate(p, v, s, (64, 70))
    for arg, g in zip("pvs", jax.grad(grid, argnums=(0, 1, 2))(p, v, s)):
        parts[f"{{name}} grid d{{arg}}"] = g
    parts[name + " sparse"] = jax_gmm.interpolate_at(p, v, s, q[:60])  # kernels.h
    parts[name + " queries"] = jax_gmm.interpolate_at(p, v, s, q)  # the general path
    for arg, g in zip("pvsq", jax.grad(at, argnums=(0, 1, 2, 3))(p, v, s, q)):
        parts[f"{{name}} queries d{{arg}}"] = g
np.savez({path!r}, **{{k: np.asarray(x, np.float64) for k, x in parts.items()}})
"""


@needs_cpu_module
def test_portable_build_matches_dispatched_build(tmp_path):
    """JAX_GMM_CPU_ISA=baseline|avx2 caps the kernel build (the default is the
    best this CPU runs, AVX-512 here if it has it). Every build gives the same
    bits, in float64 and float32, on the grid and at queries, forward and
    backward (the same IEEE operations in the same order, vectorised or not),
    except the points' cotangents at queries: their sums over a point's
    queries are vector reductions, whose order follows the vector width."""
    results = []
    for isa in ("baseline", "avx2", "default"):
        path = str(tmp_path / f"{isa}.npz")
        env = dict(os.environ, JAX_GMM_CPU_ISA=isa)
        subprocess.run([sys.executable, "-c", SCRIPT.format(path=path)], env=env, check=True)
        results.append(dict(np.load(path)))
    for result in results[1:]:
        for name, expected in results[0].items():
            reduced = name.split()[-1] in ("dp", "dv", "ds") and "queries" in name
            if reduced:
                tol = 1e-12 if name.startswith("float64") else 1e-5
                np.testing.assert_allclose(result[name], expected, rtol=tol,
                                           atol=tol * np.abs(expected).max(), err_msg=name)
            else:
                np.testing.assert_array_equal(result[name], expected, err_msg=name)
            assert np.abs(expected).max() > 0, name


THREADS_SCRIPT = """
import numpy as np, jax
import jax_gmm
rng = np.random.default_rng(1)
# More than 4096 points and queries: several chunks in every parallel pass.
p = rng.uniform(0, 300, (9000, 2)).astype(np.float32)
v = rng.normal(size=(9000, 2)).astype(np.float32)
q = rng.uniform(-5, 305, (12000, 2)).astype(np.float32)
loss = lambda p, v, s, q: (jax_gmm.interpolate_at(p, v, s, q) ** 2).sum() + (
    jax_gmm.interpolate(p, v, s, (200, 300)) ** 2).sum()
grads = jax.grad(loss, argnums=(0, 1, 2, 3))(p, v, np.float32(1.7), q)
parts = [jax_gmm.interpolate_at(p, v, 1.7, q), jax_gmm.adaptive_sigma(p), *grads,
         jax_gmm.interpolate_at(p, v, 1.7, q[:1000])]  # 9 points per query: sparse (kernels.h)
np.save({path!r}, np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in parts]))
"""


@needs_cpu_module
def test_results_do_not_depend_on_the_thread_count(tmp_path):
    """Work is split into fixed chunks (cuda/cpu/parallel.h), so one thread and
    every thread give the same bits, forward and backward, on the grid and
    at queries."""
    results = []
    for threads in ("1", None):
        path = str(tmp_path / f"threads-{threads}.npy")
        env = {k: v for k, v in os.environ.items() if k != "JAX_GMM_NUM_THREADS"}
        if threads:
            env["JAX_GMM_NUM_THREADS"] = threads
        subprocess.run([sys.executable, "-c", THREADS_SCRIPT.format(path=path)], env=env,
                       check=True)
        results.append(np.load(path))
    np.testing.assert_array_equal(results[0], results[1])
    assert np.abs(results[0]).max() > 0


def test_fallback_without_native_kernel(monkeypatch, rng):
    """Platforms without a native kernel run the reference: same values, no custom call."""
    points = rng.uniform(0, 20, (50, 2))
    values = rng.normal(size=(50, 2))
    native = jax_gmm.interpolate(points, values, 1.5, (16, 20))
    monkeypatch.setattr(_ffi, "NATIVE_PLATFORMS", ())
    jax.clear_caches()
    try:
        f = lambda p: jax_gmm.interpolate(p, values, 1.5, (16, 20))  # noqa: E731
        assert "jax_gmm_" not in jax.jit(f).lower(points).as_text()
        np.testing.assert_allclose(f(points), native, rtol=1e-12, atol=1e-14)
        grad = jax.grad(lambda p: f(p).sum())(points)
        monkeypatch.undo()
        jax.clear_caches()
        np.testing.assert_allclose(grad, jax.grad(lambda p: f(p).sum())(points), rtol=1e-10,
                                   atol=1e-12)
    finally:
        jax.clear_caches()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels,batch,shape", [
    (0, 3, (64, 61)), (1, 70, (64, 61)), (3, 22, (64, 61)), (7, 5, (64, 61)), (8, 5, (64, 61)),
    (40, 3, (64, 61)), (70, 2, (64, 61)), (3, 12, (150, 140))])
def test_shared_points_batch_renders_each_image_as_alone(rng, dtype, channels, batch, shape):
    """vmap over values with shared points renders several images per pass over
    each tile (grid_forward.cc, for_each_pass), pixel-major when they nearly
    fill one (C = 1 to 7) and in planes otherwise: the batches here cross a
    pass boundary, mix both kinds of pass or split an image's channels, the
    last case has whole 128-pixel tiles, and every image must come out bit for
    bit as a call of its own, a non-finite value in one image included; and
    the same without the density (the grid_out call, which writes none)."""
    height, width = shape
    points = rng.uniform(-5, max(shape) + 6, (300, 2)).astype(dtype)
    sigma = np.stack([np.diag(d) for d in rng.uniform(0.5, 9, (300, 2))]).astype(dtype)
    sigma[::3, 0, 1] = sigma[::3, 1, 0] = 0.4 * np.sqrt(sigma[::3, 0, 0] * sigma[::3, 1, 1])
    points[7] = (30.0, 30.0)  # inside the image, so its value reaches pixels
    values = rng.normal(size=(batch, 300, channels)).astype(dtype)
    if channels:
        values[batch // 2, 7, 0] = np.nan  # mostly not the first example of its pass
    render = jax.jit(lambda v: jax_gmm.interpolate(points, v, sigma, shape,
                                                   return_density=True))
    image = jax.jit(lambda v: jax_gmm.interpolate(points, v, sigma, shape))
    batched, density = (np.asarray(x) for x in jax.jit(jax.vmap(render))(values))
    batched_image = np.asarray(jax.jit(jax.vmap(image))(values))
    for b in range(batch):
        alone, alone_density = render(values[b])
        np.testing.assert_array_equal(batched[b], alone)
        np.testing.assert_array_equal(density[b], alone_density)
        np.testing.assert_array_equal(batched_image[b], alone)
        np.testing.assert_array_equal(image(values[b]), alone)
    if channels:
        tol = 1e-4 if dtype == np.float32 else 1e-10
        expected, _, ambiguous = covariance_gmm(points, values[0], sigma,
                                                pixel_centres(height, width), dtype=dtype)
        clear = ~ambiguous  # no pair within an ulp's reach of the cutoff
        np.testing.assert_allclose(batched[0].reshape(-1, channels)[clear], expected[clear],
                                   rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grid_backward_in_chunks_is_bitwise_the_same(rng, monkeypatch, dtype):
    """Wide points cover many tiles; a byte budget of 1 makes every point its
    own chunk of the backward's (point, tile) partials: the same bits."""
    points = rng.uniform(-40, 300, (50, 2)).astype(dtype)
    values = rng.uniform(-1, 1, (50, 3)).astype(dtype)
    sigma = rng.uniform(1, 60, 50).astype(dtype)
    loss = jax.jit(jax.grad(lambda p, v, s: jnp.sum(
        jnp.sin(jax_gmm.interpolate(p, v, s, (300, 260)))), argnums=(0, 1, 2)))
    whole = loss(points, values, sigma)
    monkeypatch.setenv("JAX_GMM_BACKWARD_BYTES", "1")
    chunked = loss(points, values, sigma)
    for a, b in zip(whole, chunked):
        np.testing.assert_array_equal(a, b)
    assert np.abs(np.asarray(whole[0])).max() > 0


@needs_cpu_module
def test_outputs_past_the_huge_page_size_are_right(rng):
    """Results of 32 MiB or more are advised to take huge pages
    (cuda/cpu/streaming.h): a 37.5 MiB render equals the brute force where its
    points reach and is 0 elsewhere, and the gradient computed from it is right."""
    height, width = 1600, 1536  # out: 1600 * 1536 * 4 channels * 4 bytes = 37.5 MiB
    points = rng.uniform(0, 48, (40, 2)).astype(np.float32) + np.float32(700)
    values = rng.uniform(-1, 1, (40, 4)).astype(np.float32)
    out = np.asarray(jax.jit(lambda p, v: jax_gmm.interpolate(p, v, 2.5, (height, width)))(
        points, values))
    crop = (slice(680, 770), slice(680, 770))
    expected = gmm_grid(points - np.float32(680), values, np.full(40, 2.5, np.float32),
                        (90, 90))[0]
    np.testing.assert_allclose(out[crop], expected, rtol=2e-5, atol=2e-6)
    rest = out.copy()
    rest[crop] = 0
    assert not rest.any()
    d_values = jax.grad(lambda v: jnp.sum(jax_gmm.interpolate(points, v, 2.5, (height, width))))(
        values)
    # d sum(out) / d c_ic = sum over pixels of w_i / Z, the brute force's image of c = e_i
    shares = gmm_grid(points - np.float32(680), np.eye(40, dtype=np.float32),
                      np.full(40, 2.5, np.float32), (90, 90))[0].sum((0, 1))
    np.testing.assert_allclose(d_values, np.repeat(shares[:, None], 4, 1), rtol=1e-4)


@pytest.mark.parametrize("point_grads, query_grads",
                         [(True, True), (True, False), (False, True), (False, False)])
def test_scattered_backward_skips_the_cotangents_it_is_told_to(rng, point_grads, query_grads):
    """The kernel's two attributes: a skipped cotangent is zeros, every other
    one bitwise that of the full call, on a batch with queries out of reach
    and NaN."""
    points = rng.uniform(0, 10, (2, 20, 2))
    values = rng.normal(size=(2, 20, 3))
    scale = np.tile([1.5, 0.2, 1.3], (2, 20, 1))
    queries = rng.uniform(0, 10, (2, 15, 2))
    queries[0, 0] = np.nan
    queries[1, :3] += 1e4
    out, density = jax.vmap(lambda *a: _ffi.scattered_forward(*a, 4.0))(points, values, scale,
                                                                         queries)
    cotangents = (rng.normal(size=out.shape), rng.normal(size=density.shape))
    args = (points, values, scale, queries, out, density, *cotangents)

    def backward(*flags):
        return jax.jit(jax.vmap(lambda *a: _ffi.scattered_backward(*a, 4.0, *flags)))(*args)

    for k, (got, every) in enumerate(zip(backward(point_grads, query_grads),
                                         backward(True, True))):
        wanted = query_grads if k == 3 else point_grads
        assert np.abs(every).max() > 0
        np.testing.assert_array_equal(got, every if wanted else np.zeros_like(every))
