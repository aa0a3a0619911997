"""Experiment 2: reconstructing images from scattered pixels, which no grid method can do.

A fraction of the pixels (1 %, 5 %, 10 %, 25 %) is kept, drawn uniformly at
random, by a jittered grid (one random pixel per cell: a cheap blue-noise-like
pattern) or concentrated on edges (probability proportional to the gradient
magnitude plus its mean, so half of the samples follow edges). The image is
rebuilt from the kept pixels by scipy.interpolate.griddata (nearest, linear,
cubic; linear and cubic are undefined outside the samples' convex hull, where
they take the nearest sample's value), by scipy's RBFInterpolator (thin-plate
spline on the 32 nearest samples) and by jax_gmm with a fixed sigma from the
sample density (sigma = c / sqrt(kept fraction)) or a per-point sigma from the
distance to the k-th nearest other sample (sigma_i = c * d_k(i), found by
jax_gmm.adaptive_sigma's native search). c and k are fitted on the
even-numbered images and every result is reported on the odd-numbered ones.
Wall times are the best of two runs on this machine's CPU (one for the slow
RBF); jax_gmm's exclude its one-off jit compilation and include the
neighbour search. The quick default uses the first 12 images cropped to
256 x 256; --full uses every image at full size. A last section times one
512 x 512 image at 10 %.

Usage: python experiments/scattered_reconstruction.py [--full] [--images DIR ...]
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import numpy as np
from matplotlib.figure import Figure
from scipy.interpolate import RBFInterpolator, griddata
from tqdm import tqdm

from common import (base_parser, image_paths, image_row, load_images, markdown_table, split_halves,
                    write_results)
import jax_gmm
from jax_gmm.imaging import TRUNCATE, l1, pixel_centres, psnr, render, sample_pixels

FRACTIONS = (0.01, 0.05, 0.1, 0.25)
QUICK_CROP = 256
TIMING_SIZE = 512
QUICK_IMAGES = 12
TIMING_RUNS = 2
GRIDDATA = ("nearest", "linear", "cubic")
RBF_NEIGHBOURS = 32
# Candidate c for sigma = c / sqrt(kept fraction); 1 / sqrt(kept fraction) pixels is the
# side of the square area per sample.
FIXED_RATIOS = np.round(np.arange(0.3, 1.21, 0.05), 2)
# Candidate k and c for sigma_i = c * (distance to the k-th nearest other sample).
KNN_K = (2, 4, 8)
KNN_RATIOS = np.round(np.arange(0.2, 1.51, 0.1), 2)

Sampler = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


def random_indices(image: np.ndarray, keep: float, rng: np.random.Generator) -> np.ndarray:
    """Row-major indices of a uniformly random fraction `keep` of the pixels."""
    return sample_pixels(image.shape[0], image.shape[1], keep, rng)


def jittered_indices(image: np.ndarray, keep: float, rng: np.random.Generator) -> np.ndarray:
    """Row-major indices of one uniformly random pixel in each cell of a grid
    of about keep * H * W square cells (fewer where two draws share a pixel)."""
    height, width = image.shape[:2]
    spacing = 1 / np.sqrt(keep)
    rows, cols = max(1, round(height / spacing)), max(1, round(width / spacing))
    cell_y, cell_x = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    y = (cell_y.ravel() + rng.random(cell_y.size)) * height / rows
    x = (cell_x.ravel() + rng.random(cell_x.size)) * width / cols
    return np.unique(y.astype(int) * width + x.astype(int))


def edge_indices(image: np.ndarray, keep: float, rng: np.random.Generator) -> np.ndarray:
    """Row-major indices of a fraction `keep` of the pixels drawn without
    replacement with probability proportional to |grad| + mean |grad| of the
    grey image (central differences)."""
    grey = image.mean(axis=-1)
    gradient = np.hypot(*np.gradient(grey)).ravel()
    weights = gradient + gradient.mean()
    count = max(1, round(keep * grey.size))
    return np.sort(rng.choice(grey.size, size=count, replace=False, p=weights / weights.sum()))


SAMPLINGS: dict[str, Sampler] = {
    "random": random_indices,
    "jittered grid": jittered_indices,
    "edges": edge_indices,
}


def knn_distance(points: np.ndarray, k: int) -> np.ndarray:
    """(N,) distance in pixels from each of the (N, 2) points to its k-th
    nearest other point."""
    return np.asarray(jax_gmm.adaptive_sigma(points, k=k, scale=1.0))


def griddata_image(points: np.ndarray, values: np.ndarray, shape: tuple[int, int],
                   method: str) -> np.ndarray:
    """(H, W, C) griddata interpolation at the pixel centres; pixels outside
    the convex hull of the points (NaN for linear and cubic) get the nearest
    point's value."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    image = griddata(points, values, (cols, rows), method=method)
    outside = np.isnan(image).any(axis=-1)
    if outside.any():
        queries = np.stack([cols[outside], rows[outside]], axis=-1)
        image[outside] = griddata(points, values, queries, method="nearest")
    return image


