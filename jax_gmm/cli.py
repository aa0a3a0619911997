"""The ``jax-gmm`` command line (also ``python -m jax_gmm``).

``jax-gmm enlarge IMAGE --factor F -o OUT`` enlarges IMAGE by F (any number
> 1), one Gaussian per input pixel: an integer F with `jax_gmm.upsample`, so
that box-downsampling the result gives IMAGE back; another F with the plain
weighted mean of `jax_gmm.interpolate`.
``jax-gmm upsample [IMAGE] --factor F`` box-downsamples IMAGE by the integer
factor F and renders it back at full size with the plain weighted mean (the
paper's experiment); ``jax-gmm reconstruct [IMAGE]
--keep P`` keeps a random fraction P of the pixels and rebuilds the whole
image from them with `jax_gmm.reconstruct` (``--plain``: the plain weighted
mean). Those two print PSNR and L1 against the original and the time taken,
and can write the result (``-o``) and an original | input | result strip
(``--compare``). Without IMAGE they use the bundled 256 x 256 photograph
(jax_gmm/data/). Grey images stay one channel; alpha is kept as a channel and
interpolated like the colours. The image recipes live in `jax_gmm.imaging`.

``jax-gmm fit [IMAGE] -n N -o gaussians.npz`` fits N Gaussians to IMAGE with
`jax_gmm.fitting.fit_image`, prints PSNR and L1 of their rendering and the
time taken, and can write the rendering (``--render``); ``jax-gmm render
gaussians.npz -o OUT [--scale S | --size HxW]`` renders saved Gaussians at any
size, their positions and covariances scaled with the image.

The .npz file (format version 1) holds: ``format`` = "jax_gmm.gaussians",
``version`` = 1, ``points`` (N, 2) float32 positions (x, y) in pixels of the
fitted image, ``values`` (N, C) float32 colours (C = 1 grey, 2 grey + alpha,
3 RGB, 4 RGBA) on the scale where the image spans [0, 1] (a fit overshoots it
a little; written images are clipped to [0, 1]), ``sigma`` float32 (N, 2, 2)
covariances in pixels^2 or (N,) widths in pixels, ``shape`` (2,) int64 (H, W)
of the fitted image and ``truncate`` the cutoff in standard deviations to
render with. It renders (eps = 0) as
``jax_gmm.interpolate(points, values, sigma, shape, truncate=truncate)``.

Example::

    jax-gmm enlarge photo.png --factor 2.5 -o big.png
    jax-gmm fit photo.png -n 20000 -o photo.npz --render fit.png
    jax-gmm render photo.npz --scale 3 -o big.png
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import zipfile
from collections.abc import Callable, Sequence

import jax
import numpy as np
from PIL import Image, ImageDraw

import jax_gmm
from jax_gmm import adaptive, fitting, upsampling
from jax_gmm.imaging import (
    ImageFileError,
    BUNDLED_IMAGE,
    CHANNEL_NAMES,
    SIGMA_PER_FACTOR,
    TRUNCATE,
    box_downsample,
    bundled_image,
    crop_to_multiple,
    enlarge,
    l1,
    pixel_centres,
    psnr,
    read_image,
    render,
    sample_pixels,
    save_image,
    to_rgb,
    unwritable_format,
    upsample,
)

#: Largest output enlarge renders, in pixels: beyond it a typo in --factor
#: would exhaust memory instead of failing with a message.
MAX_OUTPUT_PIXELS = 1 << 28

class CliError(Exception):
    """A problem with the user's input: reported as one line, exit status `status`."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


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


def _checked(convert: Callable[[str], object], ok: Callable[[object], bool], expected: str):
    """An argparse type: `convert` the text and accept the value when `ok`."""
    def parse(text: str):
        try:
            value = convert(text)
            accepted = ok(value)
        except ValueError:
            accepted = False
        if not accepted:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
        return value
    return parse


