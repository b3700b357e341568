"""Safetensors and PyTorch exports: the state_dict in PyTorch's names and layouts, and a
plain ``torch.nn.Module`` generated from the config that loads it (no cnncli import)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnncli.errors import ConfigError
from cnncli.files import atomic_write, make_folder
from cnncli.interop import safetensors
from cnncli.interop.common import metadata, module_paths, python_names, torch_state_dict


def export_safetensors(ckpt, model, path) -> Path:
    """The state_dict (PyTorch names, running statistics and num_batches_tracked included)
    with the resolved config, class names and normalisation as metadata."""
    state, renamed = torch_state_dict(model)
    return safetensors.write(path, state, {"format": "pt", **metadata(ckpt, renamed)})


def _pair(value) -> str:
    value = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    return str(value[0]) if value[0] == value[1] else f"({value[0]}, {value[1]})"


def _args(*positional, **keywords) -> str:
    """Call arguments; a keyword whose value is None (its default) is left out."""
    return ", ".join([*map(str, positional),
                      *(f"{k}={v}" for k, v in keywords.items() if v is not None)])


def _unless(value, default):
    return None if value == default else value


#: The layers that are torch modules (they hold weights, or batch norm's running statistics);
#: the others are torch.nn.functional calls in forward.
MODULE_TYPES = ("conv2d", "dense", "batchnorm1d", "batchnorm2d")


def _module(layer, shape) -> str:
    """The torch.nn constructor of a layer that holds weights, for input ``shape``."""
    kind = layer.type_name
    if kind == "conv2d":
        (t, b), (lft, r) = _conv_pads(layer, shape)
        padding = ("'same'" if (t, lft) != (b, r) and layer.stride == (1, 1)
                   else _unless(_pair((t, lft)) if (t, lft) == (b, r) else "0", "0"))
        return "nn.Conv2d(" + _args(
            shape[0], layer.out_channels, kernel_size=_pair(layer.kernel_size),
            stride=_unless(_pair(layer.stride), "1"), padding=padding,
            dilation=_unless(_pair(layer.dilation), "1"), groups=_unless(layer.groups, 1),
            bias=_unless(layer.bias, True)) + ")"
    if kind == "dense":
        return "nn.Linear(" + _args(int(np.prod(shape)), layer.units,
                                    bias=_unless(layer.bias, True)) + ")"
    cls = "BatchNorm2d" if kind == "batchnorm2d" else "BatchNorm1d"
    return f"nn.{cls}(" + _args(
        shape[0], eps=_unless(layer.eps, 1e-5), momentum=_unless(layer.momentum, 0.1),
        affine=_unless(layer.affine, True),
        track_running_stats=_unless(layer.track_running_stats, True)) + ")"


def _conv_pads(layer, shape):
    """((top, bottom), (left, right)): 'same' with a stride depends on the input size."""
    return layer._pads_for(shape[1], shape[2])


def _call(layer, shape, module: str, ins: list[str]) -> str:
    """The expression that computes ``layer`` on the tensors ``ins`` (variable names)."""
    kind, x = layer.type_name, ins[0]
    if kind == "conv2d":
        (t, b), (lft, r) = _conv_pads(layer, shape)
        if (t, lft) != (b, r) and layer.stride != (1, 1):  # torch's 'same' has no stride
            x = f"F.pad({x}, ({lft}, {r}, {t}, {b}))"
        return f"{module}({x})"
    if kind == "dense" and len(shape) > 1:  # cnncli's dense flattens a (C, H, W) input itself
        return f"{module}(torch.flatten({x}, 1))"
    if kind in MODULE_TYPES:
        return f"{module}({x})"
    if kind == "add":
        return " + ".join(ins)
    if kind == "concat":
        return f"torch.cat([{', '.join(ins)}], 1)"
    if kind == "lppool2d":
        return "F.lp_pool2d(" + _args(x, repr(layer.norm_type), _pair(layer.kernel_size),
                                      stride=_pair(layer.stride),
                                      ceil_mode=_unless(layer.ceil_mode, False)) + ")"
    if kind in ("maxpool2d", "avgpool2d"):
        window = {"stride": _pair(layer.stride),
                  "padding": _unless(_pair(layer.padding), "0"),
                  "ceil_mode": _unless(layer.ceil_mode, False)}
        if kind == "maxpool2d":
            return "F.max_pool2d(" + _args(x, _pair(layer.kernel_size), **window,
                                           dilation=_unless(_pair(layer.dilation), "1")) + ")"
        return "F.avg_pool2d(" + _args(
            x, _pair(layer.kernel_size), **window,
            count_include_pad=_unless(layer.count_include_pad, True)) + ")"
    simple = {"relu": "F.relu({})", "tanh": "torch.tanh({})", "sigmoid": "torch.sigmoid({})",
              "flatten": "torch.flatten({}, 1)",
              "global_avg_pool2d": "F.adaptive_avg_pool2d({}, 1)",
              "global_max_pool2d": "F.adaptive_max_pool2d({}, 1)"}
    if kind in simple:
        return simple[kind].format(x)
    if kind == "leaky_relu":
        return f"F.leaky_relu({x}, {layer.negative_slope!r})"
    if kind == "elu":
        return f"F.elu({x}, {layer.alpha!r})"
    if kind == "gelu":
        return f"F.gelu({_args(x, approximate=_unless(repr(layer.approximate), repr('none')))})"
    if kind == "dropout":
        return f"F.dropout({x}, {layer.p!r}, self.training)"
    raise ConfigError(f"layer {layer.name!r} ({kind}) has no PyTorch export")


def _attribute(path: str) -> str:
    """``self.layer1["0"].conv1`` for the submodule path layer1.0.conv1."""
    first, *rest = path.split(".")
    return "self." + first + "".join(f".{p}" if p.isidentifier() else f'["{p}"]' for p in rest)


def _module_tree(model, paths: dict[str, str]) -> dict:
    """{part: constructor text or a subtree} of the layers that are modules; a layer that has
    weights and is also the group of another layer's (``a`` and ``a.b``) is refused."""
    tree: dict = {}
    for layer, shape in zip(model.layers, model.input_shapes, strict=True):
        if layer.type_name not in MODULE_TYPES:
            continue
        *groups, leaf = paths[layer.name].split(".")
        node = tree
        for depth, part in enumerate(groups):
            node = node.setdefault(part, {})
            if isinstance(node, str):
                raise _both(".".join(groups[:depth + 1]), layer.name, paths)
        if isinstance(node.get(leaf), dict):
            raise _both(paths[layer.name], None, paths)
        node[leaf] = _module(layer, shape)
    return tree


