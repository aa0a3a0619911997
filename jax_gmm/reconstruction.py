"""Rebuilding an image from scattered samples: `reconstruct`.

The plain Gaussian-weighted mean of the samples is a local average: it
reproduces constants only, and round Gaussians blur across edges. Three
changes, each built on the same mixture, make it a sharper reconstruction:

- Steered widths: each sample's Gaussian is stretched along the edge it sits
  on (the structure tensor of a first, plain rendering gives the edge's
  direction and strength), at the area of the round one (Takeda, Farsiu and
  Milanfar, "Kernel regression for image processing and reconstruction",
  2007).
- Local linear fit: at every pixel the Gaussian-weighted least-squares plane
  through the samples, rather than their weighted mean (first-order
  normalised convolution, Knutsson and Westin 1993), from the mixture's
  moments: `interpolate` of the samples times 1, x and y, and of x, y, x^2,
  x y and y^2.
- Residual correction: the values are corrected a few times by what the fit
  misses at the samples, v <- v + STEP (samples - fit at the samples).

A second pass estimates the edges again from the first pass's result. The
constants below were chosen on half of scikit-image's photographs
(experiments/scattered_reconstruction.py reports on the other half).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

from jax_gmm import _checks, reference
from jax_gmm._api import interpolate, interpolate_at
from jax_gmm._checks import ArrayLike
from jax_gmm.adaptive import DEFAULT_K, DEFAULT_SCALE, FITTED_TRUNCATE as TRUNCATE, adaptive_sigma


#: Round width: WIDTH x the distance to the DEFAULT_K-th nearest sample.
WIDTH = 0.5
#: Elongation along an edge: (lambda_1 / lambda_2) ** ELONGATION_POWER of the
#: structure tensor's eigenvalues, at most MAX_ELONGATION (the ratio of the
#: two axes' variances; the area stays that of the round Gaussian).
ELONGATION_POWER = 1.0
MAX_ELONGATION = 16.0
#: The structure tensor is smoothed over TENSOR_SCALE x the mean sample
#: spacing sqrt(H W / N) and scaled to a mean trace of 1; its eigenvalues get
#: TENSOR_FLOOR added, so that flat regions stay round.
TENSOR_SCALE = 1.0
TENSOR_FLOOR = 0.01
#: Cap on that smoothing's radius (reached below about 1 % of pixels kept).
MAX_BLUR_RADIUS = 32
#: Ridge on the local fit's 2 x 2 moment matrix, relative to its trace: where
#: the samples around a pixel are nearly collinear the plane tilts less.
RIDGE = 0.1
#: Residual correction steps per pass and their size.
STEP = 0.7


def _moments(points: jax.Array, values: jax.Array) -> jax.Array:
    """(N, 3 C + 5) channels whose weighted means give the local plane: c,
    x c, y c, x, y, x^2, x y, y^2 (positions as given)."""
    x, y = points[:, :1], points[:, 1:]
    return jnp.concatenate([values, x * values, y * values, x, y, x * x, x * y, y * y], -1)


def _plane(means: jax.Array, density: jax.Array, queries: jax.Array, channels: int) -> jax.Array:
    """The weighted least-squares plane through the samples, evaluated at the
    queries, from the weighted means of _moments: (..., C)."""
    c = channels
    mean_c, mean_xc, mean_yc = means[..., :c], means[..., c:2 * c], means[..., 2 * c:3 * c]
    mx, my, mxx, mxy, myy = (means[..., 3 * c + j] for j in range(5))
    # Variances that cancellation rounds below 0 are 0, and the covariance
    # stays within their geometric mean (a square root whose derivative is
    # kept finite where one sample, or collinear ones, make it 0). The
    # ridge's last terms cover the rounding error of mxx - mx^2 and keep the
    # matrix positive definite where the variances are 0, in pixels^2.
    vxx, vyy = jnp.maximum(mxx - mx * mx, 0), jnp.maximum(myy - my * my, 0)
    product = vxx * vyy
    bound = jnp.where(product > 0, jnp.sqrt(jnp.where(product > 0, product, 1)), 0)
    vxy = jnp.clip(mxy - mx * my, -bound, bound)
    eps = jnp.finfo(means.dtype).eps
    ridge = RIDGE * (vxx + vyy) / 2 + 16 * eps * (mxx + myy + 1)
    vxx, vyy = vxx + ridge, vyy + ridge
    det = vxx * vyy - vxy * vxy
    cov_x = mean_xc - mx[..., None] * mean_c
    cov_y = mean_yc - my[..., None] * mean_c
    slope_x = (vyy[..., None] * cov_x - vxy[..., None] * cov_y) / det[..., None]
    slope_y = (vxx[..., None] * cov_y - vxy[..., None] * cov_x) / det[..., None]
    plane = (mean_c + slope_x * (queries[..., :1] - mx[..., None])
             + slope_y * (queries[..., 1:] - my[..., None]))
    return jnp.where((density > 0)[..., None], plane, 0)


def _blur(image: jax.Array, sigma: float) -> jax.Array:
    """Separable Gaussian blur of an (H, W, K) image, edges replicated, cut
    at 3 sigma but at most MAX_BLUR_RADIUS pixels: a sum of shifted slices,
    which XLA's CPU backend runs several times faster than a convolution,
    kept to a program of bounded size."""
    radius = max(1, min(int(np.ceil(3 * sigma)), MAX_BLUR_RADIUS))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = jnp.asarray(taps / taps.sum(), image.dtype)
    for axis in (0, 1):
        padded = jnp.pad(image, [(radius, radius) if a == axis else (0, 0) for a in range(3)],
                         mode="edge")
        size = image.shape[axis]
        image = sum(w * jax.lax.slice_in_dim(padded, j, j + size, axis=axis)
                    for j, w in enumerate(taps))
    return image


def image_gradient(image: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(d/drow, d/dcolumn) of an (H, W, C) image by central differences, 0
    along an axis of one pixel."""
    return tuple(jnp.gradient(image, axis=a) if image.shape[a] > 1 else jnp.zeros_like(image)
                 for a in (0, 1))


