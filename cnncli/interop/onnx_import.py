"""An ONNX classifier back as a cnncli config and checkpoint.

The graph must lead from ``input`` to its output through the operators in SUPPORTED (plus
the input normalisation ``cnncli export`` writes first); a node may read any earlier node's
output (a branch: the entry gets ``from:``), and Add/Sum/Concat of several join branches.
Anything else is refused with one line naming the node. Weights come over unchanged, so an
exported model imports to the same logits.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from cnncli.errors import CheckpointError, CnncliError
from cnncli.interop.common import require
from cnncli.nn.layers.conv import same_padding

SUPPORTED = ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Relu",
             "LeakyRelu", "Elu", "Gelu", "Tanh", "Sigmoid", "BatchNormalization", "Gemm",
             "MatMul+Add", "Flatten", "Reshape to 2-D", "Dropout", "Identity",
             "Add/Sum of branches", "Concat of branches (axis 1)")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_][A-Za-z0-9_-]*)*$")


@dataclass
class Imported:
    """What ``import_onnx`` produced: the config (resolved) and where it wrote things."""

    config: dict
    config_path: Path
    checkpoint_path: Path
    normalization: dict
    class_names: list[str]
    layers: int = 0


class _Chain:
    """Walks the graph's nodes in order, turning each into layer entries and weights."""

    def __init__(self, path, graph, numpy_helper, helper):
        self.path, self.helper = path, helper
        self.consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self.nodes = list(graph.node)
        self.entries: list[dict] = []
        self.state: dict[str, np.ndarray] = {}
        self.names: set[str] = set()
        self.counters: dict[str, int] = {}
        self.norm: dict = {}
        self.x = None
        self.rank = 0
        #: Each tensor read so far: the entry that made it (its index; "input" for the
        #: model's input) and its rank.
        self.producer: dict[str, object] = {}
        self.rank_of: dict[str, int] = {}
        self._entries_before = 0
        self.users: dict[str, int] = {}
        for node in self.nodes:
            for name in node.input:
                self.users[name] = self.users.get(name, 0) + 1
        self._numpy_helper = numpy_helper
        #: (H, W) of the 4-D tensors whose shapes ONNX's shape inference knows (worked out
        #: when a strided convolution first asks)
        self.proto = None
        self._spatial: dict[str, list[int]] | None = None

    # -- helpers
    def fail(self, node, problem: str) -> CheckpointError:
        label = f"node {node.name!r} ({node.op_type})" if node.name else f"a {node.op_type} node"
        return CheckpointError(f"{self.path}: {label} {problem}")

    def attrs(self, node) -> dict:
        return {a.name: self.helper.get_attribute_value(a) for a in node.attribute}

    def const(self, node, index: int, required: bool = True):
        if index >= len(node.input) or not node.input[index]:
            if required:
                raise self.fail(node, f"lacks input {index}")
            return None
        name = node.input[index]
        if name not in self.consts:
            raise self.fail(node, f"input {name!r} is computed, not a stored weight; only "
                                  "weights stored in the file (initializers, Constant nodes) "
                                  "import")
        return self.consts[name]

    def spatial(self) -> dict[str, list[int]]:
        if self._spatial is None:
            self._spatial = _spatial_sizes(self.proto)
        return self._spatial

    def layer_name(self, node, type_name: str) -> str:
        name = node.name
        if not name or not _NAME_RE.match(name) or name in self.names:
            n = self.counters.get(type_name, 0)
            while True:
                n += 1
                name = f"{type_name}_{n}"
                if name not in self.names:
                    break
            self.counters[type_name] = n
        self.names.add(name)
        return name

    def add(self, node, type_name: str, weights: dict | None = None, **hyper) -> str:
        name = self.layer_name(node, type_name)
        self.entries.append({"type": type_name, "name": name, **hyper})
        for key, value in (weights or {}).items():
            self.state[f"{name}.{key}"] = np.asarray(value)
        return name

    def advance(self, node, rank: int | None = None) -> None:
        """The chain continues from this node's first output."""
        if len(node.output) > 1 and any(self.users.get(o) for o in node.output[1:] if o):
            raise self.fail(node, "has a second output in use; only its first output imports")
        made = len(self.entries) > self._entries_before
        self.producer[node.output[0]] = (len(self.entries) - 1 if made
                                         else self.producer.get(self.x, "input"))
        self.x = node.output[0]
        if rank is not None:
            self.rank = rank
        self.rank_of[self.x] = self.rank

    # -- the walk
    def run(self, input_name: str, rank: int) -> None:
        self.x, self.rank = input_name, rank
        i = self._normalization(0)
        self.producer[self.x], self.rank_of[self.x] = "input", rank
        while i < len(self.nodes):
            node = self.nodes[i]
            if node.op_type == "Constant":
                self.consts[node.output[0]] = self._numpy_helper.to_array(
                    self.helper.get_attribute_value(node.attribute[0]))
                i += 1
                continue
            data = [n for n in node.input if n and n not in self.consts]
            unknown = [n for n in data if n not in self.producer]
            if unknown or not data:
                raise self.fail(node, f"reads {unknown or 'no tensor'}, which no node before it "
                                      "makes")
            self._entries_before = len(self.entries)
            if len(data) > 1 or node.op_type == "Sum":
                i = self._merge(node, i, data)
                continue
            handler = getattr(self, "_" + node.op_type, None)
            if handler is None:
                raise self.fail(node, "is not supported; cnncli imports "
                                      + ", ".join(SUPPORTED))
            branch = data[0] != self.x
            self.x, self.rank = data[0], self.rank_of[data[0]]
            i = handler(node, i)
            if branch and len(self.entries) > self._entries_before:
                self.entries[self._entries_before]["from"] = [self.producer[data[0]]]

    def _merge(self, node, i, data):
        """Add/Sum (element-wise) or Concat (along channels) of several branches."""
        kinds = {"Add": "add", "Sum": "add", "Concat": "concat"}
        if node.op_type not in kinds or len(data) < 2 or len(data) != len(
                [n for n in node.input if n]):
            raise self.fail(node, "joins branches in a way cnncli has no layer for; cnncli "
                                  "imports " + ", ".join(SUPPORTED))
        if node.op_type == "Concat" and self.attrs(node).get("axis") not in (1, 1 - self.rank):
            raise self.fail(node, "concatenates along another axis than channels (1)")
        self.x, self.rank = data[0], self.rank_of[data[0]]
        self.add(node, kinds[node.op_type], **{"from": [self.producer[n] for n in data]})
        self.advance(node)
        return i + 1

    def _normalization(self, i: int) -> int:
        """The x / scale [, - mean, / std] that ``cnncli export`` puts first, as statistics."""
        def op(k, kind, size):
            if k >= len(self.nodes) or self.nodes[k].op_type != kind:
                return None
            node = self.nodes[k]
            if len(node.input) != 2 or node.input[1] not in self.consts or \
                    node.input[0] != (self.x if k == i else self.nodes[k - 1].output[0]):
                return None
            value = self.consts[node.input[1]]
            return value if value.size == size else None

        scale = op(i, "Div", 1)
        if scale is None:
            return i
        c = self.input_shape[0]
        mean, std = op(i + 1, "Sub", c), op(i + 2, "Div", c)
        if mean is not None and std is not None:
            self.norm = {"mode": "standardize", "scale": np.float32(scale.item()),
                         "mean": mean.reshape(-1).astype(np.float32),
                         "std": std.reshape(-1).astype(np.float32)}
            self.x = self.nodes[i + 2].output[0]
            return i + 3
        self.norm = {"mode": "scale", "scale": np.float32(scale.item())}
        self.x = self.nodes[i].output[0]
        return i + 1

    def _Identity(self, node, i):
        self.advance(node)
        return i + 1

    def _Conv(self, node, i):
        a = self.attrs(node)
        weight = self.const(node, 1)
        bias = self.const(node, 2, required=False)
        if weight.ndim != 4:
            raise self.fail(node, f"has a {weight.ndim}-D weight; only 2-D convolutions import")
        kh, kw = weight.shape[2:]
        strides = list(a.get("strides", [1, 1]))
        dilations = list(a.get("dilations", [1, 1]))
        padding = self._padding(node, a, (kh, kw), strides, dilations, conv=True)
        hyper = {"out_channels": int(weight.shape[0]), "kernel_size": _pair([kh, kw]),
                 "stride": _pair(strides), "padding": padding, "dilation": _pair(dilations),
                 "groups": int(a.get("group", 1)), "bias": bias is not None}
        weights = {"weight": weight}
        if bias is not None:
            weights["bias"] = bias
        self.add(node, "conv2d", weights, **hyper)
        self.advance(node, 4)
        return i + 1

    def _padding(self, node, a, kernel, strides, dilations, conv=False):
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto == "VALID":
            return 0
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            totals = [d * (k - 1) for k, d in zip(kernel, dilations, strict=True)]
            if conv and strides == [1, 1] and (auto == "SAME_UPPER"
                                               or all(t % 2 == 0 for t in totals)):
                return "same"
            raise self.fail(node, f"has auto_pad {auto} with strides {strides}; only stride-1 "
                                  "SAME_UPPER padding imports (or give explicit pads)")
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if pads[:2] == pads[2:]:
            return _pair(pads[:2])
        if conv:  # cnncli's 'same' (the extra pixel at the end), as cnncli exports it
            spatial = {} if strides == [1, 1] else self.spatial()
            size = spatial.get(node.input[0]) or [1, 1]   # stride 1: any size will do
            same = [same_padding(n, k, s, d) for n, k, s, d in zip(
                size, kernel, strides, dilations, strict=True)]
            if (strides == [1, 1] or node.input[0] in spatial) and \
                    pads == [same[0][0], same[1][0], same[0][1], same[1][1]]:
                return "same"
        raise self.fail(node, f"has asymmetric pads {pads}; cnncli pads both sides equally")

    def _Gemm(self, node, i):
        a = self.attrs(node)
        if a.get("transA", 0):
            raise self.fail(node, "has transA=1; only x @ W.T + b imports")
        weight = self.const(node, 1)
        weight = weight if a.get("transB", 0) else weight.T
        bias = self.const(node, 2, required=False)
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        if alpha != 1.0:
            weight = weight * np.float32(alpha)
        self._dense(node, weight, None if bias is None else bias * np.float32(beta))
        self.advance(node, 2)
        return i + 1

    def _dense(self, node, weight, bias):
        if bias is not None:
            bias = np.asarray(bias).reshape(-1)
            if bias.size == 1 and weight.shape[0] > 1:
                bias = np.full(weight.shape[0], bias.item(), weight.dtype)
            if bias.shape != (weight.shape[0],):
                raise self.fail(node, f"has a bias of {bias.size} values for "
                                      f"{weight.shape[0]} outputs")
        weights = {"weight": np.ascontiguousarray(weight)}
        if bias is not None:
            weights["bias"] = bias
        if self.rank > 2:
            raise self.fail(node, "multiplies a (N, C, H, W) tensor; flatten it first")
        return self.add(node, "dense", weights, units=int(weight.shape[0]),
                        bias=bias is not None)

    def _MatMul(self, node, i):
        weight = self.const(node, 1)
        if weight.ndim != 2:
            raise self.fail(node, f"multiplies by a {weight.ndim}-D weight; only 2-D imports")
        bias, end = None, i + 1
        nxt = self.nodes[i + 1] if i + 1 < len(self.nodes) else None
        if nxt is not None and nxt.op_type == "Add" and node.output[0] in nxt.input and \
                self.users.get(node.output[0]) == 1:
            other = [n for n in nxt.input if n != node.output[0]]
            if len(other) == 1 and other[0] in self.consts:
                bias, end = self.consts[other[0]], i + 2
        self._dense(node, weight.T, bias)
        self.advance(self.nodes[end - 1], 2)
        return end

    def _Flatten(self, node, i):
        axis = int(self.attrs(node).get("axis", 1))
        if axis != 1:
            raise self.fail(node, f"flattens from axis {axis}; only axis 1 (keep the batch) "
                                  "imports")
        self.add(node, "flatten")
        self.advance(node, 2)
        return i + 1

    def _Reshape(self, node, i):
        shape = [int(v) for v in self.const(node, 1).reshape(-1)]
        features = int(np.prod(self.current_shape(), dtype=np.int64))
        if len(shape) != 2 or shape[0] not in (0, -1) or shape[1] not in (-1, features) or \
                shape == [-1, -1]:
            raise self.fail(node, f"reshapes to {shape}; only a flatten to (N, features) "
                                  f"imports, e.g. [0, -1] or [-1, {features}]")
        self.add(node, "flatten")
        self.advance(node, 2)
        return i + 1

    def current_shape(self):
        from cnncli.nn.model import model_from_entries

        made = self.producer.get(self.x, "input")
        if made == "input":
            return tuple(self.input_shape)
        try:
            model = model_from_entries(self.input_shape, self.entries[:made + 1])
            return model.output_shape
        except CnncliError as err:
            raise CheckpointError(f"{self.path}: {err}") from None

    def _pool(self, node, i, type_name, **extra):
        a = self.attrs(node)
        kernel = list(a.get("kernel_shape", []))
        if len(kernel) != 2:
            raise self.fail(node, f"pools over kernel_shape {kernel}; only 2-D pools import")
        strides = list(a.get("strides", [1, 1]))  # ONNX's default stride is 1, not kernel
        dilations = list(a.get("dilations", [1, 1]))
        hyper = {"kernel_size": _pair(kernel), "stride": _pair(strides),
                 "padding": self._padding(node, a, kernel, strides, dilations),
                 "ceil_mode": bool(a.get("ceil_mode", 0)), **extra}
        if type_name == "maxpool2d":
            hyper["dilation"] = _pair(dilations)
        elif dilations != [1, 1]:
            raise self.fail(node, f"has dilations {dilations}; average pools do not dilate")
        self.add(node, type_name, **hyper)
        self.advance(node, 4)
        return i + 1

    def _MaxPool(self, node, i):
        return self._pool(node, i, "maxpool2d")

    def _AveragePool(self, node, i):
        a = self.attrs(node)
        # ONNX leaves padding out of the divisor by default; PyTorch and cnncli count it.
        return self._pool(node, i, "avgpool2d",
                          count_include_pad=bool(a.get("count_include_pad", 0)))

    def _Pow(self, node, i):
        """Pow(x, p) -> AveragePool -> Mul(kh*kw) -> Pow(1/p): how an lppool2d exports."""
        ops = [n.op_type for n in self.nodes[i:i + 4]]
        if ops != ["Pow", "AveragePool", "Mul", "Pow"]:
            raise self.fail(node, "is not supported; cnncli imports " + ", ".join(SUPPORTED))
        pool, scale, root = self.nodes[i + 1:i + 4]
        p = float(self.const(node, 1).item())
        a = self.attrs(pool)
        kernel = list(a.get("kernel_shape", []))
        chained = (pool.input[0] == node.output[0] and scale.input[0] == pool.output[0]
                   and root.input[0] == scale.output[0])
        if not chained or len(kernel) != 2 or \
                abs(float(self.const(scale, 1).item()) - kernel[0] * kernel[1]) > 1e-6 or \
                abs(float(self.const(root, 1).item()) * p - 1) > 1e-6:
            raise self.fail(node, "starts a Pow/AveragePool/Mul/Pow chain that is not an "
                                  "LP pool")
        if any(a.get("pads", [0])):
            raise self.fail(pool, "pads an LP pool; cnncli's lppool2d has no padding")
        self.add(root, "lppool2d", norm_type=_tidy(p), kernel_size=_pair(kernel),
                 stride=_pair(list(a.get("strides", [1, 1]))),
                 ceil_mode=bool(a.get("ceil_mode", 0)))
        self.advance(root, 4)
        return i + 4

    def _global(self, node, i, type_name):
        self.add(node, type_name)
        self.advance(node, 4)
        return i + 1

    def _GlobalAveragePool(self, node, i):
        return self._global(node, i, "global_avg_pool2d")

    def _GlobalMaxPool(self, node, i):
        return self._global(node, i, "global_max_pool2d")

    def _activation(self, node, i, type_name, **hyper):
        self.add(node, type_name, **hyper)
        self.advance(node)
        return i + 1

    def _Relu(self, node, i):
        return self._activation(node, i, "relu")

    def _LeakyRelu(self, node, i):
        alpha = float(self.attrs(node).get("alpha", 0.01))
        return self._activation(node, i, "leaky_relu", negative_slope=_tidy(alpha))

    def _Elu(self, node, i):
        return self._activation(node, i, "elu",
                                alpha=_tidy(float(self.attrs(node).get("alpha", 1.0))))

    def _Gelu(self, node, i):
        approximate = self.attrs(node).get("approximate", b"none")
        approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
        return self._activation(node, i, "gelu", approximate=approximate)

    def _Tanh(self, node, i):
        return self._activation(node, i, "tanh")

    def _Sigmoid(self, node, i):
        return self._activation(node, i, "sigmoid")

    def _BatchNormalization(self, node, i):
        a = self.attrs(node)
        if a.get("training_mode", 0):
            raise self.fail(node, "is in training mode; export the model in inference mode")
        scale, bias, mean, var = (self.const(node, k) for k in range(1, 5))
        if self.rank not in (2, 4):
            raise self.fail(node, f"normalises a {self.rank}-D tensor; only (N, C) and "
                                  "(N, C, H, W) import")
        momentum = float(a.get("momentum", 0.9))
        self.add(node, "batchnorm2d" if self.rank == 4 else "batchnorm1d",
                 {"weight": scale, "bias": bias, "running_mean": mean, "running_var": var,
                  "num_batches_tracked": np.zeros((), np.int64)},
                 eps=_tidy(float(a.get("epsilon", 1e-5))), momentum=float(f"{1.0 - momentum:.7g}"))
        self.advance(node)
        return i + 1

    def _Dropout(self, node, i):
        a = self.attrs(node)
        ratio = a.get("ratio")
        if ratio is None:
            given = self.const(node, 1, required=False) if len(node.input) > 1 else None
            ratio = 0.5 if given is None else float(given.item())
        self.add(node, "dropout", p=_tidy(float(ratio)))
        self.advance(node)
        return i + 1


