"""The layer stack: shapes, forward, backward, and PyTorch-style state dicts."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable

import numpy as np

from cnncli.errors import CheckpointError, ConfigError, DataError
from cnncli.nn import registry
from cnncli.nn.layers.base import Layer, from_internal, hyperparameters, to_internal
from cnncli.nn.losses import softmax_cross_entropy

_EMPTY = inspect.Parameter.empty


def layer_label(index: int, name, type_name) -> str:
    """How errors name a layer: ``layer 3 'conv2' (conv2d)`` (1-based index)."""
    named = f" '{name}'" if name else ""
    kind = f" ({type_name})" if type_name else ""
    return f"layer {index}{named}{kind}"


def make_layers(entry: dict) -> list[Layer]:
    """One config entry -> its layer, plus a separate activation layer for ``activation:``.

    Raises ConfigError with ``key`` set to the offending key (unknown keys get a
    "did you mean" hint).
    """
    if not isinstance(entry, dict):
        # Only a plain word makes a sensible suggestion (a "\r" would break the error's line).
        hint = (f"write - {{type: {entry}}}"
                if isinstance(entry, str) and entry.isidentifier() else None)
        raise ConfigError(f"a layer must be a mapping with a 'type:' key, got {entry!r}",
                          hint=hint)
    if "type" not in entry:
        raise ConfigError("layer has no 'type:' key", hint="e.g. type: conv2d")
    cls = registry.layer_class(entry["type"])
    allowed = hyperparameters(cls)
    kwargs, activation, written_as = {}, None, {}
    for key, value in entry.items():
        if key == "type":
            continue
        if key == "activation" and "activation" not in allowed and _supports_activation(cls):
            activation = value
            continue
        target = cls.aliases.get(key, key)
        if target not in allowed and key != "name":
            options = sorted(set(allowed) | set(cls.aliases) | {"name"}
                             | ({"activation"} if _supports_activation(cls) else set()))
            close = difflib.get_close_matches(str(key), options, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "valid keys: " + ", ".join(options)
            raise ConfigError(f"unknown key {key!r} for {cls.type_name}", key=key, hint=hint)
        if target in kwargs:
            raise ConfigError(f"{written_as[target]!r} and {key!r} are the same setting "
                              f"({target}); give one", key=key)
        kwargs[target], written_as[target] = value, key
    missing = [k for k, d in allowed.items() if d is _EMPTY and k not in kwargs]
    if missing:
        raise ConfigError(f"{cls.type_name} needs {missing[0]!r}", key="type")
    layers = [cls(**kwargs)]
    if activation is not None:
        act_cls = (registry.LAYERS.get(registry.ALIASES.get(activation, activation))
                   if isinstance(activation, str) else None)
        if act_cls is None or not getattr(act_cls, "is_activation", False):
            names = sorted(n for n, c in registry.LAYERS.items()
                           if getattr(c, "is_activation", False))
            close = (difflib.get_close_matches(activation, names, n=1)
                     if isinstance(activation, str) else [])
            raise ConfigError(f"activation must be one of {', '.join(names)}; "
                              f"got {activation!r}", key="activation",
                              hint=f"did you mean '{close[0]}'?" if close else None)
        layers.append(act_cls())
    return layers


def _supports_activation(cls) -> bool:
    return getattr(cls, "accepts_activation", False)


class WholeBatch:
    """Runs a checked batch through a model's layers at once, on the calling thread: the plain
    way, every model's ``runner`` unless an execution plan (``cnncli.parallel.plan``) installs
    another (one that splits inference batches over threads, say)."""

    def forward(self, model: Model, x: np.ndarray, train: bool) -> np.ndarray:
        return model.forward_through(model.layers, x, train)

    def backward(self, model: Model, dlogits: np.ndarray, need_input_grad: bool):
        return model.backward_through(model.layers, dlogits, need_input_grad)


def is_multi_input(layer) -> bool:
    """Whether a layer takes a list of inputs (``add``, ``concat``)."""
    return getattr(layer, "multi_input", False)


def chain_sources(count: int) -> list[tuple[int, ...]]:
    """The sources of a plain chain: each layer reads the one before it."""
    return [(i,) for i in range(count)]


def layer_sources(entry_from: list, layer_counts: list[int]) -> list[tuple[int, ...]]:
    """Per layer, the nodes it reads (node 0: the model input, node k + 1: layer k's output),
    from each entry's ``from`` (absolute entry indices or "input"; None: the entry before) and
    how many layers each entry made (its activation layer reads the layer before it)."""
    sources, entry_out = [], []
    for refs, count in zip(entry_from, layer_counts, strict=True):
        if refs is None:
            first = (entry_out[-1],) if entry_out else (0,)
        else:
            first = tuple(0 if ref == "input" else entry_out[ref] for ref in refs)
        start = len(sources)
        sources.append(first)
        sources.extend((k,) for k in range(start + 1, start + count))
        entry_out.append(start + count)
    return sources


def input_shapes(layers, shapes, sources) -> list:
    """Each layer's input shape (a list of shapes for a merge layer)."""
    return [[shapes[s] for s in src] if is_multi_input(layer) else shapes[src[0]]
            for layer, src in zip(layers, sources, strict=True)]


def graph_shapes(layers, input_shape, sources, labels=None, build=None) -> list[tuple]:
    """[input shape, each layer's output shape] through the graph; ``build(layer, in_shape)``
    runs first on each layer when given. Errors are located at the layer's label."""
    shapes = [tuple(input_shape)]
    for k, (layer, src) in enumerate(zip(layers, sources, strict=True)):
        in_shape = ([shapes[s] for s in src] if is_multi_input(layer) else shapes[src[0]])
        try:
            if build is not None:
                build(layer, in_shape)
            shapes.append(tuple(int(v) for v in layer.output_shape(in_shape)))
        except ConfigError as err:
            raise (err.located(layer=labels[k]) if labels else err) from None
    return shapes


class Model:
    """Layers built for one input shape (C, H, W): a chain, or a graph whose layers name
    their inputs (``sources``: per layer, node 0 = the model input, node k + 1 = layer k's
    output; the model's output is the last layer's)."""

    def __init__(self, layers: Iterable[Layer], input_shape, *, dtype=np.float32, seed: int = 0,
                 labels: list[str] | None = None, sources=None):
        self.layers = list(layers)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.dtype = np.dtype(dtype)
        self._forward_shape: tuple[int, ...] | None = None  # checked by backward
        self.labels = labels or [layer_label(i + 1, l.name, l.type_name)
                                 for i, l in enumerate(self.layers)]
        self.sources = ([tuple(s) for s in sources] if sources is not None
                        else chain_sources(len(self.layers)))
        #: A plain chain runs as before: each layer on the output of the one before it.
        self.is_chain = (self.sources == chain_sources(len(self.layers))
                         and not any(is_multi_input(layer) for layer in self.layers))
        #: How many layers read each node (node 0 the input, k + 1 layer k's output).
        self.consumers = [0] * (len(self.layers) + 1)
        for src in self.sources:
            for s in src:
                self.consumers[s] += 1
        _assign_names(self.layers)
        rng = np.random.default_rng(seed)
        self.shapes = graph_shapes(self.layers, self.input_shape, self.sources, self.labels,
                                   lambda layer, shape: layer.build(shape, rng, self.dtype))
        self.input_shapes = input_shapes(self.layers, self.shapes, self.sources)
        #: The order forward runs the layers in (backward runs it in reverse): the config's.
        #: An execution plan (``cnncli.parallel.plan``) may swap neighbours that commute.
        self.run_order = list(range(len(self.layers)))
        #: What runs a checked batch through the layers (see ``WholeBatch``).
        self.runner = WholeBatch()

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[-1]

    # -- math
    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """NCHW batch -> logits (N, classes)."""
        x = np.asarray(x)
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            dims = ", ".join(map(str, self.input_shape))
            raise DataError(f"model expects input of shape (N, {dims}), got {tuple(x.shape)}")
        x = x.astype(self.dtype, copy=False)
        out = self.runner.forward(self, x, train)
        self._forward_shape = out.shape
        return out

    def forward_through(self, layers: list[Layer], x: np.ndarray, train: bool) -> np.ndarray:
        """x (NCHW) through ``layers`` (this model's, or copies of them) in ``run_order``."""
        h = to_internal(x)
        if not self.is_chain:
            return from_internal(self._graph_forward(layers, h, train))
        for i in self.run_order:
            h = layers[i].forward(h, train=train)
        return from_internal(h)

    def _graph_forward(self, layers, h, train):
        """Each layer on its sources' outputs; an output is let go after its last reader."""
        values, left = {0: h}, list(self.consumers)
        last = len(layers)
        for i in self.run_order:
            src = self.sources[i]
            inputs = [values[s] for s in src]
            values[i + 1] = layers[i].forward(inputs if is_multi_input(layers[i])
                                              else inputs[0], train=train)
            for s in src:
                left[s] -= 1
                if left[s] == 0 and s != last:
                    values.pop(s, None)
        return values[last]

    def backward(self, dlogits: np.ndarray, need_input_grad: bool = True):
        """Backpropagate dL/dlogits (N, classes); accumulate parameter grads; return dL/dx.

        After ``forward(x, train=False)`` this is the gradient of the evaluation (running
        statistics, no dropout), as in PyTorch's eval mode."""
        dlogits = np.asarray(dlogits)
        expected = self._forward_shape
        if expected is None:
            raise DataError("backward needs a forward pass first")
        if dlogits.shape != expected:
            raise DataError(f"dlogits must have the shape of the last forward output "
                            f"{tuple(expected)}, got {tuple(dlogits.shape)}")
        dlogits = dlogits.astype(self.dtype, copy=False)
        return self.runner.backward(self, dlogits, need_input_grad)

    def backward_through(self, layers: list[Layer], dlogits: np.ndarray,
                         need_input_grad: bool):
        """dlogits back through ``layers`` in reverse ``run_order``; dL/dx or None."""
        g = to_internal(dlogits)
        if not self.is_chain:
            return self._graph_backward(layers, g, need_input_grad)
        order = self.run_order
        for k in range(len(order) - 1, -1, -1):
            g = layers[order[k]].backward(g, need_dx=need_input_grad or k > 0)
        return from_internal(g) if need_input_grad else None

    def _graph_backward(self, layers, g, need_input_grad):
        """Reverse ``run_order``; the gradients of a node read by several layers add up. A
        layer whose output nothing reads gets no gradient (as in autograd)."""
        grads = {len(layers): g}
        for i in reversed(self.run_order):
            dy = grads.pop(i + 1, None)
            if dy is None:
                continue
            src = self.sources[i]
            need = need_input_grad or any(s > 0 for s in src)
            dx = layers[i].backward(dy, need_dx=need)
            if not need:
                continue
            for s, d in zip(src, dx if is_multi_input(layers[i]) else [dx], strict=True):
                # A new array for a sum: neither addend may be one a layer overwrites later.
                grads[s] = d if s not in grads else grads[s] + d
        # Every path starts at the input, so node 0 has its gradient when one was needed.
        return from_internal(grads[0]) if need_input_grad else None

    def predict_logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        outs = [self.forward(x[i:i + batch_size], train=False)
                for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0,) + self.output_shape, self.dtype)

    def close(self) -> None:
        """Let go of what the runner holds beyond this process (an execution plan's worker
        process); the model stays usable."""
        close = getattr(self.runner, "close", None)
        if close is not None:
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def zero_grad(self) -> None:
        for layer in self.layers:
            layer.zero_grad()

    # -- parameters
    def parameters(self):
        """(name, value, grad) for every trainable array, in layer order."""
        for layer in self.layers:
            for key, value in layer.params.items():
                yield f"{layer.name}.{key}", value, layer.grads[key]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Weights and running statistics in PyTorch's layout: ``<layer>.weight`` etc."""
        out = {}
        for layer in self.layers:
            for key, value in {**layer.params, **layer.buffers}.items():
                out[f"{layer.name}.{key}"] = value.copy()
        return out

    def grads(self) -> dict[str, np.ndarray]:
        return {name: grad.copy() for name, _, grad in self.parameters()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays in (strict: every key present, same shapes)."""
        expected = set()
        for layer in self.layers:
            for store in (layer.params, layer.buffers):
                for key, value in store.items():
                    full = f"{layer.name}.{key}"
                    expected.add(full)
                    if full not in state:
                        raise CheckpointError(f"state dict has no {full!r}")
                    new = np.asarray(state[full])
                    if new.shape != value.shape:
                        raise CheckpointError(f"{full}: shape {list(new.shape)} does not match "
                                              f"the model's {list(value.shape)}")
                    value[...] = new
        extra = sorted(set(state) - expected)
        if extra:
            raise CheckpointError(f"state dict has unexpected key {extra[0]!r}")

    def layer_entries(self) -> list[dict]:
        """One entry per layer (``model_from_entries`` rebuilds the same model from them), each
        with its ``from`` when the model branches."""
        entries = [layer.get_config() for layer in self.layers]
        if not self.is_chain:
            for entry, src in zip(entries, self.sources, strict=True):
                entry["from"] = ["input" if s == 0 else s - 1 for s in src]
        return entries

    def __repr__(self) -> str:
        body = "\n".join(f"  ({l.name}): {l!r}" for l in self.layers)
        return f"Model(input_shape={list(self.input_shape)},\n{body}\n)"


def forward_backward(model, x: np.ndarray, y, label_smoothing: float = 0.0):
    """A training batch's forward, softmax cross-entropy and backward on ``model`` (a Model,
    or anything with its ``forward`` and ``backward``): (logits, loss). The gradients are
    added to only when the loss is finite."""
    logits = model.forward(x, train=True)
    loss, dlogits = softmax_cross_entropy(logits, y, label_smoothing)
    if np.isfinite(loss):
        model.backward(dlogits, need_input_grad=False)
    return logits, loss


def _assign_names(layers: list[Layer]) -> None:
    """Give unnamed layers unique, stable names: ``conv2d_1``, ``conv2d_2``, ``relu_1`` ..."""
    taken = set()
    for layer in layers:
        if layer.name is not None:
            if layer.name in taken:
                raise ConfigError(f"two layers are named {layer.name!r}", key="name",
                                  hint="names must be unique")
            taken.add(layer.name)
    counters: dict[str, int] = {}
    for layer in layers:
        if layer.name is None:
            n = counters.get(layer.type_name, 0)
            while True:
                n += 1
                candidate = f"{layer.type_name}_{n}"
                if candidate not in taken:
                    break
            counters[layer.type_name] = n
            layer.name = candidate
            taken.add(candidate)


def model_from_entries(input_shape, entries: list[dict], *, dtype=np.float32,
                       seed: int = 0) -> Model:
    """Build a Model from plain layer entries (the ``model.layers`` list of a config).

    An entry may name its inputs, ``"from": [k, ...]``: absolute indices of earlier entries
    (their output after any ``activation:``) or "input" (the model's input)."""
    layers, labels, entry_from, counts = [], [], [], []
    for index, entry in enumerate(entries, start=1):
        type_name = entry.get("type") if isinstance(entry, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        label = layer_label(index, name, type_name)
        try:
            refs = entry_inputs(entry, index - 1)
            made = make_layers({k: v for k, v in entry.items() if k != "from"}
                               if isinstance(entry, dict) else entry)
        except ConfigError as err:
            raise err.located(layer=label) from None
        layers.extend(made)
        labels.extend([label] * len(made))
        entry_from.append(refs)
        counts.append(len(made))
    if not layers:
        raise ConfigError("model.layers is empty", key="layers")
    return Model(layers, input_shape, dtype=dtype, seed=seed, labels=labels,
                 sources=layer_sources(entry_from, counts))


def entry_inputs(entry, index: int):
    """An entry's ``from`` as a list of absolute entry indices / "input", or None (the entry
    before it). Negative indices count back from the entry (-1: the one before; a resolved
    config.yaml writes them so). Raises ConfigError(key="from") for anything else."""
    refs = entry.get("from") if isinstance(entry, dict) else None
    if refs is None:
        return None
    out = []
    for ref in refs if isinstance(refs, list) else [refs]:
        if isinstance(ref, int) and not isinstance(ref, bool) and -index - 1 <= ref < 0:
            ref = index + ref if index + ref >= 0 else "input"
        if ref != "input" and not (isinstance(ref, int) and not isinstance(ref, bool)
                                   and 0 <= ref < index):
            raise ConfigError(f"from must list earlier entries (0 .. {index - 1}, or -1 .. "
                              f"{-index - 1} counting back) or 'input', got {ref!r}", key="from")
        out.append(ref)
    return out
