"""Weight initialisers shared by dense and conv layers (fan-in/fan-out based)."""

from __future__ import annotations

import math

import numpy as np

from cnncli.errors import ConfigError

#: Accepted ``init:`` names. ``default`` is PyTorch's Linear/Conv default.
INIT_SCHEMES = ("default", "he_normal", "he_uniform", "glorot_uniform", "glorot_normal")


def check_scheme(scheme) -> str:
    """Validate an ``init:`` value; raise ConfigError(key="init") quoting it."""
    if scheme not in INIT_SCHEMES:
        raise ConfigError(f"init must be one of {', '.join(INIT_SCHEMES)}; got {scheme!r}",
                          key="init")
    return scheme


def _uniform(rng: np.random.Generator, bound: float, shape, dtype) -> np.ndarray:
    """U(-bound, bound) drawn directly in ``dtype``: no float64 copy of a big weight first.

    In float64 this is bit-for-bit ``rng.uniform(-bound, bound, shape)``.
    """
    w = rng.random(shape, dtype=dtype)
    w *= dtype.type(2 * bound)
    w -= dtype.type(bound)
    return w


def _normal(rng: np.random.Generator, std: float, shape, dtype) -> np.ndarray:
    w = rng.standard_normal(shape, dtype=dtype)
    w *= dtype.type(std)
    return w


def init_weight(rng: np.random.Generator, shape, fan_in: int, fan_out: int, scheme: str,
                dtype) -> np.ndarray:
    """A weight array drawn for ``scheme`` in ``dtype`` (float32 or float64).

    ``default`` is kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    check_scheme(scheme)
    shape, dtype = tuple(shape), np.dtype(dtype)
    if scheme == "default":
        return _uniform(rng, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, shape, dtype)
    if scheme == "he_uniform":
        return _uniform(rng, math.sqrt(6.0 / fan_in), shape, dtype)
    if scheme == "he_normal":
        return _normal(rng, math.sqrt(2.0 / fan_in), shape, dtype)
    if scheme == "glorot_uniform":
        return _uniform(rng, math.sqrt(6.0 / (fan_in + fan_out)), shape, dtype)
    return _normal(rng, math.sqrt(2.0 / (fan_in + fan_out)), shape, dtype)  # glorot_normal


def init_bias(rng: np.random.Generator, size: int, fan_in: int, scheme: str,
              dtype) -> np.ndarray:
    """A bias vector: U(+-1/sqrt(fan_in)) for ``default`` (as PyTorch), zeros otherwise."""
    check_scheme(scheme)
    if scheme == "default":
        return _uniform(rng, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, (int(size),),
                        np.dtype(dtype))
    return np.zeros(int(size), dtype=dtype)
