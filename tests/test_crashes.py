"""Arguments that once crashed the process (issue 9). They run in one fresh
subprocess, so that an abort inside XLA fails these tests instead of killing
the whole test run; each must raise a ValueError naming the argument."""

import json
import subprocess
import sys

import pytest

ABSURD = {  # the shape, and what the message must say
    "(2**61, 0)": "shape's H must be at most 2**32 - 1, got 2305843009213693952",
    "(0, 2**61)": "shape's W must be at most 2**32 - 1, got 2305843009213693952",
    "(2**64, 0)": "shape's H must be at most 2**32 - 1, got 18446744073709551616",
    "(0, 2**63)": "shape's W must be at most 2**32 - 1, got 9223372036854775808",
    "(2**63 - 1, 2**63 - 1)": "shape's H must be at most 2**32 - 1",
    "(2**32, 1)": "shape's H must be at most 2**32 - 1, got 4294967296",
    "(1, 2**30 + 1)": "shape's sides must be at most 2**30 pixels, got (1, 1073741825)",
    "(True, 5)": "shape must be a static (H, W) pair of integers, got (True, 5)",
}
# The bounds are inclusive: an empty image as tall (or wide) as allowed works.
LARGEST_EMPTY = ["(2**32 - 1, 0)", "(0, 2**32 - 1)"]
IMPLS = ["native", "reference"]

SCRIPT = """
import json, sys
import numpy as np
import jax_gmm
for impl in {impls!r}:
    module = jax_gmm if impl == "native" else jax_gmm.reference
    for shape in {shapes!r}:
        print(json.dumps([impl, shape]), file=sys.stderr, flush=True)  # what it was doing
        try:
            out = module.interpolate(np.zeros((2, 2), np.float32), np.ones((2, 1), np.float32),
                                     1.0, eval(shape))
            result = ["shape", list(out.shape)]
        except ValueError as error:
            result = ["ValueError", str(error)]
        print(json.dumps([impl, shape, result]), flush=True)
"""


@pytest.fixture(scope="module")
def results():
    """{(impl, shape): ["ValueError", message] or ["shape", out.shape]}, or a
    failure naming the call that brought the subprocess down."""
    script = SCRIPT.format(impls=IMPLS, shapes=sorted(ABSURD) + LARGEST_EMPTY)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    if run.returncode != 0:
        pytest.fail(f"the subprocess exited with {run.returncode} during "
                    f"{run.stderr.splitlines()[-1] if run.stderr else '?'}: {run.stderr[-3000:]}")
    return {(impl, shape): result
            for impl, shape, result in map(json.loads, run.stdout.splitlines())}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", sorted(ABSURD))
def test_absurd_shape_raises(results, impl, shape):
    kind, message = results[impl, shape]
    assert kind == "ValueError" and ABSURD[shape] in message, (kind, message)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", LARGEST_EMPTY)
def test_largest_empty_images_are_rendered(results, impl, shape):
    assert results[impl, shape] == ["shape", [*eval(shape), 1]]  # noqa: S307
