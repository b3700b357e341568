"""The one memory estimate of a run, made on unbuilt layers, and the guard that compares it
with the memory this machine has.

``cnncli summary`` shows the estimate; training, eval/predict, bench and ``build_model`` refuse
a run that does not fit before allocating it (docs/train.md, "Memory"), instead of being killed
by the kernel without a word.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cnncli.errors import ConfigError, MemoryLimitError
from cnncli.nn.model import (
    entry_inputs,
    graph_shapes,
    layer_label,
    layer_sources,
    make_layers,
)

# optimizer state arrays kept per parameter
OPTIMIZER_SLOTS = {"sgd": 0, "sgd+momentum": 1, "adam": 2, "adamw": 2}
LIMIT_VARIABLE = "CNNCLI_MEMORY_LIMIT"
#: A run may use at most this share of the available memory: the estimate leaves out Python,
#: NumPy's temporaries and library workspaces, and other programs keep allocating.
USABLE_FRACTION = 0.9
_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def optimizer_label(optimizer: str, momentum: float = 0.0) -> str:
    """The OPTIMIZER_SLOTS key of a train section: sgd with momentum keeps one more array."""
    return "sgd+momentum" if optimizer == "sgd" and momentum > 0 else optimizer


@dataclass(frozen=True)
class LayerBytes:
    """One layer's share: its label ("layer 3 'conv2' (conv2d)"), weights, output per sample."""

    label: str
    weights: int
    output_per_sample: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step (see docs/summary.md): weights, gradients, optimizer state,
    forward activations, the backward peak, the im2col workspace and the dataset."""

    batch_size: int
    params: int
    grads: int
    optimizer: int
    forward: int
    backward: int
    im2col: int
    data: int = 0
    layers: tuple[LayerBytes, ...] = field(default=(), repr=False)

    @property
    def activations(self) -> int:
        """Everything that grows with the batch."""
        return self.forward + self.backward + self.im2col

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations + self.data

    def to_json(self) -> dict:
        """The ``memory`` of ``cnncli summary --json`` (the dataset is not in it)."""
        total = self.total - self.data
        return {"params_bytes": self.params, "grads_bytes": self.grads,
                "optimizer_bytes": self.optimizer, "forward_activations_bytes": self.forward,
                "backward_peak_bytes": self.backward, "im2col_bytes": self.im2col,
                "total_bytes": total, "forward_backward_bytes": self.activations}

    def beyond_weights(self) -> MemoryEstimate:
        """What is still to allocate once the weights and gradients exist."""
        return replace(self, params=0, grads=0)


def estimate_memory(layers, shapes, *, batch_size: int = 1, dtype="float32",
                    optimizer: str | None = "sgd", labels=None,
                    data_bytes: int = 0, sources=None) -> MemoryEstimate:
    """The estimate for ``layers`` (built or not; nothing is allocated) with ``shapes`` (the
    input shape, then each layer's output) and ``sources`` (``Model.sources``; by default a
    chain), at ``batch_size``.

    params + grads + optimizer state (0/1/2 arrays per parameter for sgd/momentum/adam),
    forward activations (the input and every layer output, kept for backward), the backward
    peak (two activation gradients of the largest layer alive at once) and the im2col
    workspace of layers with weights and a kernel (C*kh*kw*H'*W' values per sample).
    ``optimizer=None`` is inference: no gradients, optimizer state or backward pass.
    """
    itemsize = np.dtype(dtype).itemsize
    labels = labels or [layer_label(i + 1, layer.name, layer.type_name)
                        for i, layer in enumerate(layers)]
    rows, workspace = [], 0
    in_shapes = (shapes if sources is None
                 else [shapes[src[0]] for src in sources] + [shapes[-1]])
    for layer, label, in_shape, out_shape in zip(layers, labels, in_shapes, shapes[1:],
                                                 strict=False):
        weights = int(layer.num_params(in_shape)) * itemsize
        rows.append(LayerBytes(label, weights, math.prod(out_shape) * itemsize))
        geometry = (layer.geometry(in_shape) if len(in_shape) == 3 and len(out_shape) == 3
                    else None)
        if weights and geometry is not None:
            kh, kw = geometry[0]
            workspace += in_shape[0] * kh * kw * out_shape[1] * out_shape[2] * itemsize
    params = sum(r.weights for r in rows)
    per_input = math.prod(shapes[0]) * itemsize if shapes else 0
    forward = per_input + sum(r.output_per_sample for r in rows)
    largest = max([per_input] + [r.output_per_sample for r in rows])
    training = optimizer is not None
    return MemoryEstimate(
        batch_size=int(batch_size), params=params, grads=params if training else 0,
        optimizer=OPTIMIZER_SLOTS.get(optimizer, 2) * params if training else 0,
        forward=batch_size * forward, backward=2 * batch_size * largest if training else 0,
        im2col=batch_size * workspace, data=int(data_bytes), layers=tuple(rows))


def unbuilt_layers(input_shape, entries) -> tuple[list, list[str], list[tuple], list[tuple]]:
    """The layers of checked config entries, constructed but not built (no weights), with
    their labels, shapes (the input shape, then each layer's output) and sources."""
    layers, labels, entry_from, counts = [], [], [], []
    for index, entry in enumerate(entries, start=1):
        made = make_layers({k: v for k, v in entry.items() if k != "from"})
        layers.extend(made)
        labels.extend([layer_label(index, entry.get("name"), made[0].type_name)] * len(made))
        entry_from.append(entry_inputs(entry, index - 1))
        counts.append(len(made))
    sources = layer_sources(entry_from, counts)
    return layers, labels, graph_shapes(layers, input_shape, sources), sources


# ---------------------------------------------------------------- the machine

def parse_size(text: str) -> int:
    """'2G' -> 2147483648: bytes, or a number with a K/M/G/T suffix (powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(text).upper())
    if match is None:
        raise ConfigError(f"{LIMIT_VARIABLE} must be a number of bytes, optionally with a K, M, "
                          f"G or T suffix, or 'off', got {text!r}", hint="e.g. 8G")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None   # cgroup v2 writes "max" for no limit


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _sysconf_available() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room() -> int | None:
    """The memory limit of this process's cgroup (v2, then v1) minus what it uses already."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit = _read_int(limit_file)
        if limit is not None:
            return max(limit - (_read_int(usage_file) or 0), 0)
    return None


def available_memory() -> int | None:
    """Bytes this process may still allocate: ``CNNCLI_MEMORY_LIMIT`` if set ('off': None),
    else /proc/meminfo's MemAvailable (or sysconf) capped by the cgroup's room; None if unknown."""
    given = os.environ.get(LIMIT_VARIABLE, "").strip()
    if given.lower() == "off":
        return None
    if given:
        return parse_size(given)
    found = [v for v in (_meminfo_available() or _sysconf_available(), _cgroup_room())
             if v is not None]
    return min(found) if found else None


# ---------------------------------------------------------------- the guard

def format_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def does_not_fit(needed: int, available: int | None = None) -> bool:
    """Whether ``needed`` bytes are more than USABLE_FRACTION of the available memory."""
    available = available_memory() if available is None else available
    return available is not None and needed > USABLE_FRACTION * available


def check_memory(estimate: MemoryEstimate, *, what: str = "this run",
                 batch_key: str | None = "train.batch_size") -> None:
    """Raise MemoryLimitError naming the parts, the biggest contributor and its fix when
    ``estimate`` does not fit; ``batch_key`` is how the caller sets the batch size: a config
    key (``train.batch_size``) or an argument (``batch_size=``)."""
    available = available_memory()
    if available is None or not does_not_fit(estimate.total, available):
        return
    parts = [("weights", estimate.params), ("gradients", estimate.grads),
             ("optimizer", estimate.optimizer),
             (f"activations for batch {estimate.batch_size}", estimate.activations),
             ("data", estimate.data)]
    shown = ", ".join(f"{name} {format_bytes(n)}" for name, n in parts if n)
    fixes = _fixes(estimate, USABLE_FRACTION * available, batch_key)
    raise MemoryLimitError(
        f"{what} needs about {format_bytes(estimate.total)} ({shown}) but "
        f"{format_bytes(available)} is available (cnncli uses at most "
        f"{USABLE_FRACTION:.0%} of it); {' or '.join(fix for _, fix, _ in fixes)}",
        key=fixes[0][2] if fixes else None)


def _fixes(estimate: MemoryEstimate, usable: float, batch_key: str | None):
    """(bytes it concerns, fix, config key) of the fixes for the parts that take 10% or more
    of the total, the biggest first, at most two."""
    fixes, shrink = [], {}   # shrink: layer label -> [bytes, what makes it big]
    fixed = estimate.total - estimate.activations
    per_sample = estimate.activations / max(estimate.batch_size, 1)
    fits = int((usable - fixed) // per_sample) if per_sample else 0
    if batch_key and estimate.batch_size > 1 and fits >= 1:
        now = (f"{batch_key}{estimate.batch_size}" if batch_key.endswith("=")  # an argument
               else f"{batch_key} ({estimate.batch_size})")
        fixes.append((estimate.activations, f"lower {now} to {fits} or less", "batch_size"))
    elif estimate.activations:   # not even a smaller batch fits: the widest layer must shrink
        widest = max(estimate.layers, key=lambda r: r.output_per_sample)
        shrink[widest.label] = [estimate.activations,
                                f"{format_bytes(widest.output_per_sample)} of output per sample"]
    weights = estimate.params + estimate.grads + estimate.optimizer
    heaviest = max(estimate.layers, key=lambda r: r.weights, default=None)
    if weights and heaviest is not None:
        size, notes = shrink.get(heaviest.label, [0, ""])
        shrink[heaviest.label] = [size + weights, ", ".join(
            filter(None, [f"the largest layer: {format_bytes(heaviest.weights)} of weights",
                          notes]))]
    fixes += [(size, f"shrink {label} ({notes})", "layers")
              for label, (size, notes) in shrink.items()]
    if estimate.data:
        fixes.append((estimate.data, f"train on a smaller dataset or images (the data takes "
                                     f"{format_bytes(estimate.data)})", "path"))
    fixes.sort(key=lambda fix: -fix[0])
    return [fix for fix in fixes if fix[0] >= 0.1 * estimate.total][:2] or fixes[:1]
