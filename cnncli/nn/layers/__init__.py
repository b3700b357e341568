"""Layer families, one module each; importing this package fills the registry."""

from cnncli.nn.layers import (  # noqa: F401
    activation,
    conv,
    dense,
    dropout,
    merge,
    norm,
    pool,
    reshape,
)
from cnncli.nn.layers.base import Layer, from_internal, to_internal

__all__ = ["Layer", "to_internal", "from_internal"]
