"""The exact input box one output unit of a layer sees, from each layer's ``geometry()``.

Output unit ``i`` of a layer with kernel k, stride s, left padding p and dilation d sees its
inputs ``i*s - p .. i*s - p + d*(k-1)``; composed over the layers this is the ``Field`` that
``walk.fields`` steps. Layers whose geometry is ``None`` map each position to itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnncli.errors import ConfigError, ShapeError
from cnncli.inspect.walk import fields, walk


@dataclass(frozen=True)
class ReceptiveBox:
    """Input rows top..bottom and columns left..right (inclusive) seen by one unit."""

    layer: str
    unit: tuple[int, int]          # (y, x) in the layer's output
    output_shape: tuple[int, ...]  # the layer's (C, H, W)
    input_hw: tuple[int, int]
    top: int
    left: int
    bottom: int
    right: int
    jump: tuple[int, int]          # input pixels between neighbouring units of the layer

    @property
    def size(self) -> tuple[int, int]:
        return self.bottom - self.top + 1, self.right - self.left + 1

    @property
    def clipped(self) -> tuple[int, int, int, int] | None:
        """(top, left, bottom, right) inside the input, or None if the box misses it."""
        h, w = self.input_hw
        top, left = max(self.top, 0), max(self.left, 0)
        bottom, right = min(self.bottom, h - 1), min(self.right, w - 1)
        if top > bottom or left > right:
            return None
        return top, left, bottom, right

    @property
    def is_clipped(self) -> bool:
        h, w = self.input_hw
        return self.top < 0 or self.left < 0 or self.bottom >= h or self.right >= w

    def describe(self) -> list[str]:
        """Plain-text lines stating the box (unclipped and clipped)."""
        h, w = self.size
        c, oh, ow = self.output_shape
        lines = [f"layer {self.layer} (output {c}x{oh}x{ow}), unit (y={self.unit[0]}, "
                 f"x={self.unit[1]}): receptive field {h}x{w}, jump "
                 f"{self.jump[0]}x{self.jump[1]}",
                 f"  input rows {self.top}..{self.bottom}, columns {self.left}..{self.right}"
                 f" (inclusive, input is {self.input_hw[0]}x{self.input_hw[1]})"]
        inside = self.clipped
        if inside is None:
            lines.append("  the box lies entirely in the padding")
        elif self.is_clipped:
            t, l, b, r = inside
            lines.append(f"  clipped by the border to rows {t}..{b}, columns {l}..{r} "
                         f"({b - t + 1}x{r - l + 1}); the rest is padding")
        return lines


def input_box(layers, input_shape, index: int, unit=None, sources=None) -> ReceptiveBox:
    """The input box of output ``unit`` (y, x) of ``layers[index]``; default: the centre unit.
    Through branches (``sources``, see ``walk``) the box holds every path's."""
    steps = walk(layers[:index + 1], input_shape,
                 sources=None if sources is None else sources[:index + 1])
    target = steps[index]
    out_shape = target.out_shape
    if len(out_shape) != 3:
        raise ShapeError(f"layer {target.layer.name!r} has a flat output {list(out_shape)}; "
                         "a receptive field needs a spatial layer",
                         hint="pick a conv/pool layer before flatten")
    oh, ow = out_shape[1], out_shape[2]
    if unit is None:
        unit = ((oh - 1) // 2, (ow - 1) // 2)
    y, x = (int(v) for v in unit)
    if not (0 <= y < oh and 0 <= x < ow):
        raise ConfigError(f"at={y},{x} is outside the {oh}x{ow} output of layer "
                          f"{target.layer.name!r}", key="at",
                          hint=f"use 0..{oh - 1},0..{ow - 1}")
    field = fields(steps)[index]
    if field is None:
        blocker = next(step for step in reversed(steps) if not step.followable)
        raise ShapeError(f"layer {blocker.layer.name!r} reshapes its input, so units after it "
                         "have no input box")
    top, left = (start + i * jump for start, i, jump in zip(field.start, (y, x), field.jump,
                                                             strict=True))
    return ReceptiveBox(layer=target.layer.name, unit=(y, x), output_shape=tuple(out_shape),
                        input_hw=(int(input_shape[1]), int(input_shape[2])),
                        top=top, bottom=top + field.size[0] - 1, left=left,
                        right=left + field.size[1] - 1, jump=field.jump)


def last_spatial_index(layers, input_shape, sources=None) -> int:
    """Index of the last layer with a (C, H, W) output that is reached by spatial layers only."""
    reached = [i for i, field in enumerate(fields(walk(layers, input_shape, sources=sources)))
               if field is not None]
    if not reached:
        raise ShapeError("the model has no spatial layer to take a receptive field of")
    return reached[-1]
