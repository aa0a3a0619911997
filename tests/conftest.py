import os
import zlib

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings

# float64 for the finite-difference checks; float32 tests ask for float32 explicitly.
jax.config.update("jax_enable_x64", True)

# Property-based tests (test_properties.py). "ci", the default, is short and
# reproducible: the same examples every run, within about a minute in all.
# "long" draws fresh examples, many more: HYPOTHESIS_PROFILE=long pytest
# tests/test_properties.py (or pytest's --hypothesis-profile=long). Every new
# example compiles its shapes, so neither has a deadline.
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=50, deadline=None, derandomize=True,
                          suppress_health_check=_SLOW_OK, print_blob=True,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
settings.register_profile("long", max_examples=1500, deadline=None,
                          suppress_health_check=_SLOW_OK, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng(request):
    """Fresh random inputs per test, reproducible from the test's name."""
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))
