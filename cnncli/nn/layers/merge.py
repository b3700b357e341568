"""Merge layers of a branching model: element-wise sum (``add``) and channel concatenation
(``concat``), as ``x + y`` and ``torch.cat(xs, 1)``.

They take several inputs: ``output_shape`` gets a list of shapes, forward a list of arrays,
and backward returns a list of gradients (one per input, in order).
"""

from __future__ import annotations

import numpy as np

from cnncli.errors import DataError, ShapeError
from cnncli.nn.layers.base import Layer
from cnncli.nn.registry import register


class Merge(Layer):
    """Base for layers with several inputs: no parameters, one output."""

    per_sample = True
    accepts_activation = True
    multi_input = True
    fresh_output = True   # a new array; its gradients go to several layers, so not fresh

    def _shapes(self, input_shapes) -> list[tuple[int, ...]]:
        shapes = [tuple(int(s) for s in shape) for shape in input_shapes]
        if len(shapes) < 2:
            raise ShapeError(f"{self.type_name} needs at least two inputs, got {len(shapes)}",
                             key="from", hint="e.g. from: [-1, input]")
        return shapes

    def build(self, input_shape, rng, dtype=np.float32) -> None:
        self.output_shape(input_shape)
        self.input_shape = self._shapes(input_shape)
        self.dtype = np.dtype(dtype)

    def forward(self, xs, train: bool = False) -> np.ndarray:
        if not isinstance(xs, (list, tuple)):
            raise DataError(f"{self.type_name} forward takes a list of arrays")
        return super().forward(list(xs), train)


@register("add")
class Add(Merge):
    """Element-wise sum of inputs of one shape (a residual connection)."""

    def output_shape(self, input_shape):
        shapes = self._shapes(input_shape)
        for j, other in enumerate(shapes[1:], start=1):
            if other != shapes[0]:
                hint = "make the branches end in one shape"
                if len(other) == len(shapes[0]) == 3 and other[1:] == shapes[0][1:]:
                    hint = (f"project from[{j}] to {shapes[0][0]} channels: a conv2d with "
                            f"kernel_size 1 and out_channels {shapes[0][0]} reading it")
                raise ShapeError(f"add needs inputs of one shape, got {list(shapes[0])} "
                                 f"(from[0]) and {list(other)} (from[{j}])", key="from",
                                 hint=hint)
        return shapes[0]

    def _forward(self, xs, train):
        out = xs[0] + xs[1]
        for x in xs[2:]:
            out += x
        return out

    def _backward(self, dy, need_dx):
        # One array for every input: an execution plan never lets their producers overwrite
        # it (fresh_input_grad is False).
        count = len(self.input_shape)
        return [dy] * count if need_dx else None


@register("concat", "cat")
class Concat(Merge):
    """Inputs stacked along channels (the first per-sample axis); other sizes must match."""

    def output_shape(self, input_shape):
        shapes = self._shapes(input_shape)
        for j, other in enumerate(shapes[1:], start=1):
            if len(other) != len(shapes[0]) or other[1:] != shapes[0][1:]:
                what = "spatial sizes" if len(other) == 3 else "shapes"
                raise ShapeError(f"concat needs inputs of the same {what} (all but channels), "
                                 f"got {list(shapes[0])} (from[0]) and {list(other)} "
                                 f"(from[{j}])", key="from",
                                 hint="pool or stride the larger input to the smaller size")
        return (sum(s[0] for s in shapes),) + shapes[0][1:]

    def _forward(self, xs, train):
        return np.concatenate(xs, axis=0)

    def _backward(self, dy, need_dx):
        if not need_dx:
            return None
        bounds = np.cumsum([s[0] for s in self.input_shape])[:-1]
        return np.split(dy, bounds, axis=0)
