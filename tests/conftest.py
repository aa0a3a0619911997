import zlib

import jax
import numpy as np
import pytest

# float64 for the finite-difference checks; float32 tests ask for float32 explicitly.
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def rng(request):
    """Fresh random inputs per test, reproducible from the test's name."""
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))
