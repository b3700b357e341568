"""The one walk over a layer stack with its shapes, and the one receptive-field stepper.

Every per-layer loop of inspect/ (summary rows and memory, receptive fields and boxes, the
feature-map groups of ``cnncli show``) goes through ``walk``; receptive fields step through
``Field.through``. Works on unbuilt layers: no weights are allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnncli.nn.model import chain_sources, graph_shapes


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
    sources: tuple = ()      # what it reads: 0 the input, k + 1 layer k (of a merge: several)

    @property
    def reads_previous(self) -> bool:
        """Reads the layer before it, and only that (every layer of a chain)."""
        return self.sources == (self.index,)

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


def walk(layers, input_shape, shapes=None, sources=None) -> list[Step]:
    """The layers as Steps; ``shapes`` (input shape, then each output) are computed from
    ``input_shape`` unless given (a model's or a checked config's). ``sources``: what each
    layer reads (``Model.sources``); by default each reads the one before. A merge layer's
    ``in_shape`` is its first input's."""
    sources = [tuple(s) for s in sources] if sources else chain_sources(len(layers))
    if shapes is None:
        shapes = graph_shapes(layers, input_shape, sources)
    steps = []
    for i, (layer, src) in enumerate(zip(layers, sources, strict=False)):
        in_shape, out_shape = tuple(shapes[src[0]]), tuple(shapes[i + 1])
        steps.append(Step(i, layer, in_shape, out_shape,
                          layer_geometry(layer, in_shape, out_shape), src))
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
    """The field after each step; None from the first step that is not followable on. A merge
    sees the union of its inputs' fields (the largest over all paths) with the largest jump;
    None if any input's is."""
    after: dict[int, Field | None] = {0: Field()}
    out = []
    for step in steps:
        seen = [after[s] for s in step.sources or (step.index,)]
        field = None if any(f is None for f in seen) else union(seen)
        if field is not None and not _followable(step):
            field = None
        elif field is not None and step.geometry is not None:
            field = field.through(step.geometry)
        after[step.index + 1] = field
        out.append(field)
    return out


def _followable(step: Step) -> bool:
    """A merge's output is followable when its inputs and output are spatial maps of one size
    (concat adds channels)."""
    if len(step.sources) > 1:
        return (len(step.in_shape) == 3 and len(step.out_shape) == 3
                and step.in_shape[1:] == step.out_shape[1:])
    return step.followable


def union(seen: list[Field]) -> Field:
    """The smallest field that holds every one of ``seen`` (and the largest jump)."""
    if len(seen) == 1:
        return seen[0]
    start = tuple(min(f.start[a] for f in seen) for a in range(2))
    end = tuple(max(f.start[a] + f.size[a] for f in seen) for a in range(2))
    return Field(start, tuple(e - b for b, e in zip(start, end, strict=True)),
                 tuple(max(f.jump[a] for f in seen) for a in range(2)))


def feature_groups(layers, shapes, sources=None) -> list[tuple[int, int]]:
    """[(first, last)] layer index ranges: each window layer (conv, pool) with a spatial
    output plus the position-wise layers right after it (reading it), whose output the next
    layer sees. A layer whose output another layer also reads (a branch) ends its group, so
    each picture is an output some layer reads."""
    steps = walk(layers, shapes[0], shapes, sources)
    readers = [0] * (len(steps) + 1)
    for step in steps:
        for source in set(step.sources or (step.index,)):
            readers[source] += 1
    groups = []
    for step in steps:
        if not step.spatial or step.geometry is None:
            continue
        last = step.index
        while (last + 1 < len(steps) and steps[last + 1].pointwise
               and steps[last + 1].reads_previous and readers[last + 1] == 1):
            last += 1
        groups.append((step.index, last))
    return groups
