"""Per-layer shapes, parameters, MACs, receptive fields and memory of a checked config.

Pure computation on unbuilt layers (no weights are allocated); ``render.py`` draws it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from cnncli.config import CheckedConfig
from cnncli.inspect.walk import fields, walk
from cnncli.nn.memory import (
    estimate_memory,
    format_bytes,  # noqa: F401  (render.py imports it from here)
    optimizer_label,
)


@dataclass
class LayerRow:
    name: str
    type: str
    description: str
    output_shape: list
    params: int
    macs: int
    receptive_field: list
    jump: list
    activation_bytes: int       # bytes of this layer's output, per sample
    buffers: int = 0            # running statistics (not parameters)
    entry: int = 0              # the config's model.layers entry (1-based) it comes from
    inputs: list = field(default_factory=list)  # the layers it reads ("input": the model's)


@dataclass
class Summary:
    input_shape: list
    layers: list
    dtype: str
    batch_size: int
    optimizer: str
    total_params: int
    trainable_params: int
    non_trainable_params: int
    buffers: int
    total_macs: int
    memory: dict = field(default_factory=dict)
    #: Some layer reads another than the one before it (the tables get a ``from`` column).
    branching: bool = False

    @property
    def params_mb(self) -> float:
        return self.total_params * np.dtype(self.dtype).itemsize / 2**20

    def to_json(self) -> dict:
        """The JSON form: the contract fields first, extras after."""
        return {
            "input_shape": list(self.input_shape),
            "layers": [_row_json(row) for row in self.layers],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "buffers": self.buffers,
            "total_macs": self.total_macs,
            "params_mb": round(self.params_mb, 6),
            "dtype": self.dtype,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "memory": dict(self.memory),
        }


def _row_json(row: LayerRow) -> dict:
    out = asdict(row)
    out["from"] = out.pop("inputs")
    return out


def summarize(checked: CheckedConfig, *, batch_size: int = 1, dtype="float32") -> Summary:
    """Summarise a checked config: per-layer rows, totals and a memory estimate."""
    itemsize = np.dtype(dtype).itemsize
    input_shape = checked.shapes[0]
    sources = checked.sources or None
    steps = walk(checked.layers, input_shape, checked.shapes, sources)
    entries = checked.entry_index or range(len(checked.layers))
    rows = []
    fields_after = receptive_fields(checked.layers, checked.shapes, sources)
    names = ["input"] + [layer.name for layer in checked.layers]
    for step, (rf, jump), entry in zip(steps, fields_after, entries, strict=False):
        layer, in_shape, out_shape = step.layer, step.in_shape, step.out_shape
        rows.append(LayerRow(
            name=layer.name, type=layer.type_name, description=layer.describe() or "",
            output_shape=[int(s) for s in out_shape], params=int(layer.num_params(in_shape)),
            macs=int(layer.macs(in_shape)), receptive_field=list(rf), jump=list(jump),
            activation_bytes=math.prod(out_shape) * itemsize,
            buffers=_buffer_count(layer, in_shape), entry=int(entry) + 1,
            inputs=[names[s] for s in step.sources]))
    trainable = sum(r.params for r in rows)
    train = checked.run.train
    optimizer = optimizer_label(train.optimizer, train.momentum)
    summary = Summary(
        input_shape=list(input_shape), layers=rows, dtype=str(np.dtype(dtype)),
        batch_size=int(batch_size), optimizer=optimizer, total_params=trainable,
        trainable_params=trainable, non_trainable_params=0,
        buffers=sum(r.buffers for r in rows), total_macs=sum(r.macs for r in rows),
        branching=not all(step.reads_previous for step in steps))
    summary.memory = estimate_memory(checked.layers, checked.shapes, batch_size=batch_size,
                                     dtype=dtype, optimizer=optimizer,
                                     labels=checked.labels or None,
                                     sources=sources).to_json()
    return summary


def receptive_fields(layers, shapes,
                     sources=None) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(receptive field [rh, rw], jump [jh, jw]) in input pixels after each layer.

    r_out = r_in + (k_eff - 1) * j_in and j_out = j_in * s with k_eff = d(k-1)+1 (``Field``).
    A global pool without geometry acts like one window over the whole map. Flat outputs
    (flatten, dense) see the whole input: they report the input's [H, W] for both, or the
    receptive field and jump before them where those are larger (padding can make the
    windows before them reach past the border). Through branches, a merge takes the largest
    over its inputs (``walk.union``).
    """
    input_shape = shapes[0]
    full = (tuple(input_shape[1:3]) if len(input_shape) == 3 else (1, int(input_shape[0])))
    r, j = (1, 1), (1, 1)
    out = []
    for seen in fields(walk(layers, input_shape, shapes, sources)):
        if seen is None:
            r = (max(r[0], full[0]), max(r[1], full[1]))
            j = (max(j[0], full[0]), max(j[1], full[1]))
        else:
            r, j = seen.size, seen.jump
        out.append((tuple(int(v) for v in r), tuple(int(v) for v in j)))
    return out


def _buffer_count(layer, in_shape) -> int:
    """Running statistics a batch norm keeps: mean and var per channel plus the batch count."""
    if not getattr(layer, "track_running_stats", False):
        return 0
    channels = in_shape[0]
    return 2 * int(channels) + 1


def format_count(n: int) -> str:
    """1234567 -> '1,234,567'."""
    return f"{n:,}"
