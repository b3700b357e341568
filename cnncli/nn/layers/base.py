"""The layer base class, array conventions, and hyperparameter validators.

Array conventions (stated once, followed everywhere):

* Public arrays (model input, ``state_dict``) follow PyTorch: images are NCHW,
  conv weights are (O, C/groups, kh, kw), dense weights are (out, in).
* Inside the model, activations keep the batch axis *last*: spatial activations
  are (C, H, W, N) and flat ones are (F, N). With the batch innermost, im2col is a
  contiguous strided view and a conv is one matmul with no transposes between
  layers. ``to_internal``/``from_internal`` convert.
* float32 by default; float64 on request (gradient checks use it).
* Shapes passed to ``output_shape`` exclude the batch axis: (C, H, W) or (F,).
"""

from __future__ import annotations

import inspect
import re

import numpy as np

from cnncli.checks import MAX_INT, check_int, is_int, shown
from cnncli.errors import ConfigError, DataError, ShapeError
from cnncli.nn.splitter import SERIAL


def to_internal(x: np.ndarray) -> np.ndarray:
    """NCHW (or N, F) -> the internal batch-last layout, C-contiguous."""
    axes = tuple(range(1, x.ndim)) + (0,)
    return np.ascontiguousarray(np.transpose(x, axes))


def from_internal(y: np.ndarray) -> np.ndarray:
    """Internal batch-last layout -> NCHW (or N, F)."""
    axes = (y.ndim - 1,) + tuple(range(y.ndim - 1))
    return np.ascontiguousarray(np.transpose(y, axes))


#: A layer name: it becomes state-dict keys and picture file names, so no path separators,
#: control characters or '..' (dots only separate the parts of a block prefix).
LAYER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_][A-Za-z0-9_-]*)*")


# ---------------------------------------------------------------- validators
# Hyperparameter checks are cnncli.checks' (one set for layers and config sections); each
# raises ConfigError(key=...) quoting the value, so the config loader can point at its line.


def positive_int(key: str, value, *, minimum: int = 1) -> int:
    what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    return check_int(key, value, low=minimum, what=what)


def int_pair(key: str, value, *, minimum: int = 1) -> tuple[int, int]:
    """Accept an int or a [h, w] pair of ints, each >= minimum."""
    if is_int(value) and minimum <= value <= MAX_INT:
        return int(value), int(value)
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(is_int(v) and minimum <= v <= MAX_INT for v in value)):
        return int(value[0]), int(value[1])
    what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    raise ConfigError(f"{key} must be {what} or [h, w], got {shown(value)}", key=key)


def conv_output_size(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int,
                     dilation: int = 1, ceil_mode: bool = False) -> int:
    """PyTorch's output-size formula: floor((H + 2p - d(k-1) - 1) / s) + 1 (or ceil).

    With ceil_mode, the last window must start inside the input or left padding; as in
    PyTorch, ceil_mode also allows one window a little larger than the padded input.
    """
    span = size + pad_lo + pad_hi - dilation * (kernel - 1) - 1
    if span < 0 and not ceil_mode:
        return 0
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad_lo:
        out -= 1
    return max(out, 0)


# ---------------------------------------------------------------- base class

