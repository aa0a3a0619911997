"""Image recipes shared by the ``jax-gmm`` command line and experiments/:
reading and writing images, box downsampling, pixel sampling, the automatic
sigma rules, rendering with `jax_gmm.interpolate`, and the metrics.

Images are float32 arrays (H, W, C) in [0, 1]; positions are in pixels,
(x, y) = (column, row), pixel centres at +0.5.
"""

from __future__ import annotations

import importlib.resources
import io
import math
import os

import numpy as np
from PIL import Image

import jax_gmm

#: `upsample --sigma auto` uses sigma = SIGMA_PER_FACTOR * factor pixels, the
#: rule experiments/grid_reconstruction.py fits on half of scikit-image's images.
SIGMA_PER_FACTOR = 0.4

#: Cutoff radius, in sigmas, of every rendering here: 4 rather than the
#: library's default 3, so that randomly placed samples leave no pixel beyond
#: the reach of every Gaussian (such pixels would render black).
TRUNCATE = 4.0

BUNDLED_IMAGE = "chelsea_256.png"

PathLike = str | os.PathLike


class ImageFileError(Exception):
    """An image file that cannot be read or written; the message is one line."""


#: Pillow modes read as they are, with the value that maps to 1. 16-bit grey
#: PNGs open as an "I;16" or "I" mode; Pillow itself reads 16-bit colour PNGs
#: as 8-bit RGB. Float grey ("F", from a float TIFF, say) is taken as it is.
_DIRECT_MODES = {"L": 255, "LA": 255, "RGB": 255, "RGBA": 255, "I;16": 65535,
                 "I;16B": 65535, "I;16L": 65535, "I": 65535, "F": 1}
_DEPTHS = {255: "8-bit", 65535: "16-bit", 1: "32-bit float"}

#: The mode every other one is converted to first.
_CONVERTED_MODES = {"1": "L", "La": "LA", "PA": "RGBA", "RGBa": "RGBA"}

#: What an image of C channels holds, by C.
CHANNEL_NAMES = {1: "grey", 2: "grey + alpha", 3: "RGB", 4: "RGB + alpha"}


def read_image(path: PathLike) -> tuple[np.ndarray, str]:
    """Reads an image file with its own channels.

    Returns:
      (image, description): image is (H, W, C) float32 in [0, 1] with C = 1
      (grey), 2 (grey, alpha), 3 (RGB) or 4 (RGB, alpha); 16-bit grey is
      scaled by 1 / 65535, 32-bit float grey is taken as it is (clipped to
      [0, 1], like every image), palette images become RGB (RGBA when the
      palette has transparency). description says what was read, e.g.
      "16-bit grey".

    Raises ImageFileError with a one-line reason when the file cannot be read
    as an image.
    """
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode == "P":
                converted = "RGBA" if "transparency" in image.info else "RGB"
            else:
                converted = _CONVERTED_MODES.get(mode, mode if mode in _DIRECT_MODES else "RGB")
            pixels = np.asarray(image if converted == mode else image.convert(converted))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ImageFileError(f"cannot read image {os.fspath(path)!r}: {reason}") from None
    peak = _DIRECT_MODES[converted]
    pixels = np.clip(pixels.astype(np.float32) / peak, 0, 1)
    pixels = pixels.reshape(*pixels.shape[:2], -1)
    source = ", from a palette" if mode == "P" else ""
    return pixels, f"{_DEPTHS[peak]} {CHANNEL_NAMES[pixels.shape[-1]]}{source}"


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB from an image as `read_image` returns it; alpha is dropped."""
    colour = image[..., :1] if image.shape[-1] <= 2 else image[..., :3]
    return np.broadcast_to(colour, (*image.shape[:2], 3))


def load_image(path: PathLike) -> np.ndarray:
    """Reads an image file as (H, W, 3) float32 RGB in [0, 1] (`read_image`,
    with grey repeated and alpha dropped)."""
    return np.ascontiguousarray(to_rgb(read_image(path)[0]))


def bundled_image() -> np.ndarray:
    """The bundled 256 x 256 photograph (jax_gmm/data/chelsea_256.png) as in `load_image`."""
    resource = importlib.resources.files("jax_gmm") / "data" / BUNDLED_IMAGE
    with importlib.resources.as_file(resource) as path:
        return load_image(path)


def _eight_bit(image: np.ndarray) -> Image.Image:
    """An (H, W, C) image in [0, 1] as a Pillow image of 8 bits per channel:
    C = 1 grey, 2 grey and alpha, 3 RGB, 4 RGBA."""
    pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


def unwritable_format(path: PathLike, channels: int) -> str | None:
    """Why `save_image` could not write an image of `channels` channels in the
    format of path's extension (an unknown extension, a format Pillow only
    reads, RGBA as JPEG), or None if it can; the file itself is not touched."""
    extension = os.path.splitext(path)[1].lower()
    name = Image.registered_extensions().get(extension)
    if name is None:
        return "unknown image file extension"
    if name not in Image.SAVE:
        return f"Pillow cannot write {name} files"
    try:  # a small image in memory, as the result would be written
        _eight_bit(np.zeros((16, 16, channels), np.float32)).save(io.BytesIO(), format=name)
    except (OSError, ValueError, KeyError, TypeError):
        return f"{name} cannot hold {CHANNEL_NAMES[channels]} images"
    return None


def save_image(path: PathLike, image: np.ndarray) -> None:
    """Writes an (H, W, C) image in [0, 1] as 8 bits per channel: C = 1 grey,
    2 grey and alpha, 3 RGB, 4 RGBA; the format follows the file extension.
    Raises ImageFileError when it cannot be written."""
    try:
        _eight_bit(image).save(path)
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ImageFileError(f"cannot write {os.fspath(path)!r}: {reason}") from None


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
           height: int, width: int, truncate: float = TRUNCATE) -> tuple[np.ndarray, np.ndarray]:
    """GMM interpolation of N points onto a (height, width) pixel grid, in float32.

    Args:
      points: (N, 2) positions (x, y) in pixels.
      values: (N, C) values.
      sigma: width in pixels, a scalar or (N,).
      truncate: cutoff radius in sigmas.

    Returns:
      (image (height, width, C), density (height, width)); pixels with density
      0 are farther than truncate sigma from every point and are 0 in the image.
    """
    image, density = jax_gmm.interpolate(
        np.asarray(points, np.float32), np.asarray(values, np.float32),
        np.asarray(sigma, np.float32), (height, width), truncate=truncate, return_density=True)
    return np.asarray(image), np.asarray(density)


def upsample(low: np.ndarray, factor: int, sigma: float,
             truncate: float = TRUNCATE) -> tuple[np.ndarray, np.ndarray]:
    """Renders an (h, w, C) image at (h f, w f) with one Gaussian of width
    sigma (pixels of the output) per input pixel; returns (image, density) as
    `render` does."""
    height, width, _ = low.shape
    return enlarge(low, height * factor, width * factor, sigma, truncate)


def enlarge(image: np.ndarray, height: int, width: int, sigma: float,
            truncate: float = TRUNCATE) -> tuple[np.ndarray, np.ndarray]:
    """Renders an (h, w, C) image at (height, width) with one Gaussian of width
    sigma (output pixels) per input pixel, each input pixel's centre scaled
    to the output; returns (image, density) as `render` does."""
    rows, cols, channels = image.shape
    scale = np.array([width / cols, height / rows], np.float32)
    points = grid_points(rows, cols, 1) * scale
    return render(points, image.reshape(rows * cols, channels), sigma, height, width, truncate)


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

