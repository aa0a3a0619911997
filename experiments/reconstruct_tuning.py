"""How jax_gmm.reconstruct's constants were chosen: mean PSNR on the fit half.

The scattered-pixel experiment (scattered_reconstruction.py) fits its sigma
rules on the even-numbered of the first 12 scikit-image photographs (256 x
256 crops) and reports on the odd-numbered ones. This script evaluates
reconstruct with some of its module constants changed, on the fit half only,
random sampling at 5, 10 and 25 %, and prints the mean PSNR per setting. The
defaults in jax_gmm/reconstruction.py are the best of such grids; this one
repeats the last comparisons made (run it to check them).

Usage: python experiments/reconstruct_tuning.py
"""

from __future__ import annotations

import numpy as np

import jax_gmm.reconstruction as reconstruction
from common import image_paths, load_images, split_halves
from jax_gmm.imaging import pixel_centres, psnr, sample_pixels

FRACTIONS = (0.05, 0.1, 0.25)
SETTINGS = {
    "defaults": {},
    "ridge 0.01": {"RIDGE": 0.01},
    "step 1.0": {"STEP": 1.0},
    "width 0.45": {"WIDTH": 0.45},
    "width 0.55": {"WIDTH": 0.55},
    "elongation power 0.75, at most 9": {"ELONGATION_POWER": 0.75, "MAX_ELONGATION": 9.0},
    "tensor floor 0.1": {"TENSOR_FLOOR": 0.1},
    "round Gaussians (no steering)": {"MAX_ELONGATION": 1.0},
}


def main() -> None:
    images = load_images(image_paths([], 12), 256)
    fit_images, _ = split_halves(images)
    defaults = {name: getattr(reconstruction, name)
                for overrides in SETTINGS.values() for name in overrides}
    for keep in FRACTIONS:
        for label, overrides in SETTINGS.items():
            for name, value in {**defaults, **overrides}.items():
                setattr(reconstruction, name, value)
            reconstruction._reconstruct.clear_cache()  # the constants are read when tracing
            scores = []
            for i, (_, image) in enumerate(fit_images):
                height, width = image.shape[:2]
                indices = sample_pixels(height, width, keep, np.random.default_rng(i))
                points, values = pixel_centres(indices, width), image.reshape(-1, 3)[indices]
                out = np.asarray(reconstruction.reconstruct(points, values, (height, width)))
                scores.append(psnr(image, np.clip(out, 0, 1)))
            print(f"{keep:.0%} {label:36s} {np.mean(scores):.3f} dB", flush=True)


if __name__ == "__main__":
    main()
