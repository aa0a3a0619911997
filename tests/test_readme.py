"""The README's Python examples run as written and give the shapes their comments state.

Each example is taken from README.md itself, so an edit there that breaks
one fails here. The fit_image example is left to tests/test_fitting.py: as
written it runs 2,000 Adam steps on 20,000 points of a photograph, minutes
on a CI machine.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import numpy as np

README = pathlib.Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
EXAMPLE, EXPORT, SHARDING = ("import jax, jax.numpy as jnp, jax_gmm", "from jax import export",
                             "import os\n")
FIT_IMAGE = "import jax_gmm, numpy as np\nfrom PIL import Image"


def block(start: str) -> str:
    """The one Python block of the README that starts with `start`."""
    found = [b for b in BLOCKS if b.startswith(start)]
    assert len(found) == 1, f"README.md has {len(found)} Python blocks starting {start!r}"
    return found[0]


def test_every_example_is_run_here():
    starts = (EXAMPLE, EXPORT, SHARDING, FIT_IMAGE)
    untested = [b.splitlines()[0] for b in BLOCKS if not b.startswith(starts)]
    assert not untested, f"README Python blocks this file does not run: {untested}"


def test_example_and_export():
    names: dict = {}
    exec(block(EXAMPLE), names)  # the README's own code
    assert names["image"].shape == (64, 64, 3)
    assert [g.shape for g in names["grads"]] == [(500, 2), (500, 3), ()]
    assert all(np.isfinite(np.asarray(g)).all() for g in names["grads"])
    assert np.isfinite(np.asarray(names["hessian"])).all()
    assert names["batch"].shape == (2, 64, 64, 3)
    assert names["out"].shape == (1, 3) and names["density"].shape == (1,)
    assert names["warped"].shape == (64, 64, 3)
    # Without the shift the same queries read the image off its own pixel
    # centres; with it, rows move sideways.
    unwarped = names["jax_gmm"].interpolate_at(
        names["points"], names["values"], 1.5, np.stack([names["cols"], names["rows"]], -1))
    np.testing.assert_allclose(unwarped, names["image"], rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(names["warped"]) - np.asarray(names["image"])).max() > 0.1
    assert names["streaks"].shape == (64, 64, 3)
    # the second image of the batch is rendered from 1 - values: it is 1 - the first where
    # any point reaches (weights sum to one), and 0 with the first where none does
    first, second = np.asarray(names["batch"][0]), np.asarray(names["batch"][1])
    reached = first + second > 0
    np.testing.assert_allclose(first + second, np.where(reached, 1.0, 0.0), atol=1e-5)

    exec(block(EXPORT), names)  # it uses the example's points and values
    direct = names["f"](names["points"], names["values"])
    np.testing.assert_array_equal(np.asarray(names["image"]), np.asarray(direct))
    np.testing.assert_array_equal(np.asarray(names["image_again"]), np.asarray(direct))
    fewer = names["points"][:7], names["values"][:7]  # the same artefact at another N
    np.testing.assert_array_equal(np.asarray(names["any_n"].call(*fewer)),
                                  np.asarray(names["f"](*fewer)))


def test_sharding_example():
    # A process of its own: the block sets XLA_FLAGS before it imports jax.
    check = "\nprint(images.shape, len(images.sharding.device_set), rows.shape)\n"
    done = subprocess.run([sys.executable, "-c", block(SHARDING) + check], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "(8, 64, 64, 3) 4 (64, 64, 3)"