def _both(path, inner, paths) -> ConfigError:
    name = {v: k for k, v in paths.items()}.get(path, path)
    return ConfigError(f"layer {name!r} has weights and also holds other layers "
                       f"({inner or name + '.*'}); a torch module cannot be both",
                       hint="rename one of them, or export with --format onnx or safetensors")


def _render_tree(tree: dict, indent: str) -> list[str]:
    """``self.<part> = ...`` lines; a group becomes an nn.ModuleDict, so the state_dict keys
    keep every dotted part."""
    def value(item, pad: str) -> str:
        if isinstance(item, str):
            return item
        inner = "".join(f'{pad}    "{k}": {value(v, pad + "    ")},\n' for k, v in item.items())
        return "nn.ModuleDict({\n" + inner + pad + "})"
    return [f"{indent}self.{k} = {value(v, indent)}\n" for k, v in tree.items()]


def _group(name: str) -> str:
    """The block a layer belongs to, for forward's comments: layer1.0 for layer1.0.conv1."""
    return ".".join(name.split(".")[:-1][:2])


_HEADER = '''"""{name}: generated by `cnncli export --format pytorch` from {source}.

A plain torch.nn.Module; the weights are in model.safetensors beside this file:

    from model import load
    net = load()            # eval mode, weights loaded
    logits = net(x)         # x: float32 (N, {dims}){raw}
"""

import json
import struct
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CLASS_NAMES = {class_names!r}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
'''

