"""Fitting Gaussians to an image: `fit_image`.

The image is represented by the normalised mixture that `jax_gmm.interpolate`
renders, out(q) = sum_i c_i N(q | mu_i, Sigma_i) / sum_i N(q | mu_i, Sigma_i),
and Adam minimises the mean squared error of that rendering against the image.
The choices below were made on scikit-image's astronaut and coffee
photographs (experiments/image_fitting.py reports on others).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_gmm import _checks
from jax_gmm._api import interpolate
from jax_gmm._checks import ArrayLike
from jax_gmm.reconstruction import image_gradient


#: Adam learning rates at the start of the schedule, per step: positions in
#: units of the mean point spacing sqrt(H W / n) (so that a denser fit moves
#: its points by fewer pixels), log-widths (dimensionless), rotation angles
#: in radians, and colours in units of the image's value range (max - min).
LEARNING_RATES = {"position": 0.1, "log_scale": 0.04, "angle": 0.05, "colour": 0.03}

#: The initial positions are drawn from a mixture of the uniform distribution
#: over the pixels (weight UNIFORM_SHARE) and one proportional to the image's
#: gradient magnitude, as Image-GS does (it uses 0.3; 0.1 fits better here).
UNIFORM_SHARE = 0.1

#: A Gaussian starts round with width WIDTH_PER_SPACING / sqrt(pi d) pixels,
#: d the expected number of positions drawn per pixel where it lies.
WIDTH_PER_SPACING = 1.0

#: Widths (standard deviations along the Gaussian's axes) stay between
#: MIN_WIDTH pixels, so that a covariance never becomes numerically singular,
#: and MAX_WIDTH / sqrt(pi) mean spacings: a Gaussian spread over the whole
#: image is a faint background that fills every gap between the others (see
#: COVERAGE) and lets them shrink away from each other, which degrades long runs.
MIN_WIDTH = 0.1
MAX_WIDTH = 5.0

#: The coverage of a pixel, sum_i exp(-m_i^2 / 2) with m_i its Mahalanobis
#: distance to Gaussian i, is 1 at a lone Gaussian's centre. Where it is below
#: COVERAGE only the tails of the Gaussians reach the pixel: the normalised
#: rendering there is decided by weights that jump to 0 at the cutoff, or it
#: is a hole (0, with no gradient) beyond every cutoff, and gradient descent
#: sees neither. Without a penalty the Gaussians shrink into such gaps and
#: long runs get worse; the loss adds COVERAGE_WEIGHT (range^2) times the mean
#: over pixels of max(0, COVERAGE - coverage).
COVERAGE = math.exp(-2)
COVERAGE_WEIGHT = 0.03

#: The largest image value fit_image takes: the loss and its gradients square
#: differences of values in float32, which overflow near 1.8e19.
MAX_VALUE = 1e15

#: Steps per jit-compiled lax.scan chunk; the progress bar and the callback
#: run between chunks.
CHUNK = 100


class _Config(NamedTuple):
    """The static part of a compiled chunk of steps."""
    height: int
    width: int
    truncate: float
    steps: int


class _Settings(NamedTuple):
    """The traced part: changing them (another image, another n) does not recompile."""
    rates: dict[str, jax.Array]  # learning rates in the parameters' own units
    log_width: tuple[jax.Array, jax.Array]  # bounds of the log-widths, log pixels
    coverage: jax.Array
    coverage_weight: jax.Array  # in the squared units of the image


def _covariances(log_scale: jax.Array, angle: jax.Array) -> jax.Array:
    """(N, 2, 2) covariances R diag(s^2) R^T in pixels^2 for widths s =
    exp(log_scale) (N, 2) in pixels along the Gaussians' axes and rotation
    angles (N,) in radians (R rotates the first axis from x towards y)."""
    variance = jnp.exp(2 * log_scale)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    xx = cos**2 * variance[:, 0] + sin**2 * variance[:, 1]
    yy = sin**2 * variance[:, 0] + cos**2 * variance[:, 1]
    xy = cos * sin * (variance[:, 0] - variance[:, 1])
    return jnp.stack([jnp.stack([xx, xy], -1), jnp.stack([xy, yy], -1)], -2)


def _gaussians(params: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(points, values, sigma) for jax_gmm.interpolate from the trained parameters."""
    if "angle" in params:
        sigma = _covariances(params["log_scale"], params["angle"])
    else:
        sigma = jnp.exp(params["log_scale"])
    return params["position"], params["colour"], sigma