def _steered(image: jax.Array, points: jax.Array, width: jax.Array,
             spacing: float) -> jax.Array:
    """(N, 2, 2) covariances of area pi width^2, stretched along the edges of
    `image` (H, W, C) at the points."""
    # The colour structure tensor: the sum over channels of grad grad^T, of
    # the image scaled to a peak of 1 and the tensor to a mean trace of 1
    # (finite entries only: a NaN sample spoils its neighbourhood, not every
    # covariance), so that the steering does not depend on the samples' units.
    finite = jnp.isfinite(image)
    peak = jnp.max(jnp.where(finite, jnp.abs(image), 0), initial=0)  # initial: C may be 0
    gy, gx = image_gradient(image / jnp.where(peak > 0, peak, 1))
    tensor = _blur(jnp.stack([(gx * gx).sum(-1), (gx * gy).sum(-1), (gy * gy).sum(-1)], -1),
                   TENSOR_SCALE * spacing)
    trace = tensor[..., 0] + tensor[..., 2]
    usable = jnp.isfinite(trace)
    mean_trace = jnp.sum(jnp.where(usable, trace, 0)) / jnp.maximum(jnp.sum(usable), 1)
    tensor = tensor / jnp.where(mean_trace > 0, mean_trace, 1)
    height, width_px = image.shape[:2]
    col = jnp.clip(jnp.floor(points[:, 0]).astype(jnp.int32), 0, width_px - 1)
    row = jnp.clip(jnp.floor(points[:, 1]).astype(jnp.int32), 0, height - 1)
    jxx, jxy, jyy = (tensor[row, col, j] for j in range(3))
    # Eigenvalues mean +- half_gap, and the projector onto the gradient's
    # direction, (J - lambda_2 I) / (lambda_1 - lambda_2). Where the gap is 0
    # the ratio is 1 and any projector gives the round covariance: take 0
    # (with a square root and a division whose gradients stay finite).
    gap_squared = ((jxx - jyy) / 2) ** 2 + jxy ** 2
    distinct = gap_squared > 0
    half_gap = jnp.where(distinct, jnp.sqrt(jnp.where(distinct, gap_squared, 1)), 0)
    mean = (jxx + jyy) / 2
    smaller = jnp.maximum(mean - half_gap, 0)  # >= 0 but for rounding
    ratio = ((mean + half_gap + TENSOR_FLOOR) / (smaller + TENSOR_FLOOR)) ** ELONGATION_POWER
    ratio = jnp.minimum(ratio, MAX_ELONGATION)
    denominator = jnp.where(distinct, 2 * half_gap, 1)
    across_xx = jnp.where(distinct, (jxx - mean + half_gap) / denominator, 0)
    across_xy = jxy / denominator
    across_yy = jnp.where(distinct, (jyy - mean + half_gap) / denominator, 0)
    across = jnp.stack([jnp.stack([across_xx, across_xy], -1),
                        jnp.stack([across_xy, across_yy], -1)], -2)
    along = jnp.eye(2, dtype=image.dtype) - across
    root = jnp.sqrt(ratio)[:, None, None]
    # Widths capped so that the covariances (width^2 times at most
    # sqrt(MAX_ELONGATION)) stay finite: a sample far from all others would
    # otherwise give inf * 0. The kernels weigh such widths as their own
    # cap anyway (1 / sigma is capped).
    width = jnp.minimum(width, np.sqrt(np.finfo(image.dtype).max) / 4)
    return (width ** 2)[:, None, None] * (root * along + across / root)