def rbf_image(points: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, C) thin-plate-spline RBF interpolation on the 32 nearest samples."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    queries = np.stack([cols.ravel(), rows.ravel()], axis=-1)
    rbf = RBFInterpolator(points, values, neighbors=RBF_NEIGHBOURS, kernel="thin_plate_spline")
    return rbf(queries).reshape(*shape, values.shape[-1])


def gmm_fixed(points: np.ndarray, values: np.ndarray, shape: tuple[int, int],
              ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """jax_gmm with sigma = ratio / sqrt(N / (H W)) pixels; (image, density)."""
    sigma = ratio / np.sqrt(len(points) / (shape[0] * shape[1]))
    return render(points, values, sigma, *shape)


def gmm_knn(points: np.ndarray, values: np.ndarray, shape: tuple[int, int], k: int,
            ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """jax_gmm with sigma_i = ratio * (distance to the k-th nearest other
    point); (image, density)."""
    return render(points, values, ratio * knn_distance(points, k), *shape)


def gmm_interpolating(points: np.ndarray, values: np.ndarray, shape: tuple[int, int], k: int,
                      ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """The mixture that reproduces the samples (jax_gmm.fit_values) with
    sigma_i = ratio * d_k(i); (image, density)."""
    sigma = ratio * knn_distance(points, k)
    fitted = jax_gmm.fit_values(points, values, sigma, truncate=TRUNCATE)
    return render(points, np.asarray(fitted), sigma, *shape)


def gmm_reconstruct(points: np.ndarray, values: np.ndarray,
                    shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """jax_gmm.reconstruct with its defaults; (image, density)."""
    image, density = jax_gmm.reconstruct(points, values, shape, return_density=True)
    return np.asarray(image), np.asarray(density)


def samples(image: np.ndarray, sampling: str, keep: float, seed: tuple[int, ...]):
    """(points (N, 2), values (N, 3)) of the pixels that `sampling` keeps."""
    indices = SAMPLINGS[sampling](image, keep, np.random.default_rng(seed))
    return pixel_centres(indices, image.shape[1]), image.reshape(-1, 3)[indices]


def cases(images: list[tuple[str, np.ndarray]]):
    """(image, sampling, keep, points, values) for every image, sampling and
    fraction, with the seed of the sampling made of their positions."""
    grid = itertools.product(enumerate(images), enumerate(SAMPLINGS), enumerate(FRACTIONS))
    for (i, (_, image)), (j, sampling), (k, keep) in tqdm(list(grid), desc="cases"):
        points, values = samples(image, sampling, keep, seed=(i, j, k))
        yield image, sampling, keep, points, values


def fit(images: list[tuple[str, np.ndarray]]) -> tuple[float, int, float]:
    """(c of the fixed rule, k and c of the k-nearest rule) with the highest
    mean PSNR over `images`, samplings and fractions."""
    fixed, knn = [], []
    for image, _, _, points, values in cases(images):
        shape = image.shape[:2]
        fixed.append([psnr(image, gmm_fixed(points, values, shape, c)[0]) for c in FIXED_RATIOS])
        distances = [knn_distance(points, k) for k in KNN_K]
        knn.append([[psnr(image, render(points, values, c * d, *shape)[0]) for c in KNN_RATIOS]
                    for d in distances])
    best_fixed = FIXED_RATIOS[np.argmax(np.mean(fixed, axis=0))]
    mean_knn = np.mean(knn, axis=0)  # (len(KNN_K), len(KNN_RATIOS))
    k_index, c_index = np.unravel_index(np.argmax(mean_knn), mean_knn.shape)
    return float(best_fixed), KNN_K[k_index], float(KNN_RATIOS[c_index])


def best_time(run: Callable[[], object], runs: int = TIMING_RUNS) -> tuple[object, float]:
    """(result, seconds) of the fastest of `runs` calls of `run`."""
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
    return result, min(seconds)


def methods(fixed_ratio: float, k: int, knn_ratio: float) -> dict[str, Callable]:
    """{name: reconstruct(points, values, shape) -> (image, seconds, uncovered pixels)}."""

    def grid_method(method: str) -> Callable:
        def run(points, values, shape):
            image, seconds = best_time(lambda: griddata_image(points, values, shape, method))
            return image, seconds, 0
        return run

    def gmm_method(reconstruct: Callable) -> Callable:
        def run(points, values, shape):
            reconstruct(points, values, shape)  # compiles for this number of points
            (image, density), seconds = best_time(lambda: reconstruct(points, values, shape))
            return image, seconds, int(np.sum(density == 0))
        return run

    def rbf(points, values, shape):
        image, seconds = best_time(lambda: rbf_image(points, values, shape), runs=1)
        return image, seconds, 0

    named = {f"griddata {m}": grid_method(m) for m in GRIDDATA}
    named[f"RBF thin-plate, {RBF_NEIGHBOURS} neighbours"] = rbf
    named[f"jax_gmm, sigma = {fixed_ratio:g}/sqrt(fraction)"] = gmm_method(
        lambda p, v, s: gmm_fixed(p, v, s, fixed_ratio))
    named[f"jax_gmm, sigma_i = {knn_ratio:g} d_{k}(i)"] = gmm_method(
        lambda p, v, s: gmm_knn(p, v, s, k, knn_ratio))
    named[f"jax_gmm.fit_values, sigma_i = {knn_ratio:g} d_{k}(i)"] = gmm_method(
        lambda p, v, s: gmm_interpolating(p, v, s, k, knn_ratio))
    named["jax_gmm.reconstruct"] = gmm_method(gmm_reconstruct)
    return named


def evaluate(images: list[tuple[str, np.ndarray]], named: dict[str, Callable]) -> dict:
    """{(method, sampling, keep): (n, 4) PSNR, L1, seconds, uncovered pixels per image}."""
    results: dict = {}
    for image, sampling, keep, points, values in cases(images):
        for method, run in named.items():
            estimate, seconds, uncovered = run(points, values, image.shape[:2])
            estimate = np.clip(estimate, 0, 1)
            row = (psnr(image, estimate), l1(image, estimate), seconds, uncovered)
            results.setdefault((method, sampling, keep), []).append(row)
    return {key: np.array(rows) for key, rows in results.items()}


def table(results: dict, names: list[str], sampling: str, column: int, fmt: str,
          best: Callable | None, scale: float = 1) -> str:
    """Markdown table of the mean of one result column times `scale`, methods
    by fraction, with the best of each fraction in bold when `best` is given."""
    means = {m: [scale * results[m, sampling, keep][:, column].mean() for keep in FRACTIONS]
             for m in names}
    rows = []
    for method, values in means.items():
        cells = []
        for j, value in enumerate(values):
            cell = format(value, fmt)
            top = best is not None and value == best(v[j] for v in means.values())
            cells.append(f"**{cell}**" if top else cell)
        rows.append([method] + cells)
    return markdown_table(["method"] + [f"{keep:.0%}" for keep in FRACTIONS], rows)


def plot(results: dict, names: list[str]) -> Figure:
    """Mean PSNR against the kept fraction, one panel per sampling, and the
    mean wall time for random sampling."""
    figure = Figure(figsize=(11, 7.5), layout="constrained")
    axes = figure.subplots(2, 2).ravel()
    panels = [(sampling, 0, f"{sampling} sampling", "mean PSNR (dB)") for sampling in SAMPLINGS]
    panels.append(("random", 2, "time, random sampling", "mean wall time (s)"))
    for axis, (sampling, column, title, label) in zip(axes, panels):
        for method in names:
            mean = [results[method, sampling, keep][:, column].mean() for keep in FRACTIONS]
            axis.plot(FRACTIONS, mean, marker="o", ms=3, label=method,
                      lw=2.5 if "jax_gmm" in method else 1.5)
        axis.set(xscale="log", xlabel="kept fraction of pixels", ylabel=label, title=title)
        axis.set_xticks(FRACTIONS, [f"{keep:.0%}" for keep in FRACTIONS])
        axis.minorticks_off()
    axes[3].set_yscale("log")
    axes[0].legend(fontsize=7)
    return figure


def example_figure(name: str, image: np.ndarray, named: dict[str, Callable],
                   keep: float) -> Figure:
    """The image, its kept pixels and each method's reconstruction, for random sampling."""
    points, values = samples(image, "random", keep, seed=(0,))
    kept = np.zeros_like(image)
    rows, cols = (points[:, 1] - 0.5).astype(int), (points[:, 0] - 0.5).astype(int)
    kept[rows, cols] = values
    panels = {"original": image, f"{keep:.0%} kept": kept}
    for method, run in named.items():
        panels[method.replace(", ", "\n")] = run(points, values, image.shape[:2])[0]
    return image_row(panels, f"{name}, random {keep:.0%} of the pixels", 18)


def sampling_section(results: dict, names: list[str], sampling: str) -> list[str]:
    """Markdown: PSNR, L1 and time tables of one sampling, and the black pixels."""
    black = ", ".join(
        f"{m}: {np.mean([results[m, sampling, keep][:, 3].mean() for keep in FRACTIONS]):.1f}"
        for m in names if "jax_gmm" in m)
    return [
        f"## {sampling} sampling\n",
        "Mean PSNR (dB, higher is better)\n", table(results, names, sampling, 0, ".2f", max),
        "Mean L1 (8-bit grey levels, lower is better)\n",
        table(results, names, sampling, 1, ".2f", min),
        "Mean wall time (ms)\n", table(results, names, sampling, 2, ".1f", None, 1e3),
        f"Pixels per image that jax_gmm leaves black (beyond {TRUNCATE:g} sigma of every "
        f"sample; mean over images and fractions): {black}.\n",
    ]


def large_timing(path, named: dict[str, Callable], keep: float = 0.1) -> list[str]:
    """Markdown: every method on one report image at 512 x 512 (or its size,
    if smaller), random sampling: wall time and PSNR."""
    name, image = load_images([path], TIMING_SIZE)[0]
    points, values = samples(image, "random", keep, seed=(0,))
    rows = []
    for method, run in named.items():
        estimate, seconds, _ = run(points, values, image.shape[:2])
        rows.append([method, f"{seconds * 1e3:.0f}", f"{psnr(image, np.clip(estimate, 0, 1)):.2f}"])
    return [f"## Time at {image.shape[1]} x {image.shape[0]}\n",
            f"{name}, random {keep:.0%} of the pixels ({len(points)} samples), one image:\n",
            markdown_table(["method", "wall time (ms)", "PSNR (dB)"], rows)]


def main() -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    paths = image_paths(args.images, None if args.full else QUICK_IMAGES)
    images = load_images(paths, None if args.full else QUICK_CROP)
    fit_images, report_images = split_halves(images)
    fixed_ratio, k, knn_ratio = fit(fit_images)
    named = methods(fixed_ratio, k, knn_ratio)
    results = evaluate(report_images, named)
    names = list(named)
    size = "full size" if args.full else f"centre crops of at most {QUICK_CROP} x {QUICK_CROP}"
    sections = [
        "# Experiment 2: reconstruction from scattered pixels\n",
        f"Images: {len(images)} ({size}); sigma rules fitted on "
        f"{', '.join(n for n, _ in fit_images)}; everything below is the mean over "
        f"{', '.join(n for n, _ in report_images)}. Fitted: c = {fixed_ratio:g} for the fixed "
        f"sigma, k = {k} and c = {knn_ratio:g} for the per-point sigma. Times are the best of "
        f"{TIMING_RUNS} runs on a shared 2-core CPU (one for RBF), exclude jax's one-off "
        "compilation and include jax_gmm's neighbour search. jax_gmm.fit_values solves to its "
        "default tolerance (relative residual 1e-4, at most 100 GMRES steps) and renders the "
        "solved values; jax_gmm.reconstruct runs its defaults (2 passes of 2 residual "
        "corrections, constants chosen on the fit half).\n",
    ]
    for sampling in SAMPLINGS:
        sections += sampling_section(results, names, sampling)
    sections += large_timing(split_halves(paths)[1][0], named)
    sections += ["![PSNR and time](scattered_reconstruction.png)\n",
                 "![Example](scattered_reconstruction_example.png)\n"]
    example_name, example = report_images[0]
    figures = {"scattered_reconstruction": plot(results, names),
               "scattered_reconstruction_example":
                   example_figure(example_name, example, named, 0.05)}
    write_results(args.out, "scattered_reconstruction", "\n".join(sections), figures)


if __name__ == "__main__":
    main()
