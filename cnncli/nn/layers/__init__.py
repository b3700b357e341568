"""Layer families, one module each; importing this package fills the registry."""

from cnncli.nn.layers import activation, conv, dense, dropout, norm, pool, reshape  # noqa: F401
from cnncli.nn.layers.base import Layer, from_internal, to_internal

__all__ = ["Layer", "to_internal", "from_internal"]
