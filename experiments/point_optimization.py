"""Experiment 3: optimising the points themselves (the paper's figures 4 and 5), with optax.

N points start uniformly at random on the bundled 256 x 256 photograph and
Adam minimises the mean squared error of the jax_gmm rendering against it.
Five set-ups, each changing one thing from the one before:

* positions, paper's gradient: each point's colour is the image pixel under it
  (as in the paper's code) and the gradient treats the normaliser
  Z(q) = sum_i N(q | mu_i, sigma^2) as a constant, as the paper's did;
* positions, exact gradient: the same colours, the true gradient of the loss
  (the pixel look-up is piecewise constant: its derivative is zero, but the
  loss jumps where a point crosses into another pixel);
* positions, exact gradient, bilinear colours: the colour is the image
  interpolated bilinearly at the point, so the loss is continuous and the
  gradient includes the look-up;
* positions and log-sigma (one sigma per point), bilinear colours;
* positions, log-sigma and colours (free parameters, started from the bilinear
  colours).

A sweep over the initial sigma repeats all five. Reported: PSNR before, at
its best and after, the pixels beyond the cutoff of every point (black), how
far the points moved, and the agreement of the paper's and the exact position
gradients at the start. Quick default: 300 Adam steps and 6 initial sigmas;
--full: 2000 steps and 8.

Usage: python experiments/point_optimization.py [--full]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from tqdm import tqdm

from common import base_parser, markdown_table, write_results
import jax_gmm
from jax_gmm.imaging import BUNDLED_IMAGE, TRUNCATE, bundled_image

PAPER = "positions, paper's gradient"
EXACT = "positions, exact gradient"
BILINEAR = "positions, bilinear colours"
SETUPS = (PAPER, EXACT, BILINEAR, "positions + log-sigma", "positions + log-sigma + colours")
# What each set-up optimises.
TRAINED = dict(zip(SETUPS, [("mu",), ("mu",), ("mu",), ("mu", "log_sigma"),
                            ("mu", "log_sigma", "colour")]))
# Adam learning rates: pixels, log-pixels and colour units per step.
LEARNING_RATES = {"mu": 0.1, "log_sigma": 0.02, "colour": 0.01}
QUICK = dict(points=2048, steps=300, sigmas=(1.5, 2.0, 3.0, 4.5, 6.0, 9.0))
FULL = dict(points=2048, steps=2000, sigmas=(1.0, 1.5, 2.0, 3.0, 4.5, 6.0, 9.0, 12.0))
MAIN_SIGMA = 3.0  # px; about the scattered-reconstruction rule for this density


def pixel_colours(target: jax.Array, mu: jax.Array) -> jax.Array:
    """(N, C) colours of the pixels of `target` (H, W, C) under the points
    mu (N, 2) = (x, y), clamped to the image."""
    height, width = target.shape[:2]
    cols = jnp.clip(jnp.floor(mu[:, 0]).astype(int), 0, width - 1)
    rows = jnp.clip(jnp.floor(mu[:, 1]).astype(int), 0, height - 1)
    return target[rows, cols]


def bilinear_colours(target: jax.Array, mu: jax.Array) -> jax.Array:
    """(N, C) bilinear interpolation of `target` (H, W, C) at the points mu
    (N, 2) = (x, y) (pixel centres at +0.5), clamped to the image."""
    coordinates = [mu[:, 1] - 0.5, mu[:, 0] - 0.5]
    channels = [jax.scipy.ndimage.map_coordinates(target[..., c], coordinates, order=1,
                                                  mode="nearest")
                for c in range(target.shape[-1])]
    return jnp.stack(channels, axis=-1)


def colours(setup: str, target: jax.Array, params: dict) -> jax.Array:
    """(N, C) colours of the points: trained, the pixel under each point, or
    the image interpolated at it."""
    if "colour" in TRAINED[setup]:
        return params["colour"]
    if setup in (PAPER, EXACT):
        return pixel_colours(target, params["mu"])
    return bilinear_colours(target, params["mu"])


def rendering(setup: str, target: jax.Array, fixed: dict) -> Callable[[dict], tuple]:
    """The map from the trained parameters of `setup` to the rendering
    (H, W, C) and its density Z (H, W)."""
    shape = target.shape[:2]

    def render(params: dict) -> tuple[jax.Array, jax.Array]:
        p = {**fixed, **params}
        sigma = jnp.exp(p["log_sigma"])
        out, density = jax_gmm.interpolate(p["mu"], colours(setup, target, p), sigma, shape,
                                           truncate=TRUNCATE, return_density=True)
        if setup != PAPER:
            return out, density
        # The paper's gradient: out = U / Z with d/dmu acting on U only.
        reached = (density > 0)[..., None]
        z = jax.lax.stop_gradient(jnp.where(reached, density[..., None], 1))
        return jnp.where(reached, out * density[..., None] / z, 0), density

    return render


def initial(target: np.ndarray, count: int, sigma: float, seed: int) -> dict:
    """Uniformly random positions (N, 2), log-sigma (N,) and the bilinear colours (N, C)."""
    height, width = target.shape[:2]
    rng = np.random.default_rng(seed)
    mu = jnp.asarray(rng.uniform((0, 0), (width, height), size=(count, 2)), jnp.float32)
    return {"mu": mu, "log_sigma": jnp.full((count,), np.log(sigma), jnp.float32),
            "colour": bilinear_colours(jnp.asarray(target), mu)}


def optimise(setup: str, target: np.ndarray, start: dict,
             steps: int) -> tuple[dict, np.ndarray, tuple[int, int]]:
    """Runs Adam (learning rates cosine-decayed to 0 over `steps`); returns
    the final parameters (all of them, trained or not), the PSNR (steps + 1,)
    before each step and at the end, and the number of pixels beyond the
    cutoff of every point (rendered black) before and after."""
    target = jnp.asarray(target)
    params = {k: start[k] for k in TRAINED[setup]}
    fixed = {k: v for k, v in start.items() if k not in params}
    render = rendering(setup, target, fixed)
    optimiser = optax.multi_transform(
        {k: optax.adam(optax.cosine_decay_schedule(LEARNING_RATES[k], steps)) for k in params},
        {k: k for k in params})

    def loss(params: dict) -> jax.Array:
        return jnp.mean((render(params)[0] - target) ** 2)

    def uncovered(params: dict) -> int:
        return int(jnp.sum(render(params)[1] == 0))

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = optimiser.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    state = optimiser.init(params)
    holes_before = uncovered(params)
    mses = []
    for _ in range(steps):
        params, state, value = step(params, state)
        mses.append(value)
    mses.append(jax.jit(loss)(params))
    return {**fixed, **params}, -10 * np.log10(np.array(mses)), (holes_before, uncovered(params))


def gradient_agreement(target: np.ndarray, start: dict) -> tuple[float, float]:
    """(cosine of the whole paper's and exact position gradients, median
    per-point cosine) at `start`."""
    grads = []
    fixed = {k: v for k, v in start.items() if k != "mu"}
    for setup in (PAPER, EXACT):
        render = rendering(setup, jnp.asarray(target), fixed)
        grad = jax.grad(lambda p: jnp.mean((render(p)[0] - target) ** 2))({"mu": start["mu"]})
        grads.append(np.asarray(grad["mu"], np.float64))
    paper, exact = grads
    whole = np.sum(paper * exact) / (np.linalg.norm(paper) * np.linalg.norm(exact))
    norms = np.linalg.norm(paper, axis=1) * np.linalg.norm(exact, axis=1)
    moving = norms > 0
    per_point = np.sum(paper * exact, axis=1)[moving] / norms[moving]
    return float(whole), float(np.median(per_point))


def summary(start: dict, final: dict, curve: np.ndarray, holes: tuple[int, int]) -> dict:
    """PSNR before, at best and after (dB), black pixels before and after,
    mean and 90th-percentile displacement (px), and the final median sigma (px)."""
    moved = np.linalg.norm(np.asarray(final["mu"]) - np.asarray(start["mu"]), axis=1)
    return {"before": curve[0], "best": curve.max(), "after": curve[-1], "holes": holes,
            "moved": moved.mean(), "moved90": np.percentile(moved, 90),
            "sigma": float(np.median(np.exp(final["log_sigma"])))}


def run_all(target: np.ndarray, config: dict) -> dict:
    """{(setup, initial sigma): (start, final, curve, holes)} for every set-up and sigma."""
    runs = {}
    jobs = [(setup, sigma) for sigma in config["sigmas"] for setup in SETUPS]
    for setup, sigma in tqdm(jobs, desc="optimisations"):
        start = initial(target, config["points"], sigma, seed=0)
        runs[setup, sigma] = (start, *optimise(setup, target, start, config["steps"]))
    return runs


def results_table(runs: dict, sigmas: tuple[float, ...]) -> str:
    """Markdown table of `summary` for every set-up and initial sigma."""
    rows = []
    for sigma in sigmas:
        for setup in SETUPS:
            s = summary(*runs[setup, sigma])
            rows.append([f"{sigma:g}", setup, f"{s['before']:.2f}", f"{s['best']:.2f}",
                         f"{s['after']:.2f}", f"{s['after'] - s['before']:+.2f}",
                         "{} / {}".format(*s["holes"]), f"{s['moved']:.2f}",
                         f"{s['moved90']:.2f}", f"{s['sigma']:.2f}"])
    return markdown_table(["initial sigma (px)", "set-up", "PSNR before", "PSNR best", "PSNR after",
                           "gain (dB)", "black pixels before / after", "mean move (px)",
                           "90% move (px)", "final median sigma (px)"], rows)


def curves_figure(runs: dict, sigmas: tuple[float, ...]) -> Figure:
    """PSNR against step at MAIN_SIGMA; final PSNR and mean displacement
    against the initial sigma."""
    figure = Figure(figsize=(13, 3.8), layout="constrained")
    curves, final, moved = figure.subplots(1, 3)
    for setup in SETUPS:
        curves.plot(runs[setup, MAIN_SIGMA][2], label=setup)
        final.plot(sigmas, [summary(*runs[setup, s])["after"] for s in sigmas], marker="o", ms=3)
        moved.plot(sigmas, [summary(*runs[setup, s])["moved"] for s in sigmas], marker="o", ms=3)
    final.plot(sigmas, [summary(*runs[BILINEAR, s])["before"] for s in sigmas], "k:",
               label="before (bilinear colours)")
    curves.set(xlabel="Adam step", ylabel="PSNR (dB)", title=f"initial sigma {MAIN_SIGMA:g} px")
    for axis in (final, moved):
        axis.set_xscale("log")
        axis.set_xticks(sigmas, [f"{s:g}" for s in sigmas])
        axis.minorticks_off()
    final.set(xlabel="initial sigma (px)", ylabel="final PSNR (dB)", title="PSNR reached")
    moved.set(xlabel="initial sigma (px)", ylabel="mean displacement (px)",
              title="how far the points moved")
    curves.legend(fontsize=8)
    final.legend(fontsize=8)
    return figure


def points_figure(target: np.ndarray, runs: dict) -> Figure:
    """The rendering before, and the moves of the points (start to end) on
    the grey image for each set-up, at MAIN_SIGMA, in the central quarter."""
    figure = Figure(figsize=(9, 6.4), layout="constrained")
    axes = figure.subplots(2, 3).ravel()
    start = runs[BILINEAR, MAIN_SIGMA][0]
    render = rendering(BILINEAR, jnp.asarray(target), start)
    axes[0].imshow(np.clip(np.asarray(render({})[0]), 0, 1), interpolation="nearest")
    axes[0].set_title(f"rendering before\n(bilinear colours, sigma {MAIN_SIGMA:g} px)", fontsize=8)
    for axis, setup in zip(axes[1:], SETUPS):
        start, final = runs[setup, MAIN_SIGMA][:2]
        axis.imshow(target.mean(axis=-1), cmap="gray", vmin=-0.5, vmax=1.5)
        segments = np.stack([np.asarray(start["mu"]), np.asarray(final["mu"])], axis=1) - 0.5
        axis.add_collection(LineCollection(segments, colors="blue", linewidths=0.8))
        axis.plot(*(np.asarray(final["mu"]) - 0.5).T, "r.", ms=2)
        axis.set_title(f"{setup}\nstart (blue) to end (red)", fontsize=8)
    height, width = target.shape[:2]
    for axis in axes:
        axis.set(xlim=(width / 4, 3 * width / 4), ylim=(3 * height / 4, height / 4))
        axis.axis("off")
    return figure


def main() -> None:
    args = base_parser(__doc__.splitlines()[0], images=False).parse_args()
    config = FULL if args.full else QUICK
    target = bundled_image()
    runs = run_all(target, config)
    whole, per_point = gradient_agreement(target, initial(target, config["points"], MAIN_SIGMA, 0))
    spacing = np.sqrt(target.shape[0] * target.shape[1] / config["points"])
    markdown = "\n".join([
        "# Experiment 3: optimising the points\n",
        f"Target: {BUNDLED_IMAGE} ({target.shape[1]} x {target.shape[0]}); {config['points']} "
        f"points, uniformly random at the start (mean spacing {spacing:.1f} px); Adam, "
        f"{config['steps']} steps, learning rates {LEARNING_RATES} (px, log px, colour) "
        "with cosine decay; "
        f"loss: mean squared error; cutoff {TRUNCATE:g} sigma.\n",
        f"At the start (sigma {MAIN_SIGMA:g} px) the paper's position gradient and the exact one "
        f"have a cosine similarity of {whole:.3f} over all points and a median per-point "
        f"cosine of {per_point:.3f}.\n",
        results_table(runs, config["sigmas"]),
        "![Curves](point_optimization.png)\n",
        "![Points](point_optimization_points.png)\n",
    ])
    figures = {"point_optimization": curves_figure(runs, config["sigmas"]),
               "point_optimization_points": points_figure(target, runs)}
    write_results(args.out, "point_optimization", markdown, figures)


if __name__ == "__main__":
    main()