_LOAD = '''

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
           "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}


def read_safetensors(path):
    """The tensors of a safetensors file (its JSON header and raw data; no code runs)."""
    blob = Path(path).read_bytes()
    (size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + size])
    header.pop("__metadata__", None)
    data = bytearray(blob[8 + size:])
    state = {}
    for key, info in header.items():
        begin, end = info["data_offsets"]
        tensor = torch.frombuffer(data, dtype=_DTYPES[info["dtype"]], offset=begin,
                                  count=(end - begin) // _DTYPES[info["dtype"]].itemsize)
        state[key] = tensor.reshape(info["shape"]).clone()
    return state


def load(path=Path(__file__).with_name("model.safetensors")):
    """The network with its weights, in eval mode."""
    net = Net()
    net.load_state_dict(read_safetensors(path))
    return net.eval()
'''


def _forward(model, paths: dict[str, str]) -> list[str]:
    """forward's lines after the normalisation: one per layer. A layer's output stays in ``x``
    when only the next layer reads it; one that a later layer reads (a shortcut, a branch)
    gets a variable named after the layer."""
    names = python_names([*_RESERVED, *(layer.name for layer in model.layers)])
    variables = ["inputs"] + [names[layer.name] for layer in model.layers]
    readers: list[set[int]] = [set() for _ in variables]
    for k, src in enumerate(model.sources):
        for node in src:
            readers[node].add(k)
    # node n (0: the input, k + 1: layer k's output) flows in x if layer n alone reads it
    kept = {n for n, who in enumerate(readers) if who != {n} and n < len(model.layers)}
    lines = ["        inputs = x\n"] if 0 in kept else []
    group = ""
    for k, (layer, shape, src) in enumerate(zip(model.layers, model.input_shapes,
                                                 model.sources, strict=True)):
        if _group(layer.name) not in ("", group):  # a block's layers under its name
            group = _group(layer.name)
            lines.append(f"\n        # {group}\n")
        ins = [variables[n] if n in kept else "x" for n in src]
        target = variables[k + 1] if k + 1 in kept else "x"
        call = _call(layer, shape, _attribute(paths[layer.name]), ins)
        lines.append(f"        {target} = {call}\n")
    lines.append("        return x\n")
    return lines


#: Names forward uses itself, which no layer's variable may shadow.
_RESERVED = ("x", "inputs", "self", "torch", "nn", "F")


def model_source(ckpt, model, *, normalization: bool = True) -> str:
    """The text of model.py for ``model``: the layers with weights as submodules at their
    state_dict names, and a forward that follows the graph."""
    paths = module_paths([layer.name for layer in model.layers])
    norm = ckpt.normalization if normalization else {}
    mode = str(norm.get("mode", "none"))
    raw = ("\n\nx holds raw values, as `cnncli predict` reads them: forward applies the "
           "training\nnormalisation first." if mode != "none" else "")
    lines = [_HEADER.format(name=ckpt.run.name, source=ckpt.path,
                            dims=", ".join(map(str, model.input_shape)), raw=raw,
                            class_names=list(ckpt.class_names))]
    rank = len(model.input_shape) + 1
    if mode != "none":
        view = (1, -1) + (1,) * (rank - 2)
        lines.append(f"        # the training normalisation: x / scale, then (x - mean) / std\n"
                     f"        self.register_buffer('input_scale', torch.tensor("
                     f"{float(norm['scale'])!r}), persistent=False)\n")
        if mode == "standardize":
            for key in ("mean", "std"):
                values = [float(v) for v in np.asarray(norm[key]).reshape(-1)]
                lines.append(f"        self.register_buffer('input_{key}', torch.tensor("
                             f"{values!r}).view{view}, persistent=False)\n")
    lines.extend(_render_tree(_module_tree(model, paths), "        "))
    lines.append("\n    def forward(self, x):\n")
    if mode != "none":
        lines.append("        x = x / self.input_scale\n")
        if mode == "standardize":
            lines.append("        x = (x - self.input_mean) / self.input_std\n")
    lines.extend(_forward(model, paths))
    lines.append(_LOAD)
    return "".join(lines)


def export_pytorch(ckpt, model, folder, *, normalization: bool = True) -> Path:
    """``folder``/model.py and ``folder``/model.safetensors."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file; format=pytorch writes a folder",
                          hint="give -o a folder name")
    text = model_source(ckpt, model, normalization=normalization)  # refusals write nothing
    make_folder(folder)
    export_safetensors(ckpt, model, folder / "model.safetensors")
    atomic_write(folder / "model.py", lambda f: f.write(text.encode()))
    return folder
