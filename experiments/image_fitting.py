"""Experiment: fitting Gaussians to photographs with jax_gmm.fitting.fit_image.

fit_image's settings (learning rates, initialisation, coverage penalty, width
bounds, cutoff 4) were chosen on scikit-image's astronaut and coffee; the
results are reported on chelsea, rocket and camera (grey, fitted as RGB),
centre crops of at most SIZE x SIZE pixels. For each density in Gaussians
per pixel it compares, by PSNR and SSIM against the original:

* anisotropic fit: fit_image (covariances), 8 stored numbers per Gaussian
  (2 position, 3 covariance, 3 colour), also with every number rounded to
  float16 (2 bytes each; the covariance as its Cholesky factor);
* isotropic fit: fit_image(anisotropic=False), 6 numbers per Gaussian;
* start: the anisotropic fit's unoptimised initialisation;
* Lanczos: PIL's LANCZOS downsampling to as many RGB pixels (3 numbers
  each) as the anisotropic fit stores numbers, then LANCZOS back up;
* JPEG: PIL, 4:2:0, the highest quality whose file is no larger than the
  anisotropic Gaussians in float16 (16 bytes each), for context.

Also: the fitting speed on camera, 512 x 512, at 0.1 Gaussians per pixel
(PSNR after every 100 steps against the time, the evaluations not counted);
the anchor: the report images, whole, at the density of GaussianImage's Kodak
set-up (50,000 Gaussians on 768 x 512, 0.127 per pixel) after as many steps
(5,000); and, on the tuning images, what the fit loses without each of its
safeguards.

Usage: python experiments/image_fitting.py [--quick] [--out DIR]
(default: 13 minutes on 2 CPU cores; --quick: 1 minute)
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import skimage.data
from matplotlib.collections import EllipseCollection
from matplotlib.figure import Figure
from PIL import Image
from skimage.metrics import structural_similarity

from common import RESULTS, centre_crop, markdown_table, write_results
import jax_gmm
from jax_gmm import fitting
from jax_gmm.imaging import load_image, psnr

TUNING = ("astronaut", "coffee")
REPORT = ("chelsea", "rocket", "camera")
FILES = {"astronaut": "astronaut.png", "coffee": "coffee.png", "chelsea": "chelsea.png",
         "rocket": "rocket.jpg", "camera": "camera.png"}
DENSITIES = (0.02, 0.05, 0.1, 0.2)
#: GaussianImage: 50,000 Gaussians on Kodak's 768 x 512 images, 39.6 dB PSNR.
ANCHOR_DENSITY, ANCHOR_PSNR = 50_000 / (768 * 512), 39.6
TRUNCATE = 4.0  # fit_image's default cutoff, to render its fits with
NUMBERS = {"anisotropic": 8, "isotropic": 6}  # per RGB Gaussian
FLOAT16_BYTES = 2

DEFAULT = dict(size=320, steps=2000, images=REPORT, speed_size=512, speed_steps=2000,
               ablation_size=256, ablation_steps=2000, anchor_size=None, anchor_steps=5000)
QUICK = dict(size=192, steps=300, images=REPORT[:2], speed_size=256, speed_steps=500,
             ablation_size=128, ablation_steps=300, anchor_size=192, anchor_steps=500)


def load(name: str, size: int) -> np.ndarray:
    """scikit-image's photograph `name` as (H, W, 3) float32 in [0, 1], centre-cropped."""
    return centre_crop(load_image(Path(skimage.data.__file__).parent / FILES[name]), size)


def render(image: np.ndarray, gaussians) -> np.ndarray:
    return np.asarray(jax_gmm.interpolate(*gaussians, image.shape[:2], truncate=TRUNCATE))


