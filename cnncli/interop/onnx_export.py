"""A cnncli model as one ONNX graph, built with the ``onnx`` package's own API.

The graph takes ``input`` (N, C, H, W) float32 with a dynamic batch N and returns ``logits``.
Nodes and tensors carry the layer names, initializers the PyTorch state_dict names, so
``cnncli import`` finds them again. Batch norm is BatchNormalization in inference mode;
dropout is left out (inference is the identity).
"""

from __future__ import annotations

import math

import numpy as np

from cnncli import __version__
from cnncli.errors import ConfigError
from cnncli.interop.common import metadata, require

#: Gelu is an ONNX operator from opset 20; older opsets get its formula in elementary ops.
GELU_OPSET = 20
DEFAULT_OPSET = 20
MIN_OPSET = 13  # Split/Squeeze with axes inputs; every operator used here exists by then


class _Graph:
    """Nodes and initializers of a growing chain; ``x`` is the current tensor's name."""

    def __init__(self, helper, numpy_helper, opset: int):
        self.helper, self.numpy_helper, self.opset = helper, numpy_helper, opset
        self.nodes, self.initializers = [], []
        self.x = "input"
        self.inputs: list[str] = []   # what a merge layer reads

    def const(self, name: str, value) -> str:
        arr = np.asarray(value)
        self.initializers.append(self.numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        """Append ``op`` reading ``inputs``; its output is named ``name`` and becomes x."""
        self.nodes.append(self.helper.make_node(op, inputs, [name], name=name, **attrs))
        self.x = name
        return name

    def scalar(self, stem: str, value: float) -> str:
        return self.const(stem, np.array(value, np.float32))

    def reduce_mean(self, x: str, axes: list[int], name: str) -> str:
        if self.opset >= 18:  # axes became an input in opset 18
            axes_name = self.const(f"{name}_axes", np.array(axes, np.int64))
            return self.node("ReduceMean", [x, axes_name], name, keepdims=1)
        return self.node("ReduceMean", [x], name, axes=axes, keepdims=1)


def _channel_shape(rank: int, values) -> np.ndarray:
    """A per-channel vector shaped to broadcast over (N, C, ...) of ``rank`` dims."""
    values = np.asarray(values, np.float32)
    return values.reshape((1, -1) + (1,) * (rank - 2))


def _normalization(g: _Graph, norm: dict, rank: int) -> None:
    """The training normalisation as the graph's first nodes: x / scale, then (x - mean) / std
    in the same float32 operations as cnncli's ``normalize``."""
    mode = str(norm.get("mode", "none"))
    if mode == "none":
        return
    g.node("Div", [g.x, g.scalar("normalize.scale", norm["scale"])], "normalize_scale")
    if mode == "standardize":
        mean = g.const("normalize.mean", _channel_shape(rank, norm["mean"]))
        std = g.const("normalize.std", _channel_shape(rank, norm["std"]))
        g.node("Sub", [g.x, mean], "normalize_mean")
        g.node("Div", [g.x, std], "normalize_std")


def _conv(g: _Graph, layer, shape) -> None:
    (t, b), (lft, r) = layer._pads_for(shape[1], shape[2])  # 'same' with a stride: per size
    inputs = [g.x, g.const(f"{layer.name}.weight", layer.params["weight"])]
    if layer.bias:
        inputs.append(g.const(f"{layer.name}.bias", layer.params["bias"]))
    g.node("Conv", inputs, layer.name, kernel_shape=list(layer.kernel_size),
           strides=list(layer.stride), pads=[t, lft, b, r], dilations=list(layer.dilation),
           group=layer.groups)


def _dense(g: _Graph, layer, shape) -> None:
    if len(shape) > 1:  # cnncli's dense flattens a (C, H, W) input itself
        g.node("Flatten", [g.x], f"{layer.name}_flatten", axis=1)
    inputs = [g.x, g.const(f"{layer.name}.weight", layer.params["weight"])]
    if layer.bias:
        inputs.append(g.const(f"{layer.name}.bias", layer.params["bias"]))
    g.node("Gemm", inputs, layer.name, transB=1)


def _batchnorm(g: _Graph, layer, shape) -> None:
    c, name = shape[0], layer.name
    weight = layer.params.get("weight", np.ones(c, np.float32))
    bias = layer.params.get("bias", np.zeros(c, np.float32))
    if layer.track_running_stats:
        attrs = {"epsilon": layer.eps}
        if layer.momentum is not None:  # ONNX's momentum keeps the old value: 1 - PyTorch's
            attrs["momentum"] = 1.0 - layer.momentum
        g.node("BatchNormalization",
               [g.x, g.const(f"{name}.weight", weight), g.const(f"{name}.bias", bias),
                g.const(f"{name}.running_mean", layer.buffers["running_mean"]),
                g.const(f"{name}.running_var", layer.buffers["running_var"])], name, **attrs)
        return
    # No running statistics: evaluation normalises with the batch's own, as cnncli does.
    rank = len(shape) + 1
    axes = [0] + list(range(2, rank))
    x = g.x
    mean = g.reduce_mean(x, axes, f"{name}_mean")
    centred = g.node("Sub", [x, mean], f"{name}_centred")
    var = g.reduce_mean(g.node("Mul", [centred, centred], f"{name}_square"), axes,
                        f"{name}_var")
    std = g.node("Sqrt", [g.node("Add", [var, g.scalar(f"{name}.eps", layer.eps)],
                                 f"{name}_var_eps")], f"{name}_std")
    inv = g.node("Reciprocal", [std], f"{name}_inv_std")
    out = g.node("Mul", [centred, inv], f"{name}_normalized" if layer.affine else name)
    if layer.affine:
        scaled = g.node("Mul", [out, g.const(f"{name}.weight", _channel_shape(rank, weight))],
                        f"{name}_scaled")
        g.node("Add", [scaled, g.const(f"{name}.bias", _channel_shape(rank, bias))], name)


def _gelu(g: _Graph, layer, shape) -> None:
    if g.opset >= GELU_OPSET:
        g.node("Gelu", [g.x], layer.name, approximate=layer.approximate)
        return
    name, x = layer.name, g.x
    half = g.scalar(f"{name}.half", 0.5)
    one = g.scalar(f"{name}.one", 1.0)
    if layer.approximate == "tanh":
        cube = g.node("Mul", [g.node("Mul", [x, x], f"{name}_sq"), x], f"{name}_cube")
        inner = g.node("Add", [x, g.node("Mul", [cube, g.scalar(f"{name}.kappa", 0.044715)],
                                         f"{name}_kx3")], f"{name}_inner")
        arg = g.node("Mul", [inner, g.scalar(f"{name}.beta", math.sqrt(2 / math.pi))],
                     f"{name}_arg")
        shaped = g.node("Tanh", [arg], f"{name}_tanh")
    else:
        arg = g.node("Mul", [x, g.scalar(f"{name}.rsqrt2", 1 / math.sqrt(2))], f"{name}_arg")
        shaped = g.node("Erf", [arg], f"{name}_erf")
    cdf = g.node("Mul", [g.node("Add", [shaped, one], f"{name}_1p"), half], f"{name}_cdf")
    g.node("Mul", [x, cdf], name)


def _window(layer, shape) -> dict:
    """Pool attributes. ONNX's ceil_mode keeps a last window that starts in the right padding;
    PyTorch's drops it, and then its output is floor mode's (a window can only start there
    when the span does not divide by the stride), so such a pool exports in floor mode."""
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    (ph, pw), (dh, dw) = layer.padding, getattr(layer, "dilation", (1, 1))
    out = layer.output_shape(shape)[1:]
    spans = [size + 2 * p - d * (k - 1) - 1
             for size, k, p, d in ((shape[1], kh, ph, dh), (shape[2], kw, pw, dw))]
    ceil = layer.ceil_mode and all(-(-span // s) + 1 == o
                                   for span, s, o in zip(spans, (sh, sw), out, strict=True))
    return {"kernel_shape": [kh, kw], "strides": [sh, sw], "ceil_mode": int(ceil),
            "pads": [ph, pw, ph, pw]}


def _lppool(g: _Graph, layer, shape) -> None:
    """(avg_pool(x^p) * kh*kw)^(1/p), the formula PyTorch and cnncli compute (ONNX's LpPool
    takes |x| and only integer p)."""
    name, p = layer.name, layer.norm_type
    area = layer.kernel_size[0] * layer.kernel_size[1]
    g.node("Pow", [g.x, g.scalar(f"{name}.p", p)], f"{name}_pow")
    mean = g.node("AveragePool", [g.x], f"{name}_mean", count_include_pad=1,
                  **_window(layer, shape))
    scaled = g.node("Mul", [mean, g.scalar(f"{name}.area", area)], f"{name}_sum")
    g.node("Pow", [scaled, g.scalar(f"{name}.inv_p", 1.0 / p)], name)


def _simple(op: str, **attr_of_layer):
    def emit(g: _Graph, layer, shape) -> None:
        g.node(op, [g.x], layer.name,
               **{key: getattr(layer, field) for key, field in attr_of_layer.items()})
    return emit


def _maxpool(g: _Graph, layer, shape) -> None:
    g.node("MaxPool", [g.x], layer.name, dilations=list(layer.dilation),
           **_window(layer, shape))


def _avgpool(g: _Graph, layer, shape) -> None:
    g.node("AveragePool", [g.x], layer.name, count_include_pad=int(layer.count_include_pad),
           **_window(layer, shape))


def _flatten(g: _Graph, layer, shape) -> None:
    g.node("Flatten", [g.x], layer.name, axis=1)


EMITTERS = {
    "conv2d": _conv, "dense": _dense, "batchnorm2d": _batchnorm, "batchnorm1d": _batchnorm,
    "relu": _simple("Relu"), "leaky_relu": _simple("LeakyRelu", alpha="negative_slope"),
    "elu": _simple("Elu", alpha="alpha"), "gelu": _gelu, "tanh": _simple("Tanh"),
    "sigmoid": _simple("Sigmoid"), "maxpool2d": _maxpool, "avgpool2d": _avgpool,
    "lppool2d": _lppool, "global_avg_pool2d": _simple("GlobalAveragePool"),
    "global_max_pool2d": _simple("GlobalMaxPool"), "flatten": _flatten,
    "dropout": None,  # the identity in inference: no node
    "add": lambda g, layer, shape: g.node("Sum", list(g.inputs), layer.name),
    "concat": lambda g, layer, shape: g.node("Concat", list(g.inputs), layer.name, axis=1),
}


def check_opset(opset: int) -> int:
    onnx = require("onnx", "onnx")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ConfigError(f"opset={opset} is outside the opsets this export supports "
                          f"({MIN_OPSET}..{newest})", hint=f"the default is {DEFAULT_OPSET}")
    return opset


def build_onnx(model, *, normalization: dict | None = None, opset: int = DEFAULT_OPSET,
               meta: dict[str, str] | None = None):
    """The ONNX ModelProto of ``model`` (normalisation first when given), checked in full."""
    onnx = require("onnx", "onnx")
    from onnx import TensorProto, helper, numpy_helper

    check_opset(opset)
    g = _Graph(helper, numpy_helper, opset)
    rank = len(model.input_shape) + 1
    if normalization:
        _normalization(g, normalization, rank)
    outs = [g.x]   # each node's tensor: the (normalised) input, then every layer's output
    for layer, shape, src in zip(model.layers, model.input_shapes, model.sources, strict=True):
        emit = EMITTERS.get(layer.type_name, KeyError)
        if emit is KeyError:
            raise ConfigError(f"layer {layer.name!r} ({layer.type_name}) has no ONNX export")
        g.x, g.inputs = outs[src[0]], [outs[s] for s in src]   # a merge reads them all
        if emit is not None:
            emit(g, layer, shape)
        outs.append(g.x)
    if g.nodes and g.nodes[-1].output[0] == outs[-1]:
        g.nodes[-1].output[0] = "logits"
    else:
        g.node("Identity", [outs[-1]], "logits")
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                            ["N", *model.input_shape])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                             ["N", *model.output_shape])]
    graph = helper.make_graph(g.nodes, "cnncli", inputs, outputs, g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="cnncli", producer_version=__version__)
    # The IR version of the opset, not the onnx package's newest: older runtimes load it.
    proto.ir_version = min(proto.ir_version, _ir_version(helper, opset))
    helper.set_model_props(proto, meta or {})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _ir_version(helper, opset: int) -> int:
    for row in helper.VERSION_TABLE:  # (release, ir, ai.onnx opset, ...), oldest first
        if row[2] >= opset:
            return row[1]
    return helper.VERSION_TABLE[-1][1]


def export_onnx(ckpt, model, path, *, opset: int = DEFAULT_OPSET,
                normalization: bool = True):
    """Write ``model`` (a checkpoint's) as one .onnx file, atomically."""
    from cnncli.files import atomic_write

    proto = build_onnx(model, normalization=ckpt.normalization if normalization else None,
                       opset=opset, meta=metadata(ckpt))
    blob = proto.SerializeToString()
    atomic_write(path, lambda f: f.write(blob))
    return path