def _optimiser(steps: int, rates: dict[str, jax.Array]) -> optax.GradientTransformation:
    """Adam per parameter group, each learning rate cosine-decayed to 1 % over `steps`."""
    groups = {name: optax.adam(optax.cosine_decay_schedule(rate, max(steps, 1), alpha=0.01))
              for name, rate in rates.items()}
    return optax.multi_transform(groups, {name: name for name in rates})


def _loss(params: dict[str, jax.Array], target: jax.Array, config: _Config,
          settings: _Settings) -> tuple[jax.Array, jax.Array]:
    """(mean squared error plus the coverage penalty, mean squared error)."""
    points, values, sigma = _gaussians(params)
    # One more channel, of value 1 / (peak density) = 2 pi sqrt(det Sigma),
    # renders the coverage divided by Z.
    determinant = jnp.linalg.det(sigma) if sigma.ndim == 3 else sigma**4
    inverse_peak = 2 * math.pi * jnp.sqrt(determinant)
    out, density = interpolate(points, jnp.concatenate([values, inverse_peak[:, None]], -1),
                               sigma, (config.height, config.width),
                               truncate=config.truncate, return_density=True)
    coverage = out[..., -1] * density
    error = jnp.mean((out[..., :-1] - target) ** 2)
    penalty = jnp.mean(jax.nn.relu(settings.coverage - coverage))
    return error + settings.coverage_weight * penalty, error


@partial(jax.jit, static_argnames=("length", "config"))
def _chunk(params, opt_state, target, settings: _Settings, *, length: int, config: _Config):
    """`length` Adam steps; returns the parameters, the optimiser state and
    the mean squared errors (length,) before each step."""
    optimiser = _optimiser(config.steps, settings.rates)

    def step(params_and_state, _):
        params, opt_state = params_and_state
        (_, error), grads = jax.value_and_grad(_loss, has_aux=True)(params, target, config,
                                                                     settings)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        params["log_scale"] = jnp.clip(params["log_scale"], *settings.log_width)
        return (params, opt_state), error

    (params, opt_state), errors = jax.lax.scan(step, (params, opt_state), length=length)
    return params, opt_state, errors


def _log_width_bounds(spacing: float) -> tuple[float, float]:
    """The range of log-widths (log pixels) for a mean spacing in pixels."""
    return math.log(MIN_WIDTH), math.log(max(MAX_WIDTH * spacing / math.sqrt(math.pi), MIN_WIDTH))


def _sampling_probability(image: jax.Array) -> jax.Array:
    """(H W,) row-major probability of each pixel: UNIFORM_SHARE uniform, the
    rest proportional to the magnitude of the image's gradient."""
    height, width = image.shape[:2]
    rows, cols = image_gradient(image)
    magnitude = jnp.sqrt(jnp.sum(rows**2 + cols**2, axis=-1)).ravel()
    total = jnp.sum(magnitude)
    uniform = jnp.full((height * width,), 1.0 / (height * width))
    edges = jnp.where(total > 0, magnitude / jnp.where(total > 0, total, 1), uniform)
    return UNIFORM_SHARE * uniform + (1 - UNIFORM_SHARE) * edges


def _bilinear(image: jax.Array, points: jax.Array) -> jax.Array:
    """(N, C) image (H, W, C) interpolated bilinearly at points (N, 2) = (x, y)
    (pixel centres at +0.5), clamped to the image."""
    coordinates = [points[:, 1] - 0.5, points[:, 0] - 0.5]
    return jnp.stack([jax.scipy.ndimage.map_coordinates(image[..., c], coordinates, order=1,
                                                        mode="nearest")
                      for c in range(image.shape[-1])], axis=-1)


