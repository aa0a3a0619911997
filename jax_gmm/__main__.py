"""``python -m jax_gmm``: the ``jax-gmm`` command line."""

import sys

from jax_gmm.cli import main

if __name__ == "__main__":
    sys.exit(main())