_count = _checked(int, lambda v: v >= 1, "an integer >= 1")
_steps = _checked(int, lambda v: v >= 0, "an integer >= 0")
_scale = _checked(float, lambda v: 0 < v < math.inf, "a positive number")
_fraction = _checked(float, lambda v: 0 < v <= 1, "a fraction in (0, 1]")
_factor = _checked(int, lambda v: v >= 2, "an integer >= 2")
_enlarge_factor = _checked(float, lambda v: 1 < v < math.inf, "a number > 1")
_seed = _checked(int, lambda v: v >= 0, "an integer >= 0")
_truncate = _checked(float, lambda v: 0 < v < math.inf, "a positive number of sigmas")
#: None for 'auto', else a positive finite width in pixels.
_sigma = _checked(lambda t: None if t == "auto" else float(t),
                  lambda v: v is None or 0 < v < math.inf, "'auto' or a positive number of pixels")


def _strip(panels: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """Images of equal height side by side, 4 px apart, each under a label."""
    label_height, gap = 14, 4
    height = panels[0][1].shape[0]
    width = sum(image.shape[1] for _, image in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, height + label_height), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for label, image in panels:
        pixels = np.round(np.clip(to_rgb(image), 0, 1) * 255).astype(np.uint8)
        canvas.paste(Image.fromarray(pixels), (x, label_height))
        draw.text((x + 2, 1), label, fill="black")
        x += image.shape[1] + gap
    return np.asarray(canvas, dtype=np.float32) / 255


def _check_output(path: str | None, channels: int | None = None) -> None:
    """Fails early, before any work, on an output path that cannot be
    written: an image file of `channels` channels, or without them a .npz
    file of Gaussians."""
    if path is None:
        return
    if os.path.isdir(path):
        raise CliError(f"cannot write {path!r}: is a directory", status=2)
    if channels is None and os.path.splitext(path)[1].lower() != ".npz":
        raise CliError(f"cannot write {path!r}: the Gaussians file must end in .npz", status=2)
    reason = None if channels is None else unwritable_format(path, channels)
    if reason:
        raise CliError(f"cannot write {path!r}: {reason}", status=2)
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise CliError(f"cannot write {path!r}: no folder {folder!r}", status=2)
    if not os.access(path if os.path.exists(path) else folder, os.W_OK):
        raise CliError(f"cannot write {path!r}: permission denied")


def _input(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    """The image named on the command line, or the bundled one, and a
    description; checks the output paths, for a result with the image's
    channels and an RGB comparison strip, before the work starts."""
    if args.image is not None:
        image, kind = read_image(args.image)
        name = f"{os.fspath(args.image)} ({kind})"
    else:
        image, name = bundled_image(), f"{BUNDLED_IMAGE} (bundled)"
    _check_output(args.output, channels=image.shape[-1])
    _check_output(getattr(args, "compare", None), channels=3)
    return image, name


def _print_input(name: str, image: np.ndarray) -> None:
    height, width, channels = image.shape
    print(f"input {name}, {width}x{height}")
    if channels in (2, 4):
        print("note: alpha is kept as a channel and interpolated like the colours")


def _note_uncovered(args: argparse.Namespace, density: np.ndarray) -> None:
    uncovered = int(np.sum(density == 0))
    if uncovered and getattr(args, "plain", True) is False:  # reconstruct, its own cutoff
        print(f"note: {uncovered} pixels are beyond the reach of every sample and are black")
    elif uncovered:
        print(f"note: {uncovered} pixels are beyond {args.truncate:g} sigma of every sample and "
              "are black; a larger --sigma or --truncate covers them")


def _report(args: argparse.Namespace, original: np.ndarray, result: np.ndarray,
            density: np.ndarray, shown_input: np.ndarray, first: float, steady: float) -> None:
    """Prints the metrics and timing, and writes the requested files."""
    print(f"PSNR {psnr(original, result):.2f} dB, L1 {l1(original, result):.2f} / 255")
    print(f"time {1e3 * steady:.1f} ms per render ({first:.2f} s for the first, "
          "including compilation)")
    _note_uncovered(args, density)
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
    _print_input(name, image)
    print(f"upsample x{args.factor}: {low.shape[1]}x{low.shape[0]} -> "
          f"{image.shape[1]}x{image.shape[0]}, sigma {sigma:.2f} px"
          f"{' (auto)' if args.sigma is None else ''}")
    (result, density), first, steady = time_twice(lambda: upsample(low, args.factor, sigma, args.truncate))
    blocky = low.repeat(args.factor, axis=0).repeat(args.factor, axis=1)
    _report(args, image, result, density, blocky, first, steady)
    return 0


def _reconstruct_command(args: argparse.Namespace) -> int:
    image, name = _input(args)
    height, width, channels = image.shape
    indices = sample_pixels(height, width, args.keep, np.random.default_rng(args.seed))
    points = pixel_centres(indices, width)
    values = image.reshape(-1, channels)[indices]
    if not args.plain:
        if args.sigma is not None or args.truncate != TRUNCATE:
            raise CliError("--sigma and --truncate apply to the plain mean: add --plain",
                           status=2)
        described = "jax_gmm.reconstruct (steered Gaussians, local linear fit)"

        def run():
            result, density = jax_gmm.reconstruct(points, values, (height, width),
                                                  return_density=True)
            return np.asarray(result), np.asarray(density)
    else:
        if args.sigma is None:
            def sigma_of():
                return np.asarray(adaptive.resolve_sigma("auto", points, args.truncate))
            median = np.nanmedian(sigma_of())
            described = f"plain mean, sigma per sample, median {median:.2f} px (auto)"
        else:
            sigma_of = lambda: args.sigma  # noqa: E731
            described = f"plain mean, sigma {args.sigma:.2f} px"

        def run():
            return render(points, values, sigma_of(), height, width, args.truncate)
    _print_input(name, image)
    print(f"reconstruct from {len(indices)} of {height * width} pixels (keep {args.keep:g}, "
          f"seed {args.seed}), {described}")
    (result, density), first, steady = time_twice(run)
    kept = np.zeros_like(image).reshape(-1, channels)
    kept[indices] = values
    _report(args, image, result, density, kept.reshape(image.shape), first, steady)
    return 0


def _enlarge_command(args: argparse.Namespace) -> int:
    image, name = _input(args)
    rows, cols = image.shape[:2]
    height, width = round(rows * args.factor), round(cols * args.factor)
    if height * width > MAX_OUTPUT_PIXELS:
        raise CliError(f"factor {args.factor:g} would make a {width}x{height} image, more than "
                       f"{MAX_OUTPUT_PIXELS} pixels", status=2)
    # An integer factor gets the consistent enlargement (box-downsampling the
    # result gives the image back); another factor the plain weighted mean.
    consistent = float(args.factor).is_integer()
    per_factor = upsampling.SIGMA_PER_FACTOR if consistent else SIGMA_PER_FACTOR
    sigma = per_factor * args.factor if args.sigma is None else args.sigma
    _print_input(name, image)
    print(f"enlarge x{args.factor:g}: {cols}x{rows} -> {width}x{height}, sigma {sigma:.2f} px"
          f"{' (auto)' if args.sigma is None else ''}, "
          f"{'consistent (back-projection)' if consistent else 'weighted mean'}")
    start = time.perf_counter()
    if consistent:
        result, density = map(np.asarray, upsampling.upsample(
            image, int(args.factor), sigma=sigma, truncate=args.truncate, return_density=True))
    else:
        result, density = enlarge(image, height, width, sigma, args.truncate)
    print(f"time {time.perf_counter() - start:.2f} s, including compilation")
    _note_uncovered(args, density)
    save_image(args.output, result)
    print(f"wrote {args.output}")
    return 0


#: The .npz format `fit` writes and `render` reads (see the module docstring).
GAUSSIANS_FORMAT, GAUSSIANS_VERSION = "jax_gmm.gaussians", 1


def _size(text: str) -> tuple[int, int]:
    """An argparse type: 'HxW' as (H, W), both integers >= 1."""
    parts = text.lower().split("x")
    try:
        height, width = (int(part) for part in parts)
        accepted = len(parts) == 2 and height >= 1 and width >= 1
    except ValueError:
        accepted = False
    if not accepted:
        raise argparse.ArgumentTypeError(f"must be HEIGHTxWIDTH in pixels, e.g. 512x768, "
                                         f"got {text!r}")
    return height, width


def save_gaussians(path: str, points, values, sigma, shape: tuple[int, int],
                   truncate: float) -> None:
    """Writes Gaussians in the .npz format of the module docstring."""
    np.savez(path, format=GAUSSIANS_FORMAT, version=GAUSSIANS_VERSION,
             points=np.asarray(points, np.float32), values=np.asarray(values, np.float32),
             sigma=np.asarray(sigma, np.float32), shape=np.asarray(shape, np.int64),
             truncate=np.float64(truncate))


def load_gaussians(path: str) -> dict[str, np.ndarray]:
    """Reads a file `save_gaussians` wrote: its arrays, with shape as (H, W)
    ints and truncate as a float. CliError (status 1) with a one-line reason
    for a file that is not one."""
    def fail(reason: str):
        return CliError(f"cannot read Gaussians {os.fspath(path)!r}: {reason}")
    if os.path.isfile(path) and not zipfile.is_zipfile(path):  # np.load would talk of pickles
        raise fail("not a .npz file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError) as error:
        raise fail(getattr(error, "strerror", None) or str(error) or type(error).__name__) from None
    if str(arrays.get("format", "")) != GAUSSIANS_FORMAT:
        raise fail(f"not a {GAUSSIANS_FORMAT} file")
    if str(arrays.get("version", "")) != str(GAUSSIANS_VERSION):
        raise fail(f"format version {arrays.get('version')}, this jax-gmm reads {GAUSSIANS_VERSION}")
    missing = {"points", "values", "sigma", "shape", "truncate"} - arrays.keys()
    if missing:
        raise fail(f"missing {', '.join(sorted(missing))}")
    points, values, sigma, shape = (arrays[key] for key in ("points", "values", "sigma", "shape"))
    n = len(points) if points.ndim else 0
    if (n == 0 or points.shape != (n, 2) or values.shape not in ((n, c) for c in CHANNEL_NAMES)
            or sigma.shape not in ((n,), (n, 2, 2)) or shape.shape != (2,)):
        raise fail(f"inconsistent shapes: points {points.shape}, values {values.shape} "
                   f"(1 to 4 channels), sigma {sigma.shape}, shape {shape.shape}")
    try:
        arrays["shape"] = tuple(int(side) for side in shape)
        arrays["truncate"] = float(arrays["truncate"])
    except (TypeError, ValueError):
        raise fail("shape and truncate must be numbers") from None
    if min(arrays["shape"]) < 1 or not 0 < arrays["truncate"] < math.inf:
        raise fail(f"shape {arrays['shape']} or truncate {arrays['truncate']} out of range")
    return arrays


def scaled_gaussians(points: np.ndarray, sigma: np.ndarray, x_scale: float,
                     y_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions and sigma for an image stretched by x_scale horizontally and
    y_scale vertically: positions times (x_scale, y_scale) (pixel edges stay
    on edges), covariances D Sigma D with D = diag(x_scale, y_scale); round
    widths (N,) become per-axis widths (N, 2) when the scales differ."""
    factors = np.array([x_scale, y_scale], np.float32)
    points = points * factors
    if sigma.ndim == 3:
        return points, sigma * factors[:, None] * factors[None, :]
    if x_scale == y_scale:
        return points, sigma * np.float32(x_scale)
    return points, sigma[:, None] * factors


def _fit_command(args: argparse.Namespace) -> int:
    _check_output(args.output)
    if args.image is not None:
        image, kind = read_image(args.image)
        name = f"{os.fspath(args.image)} ({kind})"
    else:
        image, name = bundled_image(), f"{BUNDLED_IMAGE} (bundled)"
    height, width, channels = image.shape
    _check_output(args.render, channels=channels)
    if args.n > height * width:
        raise CliError(f"-n {args.n} is more than the {height * width} pixels of the image",
                       status=2)
    _print_input(name, image)
    per_gaussian = 2 + (1 if args.isotropic else 3) + channels
    print(f"fit {args.n} {'isotropic' if args.isotropic else 'anisotropic'} Gaussians "
          f"({args.n / (height * width):.3g} per pixel, {args.n * per_gaussian} numbers), "
          f"{args.steps} steps, seed {args.seed}, cutoff {args.truncate:g} sigma")
    start = time.perf_counter()
    points, values, sigma = fitting.fit_image(
        image, args.n, steps=args.steps, anisotropic=not args.isotropic,
        key=jax.random.PRNGKey(args.seed), truncate=args.truncate, progress=True)
    result = np.asarray(jax_gmm.interpolate(points, values, sigma, (height, width),
                                            truncate=args.truncate))
    print(f"PSNR {psnr(image, result):.2f} dB, L1 {l1(image, result):.2f} / 255")
    print(f"time {time.perf_counter() - start:.1f} s, including compilation")
    save_gaussians(args.output, points, values, sigma, (height, width), args.truncate)
    print(f"wrote {args.output}")
    if args.render is not None:
        save_image(args.render, result)
        print(f"wrote {args.render}")
    return 0


def _render_command(args: argparse.Namespace) -> int:
    saved = load_gaussians(args.gaussians)
    _check_output(args.output, channels=saved["values"].shape[1])
    rows, cols = saved["shape"]
    if args.size is not None:
        height, width = args.size
    else:
        height, width = round(rows * args.scale), round(cols * args.scale)
    if height * width > MAX_OUTPUT_PIXELS or min(height, width) < 1:
        raise CliError(f"a {width}x{height} image is not between 1 and {MAX_OUTPUT_PIXELS} "
                       "pixels", status=2)
    points, sigma = scaled_gaussians(saved["points"], saved["sigma"], width / cols, height / rows)
    print(f"render {len(points)} Gaussians fitted at {cols}x{rows} -> {width}x{height}, "
          f"cutoff {saved['truncate']:g} sigma")
    start = time.perf_counter()
    try:
        result = np.asarray(jax_gmm.interpolate(points, saved["values"], sigma, (height, width),
                                                truncate=saved["truncate"]))
    except ValueError as error:  # e.g. a covariance that is not positive definite
        raise CliError(f"cannot render {args.gaussians!r}: {error}") from None
    print(f"time {time.perf_counter() - start:.2f} s, including compilation")
    save_image(args.output, result)
    print(f"wrote {args.output}")
    return 0


def _add_common(parser: argparse.ArgumentParser, auto_rule: str, only: str = "") -> None:
    """--sigma and --truncate; `only` says when they apply, if not always."""
    parser.add_argument("--sigma", type=_sigma, default=None, metavar="auto|PX",
                        help=f"{only}Gaussian width in output pixels (default: auto, {auto_rule})")
    parser.add_argument("--truncate", type=_truncate, default=TRUNCATE, metavar="T",
                        help=f"{only}cutoff radius in sigmas (default: {TRUNCATE:g})")


def _add_evaluation(parser: argparse.ArgumentParser, auto_rule: str, only: str = "") -> None:
    """The arguments of the commands that score a rendering against the original."""
    parser.add_argument("image", nargs="?", help="image file (default: the bundled 256x256 photo)")
    _add_common(parser, auto_rule, only)
    parser.add_argument("-o", "--output", help="write the result here (PNG, JPEG, ...)")
    parser.add_argument("--compare", metavar="PATH",
                        help="write an original | input | result strip here")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jax-gmm", description="GMM image reconstruction with jax_gmm. Every "
                     "command prints the time taken; upsample, reconstruct and fit also print "
                     "PSNR and L1 against the original.")
    parser.add_argument("--version", action="version", version=f"jax-gmm {jax_gmm.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    enlarge_parser = commands.add_parser(
        "enlarge", help="enlarge an image by any factor > 1, one Gaussian per pixel; an integer "
        "factor consistently (box-downsampling the result gives the image back)")
    enlarge_parser.add_argument("image", help="image file")
    enlarge_parser.add_argument("--factor", type=_enlarge_factor, required=True,
                                help="enlargement factor > 1, e.g. 2 or 2.5")
    enlarge_parser.add_argument("-o", "--output", required=True,
                                help="write the enlarged image here (PNG, JPEG, ...)")
    _add_common(enlarge_parser, f"{upsampling.SIGMA_PER_FACTOR:g} x factor for an integer "
                f"factor, else {SIGMA_PER_FACTOR:g} x factor")
    enlarge_parser.set_defaults(run=_enlarge_command)
    upsample_parser = commands.add_parser(
        "upsample", help="box-downsample by an integer factor, then render back at full size "
        "with the plain Gaussian-weighted mean, and score it (enlarge by an integer factor uses "
        "jax_gmm.upsample)")
    _add_evaluation(upsample_parser, f"{SIGMA_PER_FACTOR:g} x factor")
    upsample_parser.add_argument("--factor", type=_factor, default=4,
                                 help="integer downsampling factor >= 2 (default: 4)")
    upsample_parser.set_defaults(run=_upsample_command)
    reconstruct_parser = commands.add_parser(
        "reconstruct", help="render the image from a random fraction of its pixels")
    _add_evaluation(reconstruct_parser,
                    f"per sample, {adaptive.DEFAULT_SCALE:g} x the distance to its "
                    f"{adaptive.DEFAULT_K}th nearest other sample (jax_gmm.adaptive_sigma), "
                    "widened below truncate 4 so that the cutoff reaches as far",
                    only="with --plain only: ")
    reconstruct_parser.add_argument(
        "--plain", action="store_true",
        help="render the plain Gaussian-weighted mean of the samples (with --sigma and "
             "--truncate) instead of jax_gmm.reconstruct")
    reconstruct_parser.add_argument("--keep", type=_fraction, default=0.1,
                                    help="fraction of pixels kept, in (0, 1] (default: 0.1)")
    reconstruct_parser.add_argument("--seed", type=_seed, default=0,
                                    help="random seed of the kept pixels (default: 0)")
    reconstruct_parser.set_defaults(run=_reconstruct_command)
    fit_parser = commands.add_parser(
        "fit", help="fit N Gaussians to an image (jax_gmm.fitting.fit_image) and save them")
    fit_parser.add_argument("image", nargs="?", help="image file (default: the bundled 256x256 photo)")
    fit_parser.add_argument("-n", type=_count, required=True,
                            help="number of Gaussians, at most the number of pixels")
    fit_parser.add_argument("-o", "--output", required=True,
                            help="write the Gaussians here (.npz, see `render`)")
    fit_parser.add_argument("--render", metavar="PATH",
                            help="write the fitted Gaussians' rendering here (PNG, JPEG, ...)")
    fit_parser.add_argument("--steps", type=_steps, default=2000,
                            help="Adam steps (default: 2000)")
    fit_parser.add_argument("--isotropic", action="store_true",
                            help="isotropic Gaussians (one width each) instead of covariances")
    fit_parser.add_argument("--seed", type=_seed, default=0,
                            help="random seed of the initial positions (default: 0)")
    fit_parser.add_argument("--truncate", type=_truncate, default=4.0, metavar="T",
                            help="cutoff radius in sigmas, saved with the Gaussians (default: 4)")
    fit_parser.set_defaults(run=_fit_command)
    render_parser = commands.add_parser(
        "render", help="render Gaussians saved by `fit` at any size")
    render_parser.add_argument("gaussians", help=".npz file written by `jax-gmm fit`")
    render_parser.add_argument("-o", "--output", required=True,
                               help="write the image here (PNG, JPEG, ...)")
    size = render_parser.add_mutually_exclusive_group()
    size.add_argument("--scale", type=_scale, default=1.0,
                      help="size relative to the fitted image (default: 1)")
    size.add_argument("--size", type=_size, metavar="HxW",
                      help="output height x width in pixels, e.g. 512x768")
    render_parser.set_defaults(run=_render_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line on `argv` (default: sys.argv[1:]); returns the
    exit status: 0 on success, 1 for unreadable or unwritable files, 2 for
    invalid arguments. Errors are printed as one line on stderr."""
    try:
        args = _parser().parse_args(argv)
        return args.run(args)
    except (CliError, ImageFileError) as error:
        print(f"jax-gmm: error: {error}", file=sys.stderr)
        return getattr(error, "status", 1)
    except SystemExit as exit_:  # --help
        return 0 if exit_.code is None else int(exit_.code)
