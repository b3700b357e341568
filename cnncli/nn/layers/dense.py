"""Dense (fully connected) layer, as ``torch.nn.Linear``: y = W x + b."""

from __future__ import annotations

import math

import numpy as np

from cnncli.checks import check_bool as boolean
from cnncli.errors import ShapeError
from cnncli.nn.layers.base import Layer, positive_int
from cnncli.nn.layers.init import check_scheme, init_bias, init_weight
from cnncli.nn.registry import register


@register("dense", "linear")
class Dense(Layer):
    """Weight (out, in), bias (out,). A (C, H, W) input is flattened in C, H, W order first."""

    per_sample = True

    accepts_activation = True
    aliases = {"out_features": "units"}
    fresh_output = True       # y and dx are new arrays, never kept (see Layer)
    fresh_input_grad = True

    def __init__(self, units, bias=True, init="default", in_features=None,
                 name: str | None = None):
        super().__init__(name)
        self.units = positive_int("units", units)
        self.bias = boolean("bias", bias)
        self.init = check_scheme(init)
        self.in_features = None if in_features is None else positive_int("in_features",
                                                                         in_features)
        self._x: np.ndarray | None = None
        self._x_shape: tuple[int, ...] | None = None

    def _fan_in(self, input_shape) -> int:
        fan_in = int(np.prod(input_shape, dtype=np.int64))
        if self.in_features is not None and self.in_features != fan_in:
            raise ShapeError(f"in_features is {self.in_features} but the input has {fan_in} "
                             f"features (shape {list(input_shape)})", key="in_features",
                             hint="remove in_features to infer it")
        return fan_in

    def output_shape(self, input_shape):
        self._fan_in(input_shape)
        return (self.units,)

    def build(self, input_shape, rng, dtype=np.float32):
        super().build(input_shape, rng, dtype)
        fan_in = self._fan_in(input_shape)
        self.params = {"weight": init_weight(rng, (self.units, fan_in), fan_in, self.units,
                                             self.init, self.dtype)}
        if self.bias:
            self.params["bias"] = init_bias(rng, self.units, fan_in, self.init, self.dtype)
        self.zero_grad()

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self._x_shape = x.shape
        x = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])  # (C, H, W, N) -> (C*H*W, N)
        self._x = x
        y = self.params["weight"] @ x
        if self.bias:
            y += self.params["bias"][:, None]
        return y

    def _backward(self, dy: np.ndarray, need_dx: bool = True):
        self.grads["weight"] += dy @ self._x.T
        if self.bias:
            self.grads["bias"] += dy.sum(axis=1)
        if not need_dx:
            return None
        return (self.params["weight"].T @ dy).reshape(self._x_shape)

    def num_params(self, input_shape=None) -> int:
        shape = input_shape if input_shape is not None else self.input_shape
        if shape is None:
            shape = (self.in_features,) if self.in_features else None
        if shape is None:
            raise ShapeError("dense needs its input shape to count parameters",
                             key="in_features")
        fan_in = self._fan_in(shape)
        return self.units * fan_in + (self.units if self.bias else 0)

    def macs(self, input_shape) -> int:
        return self._fan_in(input_shape) * self.units

    def describe(self) -> str:
        return "" if self.init == "default" else f"init={self.init}"
