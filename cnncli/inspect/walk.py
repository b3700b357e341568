"""The one walk over a layer stack with its shapes, and the one receptive-field stepper.

Every per-layer loop of inspect/ (summary rows and memory, receptive fields and boxes, the
feature-map groups of ``cnncli show``) goes through ``walk``; receptive fields step through
``Field.through``. Works on unbuilt layers: no weights are allocated.
"""

from __future__ import annotations

from dataclasses import dataclass


def layer_geometry(layer, in_shape, out_shape):
    """``layer.geometry`` or, for a global pool without one ((C, H, W) -> (C, 1, 1)), one window
    covering the whole input (stride = its size, as the summary counts the jump)."""
    geometry = layer.geometry(in_shape) if len(in_shape) == 3 else None
    if (geometry is None and len(in_shape) == 3 and len(out_shape) == 3
            and tuple(out_shape[1:]) == (1, 1) and tuple(in_shape[1:]) != (1, 1)):
        return (in_shape[1], in_shape[2]), (in_shape[1], in_shape[2]), (0, 0), (1, 1)
    return geometry


@dataclass(frozen=True)
class Step:
    """One layer of a stack with the per-sample shapes around it."""

    index: int
    layer: object
    in_shape: tuple
    out_shape: tuple
    geometry: tuple | None   # (kernel, stride, pad, dilation) pairs of a window, else None

    @property
    def spatial(self) -> bool:
        """(C, H, W) in and out."""
        return len(self.in_shape) == 3 and len(self.out_shape) == 3

    @property
    def pointwise(self) -> bool:
        """Maps each position to itself (activation, norm, dropout)."""
        return self.spatial and self.in_shape == self.out_shape and self.geometry is None

    @property
    def followable(self) -> bool:
        """A unit's input box can be followed back through this layer."""
        return self.spatial and (self.geometry is not None or self.in_shape == self.out_shape)


def walk(layers, input_shape, shapes=None) -> list[Step]:
    """The layers as Steps; ``shapes`` (input shape, then each output) are computed from
    ``input_shape`` unless given (a model's or a checked config's)."""
    if shapes is None:
        shapes = [tuple(input_shape)]
        for layer in layers:
            shapes.append(tuple(layer.output_shape(shapes[-1])))
    steps = []
    for i, layer in enumerate(layers):
        in_shape, out_shape = tuple(shapes[i]), tuple(shapes[i + 1])
        steps.append(Step(i, layer, in_shape, out_shape,
                          layer_geometry(layer, in_shape, out_shape)))
    return steps


@dataclass(frozen=True)
class Field:
    """What one unit sees of the input, per axis (rows, columns): the first input pixel of
    unit 0 (negative: in the padding), the field's size, and the jump between neighbouring
    units. Unit i of an axis sees pixels start + i*jump .. start + i*jump + size - 1."""

    start: tuple[int, int] = (0, 0)
    size: tuple[int, int] = (1, 1)
    jump: tuple[int, int] = (1, 1)

    def through(self, geometry) -> Field:
        """The field one window (kernel k, stride s, left pad p, dilation d) further on:
        start - p*jump, size + d*(k-1)*jump, jump*s."""
        start, size, jump = [], [], []
        for axis in range(2):
            k, s, p, d = (int(part[axis]) for part in geometry)
            start.append(self.start[axis] - p * self.jump[axis])
            size.append(self.size[axis] + d * (k - 1) * self.jump[axis])
            jump.append(self.jump[axis] * s)
        return Field(tuple(start), tuple(size), tuple(jump))


def fields(steps: list[Step]) -> list[Field | None]:
    """The field after each step; None from the first step that is not followable on."""
    field: Field | None = Field()
    out = []
    for step in steps:
        if field is not None and not step.followable:
            field = None
        elif field is not None and step.geometry is not None:
            field = field.through(step.geometry)
        out.append(field)
    return out


def feature_groups(layers, shapes) -> list[tuple[int, int]]:
    """[(first, last)] layer index ranges: each window layer (conv, pool) with a spatial
    output plus the position-wise layers right after it, whose output the next layer sees."""
    steps = walk(layers, shapes[0], shapes)
    groups = []
    for step in steps:
        if not step.spatial or step.geometry is None:
            continue
        last = step.index
        while last + 1 < len(steps) and steps[last + 1].pointwise:
            last += 1
        groups.append((step.index, last))
    return groups
