"""The ``jax-gmm`` command line (also ``python -m jax_gmm``).

``jax-gmm upsample [IMAGE] --factor F`` box-downsamples IMAGE by the integer
factor F and renders it back at full size with `jax_gmm.interpolate`, one
Gaussian per low-resolution pixel. ``jax-gmm reconstruct [IMAGE] --keep P``
keeps a random fraction P of the pixels and renders the whole image from them.
Both print PSNR and L1 against the original and the time taken, and can write
the result (``-o``) and an original | input | result strip (``--compare``).
Without IMAGE they use the bundled 256 x 256 photograph (jax_gmm/data/).

The image recipes below (loading, box downsampling, pixel sampling, the
automatic sigma rules, the metrics) are public because the scripts in
experiments/ use the same ones. Images are float32 arrays (H, W, 3) in [0, 1];
positions are in pixels, (x, y) = (column, row), pixel centres at +0.5.
"""

from __future__ import annotations

import argparse
import importlib.resources
import math
import os
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

import jax_gmm

#: `upsample --sigma auto` uses sigma = SIGMA_PER_FACTOR * factor pixels, the
#: rule experiments/grid_reconstruction.py fits on half of scikit-image's images.
SIGMA_PER_FACTOR = 0.4

#: `reconstruct --sigma auto` uses sigma = SIGMA_PER_SPACING / sqrt(keep) pixels
#: (1 / sqrt(keep) pixels is the side of the square area per kept pixel), the
#: rule experiments/scattered_reconstruction.py fits on half of its images.
SIGMA_PER_SPACING = 0.45

#: Cutoff radius, in sigmas, of every rendering here: 4 rather than the
#: library's default 3, so that randomly placed samples leave no pixel beyond
#: the reach of every Gaussian (such pixels would render black).
TRUNCATE = 4.0

BUNDLED_IMAGE = "chelsea_256.png"

PathLike = str | os.PathLike


class CliError(Exception):
    """A problem with the user's input: reported as one line, exit status `status`."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------
# Image recipes, shared with experiments/.


def load_image(path: PathLike) -> np.ndarray:
    """Reads an image file as (H, W, 3) float32 RGB in [0, 1].

    Grey and palette images are converted to RGB and alpha is dropped. Raises
    CliError with a one-line reason when the file cannot be read as an image.
    """
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise CliError(f"cannot read image {os.fspath(path)!r}: {reason}") from None
    return np.asarray(rgb, dtype=np.float32) / 255


def bundled_image() -> np.ndarray:
    """The bundled 256 x 256 photograph (jax_gmm/data/chelsea_256.png) as in `load_image`."""
    resource = importlib.resources.files("jax_gmm") / "data" / BUNDLED_IMAGE
    with importlib.resources.as_file(resource) as path:
        return load_image(path)


def save_image(path: PathLike, image: np.ndarray) -> None:
    """Writes an (H, W, 3) image in [0, 1] as 8-bit RGB; the format follows the
    file extension. Raises CliError when it cannot be written."""
    pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    try:
        Image.fromarray(pixels).save(path)
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise CliError(f"cannot write {os.fspath(path)!r}: {reason}") from None


def psnr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two images in [0, 1] (peak 1), over
    all pixels and channels; inf when they are equal."""
    mse = float(np.mean((np.asarray(reference, np.float64) - estimate) ** 2))
    return math.inf if mse == 0 else -10 * math.log10(mse)