def scores(image: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    return {"psnr": psnr(image, estimate),
            "ssim": float(structural_similarity(image, np.clip(estimate, 0, 1), channel_axis=-1,
                                                data_range=1.0))}


def lanczos(image: np.ndarray, numbers: int) -> np.ndarray:
    """The image downsampled with PIL's LANCZOS to numbers / 3 RGB pixels
    (same aspect ratio) and upsampled back to its size the same way, per
    channel in 32-bit float."""
    height, width = image.shape[:2]
    factor = math.sqrt(3 * height * width / numbers)
    low = (max(1, round(width / factor)), max(1, round(height / factor)))
    channels = [Image.fromarray(np.ascontiguousarray(image[..., c])).resize(low, Image.LANCZOS)
                .resize((width, height), Image.LANCZOS) for c in range(image.shape[-1])]
    return np.stack([np.asarray(c) for c in channels], axis=-1)


def jpeg(image: np.ndarray, budget: int) -> tuple[np.ndarray | None, str, int]:
    """(decoded image, setting, bytes) of the best PIL JPEG (by PSNR) no
    larger than `budget` bytes, over qualities 1 to 100 with 4:2:0 or 4:4:4
    chroma; (None, "", smallest size) if none fits."""
    pixels = Image.fromarray(np.round(image * 255).astype(np.uint8))
    best, best_psnr, smallest = (None, "", 0), -math.inf, None
    for chroma, subsampling in (("4:2:0", 2), ("4:4:4", 0)):
        for quality in range(1, 101):
            buffer = io.BytesIO()
            pixels.save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
            size = buffer.tell()
            smallest = size if smallest is None else min(smallest, size)
            if size > budget:
                break  # larger qualities make larger files
            decoded = np.asarray(Image.open(buffer).convert("RGB"), np.float32) / 255
            if psnr(image, decoded) > best_psnr:
                best, best_psnr = (decoded, f"q{quality} {chroma}", size), psnr(image, decoded)
    return best if best[0] is not None else (None, "", smallest)


def float16(gaussians) -> tuple[jax.Array, ...]:
    """The Gaussians with every stored number rounded to float16, the
    covariance stored as its Cholesky factor (l11, l21, l22), which stays
    positive definite when rounded (the covariance's entries need not)."""
    points, values, sigma = gaussians
    points, values, factor = (jnp.asarray(a).astype(jnp.float16).astype(jnp.float32)
                              for a in (points, values, jnp.linalg.cholesky(sigma)))
    return points, values, factor @ jnp.swapaxes(factor, 1, 2)


def timed_fit(image: np.ndarray, n: int, steps: int, **kwargs) -> tuple[tuple, float]:
    start = time.perf_counter()
    gaussians = jax.block_until_ready(fitting.fit_image(image, n, steps=steps, **kwargs))
    return gaussians, time.perf_counter() - start


def sweep(config: dict) -> tuple[dict, dict]:
    """Scores {image: {density: {method: {...}}}} and the Gaussians of the
    first image at the lowest density (for the figure)."""
    results, example = {}, {}
    for name in config["images"]:
        image = load(name, config["size"])
        height, width = image.shape[:2]
        results[name] = {"shape": [height, width]}
        for density in DENSITIES:
            n = round(density * height * width)
            row = {"n": n}
            fits = {"anisotropic": timed_fit(image, n, config["steps"]),
                    "start": timed_fit(image, n, 0),
                    "isotropic": timed_fit(image, n, config["steps"], anisotropic=False)}
            for method, (gaussians, seconds) in fits.items():
                row[method] = {**scores(image, render(image, gaussians)), "seconds": seconds}
            row["anisotropic float16"] = scores(image, render(image, float16(fits["anisotropic"][0])))
            numbers = NUMBERS["anisotropic"] * n
            row["lanczos"] = scores(image, lanczos(image, numbers))
            decoded, setting, size = jpeg(image, FLOAT16_BYTES * numbers)
            row["jpeg"] = {**(scores(image, decoded) if decoded is not None else {}),
                           "setting": setting, "bytes": size, "budget": FLOAT16_BYTES * numbers}
            results[name][f"{density:.3f}"] = row
            print(f"{name} {density:.3f}: " + ", ".join(
                f"{m} {v['psnr']:.2f} dB" for m, v in row.items() if isinstance(v, dict) and "psnr" in v)
                + f"; anisotropic fit {row['anisotropic']['seconds']:.0f} s", flush=True)
            if name == config["images"][0] and density == DENSITIES[0]:
                example = {"image": image, **{m: fits[m][0] for m in ("anisotropic", "isotropic")},
                           "lanczos": lanczos(image, NUMBERS["anisotropic"] * n)}
    return results, example


def speed(config: dict) -> dict:
    """PSNR against seconds for camera at 0.1 Gaussians per pixel."""
    image = load("camera", config["speed_size"])
    height, width = image.shape[:2]
    n = round(0.1 * height * width)
    curve, evaluating = [], 0.0
    start = time.perf_counter()

    def record(step, *gaussians):
        nonlocal evaluating
        jax.block_until_ready(gaussians)
        reached = time.perf_counter()
        curve.append((step, reached - start - evaluating, psnr(image, render(image, gaussians))))
        evaluating += time.perf_counter() - reached

    fitting.fit_image(image, n, steps=config["speed_steps"], callback=record)
    final = curve[-1][2]
    step, seconds, value = next(point for point in curve if point[2] >= final - 0.5)
    steady = (curve[-1][1] - curve[0][1]) / (curve[-1][0] - curve[0][0])
    return {"image": "camera", "shape": [height, width], "n": n, "curve": curve,
            "final_psnr": final, "within_half_db": {"step": step, "seconds": seconds, "psnr": value},
            "total_seconds": curve[-1][1], "ms_per_step": 1e3 * steady,
            "first_chunk_seconds": curve[0][1]}


def anchor(config: dict) -> dict:
    """The anisotropic fit at GaussianImage's density on the report images
    (whole, by default), with Lanczos at the same numbers for scale."""
    results = {}
    for name in config["images"]:
        image = load(name, config["anchor_size"])
        n = round(ANCHOR_DENSITY * image.shape[0] * image.shape[1])
        gaussians, seconds = timed_fit(image, n, config["anchor_steps"])
        results[name] = {"shape": list(image.shape[:2]), "n": n, "seconds": seconds,
                         **scores(image, render(image, gaussians)),
                         "lanczos": scores(image, lanczos(image, NUMBERS["anisotropic"] * n))}
        print(f"anchor {name}: {results[name]['psnr']:.2f} dB, {seconds:.0f} s", flush=True)
    return results


def ablation(config: dict) -> dict:
    """PSNR of the anisotropic fit on the tuning images at 0.05 Gaussians per
    pixel with its defaults and without each safeguard."""
    variants = {"defaults": ({}, {}),
                "no coverage penalty": ({"COVERAGE_WEIGHT": 0.0}, {}),
                "no width cap": ({"MAX_WIDTH": 1e6}, {}),
                "cutoff 3 sigma (fit and render)": ({}, {"truncate": 3.0})}
    results = {}
    for name in TUNING:
        image = load(name, config["ablation_size"])
        n = round(0.05 * image.shape[0] * image.shape[1])
        for label, (constants, kwargs) in variants.items():
            saved = {key: getattr(fitting, key) for key in constants}
            for key, value in constants.items():
                setattr(fitting, key, value)
            try:
                gaussians = fitting.fit_image(image, n, steps=config["ablation_steps"], **kwargs)
            finally:
                for key, value in saved.items():
                    setattr(fitting, key, value)
            out = np.asarray(jax_gmm.interpolate(*gaussians, image.shape[:2],
                                                 truncate=kwargs.get("truncate", TRUNCATE)))
            results.setdefault(label, {})[name] = psnr(image, out)
    return results


# ----------------------------------------------------------------------------
# Report.

METHODS = ("anisotropic", "anisotropic float16", "isotropic", "start", "lanczos", "jpeg")
LABELS = {"anisotropic": "jax_gmm anisotropic", "anisotropic float16": "anisotropic, float16",
          "isotropic": "jax_gmm isotropic", "start": "start (unoptimised)",
          "lanczos": "Lanczos, same numbers", "jpeg": "JPEG, same bytes (float16)"}


def _mean(results: dict, density: float, method: str, metric: str) -> float | None:
    values = [per_image[f"{density:.3f}"][method].get(metric) for per_image in results.values()]
    return None if any(v is None for v in values) else float(np.mean(values))


def summary_table(results: dict, metric: str, digits: int) -> str:
    """Mean over the report images, a row per method, a column per density."""
    header = ["method"] + [f"{d:g} G/px ({NUMBERS['anisotropic'] * d:.2f} / "
                           f"{NUMBERS['isotropic'] * d:.2f} numbers/px)" for d in DENSITIES]
    rows = []
    for method in METHODS:
        cells = [_mean(results, d, method, metric) for d in DENSITIES]
        rows.append([LABELS[method]] + ["n/a" if c is None else f"{c:.{digits}f}" for c in cells])
    return markdown_table(header, rows)


def per_image_table(results: dict) -> str:
    header = ["image", "density (G/px)", "n", "anisotropic", "isotropic", "start", "Lanczos",
              "JPEG (setting)", "anisotropic fit time (s)"]
    rows = []
    for name, per_image in results.items():
        for density in DENSITIES:
            row = per_image[f"{density:.3f}"]
            jpeg_cell = (f"{row['jpeg']['psnr']:.2f} / {row['jpeg']['ssim']:.3f} ({row['jpeg']['setting']})"
                         if "psnr" in row["jpeg"] else f"n/a (q1 is {row['jpeg']['bytes']} B)")
            rows.append([name, f"{density:g}", row["n"]] + [
                f"{row[m]['psnr']:.2f} / {row[m]['ssim']:.3f}"
                for m in ("anisotropic", "isotropic", "start", "lanczos")]
                + [jpeg_cell, f"{row['anisotropic']['seconds']:.0f}"])
    return markdown_table(header, rows)


def anchor_table(anchors: dict) -> str:
    rows = [[name, f"{a['shape'][1]} x {a['shape'][0]}", a["n"], f"{a['psnr']:.2f}",
             f"{a['ssim']:.4f}", f"{a['lanczos']['psnr']:.2f}", f"{a['seconds']:.0f}"]
            for name, a in anchors.items()]
    rows.append(["mean", "", "", f"{np.mean([a['psnr'] for a in anchors.values()]):.2f}",
                 f"{np.mean([a['ssim'] for a in anchors.values()]):.4f}",
                 f"{np.mean([a['lanczos']['psnr'] for a in anchors.values()]):.2f}", ""])
    return markdown_table(["image", "size", "Gaussians", "PSNR (dB)", "SSIM",
                           "Lanczos, same numbers (dB)", "fit time (s)"], rows)


def figure(example: dict, results: dict, timing: dict) -> Figure:
    """The example image: original, the fitted ellipses, the fits and Lanczos;
    below, mean PSNR against the stored numbers and the speed run's curve."""
    image = example["image"]
    height, width = image.shape[:2]
    fig = Figure(figsize=(15, 3.2 * height / width + 4.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[3.2 * height / width + 0.3, 4.3])
    panels = top.subplots(1, 5)
    points, values, sigma = (np.asarray(a, np.float64) for a in example["anisotropic"])
    # Ellipses at one standard deviation: axes 2 sqrt(eigenvalues), angle of the first eigenvector.
    eigenvalues, eigenvectors = np.linalg.eigh(sigma)
    angles = np.degrees(np.arctan2(eigenvectors[:, 1, 1], eigenvectors[:, 0, 1]))
    panels[0].imshow(image)
    panels[0].set_title(f"original ({width} x {height})", fontsize=9)
    panels[1].imshow(image * 0.35 + 0.65)
    panels[1].add_collection(EllipseCollection(
        2 * np.sqrt(eigenvalues[:, 1]), 2 * np.sqrt(eigenvalues[:, 0]), angles, units="xy",
        offsets=points - 0.5, offset_transform=panels[1].transData,
        facecolors=np.clip(values, 0, 1), edgecolors="black", linewidths=0.2, alpha=0.9))
    panels[1].set_title(f"{len(points)} anisotropic Gaussians (1 sigma)", fontsize=9)
    shown = {"anisotropic fit": render(image, example["anisotropic"]),
             "isotropic fit": render(image, example["isotropic"]),
             "Lanczos, same numbers": example["lanczos"]}
    for axis, (label, panel) in zip(panels[2:], shown.items()):
        axis.imshow(np.clip(panel, 0, 1))
        axis.set_title(f"{label}: {psnr(image, panel):.2f} dB", fontsize=9)
    for axis in panels:
        axis.set(xlim=(0, width), ylim=(height, 0))
        axis.axis("off")
    quality, speed_axis = bottom.subplots(1, 2)
    for method, style in (("anisotropic", "o-"), ("isotropic", "s-"), ("start", "x:"),
                          ("lanczos", "^--"), ("jpeg", "v--")):
        per_gaussian = NUMBERS["isotropic" if method == "isotropic" else "anisotropic"]
        densities = [d for d in DENSITIES if _mean(results, d, method, "psnr") is not None]
        quality.plot([per_gaussian * d for d in densities],
                     [_mean(results, d, method, "psnr") for d in densities], style,
                     label=LABELS[method])
    quality.set(xscale="log", xlabel="stored numbers per pixel (JPEG: bytes / 2)",
                ylabel="mean PSNR (dB)", title=f"report images: {', '.join(results)}")
    quality.legend(fontsize=8)
    steps, seconds, values = zip(*timing["curve"])
    speed_axis.plot(seconds, values, "o-", ms=3)
    speed_axis.axhline(timing["final_psnr"] - 0.5, color="grey", ls=":", label="final - 0.5 dB")
    speed_axis.set(xlabel="seconds (including compilation)", ylabel="PSNR (dB)",
                   title=f"{timing['image']} {timing['shape'][1]} x {timing['shape'][0]}, "
                         f"{timing['n']} Gaussians, {steps[-1]} steps")
    speed_axis.legend(fontsize=8)
    return fig


def markdown(name: str, config: dict, results: dict, timing: dict, anchors: dict,
             ablations: dict) -> str:
    within = timing["within_half_db"]
    anchor_mean = np.mean([a["psnr"] for a in anchors.values()])
    anchor_images = "whole" if config["anchor_size"] is None else \
        f"centre crops of at most {config['anchor_size']} x {config['anchor_size']}"
    lines = [
        "# Fitting Gaussians to images\n",
        f"`jax_gmm.fitting.fit_image`, {config['steps']} Adam steps, cutoff {TRUNCATE:g} sigma, "
        f"eps = 0. Settings chosen on {' and '.join(TUNING)}; reported on "
        f"{', '.join(config['images'])} (centre crops of at most {config['size']} x "
        f"{config['size']}; camera is grey, fitted as RGB). Stored numbers: 8 per anisotropic "
        "Gaussian (2 position, 3 covariance, 3 colour), 6 per isotropic one (2, 1, 3), 3 per "
        "pixel of the Lanczos image (downsampled to the anisotropic fit's count, then upsampled "
        "back). JPEG gets the anisotropic Gaussians' float16 bytes (16 per Gaussian); "
        "'anisotropic, float16' is the fit with every number rounded to float16 (the "
        "covariance as its Cholesky factor, which stays positive definite). The Gaussians "
        "are stored raw, without the quantisation and entropy coding of GaussianImage's "
        "codec, so JPEG's lead at equal bytes is expected; camera is grey, which JPEG codes "
        "almost free of chroma while the fits store three colour numbers. "
        f"Produced by `python experiments/image_fitting.py{' --quick' if config is QUICK else ''}`.\n",
        "Densities in Gaussians per pixel (G/px), with the stored numbers per pixel of the "
        "anisotropic / isotropic fits; Lanczos matches the anisotropic count.\n",
        "## Mean PSNR (dB) over the report images\n",
        summary_table(results, "psnr", 2),
        "## Mean SSIM\n",
        summary_table(results, "ssim", 4),
        "## Per image: PSNR (dB) / SSIM\n",
        per_image_table(results),
        "## Fitting speed\n",
        f"{timing['image']}, {timing['shape'][1]} x {timing['shape'][0]}, {timing['n']} "
        f"anisotropic Gaussians (0.1 per pixel), {timing['curve'][-1][0]} steps: final PSNR "
        f"{timing['final_psnr']:.2f} dB after {timing['total_seconds']:.1f} s; within 0.5 dB "
        f"of it ({within['psnr']:.2f} dB) after {within['step']} steps and "
        f"{within['seconds']:.1f} s, including {timing['first_chunk_seconds']:.1f} s for the "
        f"first 100 steps with the compilation. Steady state: {timing['ms_per_step']:.1f} ms "
        "per step. Times on this machine's CPU (2 cores), PSNR evaluations not counted.\n",
        "## Anchor: GaussianImage's density\n",
        f"GaussianImage reports about {ANCHOR_PSNR:g} dB on Kodak (768 x 512) with 50,000 "
        f"Gaussians, {ANCHOR_DENSITY:.3f} per pixel, after 5,000 steps. fit_image at the "
        f"same density, {config['anchor_steps']} steps, on the report images ({anchor_images}): "
        f"mean {anchor_mean:.2f} dB. The images are not Kodak's, so this places fit_image only "
        "roughly and does not rank it against GaussianImage; the Lanczos column, at the same "
        "count of numbers, shows how hard these images are.\n",
        anchor_table(anchors),
        "## Ablation on the tuning images\n",
        f"Anisotropic fit, 0.05 Gaussians per pixel, {config['ablation_steps']} steps, "
        f"centre crops of {config['ablation_size']} x {config['ablation_size']}: PSNR (dB) with "
        "fit_image's defaults and without each of its safeguards.\n",
        markdown_table(["variant", *TUNING], [[label, *(f"{v:.2f}" for v in per.values())]
                                              for label, per in ablations.items()]),
        f"![Example and curves]({name}.png)\n",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller crops and fewer steps")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help=f"folder for the results (default: {RESULTS})")
    args = parser.parse_args()
    config = QUICK if args.quick else DEFAULT
    started = time.perf_counter()
    timing = speed(config)
    print(f"speed: {timing['final_psnr']:.2f} dB, within 0.5 dB after "
          f"{timing['within_half_db']['seconds']:.1f} s", flush=True)
    ablations = ablation(config)
    print("ablation:", json.dumps(ablations), flush=True)
    anchors = anchor(config)
    results, example = sweep(config)
    name = "image_fitting" + ("_quick" if args.quick else "")
    write_results(args.out, name, markdown(name, config, results, timing, anchors, ablations),
                  {name: figure(example, results, timing)})
    (args.out / f"{name}.json").write_text(json.dumps(
        {"config": config, "results": results, "speed": timing, "anchor": anchors,
         "ablation": ablations, "seconds": time.perf_counter() - started}, indent=1))
    print(f"wrote {args.out / name}.json; {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
