"""Layer families, one module each; importing this package fills the registry."""

from . import activation, conv, dense, dropout, norm, pool, reshape  # noqa: F401
from .base import Layer, from_internal, to_internal

__all__ = ["Layer", "to_internal", "from_internal"]