def l1(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Mean absolute difference of two images in [0, 1], in 8-bit grey levels
    (0 to 255), over all pixels and channels."""
    return 255 * float(np.mean(np.abs(np.asarray(reference, np.float64) - estimate)))


def crop_to_multiple(image: np.ndarray, factor: int) -> np.ndarray:
    """The top-left (H - H % factor, W - W % factor) part of an (H, W, C) image."""
    height, width = image.shape[:2]
    return image[: height - height % factor, : width - width % factor]


def box_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """(H // f, W // f, C) means of the f x f blocks of an (H, W, C) image.

    The anti-aliased reduction (area averaging) that every upsampler compared
    in experiments/ starts from; rows and columns beyond a multiple of f are
    dropped. Low-resolution pixel (i, j) covers high-resolution pixels
    [i f, (i + 1) f) x [j f, (j + 1) f), so its centre is at ((j + 0.5) f, (i + 0.5) f).
    """
    image = crop_to_multiple(image, factor)
    height, width, channels = image.shape
    blocks = image.reshape(height // factor, factor, width // factor, factor, channels)
    return blocks.mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def grid_points(height: int, width: int, factor: int) -> np.ndarray:
    """(height * width, 2) centres (x, y) of the pixels of a (height, width)
    image downsampled by `factor`, in the pixels of the full-size image, in
    row-major order (that of ``low.reshape(-1, C)``)."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=-1).astype(np.float32) * factor


def render(points: np.ndarray, values: np.ndarray, sigma: float | np.ndarray,
           height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """GMM interpolation of N points onto a (height, width) pixel grid, in float32.

    Args:
      points: (N, 2) positions (x, y) in pixels.
      values: (N, C) values.
      sigma: width in pixels, a scalar or (N,).

    Returns:
      (image (height, width, C), density (height, width)); pixels with density
      0 are farther than TRUNCATE sigma from every point and are 0 in the image.
    """
    image, density = jax_gmm.interpolate(
        np.asarray(points, np.float32), np.asarray(values, np.float32),
        np.asarray(sigma, np.float32), (height, width), truncate=TRUNCATE, return_density=True)
    return np.asarray(image), np.asarray(density)


def upsample(low: np.ndarray, factor: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Renders an (h, w, C) image at (h f, w f) with one Gaussian of width
    sigma (pixels of the output) per input pixel; returns (image, density) as
    `render` does."""
    height, width, channels = low.shape
    points = grid_points(height, width, factor)
    return render(points, low.reshape(-1, channels), sigma, height * factor, width * factor)


def sample_pixels(height: int, width: int, keep: float, rng: np.random.Generator) -> np.ndarray:
    """Row-major indices (N,) of max(1, round(keep * height * width)) distinct
    pixels drawn uniformly at random, in increasing order."""
    count = max(1, round(keep * height * width))
    return np.sort(rng.choice(height * width, size=count, replace=False))


def pixel_centres(indices: np.ndarray, width: int) -> np.ndarray:
    """(N, 2) centres (x, y) of the pixels with row-major indices (N,) in an
    image `width` pixels wide."""
    rows, cols = np.divmod(indices, width)
    return np.stack([cols + 0.5, rows + 0.5], axis=-1).astype(np.float32)


def density_sigma(keep: float) -> float:
    """The automatic sigma in pixels for samples of a fraction `keep` of the
    pixels: SIGMA_PER_SPACING / sqrt(keep)."""
    return SIGMA_PER_SPACING / math.sqrt(keep)


def time_twice(run: Callable[[], object]) -> tuple[object, float, float]:
    """Calls `run` twice; returns its second result, the seconds of the first
    call (which includes any jit compilation) and of the second."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    start = time.perf_counter()
    result = run()
    return result, first, time.perf_counter() - start


# ----------------------------------------------------------------------------
# The command line.


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises CliError (exit status 2) instead of
    printing the usage and exiting."""

    def error(self, message: str):
        raise CliError(message, status=2)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1], got {text!r}")
    return value


def _factor(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2, got {text!r}")
    return value


def _sigma(text: str) -> float | None:
    """None for 'auto', else a positive finite width in pixels."""
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(
            f"must be 'auto' or a positive number of pixels, got {text!r}")
    return value


def _strip(panels: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """Images of equal height side by side, 4 px apart, each under a label."""
    label_height, gap = 14, 4
    height = panels[0][1].shape[0]
    width = sum(image.shape[1] for _, image in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, height + label_height), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for label, image in panels:
        pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
        canvas.paste(Image.fromarray(pixels), (x, label_height))
        draw.text((x + 2, 1), label, fill="black")
        x += image.shape[1] + gap
    return np.asarray(canvas, dtype=np.float32) / 255


def _check_output(path: str | None) -> None:
    """Fails early, before any work, on an output path that cannot be written."""
    if path is None:
        return
    if os.path.splitext(path)[1].lower() not in Image.registered_extensions():
        raise CliError(f"cannot write {path!r}: unknown image file extension", status=2)
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise CliError(f"cannot write {path!r}: no folder {folder!r}", status=2)


def _input(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    """The image named on the command line, or the bundled one, and a
    description; checks the output paths first."""
    _check_output(args.output)
    _check_output(args.compare)
    if args.image is not None:
        return load_image(args.image), os.fspath(args.image)
    return bundled_image(), f"{BUNDLED_IMAGE} (bundled)"


def _report(args: argparse.Namespace, original: np.ndarray, result: np.ndarray,
            density: np.ndarray, shown_input: np.ndarray, first: float, steady: float) -> None:
    """Prints the metrics and timing, and writes the requested files."""
    print(f"PSNR {psnr(original, result):.2f} dB, L1 {l1(original, result):.2f} / 255")
    print(f"time {1e3 * steady:.1f} ms per render ({first:.2f} s for the first, "
          "including compilation)")
    uncovered = int(np.sum(density == 0))
    if uncovered:
        print(f"note: {uncovered} pixels are beyond {TRUNCATE:g} sigma of every sample and are "
              "black; a larger --sigma covers them")
    if args.output is not None:
        save_image(args.output, result)
        print(f"wrote {args.output}")
    if args.compare is not None:
        panels = [("original", original), ("input", shown_input), ("jax_gmm", result)]
        save_image(args.compare, _strip(panels))
        print(f"wrote {args.compare} (original | input | jax_gmm)")


def _upsample_command(args: argparse.Namespace) -> int:
    image, name = _input(args)
    height, width = image.shape[:2]
    if min(height, width) // args.factor < 2:
        raise CliError(f"factor {args.factor} is too large for a {width}x{height} image "
                       "(the downsampled image must be at least 2x2)", status=2)
    image = crop_to_multiple(image, args.factor)
    low = box_downsample(image, args.factor)
    sigma = SIGMA_PER_FACTOR * args.factor if args.sigma is None else args.sigma
    print(f"input {name}, {width}x{height}")
    print(f"upsample x{args.factor}: {low.shape[1]}x{low.shape[0]} -> "
          f"{image.shape[1]}x{image.shape[0]}, sigma {sigma:.2f} px"
          f"{' (auto)' if args.sigma is None else ''}")
    (result, density), first, steady = time_twice(lambda: upsample(low, args.factor, sigma))
    blocky = low.repeat(args.factor, axis=0).repeat(args.factor, axis=1)
    _report(args, image, result, density, blocky, first, steady)
    return 0


def _reconstruct_command(args: argparse.Namespace) -> int:
    image, name = _input(args)
    height, width, channels = image.shape
    indices = sample_pixels(height, width, args.keep, np.random.default_rng(args.seed))
    points = pixel_centres(indices, width)
    values = image.reshape(-1, channels)[indices]
    sigma = density_sigma(args.keep) if args.sigma is None else args.sigma
    print(f"input {name}, {width}x{height}")
    print(f"reconstruct from {len(indices)} of {height * width} pixels (keep {args.keep:g}, "
          f"seed {args.seed}), sigma {sigma:.2f} px{' (auto)' if args.sigma is None else ''}")
    (result, density), first, steady = time_twice(
        lambda: render(points, values, sigma, height, width))
    kept = np.zeros_like(image).reshape(-1, channels)
    kept[indices] = values
    _report(args, image, result, density, kept.reshape(image.shape), first, steady)
    return 0


def _add_common(parser: argparse.ArgumentParser, auto_rule: str) -> None:
    parser.add_argument("image", nargs="?", help="image file (default: the bundled 256x256 photo)")
    parser.add_argument("--sigma", type=_sigma, default=None, metavar="auto|PX",
                        help=f"Gaussian width in output pixels (default: auto, {auto_rule})")
    parser.add_argument("-o", "--output", help="write the reconstruction here (PNG, JPEG, ...)")
    parser.add_argument("--compare", metavar="PATH",
                        help="write an original | input | reconstruction strip here")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jax-gmm", description="GMM image reconstruction with jax_gmm; "
                     "prints PSNR and L1 against the original and the time taken.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    upsample_parser = commands.add_parser(
        "upsample", help="box-downsample by an integer factor, then render back at full size")
    _add_common(upsample_parser, f"{SIGMA_PER_FACTOR:g} x factor")
    upsample_parser.add_argument("--factor", type=_factor, default=4,
                                 help="integer downsampling factor >= 2 (default: 4)")
    upsample_parser.set_defaults(run=_upsample_command)
    reconstruct_parser = commands.add_parser(
        "reconstruct", help="render the image from a random fraction of its pixels")
    _add_common(reconstruct_parser, f"{SIGMA_PER_SPACING:g} / sqrt(keep)")
    reconstruct_parser.add_argument("--keep", type=_fraction, default=0.1,
                                    help="fraction of pixels kept, in (0, 1] (default: 0.1)")
    reconstruct_parser.add_argument("--seed", type=int, default=0,
                                    help="random seed of the kept pixels (default: 0)")
    reconstruct_parser.set_defaults(run=_reconstruct_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line on `argv` (default: sys.argv[1:]); returns the
    exit status: 0 on success, 1 for unreadable or unwritable files, 2 for
    invalid arguments. Errors are printed as one line on stderr."""
    try:
        args = _parser().parse_args(argv)
        return args.run(args)
    except CliError as error:
        print(f"jax-gmm: error: {error}", file=sys.stderr)
        return error.status
    except SystemExit as exit_:  # --help
        return 0 if exit_.code is None else int(exit_.code)