class Layer:
    """One layer: hyperparameters at construction, weights at ``build``, math in forward/backward.

    Subclasses set ``type_name`` through ``@register``; ``aliases`` maps alternate
    hyperparameter names (``filters``) to constructor arguments (``out_channels``). They write
    their math in ``_forward``/``_backward``: the public ``forward``/``backward`` check the
    call order and shapes around them, so a layer used on its own fails with one clear line.
    """

    type_name: str = "layer"
    aliases: dict[str, str] = {}
    #: What runs the layer's whole-array work (``nn/splitter.py``): the plain serial one unless
    #: an execution plan (``cnncli.parallel.plan``) installs a faster one on the instance.
    splitter = SERIAL
    #: Facts about the math, read by an execution plan: forward returns a new array that this
    #: layer never reads again (not its input, not cached), so the next layer could overwrite
    #: it; ``fresh_input_grad``: the same for backward's dx.
    fresh_output = False
    fresh_input_grad = False
    #: Whether this layer may overwrite the array forward receives (``may_overwrite_input``)
    #: or backward receives (``may_overwrite_grad``): False unless a plan allows it.
    may_overwrite_input = False
    may_overwrite_grad = False
    #: In training, each sample's output and gradients depend on that sample alone (no batch
    #: statistics, no random stream), so a batch may be trained in parts (``processes``).
    #: False unless a layer says so.
    per_sample = False

    def __init__(self, name: str | None = None):
        if name is not None and (not isinstance(name, str) or not LAYER_NAME.fullmatch(name)):
            raise ConfigError(f"name must be letters, digits, _ and - (dots only between "
                              f"parts, as in stage1.conv1), got {shown(name)}", key="name",
                              hint="names become parameter keys and file names")
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.input_shape: tuple[int, ...] | None = None
        self.dtype = np.dtype(np.float32)
        self.forward_output_shape: tuple[int, ...] | None = None  # of the last forward

    # -- shape arithmetic (never allocates)
    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output shape for a per-sample input shape; raises ShapeError."""
        return tuple(input_shape)

    def require_spatial(self, input_shape) -> tuple[int, int, int]:
        if len(input_shape) != 3:
            raise ShapeError(f"{self.type_name} needs a (C, H, W) input, got shape "
                             f"{list(input_shape)}", hint="put it before flatten/dense")
        return tuple(input_shape)

    # -- weights
    def build(self, input_shape, rng: np.random.Generator, dtype=np.float32) -> None:
        """Check the input shape and allocate parameters for it."""
        self.output_shape(input_shape)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.dtype = np.dtype(dtype)

    def zero_grad(self) -> None:
        # In place, so references handed out by Model.parameters() stay valid.
        for key, value in self.params.items():
            grad = self.grads.get(key)
            if grad is None or grad.shape != value.shape or grad.dtype != value.dtype:
                self.grads[key] = np.zeros_like(value)
            else:
                grad.fill(0)

    # -- math, on the internal batch-last layout
    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """The output for a batch; remembers its shape, which backward checks dy against."""
        y = self._forward(x, train)
        self.forward_output_shape = y.shape
        return y

    def backward(self, dy: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """Return dL/dx (or None if not needed) and *accumulate* into self.grads.

        A DataError, not an AttributeError deep in the math, when no forward came first or dy
        does not have the shape of the last forward's output."""
        expected = self.forward_output_shape
        if expected is None:
            raise DataError(f"{self.type_name} backward needs a forward pass first")
        if np.shape(dy) != expected:
            raise DataError(f"{self.type_name} backward: dy must have the shape of the last "
                            f"forward's output {list(expected)}, got {list(np.shape(dy))}")
        return self._backward(dy, need_dx)

    def _forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        raise NotImplementedError

    def _backward(self, dy: np.ndarray, need_dx: bool) -> np.ndarray | None:
        raise NotImplementedError

    # -- description, for summary and config files
    def get_config(self) -> dict:
        """Hyperparameters as plain data: ``layer_class(cfg['type'])(**rest)`` rebuilds it."""
        cfg = {"type": self.type_name}
        if self.name is not None:
            cfg["name"] = self.name
        for key in hyperparameters(type(self)):
            value = getattr(self, key)
            cfg[key] = list(value) if isinstance(value, tuple) else value
        return cfg

    def num_params(self, input_shape=None) -> int:
        """Trainable parameter count (computed from shapes, so it works before build)."""
        return 0

    def macs(self, input_shape) -> int:
        """Multiply-accumulates of one forward pass, per sample."""
        return 0

    def geometry(self, input_shape):
        """Receptive-field step of a spatial layer as (kernel, stride, pad, dilation) pairs.

        ``None`` for layers that map each position to itself (activations, norms).
        """
        return None

    def describe(self) -> str:
        """Short hyperparameter text for the summary's kernel/stride column."""
        return ""

    def __repr__(self) -> str:
        cfg = self.get_config()
        cfg.pop("type")
        args = ", ".join(f"{k}={v!r}" for k, v in cfg.items())
        return f"{type(self).__name__}({args})"


def hyperparameters(cls) -> dict[str, object]:
    """Constructor arguments of a layer class and their defaults (``inspect.Parameter.empty``
    when required), excluding ``name``."""
    sig = inspect.signature(cls.__init__)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in list(sig.parameters.values())[1:]
            if p.name != "name" and p.kind in kinds}