def _pair(values):
    values = [int(v) for v in values]
    return values[0] if values[0] == values[1] else values


def _tidy(value: float) -> float:
    """A float32 attribute as the short decimal it was written as (0.1, not 0.100000001)."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))


def _kind_of(blob: bytes) -> str | None:
    """What a file that is no ONNX model is, when its first bytes tell."""
    if blob[:4] == b"PK\x03\x04":
        return "it is a zip archive, such as a cnncli .npz checkpoint"
    if blob[8:10] in (b'{"', b"{ ") and len(blob) > 8:
        return "it is a safetensors file"
    return None


def read_onnx(path):
    """The checked ModelProto of a .onnx file; a foreign or truncated file is one line."""
    onnx = require("onnx", "onnx")
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        proto = onnx.load_model_from_string(blob)
        onnx.checker.check_model(proto)
    except Exception as err:  # protobuf's DecodeError, onnx's ValidationError, ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        why = _kind_of(blob) or first[:160]
        raise CheckpointError(f"{path} is not a readable ONNX model ({why})",
                              hint="pass a complete .onnx file") from None
    if not proto.graph.node:
        raise CheckpointError(f"{path} is not a readable ONNX model (its graph has no nodes)")
    return proto


def _spatial_sizes(proto) -> dict[str, list[int]]:
    """(H, W) of each 4-D tensor of fixed size that shape inference finds (none if it fails:
    only a strided 'same' convolution needs them)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto).graph
    except (onnx.shape_inference.InferenceError, ValueError, RuntimeError):
        return {}
    out = {}
    for info in [*inferred.input, *inferred.value_info]:
        dims = info.type.tensor_type.shape.dim
        if len(dims) == 4 and all(d.HasField("dim_value") for d in dims[2:]):
            out[info.name] = [dims[2].dim_value, dims[3].dim_value]
    return out