def reconstruct(points: ArrayLike, samples: ArrayLike, shape: tuple[int, int], *,
                passes: int = 2, iters: int = 2, return_density: bool = False
                ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Rebuilds an (H, W, C) image from samples at scattered points.

    Args:
      points: (N, 2) sample positions (x, y) in pixels (pixel (i, j) has its
        centre at (j + 0.5, i + 0.5)).
      samples: (N, C) values there.
      shape: static (H, W) of the image.
      passes: static number of edge estimates (default 2): the first from
        the plain mean with round Gaussians, each later one from the previous
        pass's result.
      iters: static residual corrections per pass (default 2).
      return_density: also return Z, (H, W), of the last pass's Gaussians:
        0 where no sample reaches.

    Returns:
      (H, W, C) in the inputs' floating dtype, 0 where no sample reaches (and
      with ``return_density``, ``(image, density)``). A sample with no other
      finite sample, or whose 4th nearest coincides with it, has width 0 and
      contributes nothing, so one sample alone renders nothing. A NaN sample
      makes its neighbourhood NaN (about 7 sample spacings across, for
      random samples), not the image, but the samples whose edge estimate
      it spoils contribute nothing, which can leave unreached pixels (0)
      where samples are sparse, and the estimate's normalisation changes
      the rest of the image slightly: drop non-finite samples first. A
      point at a NaN or infinite position contributes nothing and gets
      zero gradients.
      Positions are taken relative to the image's centre; in float32, images
      wider than a few thousand pixels lose accuracy towards their edges (use
      float64).
      Differentiable in samples and points (reverse mode), jit-able and
      vmap-able. Costs one neighbour search, the plain first rendering, and
      per pass a blur of the structure tensor (O(H W) per tap, about 6 x the
      sample spacing taps per axis, at most 65), `iters` evaluations of the mixture at
      the samples and one rendering, both with 3 C + 5 channels.

    Example:
      >>> points = jax.random.uniform(jax.random.key(0), (300, 2)) * 32
      >>> samples = jnp.sin(points[:, :1] / 5) + points[:, 1:] / 32
      >>> jax_gmm.reconstruct(points, samples, (32, 32)).shape
      (32, 32, 1)
    """
    passes = _checks.check_int("passes", passes, 1)
    return_density = _checks.check_flag("return_density", return_density)
    iters = _checks.check_int("iters", iters, 0)
    height, width = _checks.check_shape(shape)
    points, samples = _checks.as_array("points", points), _checks.as_array("samples", samples)
    n = _checks.check_points(points)
    if export.is_symbolic_dim(n):
        raise ValueError("points must have a known number of rows in reconstruct (the width of "
                         f"its structure tensor's smoothing depends on it), got {n}")
    channels = _checks.check_values(samples, n, "samples")
    if export.is_symbolic_dim(channels):
        raise ValueError(f"samples must have a known number of channels, got {channels}")
    result, kernel = _checks.compute_dtype(points, samples)
    image, density = _reconstruct(jnp.asarray(points, kernel), jnp.asarray(samples, kernel),
                                  height, width, channels, passes, iters)
    image, density = image.astype(result), density.astype(result)
    return (image, density) if return_density else image


@partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _reconstruct(points, samples, height, width, channels, passes, iters):
    if points.shape[0] == 0 or height * width == 0:
        return (jnp.zeros((height, width, channels), samples.dtype),
                jnp.zeros((height, width), samples.dtype))
    # The moments use positions relative to the image's centre, so that x^2
    # loses less to cancellation against the squared mean.
    centre = jnp.asarray([width / 2, height / 2], points.dtype)
    # A non-finite position leaves its point and query inert in the kernels,
    # with zero gradients; its moments and plane take the centre instead, so
    # that no 0 * NaN turns those zero cotangents into NaN ones.
    local = jnp.where(jnp.isfinite(points).all(-1, keepdims=True), points - centre, 0)
    # Clipped where the fit's products of four coordinates (the moment
    # matrix's determinant) would overflow, about 3e8 pixels out in float32
    # and 3e76 in float64: a point that far has no usable plane anyway.
    far = float(np.finfo(points.dtype).max) ** 0.25 / 4
    local = jnp.clip(local, -far, far)
    pixels = reference.pixel_centres(height, width, points.dtype).reshape(height, width, 2)
    pixels = pixels - centre
    distance = adaptive_sigma(points, k=DEFAULT_K, scale=1.0)
    spacing = float(np.sqrt(height * width / points.shape[0]))
    image = interpolate(points, samples, DEFAULT_SCALE * distance, (height, width),
                        truncate=TRUNCATE)

    def fit_at_samples(values, sigma):
        means, density = interpolate_at(points, _moments(local, values), sigma, points,
                                        truncate=TRUNCATE, return_density=True)
        return _plane(means, density, local, channels)

    for _ in range(passes):
        sigma = _steered(image, points, WIDTH * distance, spacing)
        values = samples
        for _ in range(iters):
            values = values + STEP * (samples - fit_at_samples(values, sigma))
        means, density = interpolate(points, _moments(local, values), sigma, (height, width),
                                     truncate=TRUNCATE, return_density=True)
        image = _plane(means, density, pixels, channels)
    return image, density
