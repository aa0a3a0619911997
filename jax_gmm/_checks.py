"""Trace-time argument checks: shapes, dtypes and static values."""

from __future__ import annotations

import math
import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

from jax_gmm import _covariance

# Dtypes the kernels compute in; narrower floats are computed in float32.
_KERNEL_DTYPES = (jnp.float32, jnp.float64)


def _shape_of(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


# The native kernels index points and queries with 32-bit lists.
_MAX_COUNT = 2**32 - 1
# ... and a pixel along an image side with an int32 (cuda/operands.h, kMaxSide).
_MAX_SIDE = 2**30


def _check_float(name: str, x: Any) -> None:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return
    # A Python int that jit or vmap made an array is weakly typed: taken as
    # the int itself, so that a call traces as it runs eagerly.
    if (isinstance(x, jax.Array) and jax.typeof(x).weak_type
            and jnp.issubdtype(x.dtype, jnp.integer)):
        return
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype  # lists, strings
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{name} must have a floating-point dtype, got {dtype}")


# A symbolic count (jax.export's shape polymorphism) is taken to be this
# large where a size must be chosen at trace time (the reference's blocks, the
# bands of a differentiated image).
SYMBOLIC_COUNT = 1 << 16


def count_bound(count: int) -> int:
    """count, or SYMBOLIC_COUNT for a symbolic one."""
    return SYMBOLIC_COUNT if export.is_symbolic_dim(count) else count


def _check_count(name: str, count: int) -> None:
    # A symbolic count (jax.export's shape polymorphism) is checked by the
    # kernels when the artefact runs.
    if not export.is_symbolic_dim(count) and count > _MAX_COUNT:
        raise ValueError(f"{name} must be at most 2**32 - 1, got {count}")


#: What the public functions take as an array: a JAX or NumPy array, a
#: scalar, or a rectangular nested list of numbers (see as_array); wider than
#: jax.typing.ArrayLike, which has no nested lists.
ArrayLike = Any


def check_points(points: Any, name: str = "points") -> int:
    """Checks an (K, 2) array of (x, y) coordinates and returns K."""
    shape = _shape_of(points)
    if len(shape) != 2 or shape[1] != 2:
        raise ValueError(f"{name} must have shape (K, 2) as (x, y) pixel coordinates, got {shape}")
    _check_float(name, points)
    return shape[0]


def flat_queries(queries: Any) -> tuple[Any, tuple[int, ...]]:
    """Checks that queries (an array-like, or None) have shape (..., 2) and
    returns them as an (M, 2) array with the leading shape (...)."""
    if queries is None:
        raise ValueError("queries must be an (..., 2) array of (x, y) positions, got None")
    queries = as_array("queries", queries)
    shape = np.shape(queries)
    if not shape or shape[-1] != 2:
        raise ValueError("queries must have shape (..., 2) as (x, y) pixel coordinates, "
                         f"got {shape}")
    return queries.reshape(-1, 2), shape[:-1]


def check_values(values: Any, n: int, name: str = "values") -> int:
    """Checks values (N, C) against the N points and returns C."""
    shape = _shape_of(values)
    if len(shape) != 2 or shape[0] != n:
        raise ValueError(f"{name} must have shape (N, C) = ({n}, C) to match points, got {shape}")
    _check_float(name, values)
    return shape[1]


def check_sigma(sigma: Any, n: int) -> str:
    """Checks sigma's shape and dtype: a scalar, (N,) or (N, 2) widths, or
    (N, 2, 2) covariances (see _covariance). Returns its kind."""
    kind = _covariance.sigma_kind(_shape_of(sigma), n)
    _check_float("sigma", sigma)
    return kind


def check_static_sigma(sigma: Any, kind: str, dtype: np.dtype) -> None:
    """Static widths must be positive, and static covariances positive definite
    in the kernel dtype; traced ones are checked per point by the kernels."""
    if not isinstance(sigma, jax.core.Tracer):  # known now: Python, NumPy or a concrete jax.Array
        _covariance.check_static(sigma, kind, dtype)


def _as_int(x: Any) -> int:
    """x as a Python int; TypeError for anything else, booleans included (a
    bool is an int to operator.index, but never a size or a count)."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError
    return operator.index(x)


def check_flag(name: str, x: Any) -> bool:
    """Checks a static boolean argument: it decides the outputs' structure, so
    it cannot be traced."""
    if isinstance(x, jax.core.Tracer):
        raise ValueError(f"{name} must be a static bool (it decides what is returned), "
                         "got a traced value: pass it as a Python bool or mark it static")
    if not isinstance(x, (bool, np.bool_)):  # bool("no") would be True
        raise ValueError(f"{name} must be True or False, got {x!r}")
    return bool(x)


def check_int(name: str, x: Any, least: int) -> int:
    """Checks a static integer argument that must be at least `least`."""
    try:
        value = _as_int(x)
    except TypeError:
        raise ValueError(f"{name} must be a static integer, got {x!r}") from None
    if value < least:
        raise ValueError(f"{name} must be at least {least}, got {value}")
    return value


def check_shape(shape: Any) -> tuple[int, int]:
    """Checks a static (H, W) image shape."""
    try:
        height, width = shape
        height, width = _as_int(height), _as_int(width)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a static (H, W) pair of integers, got {shape!r}") from None
    if height < 0 or width < 0:
        raise ValueError(f"shape must have non-negative sizes (H, W), got {(height, width)}")
    # Each size on its own too: with the other one 0 the product says nothing,
    # and XLA aborts the process on a dimension near 2**63.
    _check_count("shape's H", height)
    _check_count("shape's W", width)
    _check_count("shape's H * W", height * width)
    if height * width > 0 and max(height, width) > _MAX_SIDE:
        raise ValueError(f"shape's sides must be at most 2**30 pixels, got {(height, width)}")
    return height, width


def _static_number(name: str, x: Any, kind: str) -> float:
    """x as a Python float, or a ValueError that names the argument."""
    if isinstance(x, (bool, str, bytes)):
        raise ValueError(f"{name} must be a static {kind} number, got {x!r}")
    try:
        return float(x)
    except (TypeError, OverflowError, jax.errors.ConcretizationTypeError):
        raise ValueError(f"{name} must be a static {kind} number, got {x!r}") from None


def check_positive(name: str, x: Any) -> float:
    """Checks a static positive, finite number."""
    value = _static_number(name, x, "positive")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive and finite, got {x!r}")
    return value


def check_truncate(truncate: Any) -> float:
    """Checks the static cutoff, in units of sigma."""
    return check_positive("truncate", truncate)


def check_eps(eps: Any) -> float:
    """Checks the static smoothing of the normaliser, Z + eps."""
    value = _static_number("eps", eps, "non-negative")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"eps must be non-negative and finite, got {eps!r}")
    return value


def compute_dtype(*args: Any) -> tuple[np.dtype, np.dtype]:
    """The dtype of the result and the dtype the kernel computes in."""
    result = jnp.result_type(*args)
    kernel = result if result in _KERNEL_DTYPES else np.dtype(jnp.float32)
    return np.dtype(result), np.dtype(kernel)


def as_array(name: str, x: Any) -> Any:
    """Array-likes (nested lists, say) as NumPy arrays; arrays and scalars as
    they are, except Python integers too large for a float."""
    if isinstance(x, int) and not isinstance(x, bool):
        try:
            float(x)
        except OverflowError:
            raise ValueError(f"{name} must fit in a float64, got an integer of "
                             f"{x.bit_length()} bits") from None
        return x
    if hasattr(x, "dtype") or isinstance(x, float):
        return x
    if x is None or isinstance(x, str):  # sigma="auto" where only numbers are taken, say
        raise ValueError(f"{name} must be a number or an array here, got {x!r}")
    try:
        return np.asarray(x)
    except (ValueError, TypeError, OverflowError) as error:  # ragged lists, say
        raise ValueError(f"{name} must be an array or a rectangular nested list of numbers: "
                         f"{error}") from None


def check_inputs(points: Any, values: Any, sigma: Any, queries: Any | None = None
                 ) -> tuple[list, np.dtype, np.dtype]:
    """Checks points (N, 2), values (N, C), sigma (see check_sigma) and, if given,
    queries (M, 2). Returns them (array-likes as arrays), the result dtype and
    the dtype the kernels compute in."""
    args = [as_array(name, x) for name, x in zip(("points", "values", "sigma"),
                                                  (points, values, sigma))]
    n = check_points(args[0])
    _check_count("the number of points", n)
    check_values(args[1], n)
    kind = check_sigma(args[2], n)
    if queries is not None:
        args.append(as_array("queries", queries))
        _check_count("the number of queries", check_points(args[3], "queries"))
    result, kernel = compute_dtype(*args)
    check_static_sigma(args[2], kind, kernel)
    return args, result, kernel


def to_kernel(dtype: np.dtype, points: Any, values: Any, sigma: Any, *queries: Any) -> list:
    """Casts every argument to the kernel dtype and sigma, in any of its forms,
    to the (N, 3) Cholesky factors the kernels take (_covariance.to_scale)."""
    cast = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    points = cast(points)
    return [points, cast(values), _covariance.to_scale(cast(sigma), points.shape[0]),
            *map(cast, queries)]