def import_onnx(path, out_dir) -> Imported:
    """Turn an ONNX classifier into ``out_dir``/config.yaml and ``out_dir``/last.npz."""
    from onnx import helper, numpy_helper

    from cnncli.config import check_data, dump_config
    from cnncli.files import atomic_write
    from cnncli.nn.model import model_from_entries
    from cnncli.training.checkpoint import save_checkpoint

    path, out_dir = Path(path), Path(out_dir)
    proto = read_onnx(path)
    graph = proto.graph
    meta = {p.key: p.value for p in proto.metadata_props}
    inits = {init.name for init in graph.initializer}
    inputs = [v for v in graph.input if v.name not in inits]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise CheckpointError(f"{path} has {len(inputs)} inputs and {len(graph.output)} "
                              "outputs; a classifier has one of each")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(shape) not in (2, 4) or any(s is None or s <= 0 for s in shape[1:]):
        raise CheckpointError(f"{path}: input {inputs[0].name!r} has shape "
                              f"{['?' if s is None else s for s in shape]}; cnncli needs "
                              "(N, C, H, W) or (N, F) with fixed C, H, W")
    chain = _Chain(path, graph, numpy_helper, helper)
    chain.proto = proto
    chain.input_shape = [int(s) for s in shape[1:]]
    chain.run(inputs[0].name, len(shape))
    if chain.x != graph.output[0].name:
        raise CheckpointError(f"{path}: the graph's output {graph.output[0].name!r} is not the "
                              f"end of its chain {chain.x!r}")
    if not chain.entries:
        raise CheckpointError(f"{path} holds no layers cnncli can import")
    if chain.producer.get(chain.x) != len(chain.entries) - 1:
        raise CheckpointError(f"{path}: the graph's output is not made by its last layer")
    for index, entry in enumerate(chain.entries):   # from: as a config writes it, counted back
        if "from" in entry:
            entry["from"] = [ref if ref == "input" else ref - index for ref in entry["from"]]
    stored = {}
    if "cnncli.config" in meta:
        try:
            stored = yaml.safe_load(meta["cnncli.config"]) or {}
        except yaml.YAMLError:
            stored = {}
    name = re.sub(r"[^A-Za-z0-9._-]", "_", path.stem) or "imported"
    raw = {"name": stored.get("name", name) if isinstance(stored, dict) else name,
           "seed": 0, "model": {"input_shape": chain.input_shape, "layers": chain.entries}}
    for section in ("seed", "data", "train"):
        if isinstance(stored, dict) and section in stored:
            raw[section] = stored[section]
    try:
        config = check_data(raw, file=str(path)).config
        model = model_from_entries(config["model"]["input_shape"], config["model"]["layers"])
        model.load_state_dict(chain.state)
    except CnncliError as err:
        raise CheckpointError(f"{path}: {' '.join(str(err).splitlines())}") from None
    norm = chain.norm or _stored_normalization(meta)
    num_classes = model.output_shape[0]
    class_names = _class_names(meta, num_classes)
    config_path, ckpt_path = out_dir / "config.yaml", out_dir / "last.npz"
    taken = [p.name for p in (config_path, ckpt_path) if p.exists()]
    if taken:
        raise CheckpointError(f"{out_dir} already holds {', '.join(taken)}",
                              hint="choose another -o DIR")
    save_checkpoint(ckpt_path, config=config, model_state=model.state_dict(),
                    normalization=norm, class_names=class_names)
    atomic_write(config_path, lambda f: f.write(dump_config(config).encode()))
    return Imported(config, config_path, ckpt_path, norm, class_names, len(chain.entries))


def _stored_normalization(meta: dict) -> dict:
    """A graph without normalisation nodes takes normalised input: keep the statistics its
    export recorded, so predict feeds it what it expects (none for foreign models)."""
    try:
        norm = json.loads(meta.get("cnncli.normalization", "{}"))
    except ValueError:
        norm = {}
    if norm.get("mode") not in ("scale", "standardize"):
        return {"mode": "none"}
    out = {"mode": norm["mode"], "scale": np.float32(norm.get("scale", 1.0))}
    if norm["mode"] == "standardize":
        out["mean"] = np.asarray(norm["mean"], np.float32)
        out["std"] = np.asarray(norm["std"], np.float32)
    return out


def _class_names(meta: dict, num_classes) -> list[str]:
    try:
        names = json.loads(meta.get("cnncli.class_names", "[]"))
    except ValueError:
        names = []
    if isinstance(names, list) and len(names) == num_classes:
        return [str(n) for n in names]
    return [str(i) for i in range(num_classes)]