def _initial(image: jax.Array, n: int, anisotropic: bool, key: jax.Array) -> dict[str, jax.Array]:
    """Positions drawn by `_sampling_probability` (then uniformly within the
    pixel), round widths from the local density of that draw, and the
    image's colours at the positions."""
    height, width = image.shape[:2]
    pick, jitter = jax.random.split(key)
    probability = _sampling_probability(image)
    index = jax.random.choice(pick, height * width, (n,), replace=n > height * width,
                              p=probability)
    row, col = jnp.divmod(index, width)
    position = jnp.stack([col, row], -1) + jax.random.uniform(jitter, (n, 2))
    # The uniform share keeps the expected count n p away from 0.
    per_pixel = n * probability[index]
    log_scale = jnp.clip(jnp.log(WIDTH_PER_SPACING / jnp.sqrt(math.pi * per_pixel)),
                         *_log_width_bounds(math.sqrt(height * width / n)))
    params = {"position": position.astype(jnp.float32),
              "colour": _bilinear(image, position)}
    if anisotropic:
        params["log_scale"] = jnp.repeat(log_scale[:, None], 2, axis=1).astype(jnp.float32)
        params["angle"] = jnp.zeros((n,), jnp.float32)
    else:
        params["log_scale"] = log_scale.astype(jnp.float32)
    return params


def _check_image(image: ArrayLike) -> jax.Array:
    """The image as float32 (H, W, C); ValueError naming `image` otherwise."""
    shape = np.shape(image)
    if len(shape) not in (2, 3) or 0 in shape:
        raise ValueError(f"image must have shape (H, W, C) or (H, W) with no empty axis, "
                         f"got {shape}")
    array = jnp.asarray(image)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise ValueError(f"image must have a floating-point dtype (e.g. 8-bit pixels / 255), "
                         f"got {array.dtype}")
    try:
        finite = bool(jnp.all(jnp.isfinite(array)))
    except jax.errors.ConcretizationTypeError:
        raise ValueError("image must be a concrete array: fit_image runs its own compiled "
                         "Adam steps, so call it outside jax.jit and vmap") from None
    if not finite:
        raise ValueError("image must be finite, but it has NaN or infinite values")
    peak = float(jnp.max(jnp.abs(array)))
    if peak > MAX_VALUE:
        raise ValueError(f"image values must be at most {MAX_VALUE:g} in magnitude (the fit "
                         f"squares them in float32), got {peak:g}: scale the image")
    return (array if array.ndim == 3 else array[..., None]).astype(jnp.float32)


