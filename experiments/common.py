"""Helpers shared by the experiment scripts: the image set, centre crops, the
fit/report split, Markdown tables and the results folder.

Images are float32 arrays (H, W, 3) in [0, 1], loaded with
`jax_gmm.cli.load_image`; the metrics are `jax_gmm.cli.psnr` and `jax_gmm.cli.l1`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import skimage.data
from matplotlib.figure import Figure
from PIL import Image

from jax_gmm.imaging import load_image

#: Default output folder, outside the source tree so that a run never
#: overwrites the committed results (pass --out experiments/results for that).
RESULTS = Path.home() / "jax_gmm_results"

# Photographs that scikit-image ships inside its package (skimage/data/), the
# colour ones then the grey ones (loaded as RGB). Synthetic, binary and tiny
# images (logo, horse, chessboard, phantom, microaneurysms) are left out, and
# so is moon.png: it is a 256 x 256 image enlarged 2x by pixel replication,
# which nearest-neighbour upsampling restores exactly (infinite PSNR).
SKIMAGE_FILES = (
    "astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
    "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png",
    "brick.png", "grass.png", "gravel.png", "camera.png", "coins.png",
    "page.png", "text.png", "cell.png",
)

PNG_LIMIT = 300_000

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def image_paths(folders: Sequence[Path], limit: int | None = None) -> list[Path]:
    """scikit-image's photographs (the first `limit` of them, all if None),
    then every image file in `folders`, each folder sorted by name."""
    skimage_dir = Path(skimage.data.__file__).parent
    paths = [skimage_dir / name for name in SKIMAGE_FILES[:limit]]
    for folder in folders:
        paths += sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return paths


def centre_crop(image: np.ndarray, size: int | None, multiple: int = 1) -> np.ndarray:
    """The centred part of an (H, W, C) image at most `size` pixels high and
    wide (no limit if None), with both sides cut down to a multiple of `multiple`."""
    height, width = image.shape[:2]
    new_height, new_width = (min(side, size or side) // multiple * multiple
                             for side in (height, width))
    top, left = (height - new_height) // 2, (width - new_width) // 2
    return image[top:top + new_height, left:left + new_width]


def load_images(paths: Sequence[Path], size: int | None,
                multiple: int = 1) -> list[tuple[str, np.ndarray]]:
    """(file stem, centre crop) of each image; see `centre_crop`."""
    return [(path.stem, centre_crop(load_image(path), size, multiple)) for path in paths]


def split_halves(items: Sequence) -> tuple[list, list]:
    """(fit, report): the items at even positions, to fit parameters on, and
    those at odd positions, to report results on."""
    return list(items[0::2]), list(items[1::2])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; cells are printed with str()."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def base_parser(description: str, images: bool = True) -> argparse.ArgumentParser:
    """An argument parser with the experiments' options: --full, --out DIR
    and, if `images`, --images DIR ..."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--full", action="store_true",
                        help="the full setting of the script's docstring (slow); default: quick")
    if images:
        parser.add_argument("--images", nargs="*", type=Path, default=[], metavar="DIR",
                            help="folders of extra images to add to scikit-image's")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help=f"folder for the .md and .png results (default: {RESULTS})")
    return parser


def image_row(panels: dict[str, np.ndarray], title: str, width: float) -> Figure:
    """A figure `width` inches wide of (H, W, 3) images side by side, each
    under its key, shown clipped to [0, 1] without smoothing."""
    figure = Figure(figsize=(width, width / len(panels) + 0.5), layout="constrained")
    for axis, (label, panel) in zip(figure.subplots(1, len(panels)), panels.items()):
        axis.imshow(np.clip(panel, 0, 1), interpolation="nearest")
        axis.set_title(label, fontsize=8)
        axis.axis("off")
    figure.suptitle(title)
    return figure


def write_results(out: Path, name: str, markdown: str, figures: dict[str, Figure]) -> None:
    """Writes out/name.md and each figure as out/<key>.png at 80 dpi; a PNG
    over PNG_LIMIT bytes is saved again with a 256-colour palette."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(markdown)
    for key, figure in figures.items():
        path = out / f"{key}.png"
        figure.savefig(path, dpi=80)
        if os.path.getsize(path) > PNG_LIMIT:
            with Image.open(path) as image:
                palette = image.convert("RGB").quantize(256)
            palette.save(path, optimize=True)
        print(f"wrote {path} ({os.path.getsize(path) // 1024} kB)")
    print(f"wrote {out / name}.md")
