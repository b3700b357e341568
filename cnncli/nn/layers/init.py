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


def init_weight(rng: np.random.Generator, shape, fan_in: int, fan_out: int, scheme: str,
                dtype) -> np.ndarray:
    """A weight array drawn for ``scheme``.

    ``default`` is kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    check_scheme(scheme)
    shape = tuple(shape)
    if scheme == "default":
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        w = rng.uniform(-bound, bound, shape)
    elif scheme == "he_uniform":
        bound = math.sqrt(6.0 / fan_in)
        w = rng.uniform(-bound, bound, shape)
    elif scheme == "he_normal":
        w = rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
    elif scheme == "glorot_uniform":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-bound, bound, shape)
    else:  # glorot_normal
        w = rng.standard_normal(shape) * math.sqrt(2.0 / (fan_in + fan_out))
    return np.ascontiguousarray(w, dtype=dtype)


def init_bias(rng: np.random.Generator, size: int, fan_in: int, scheme: str,
              dtype) -> np.ndarray:
    """A bias vector: U(+-1/sqrt(fan_in)) for ``default`` (as PyTorch), zeros otherwise."""
    check_scheme(scheme)
    if scheme == "default":
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        return rng.uniform(-bound, bound, (int(size),)).astype(dtype)
    return np.zeros(int(size), dtype=dtype)