def fit_image(image: ArrayLike, n: int, *, steps: int = 2000, anisotropic: bool = True,
              key: jax.Array | int | None = None, truncate: float = 4.0, progress: bool = False,
              callback: Callable[[int, jax.Array, jax.Array, jax.Array], None] | None = None,
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Fits n Gaussians to an image, to render with
    ``jax_gmm.interpolate(points, values, sigma, (H, W), truncate=4.0)``.

    The start: positions drawn with probability 10 % uniform and 90 %
    proportional to the image's gradient magnitude (Image-GS's scheme), round
    Gaussians of width (local spacing of that draw) / sqrt(pi), and the
    image's colours at the positions (bilinear). Then `steps` Adam steps on the mean
    squared error of the rendering, each parameter group with its own
    learning rate (`LEARNING_RATES`, cosine-decayed to 1 %), jit-compiled in
    lax.scan chunks of `CHUNK` steps. Covariances are built from two
    log-widths and a rotation angle, so they stay positive definite; the
    widths are kept within [`MIN_WIDTH`, `MAX_WIDTH` / sqrt(pi) x spacing].
    The loss adds a penalty on pixels that only the Gaussians' tails reach
    (`COVERAGE`), where the eps = 0 rendering has jumps and holes that the
    gradient does not see; it, not an eps > 0, keeps every pixel covered, so
    the fit optimises exactly the rendering it returns (eps = 0).

    Args:
      image: (H, W, C) or (H, W) floating-point image, e.g. in [0, 1]; the
        learning rates follow its value range.
      n: number of Gaussians, an integer >= 1.
      steps: Adam steps, an integer >= 0 (0 returns the initialisation). On
        the tuning images 1000 steps end about 0.5 dB below the default 2000,
        and 4000 about 0.4 dB above it.
      anisotropic: fit covariances (8 numbers per Gaussian for RGB: 2
        position, 3 covariance, 3 colour) rather than round Gaussians (6).
      key: jax.random key, or an integer seed, of the initial positions
        (default seed 0).
      truncate: cutoff radius in standard deviations while fitting; render
        with the same value. 4 rather than interpolate's default 3: at 3 the
        tails cut off are heavy enough to make the fit 2 to 4 dB worse.
      progress: show a tqdm progress bar with the current PSNR (for images in
        [0, 1]), if tqdm is installed.
      callback: called after every chunk as callback(steps_done, points,
        values, sigma) with the current Gaussians, e.g. to log or checkpoint.

    Returns:
      (points, values, sigma) float32 jax.Arrays: points (n, 2) positions
      (x, y) = (column, row) in the image's pixels (pixel centres at +0.5);
      values (n, C) colours (C = 1 for an (H, W) image); sigma (n, 2, 2)
      covariance matrices [[sxx, sxy], [sxy, syy]] in pixels^2 if
      `anisotropic`, else (n,) standard deviations in pixels. Render them
      with eps = 0 and the same `truncate`.

    Raises:
      ValueError naming the argument: image not (H, W, C) or (H, W), empty,
      not floating-point, not finite, beyond `MAX_VALUE` in magnitude or
      traced (fit_image is a loop of compiled steps run from Python: call it
      outside jax.jit and vmap; it is not differentiable); n < 1; steps < 0;
      truncate not a positive finite number; key not a jax.random key or an
      integer; anisotropic or progress not a bool.

    Example:
      >>> image = jnp.ones((40, 48, 3)) * jnp.linspace(0, 1, 48)[:, None]
      >>> points, values, sigma = fit_image(image, 32, steps=300)
      >>> sigma.shape
      (32, 2, 2)
      >>> jax_gmm.interpolate(points, values, sigma, (40, 48), truncate=4.0).shape
      (40, 48, 3)
    """
    target = _check_image(image)
    n = _checks.check_int("n", n, 1)
    steps = _checks.check_int("steps", steps, 0)
    truncate = _checks.check_truncate(truncate)
    height, width = target.shape[:2]
    config = _Config(height, width, float(truncate), steps)
    anisotropic = _checks.check_flag("anisotropic", anisotropic)
    progress = _checks.check_flag("progress", progress)
    if key is None or (isinstance(key, (int, np.integer)) and not isinstance(key, bool)):
        key = jax.random.PRNGKey(0 if key is None else key)
    elif not (isinstance(key, jax.Array) and (jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                                              or (key.dtype == jnp.uint32 and key.shape == (2,)))):
        raise ValueError(f"key must be a jax.random key or an integer seed, got {key!r}")
    params = _initial(target, n, anisotropic, key)
    spacing = math.sqrt(height * width / n)
    value_range = float(jnp.max(target) - jnp.min(target)) or 1.0
    units = {"position": spacing, "colour": value_range}
    settings = jax.tree.map(partial(jnp.asarray, dtype=jnp.float32), _Settings(
        {name: LEARNING_RATES[name] * units.get(name, 1.0) for name in params},
        _log_width_bounds(spacing), COVERAGE, COVERAGE_WEIGHT * value_range**2))
    opt_state = _optimiser(steps, settings.rates).init(params)
    bar = _progress_bar(steps) if progress else None
    done = 0
    while done < steps:
        length = min(CHUNK, steps - done)
        params, opt_state, errors = _chunk(params, opt_state, target, settings, length=length,
                                           config=config)
        done += length
        if bar is not None:
            psnr = -10 * math.log10(max(float(errors[-1]), 1e-30))
            bar.set_postfix_str(f"PSNR {psnr:.2f} dB", refresh=False)
            bar.update(length)
        if callback is not None:
            callback(done, *_gaussians(params))
    if bar is not None:
        bar.close()
    return _gaussians(params)


def _progress_bar(steps: int):
    """A tqdm progress bar over the steps, or None without tqdm."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=steps, desc="fit_image", unit="step")
